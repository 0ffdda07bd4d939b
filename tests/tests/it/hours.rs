//! Business hours and capacity rules (admin API), the Designer publish of CALLBACK_SETTINGS,
//! and open-for, including daylight-saving changes in America/New_York and Europe/Paris.

use harness::{Engage, TestEnv, local, wire};
use serde_json::{Value, json};

async fn put(e: &Engage, path: &str, body: Value) -> (u16, Value) {
    e.admin_put(path, body).await
}

#[tokio::test]
async fn hours_rules_crud() {
    let env = TestEnv::new();
    let e = Engage::start(&env, &[]).await;
    e.tenant("acme").await;
    let bh = json!({"timezone":"America/New_York",
        "weekly":{"mon":[["09:00","17:00"]],"tue":[["09:00","12:00"],["13:00","24:00"]],"sun":[]},
        "exceptions":[{"date":"2026-12-25","open":[]},{"date":"2026-12-24","open":[["09:00","12:00"]]}]});
    let (code, body) = put(&e, "/ges/v1/tenants/acme/business-hours/main", bh.clone()).await;
    assert_eq!(code, 201, "{body}");
    let d = &body["data"];
    assert_eq!(d["name"], "main");
    assert_eq!(d["version"], 1);
    assert_eq!(d["timezone"], "America/New_York");
    assert_eq!(
        d["weekly"]["tue"],
        json!([["09:00", "12:00"], ["13:00", "24:00"]])
    );
    assert_eq!(d["weekly"]["wed"], json!([]));
    assert_eq!(
        d["exceptions"][0],
        json!({"date":"2026-12-24","open":[["09:00","12:00"]]})
    );

    // A fetched rule can be PUT back unchanged; the version goes up.
    let (code, got) = e
        .admin_get("/ges/v1/tenants/acme/business-hours/main")
        .await;
    assert_eq!(code, 200);
    let (code, body) = put(
        &e,
        "/ges/v1/tenants/acme/business-hours/main",
        got["data"].clone(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["version"], 2);

    for (bad, field) in [
        (json!({"weekly":{}}), "timezone"),
        (json!({"timezone":"Mars/Olympus"}), "timezone"),
        (
            json!({"timezone":"UTC","weekly":{"mon":[["17:00","09:00"]]}}),
            "weekly.mon[0]",
        ),
        (
            json!({"timezone":"UTC","weekly":{"funday":[]}}),
            "weekly.funday",
        ),
        (
            json!({"timezone":"UTC","exceptions":[{"date":"2026-13-01","open":[]}]}),
            "exceptions[0].date",
        ),
    ] {
        let (code, body) = put(&e, "/ges/v1/tenants/acme/business-hours/bad", bad).await;
        assert_eq!(code, 400, "{body}");
        let msg = body["status"]["message"].as_str().unwrap();
        assert!(msg.starts_with(field), "{msg} should name {field}");
    }

    let rule = json!({"slot_minutes":15,"weekly":{"1":{"0900":10,"0915":10},"7":{}},
                      "overrides":[{"date":"2026-12-24","slots":{"0900":5}}]});
    let (code, body) = put(&e, "/ges/v1/tenants/acme/capacity-rules/std", rule).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["data"]["slot_minutes"], 15);
    assert_eq!(body["data"]["weekly"]["1"], json!({"0900":10,"0915":10}));
    assert_eq!(body["data"]["overrides"][0]["slots"], json!({"0900":5}));
    let (code, body) = put(
        &e,
        "/ges/v1/tenants/acme/capacity-rules/bad",
        json!({"slot_minutes":15,"weekly":{"1":{"0910":1}}}),
    )
    .await;
    harness::assert_refused((code, &body), 400, "weekly.1.0910");
    let (code, body) = e.admin_get("/ges/v1/tenants/acme/capacity-rules").await;
    assert_eq!(code, 200);
    assert_eq!(body["data"].as_array().unwrap().len(), 1);

    // A service may only name rules that exist.
    let (code, body) = put(
        &e,
        "/ges/v1/tenants/acme/services/x",
        json!({"business_hours":"missing"}),
    )
    .await;
    assert_eq!(code, 400);
    let msg = body["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("business_hours") && msg.contains("missing"),
        "{msg}"
    );
    let (code, _) = put(
        &e,
        "/ges/v1/tenants/acme/services/x",
        json!({"capacity_rule":"missing"}),
    )
    .await;
    assert_eq!(code, 400);

    // In use → 409 naming the service; unused → deleted.
    e.service(
        "acme",
        "sales",
        json!({"business_hours":"main","capacity_rule":"std"}),
    )
    .await;
    let (code, body) = e
        .admin_delete("/ges/v1/tenants/acme/business-hours/main")
        .await;
    harness::assert_refused((code, &body), 409, "sales");
    e.service("acme", "sales", json!({})).await;
    for path in ["business-hours/main", "capacity-rules/std"] {
        let (code, _) = e
            .admin_delete(&format!("/ges/v1/tenants/acme/{path}"))
            .await;
        assert_eq!(code, 200);
        let (code, _) = e.admin_get(&format!("/ges/v1/tenants/acme/{path}")).await;
        assert_eq!(code, 404);
    }
    let (code, _) = put(
        &e,
        "/ges/v1/tenants/nobody/business-hours/x",
        json!({"timezone":"UTC"}),
    )
    .await;
    assert_eq!(code, 404);
}

