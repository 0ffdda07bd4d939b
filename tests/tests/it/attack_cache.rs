//! Attacks on issue 13's "one cached service lookup": availability and open-for read the
//! service uncached before the refactor (d77e8d8), so a Designer publish of CALLBACK_SETTINGS
//! (which does not forget cached services) reached them at once. These tests pin that: a
//! service published or disabled by a publish is seen by the very next availability query of
//! the same process. A long `CACHE_TTL_MS` makes a stale cache visible deterministically (the
//! default 2 s gives the same answers within its window).

use harness::TestEnv;
use serde_json::json;

const AVAILABILITY: &str = "/engagement/v3/callbacks/availability";

/// A service looked up before it exists (404-like 400), then created by a publish, is found
/// by the next availability query.
#[tokio::test]
async fn availability_sees_a_service_created_by_publish_at_once() {
    let env = TestEnv::new().with("CACHE_TTL_MS", "600000");
    let (_env, e, key) = harness::serve_tenant(env, "acme").await;
    let (code, body) = e.get(&key, &format!("{AVAILABILITY}/late")).await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = e
        .admin_post(
            "/ges/v1/tenants/acme/callback-settings",
            json!([{"name": "late", "reject_out_of_hours": false}]),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = e.get(&key, &format!("{AVAILABILITY}/late")).await;
    assert_eq!(
        code, 200,
        "published service still unknown to availability: {body}"
    );
}

/// A service disabled by a publish is refused by the next availability query.
#[tokio::test]
async fn availability_refuses_a_service_disabled_by_publish_at_once() {
    let env = TestEnv::new().with("CACHE_TTL_MS", "600000");
    let (_env, e, key) = harness::serve_tenant(env, "acme").await;
    e.service("acme", "sales", json!({"reject_out_of_hours": false}))
        .await;
    let (code, body) = e.get(&key, &format!("{AVAILABILITY}/sales")).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = e
        .admin_post(
            "/ges/v1/tenants/acme/callback-settings",
            json!([{"name": "other"}]),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["disabled"], json!(["sales"]), "{body}");
    let (code, body) = e.get(&key, &format!("{AVAILABILITY}/sales")).await;
    assert_eq!(code, 400, "disabled service still offered: {body}");
    assert_eq!(body["status"]["message"], "service sales is disabled");
}

/// A publish that points a service at other business hours reaches open-for at once.
#[tokio::test]
async fn open_for_follows_business_hours_changed_by_publish_at_once() {
    let env = TestEnv::new().with("CACHE_TTL_MS", "600000");
    let (_env, e, key) = harness::serve_tenant(env, "acme").await;
    let all_day = json!([["00:00", "24:00"]]);
    let open = json!({"timezone": "UTC", "weekly": {"mon": all_day, "tue": all_day,
        "wed": all_day, "thu": all_day, "fri": all_day, "sat": all_day, "sun": all_day}});
    for (name, spec) in [("closed", json!({"timezone": "UTC"})), ("open", open)] {
        let path = format!("/ges/v1/tenants/acme/business-hours/{name}");
        let (code, body) = e.admin(reqwest::Method::PUT, &path, Some(spec)).await;
        assert!(code == 200 || code == 201, "{body}");
    }
    e.service("acme", "care", json!({"business_hours": "closed"}))
        .await;
    assert_eq!(open_for(&e, &key).await, 0);
    let (code, body) = e
        .admin_post(
            "/ges/v1/tenants/acme/callback-settings",
            json!([{"name": "care", "business_hours": "open"}]),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        open_for(&e, &key).await > 0,
        "open-for still reads the old business hours"
    );
}

async fn open_for(e: &harness::Engage, key: &str) -> i64 {
    let (code, body) = e.get(key, "/engagement/v3/callbacks/open-for/care").await;
    assert_eq!(code, 200, "{body}");
    body["data"]["openFor"].as_i64().unwrap_or(-1)
}