async fn services(e: &Engage) -> Vec<Value> {
    let (code, body) = e.admin_get("/ges/v1/tenants/acme/services").await;
    assert_eq!(code, 200);
    body["data"].as_array().expect("service list").clone()
}

fn find<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

#[tokio::test]
async fn publish_whole_table() {
    let (_env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    put(
        &e,
        "/ges/v1/tenants/acme/business-hours/bh",
        json!({"timezone":"UTC"}),
    )
    .await;
    e.service("acme", "old", json!({})).await;
    let publish = |table: Value| e.admin_post("/ges/v1/tenants/acme/callback-settings", table);

    let (code, body) = publish(json!([
        {"name":"a","business_hours":"bh","slot_capacity":3},
        {"name":"b","slot_minutes":30,"Custom Column":"x"}
    ]))
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["created"], json!(["a", "b"]));
    assert_eq!(body["data"]["disabled"], json!(["old"]));
    let list = services(&e).await;
    assert_eq!(find(&list, "old")["settings"]["enabled"], false);
    assert_eq!(find(&list, "b")["settings"]["Custom Column"], "x");
    let (code, body) = e.create(&key).service("old").phone("5550100").send().await;
    assert_eq!(code, 400, "{body}");

    // Same a, changed b, old listed again.
    let (code, body) = publish(json!([
        {"name":"a","business_hours":"bh","slot_capacity":3},
        {"name":"b","slot_minutes":60},
        {"name":"old"}
    ]))
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["unchanged"], json!(["a"]));
    assert_eq!(body["data"]["updated"], json!(["b", "old"]));
    let before = services(&e).await;
    assert_eq!(find(&before, "a")["version"], 1);
    assert_eq!(find(&before, "b")["version"], 2);
    assert_eq!(find(&before, "old")["settings"]["enabled"], true);

    // One bad row: 400 naming index, name and column; nothing changes.
    let (code, body) = publish(json!([
        {"name":"a","slot_capacity":1},
        {"name":"c","slot_minutes":20}
    ]))
    .await;
    assert_eq!(code, 400, "{body}");
    let msg = body["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("rows[1]") && msg.contains("\"c\"") && msg.contains("slot_minutes"),
        "{msg}"
    );
    let (code, body) = publish(json!([{"name":"a"},{"name":"z","business_hours":"nope"}])).await;
    assert_eq!(code, 400);
    let msg = body["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("rows[1]") && msg.contains("business_hours") && msg.contains("nope"),
        "{msg}"
    );
    let (code, body) = publish(json!({"name":"a"})).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(services(&e).await, before);

    let (code, _) = e
        .admin_post("/ges/v1/tenants/ghost/callback-settings", json!([]))
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn open_for_across_dst() {
    let (_env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    for zone in ["America/New_York", "Europe/Paris"] {
        let harness::DstDays {
            spring, fall, name, ..
        } = e.hours_on_dst_days("acme", zone, "04:00").await;
        e.service(
            "acme",
            &format!("svc-{name}"),
            json!({"business_hours": name}),
        )
        .await;
        let q = |target: &str, start: &str| {
            format!("/engagement/v3/callbacks/open-for/{target}?start={start}&timezone={zone}")
        };
        for target in [name.clone(), format!("svc-{name}")] {
            // Midnight to 04:00 local is 3 real hours on the spring day, 5 on the fall day.
            for (day, hours) in [(spring, 3), (fall, 5)] {
                let (code, body) = e
                    .get(&key, &q(&target, &format!("{day}T00:00:00.000")))
                    .await;
                assert_eq!(code, 200, "{body}");
                assert_eq!(
                    body["data"]["openFor"],
                    hours * 3600,
                    "{zone} {day} {target}"
                );
            }
            // An instant with an offset works too; closed → 0.
            let closed = wire(local(zone, spring, 5, 0));
            let (_, body) = e.get(&key, &q(&target, &closed)).await;
            assert_eq!(body["data"]["openFor"], 0);
            let one_before = wire(local(zone, fall, 0, 0) + jiff::SignedDuration::from_hours(4));
            let (_, body) = e.get(&key, &q(&target, &one_before)).await;
            assert_eq!(
                body["data"]["openFor"], 3600,
                "{zone} fall, 4 real hours in"
            );
        }
    }
    let (code, body) = e
        .get(&key, "/engagement/v3/callbacks/open-for/nothing")
        .await;
    harness::assert_refused((code, &body), 400, "nothing");
    let (code, body) = e
        .get(
            &key,
            "/engagement/v3/callbacks/open-for/America-New_York?timezone=Bad/Zone",
        )
        .await;
    assert_eq!(code, 400);
    assert!(
        body["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("timezone")
    );
    // No business hours: always open, reported as the 7-day look-ahead.
    e.service("acme", "always", json!({})).await;
    let (_, body) = e
        .get(&key, "/engagement/v3/callbacks/open-for/always")
        .await;
    assert_eq!(body["data"]["openFor"], 7 * 86400);
}
