//! The contract every versioned admin object kind shares (docs/admin-objects.md#common-behaviour): services,
//! number rules, business hours and capacity rules go through one store and one router, so
//! each kind is driven here through the same steps and must answer the same way.

use harness::{Engage, TestEnv};
use reqwest::Method;
use serde_json::{Value, json};

/// A kind: URL segment, noun in messages, a valid body, the field its body is shown in
/// (`None` = beside `name`), and a field of the shown body to check.
struct KindCase {
    path: &'static str,
    noun: &'static str,
    body: Value,
    shown_in: Option<&'static str>,
    field: (&'static str, Value),
}

fn kinds() -> Vec<KindCase> {
    vec![
        KindCase {
            path: "services",
            noun: "service",
            body: json!({"slot_capacity": 7}),
            shown_in: Some("settings"),
            field: ("slot_capacity", json!(7)),
        },
        KindCase {
            path: "number-rules",
            noun: "number rule",
            body: json!({"permitted_countries": ["US"]}),
            shown_in: Some("rule"),
            field: ("permitted_countries", json!(["US"])),
        },
        KindCase {
            path: "business-hours",
            noun: "business hours",
            body: json!({"timezone": "Europe/Paris", "weekly": {"mon": [["09:00", "17:00"]]}}),
            shown_in: None,
            field: ("timezone", json!("Europe/Paris")),
        },
        KindCase {
            path: "capacity-rules",
            noun: "capacity rule",
            body: json!({"slot_minutes": 30}),
            shown_in: None,
            field: ("slot_minutes", json!(30)),
        },
    ]
}

async fn call(e: &Engage, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    e.admin(method, &format!("/ges/v1/tenants/{path}"), body)
        .await
}

fn message(body: &Value) -> &str {
    body["status"]["message"].as_str().unwrap_or_default()
}

/// PUT creates (201, version 1) then replaces (200, version 2); GET and the list show the
/// body where the kind shows it.
async fn put_get_list(e: &Engage, k: &KindCase) {
    let one = format!("acme/{}/a", k.path);
    let (code, body) = call(e, Method::PUT, &one, Some(k.body.clone())).await;
    assert_eq!((code, &body["data"]["version"]), (201, &json!(1)), "{body}");
    let (code, body) = call(e, Method::PUT, &one, Some(k.body.clone())).await;
    assert_eq!((code, &body["data"]["version"]), (200, &json!(2)), "{body}");
    let (code, body) = call(e, Method::GET, &one, None).await;
    assert_eq!(code, 200, "{body}");
    let d = &body["data"];
    let shown = k.shown_in.map_or(d, |f| &d[f]);
    assert_eq!(shown[k.field.0], k.field.1, "{}: {body}", k.path);
    assert_eq!(
        (d["name"].as_str(), d["version"].as_i64()),
        (Some("a"), Some(2))
    );
    assert!(d["updatedAt"].is_string(), "{body}");
    let (code, body) = call(e, Method::GET, &format!("acme/{}", k.path), None).await;
    assert_eq!(code, 200);
    let names: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(names, ["a"], "{body}");
}

/// Unknown tenant, unknown name and a bad name answer 404 / 404 / 400 naming the problem.
async fn refusals(e: &Engage, k: &KindCase) {
    let (code, body) = call(e, Method::GET, &format!("nobody/{}", k.path), None).await;
    assert_eq!((code, message(&body)), (404, "no tenant nobody"));
    let (code, body) = call(
        e,
        Method::PUT,
        &format!("nobody/{}/a", k.path),
        Some(k.body.clone()),
    )
    .await;
    assert_eq!((code, message(&body)), (404, "no tenant nobody"));
    let (code, body) = call(e, Method::GET, &format!("acme/{}/zz", k.path), None).await;
    let missing = format!("no {} zz for tenant acme", k.noun);
    assert_eq!((code, message(&body)), (404, missing.as_str()));
    let (code, body) = call(e, Method::DELETE, &format!("acme/{}/zz", k.path), None).await;
    assert_eq!((code, message(&body)), (404, missing.as_str()));
    let (code, body) = call(
        e,
        Method::PUT,
        &format!("acme/{}/%20a", k.path),
        Some(k.body.clone()),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let want = format!(
        "{} name must be 1-255 printable characters without '/'",
        k.noun
    );
    assert!(message(&body).starts_with(&want), "{body}");
}

/// DELETE answers the name, then the object is gone (404 on GET and on a second DELETE, absent
/// from the list).
async fn delete(e: &Engage, k: &KindCase) {
    let one = format!("acme/{}/a", k.path);
    let (code, body) = call(e, Method::DELETE, &one, None).await;
    assert_eq!(
        (code, &body["data"]),
        (200, &json!({"name": "a"})),
        "{body}"
    );
    for method in [Method::GET, Method::DELETE] {
        let (code, _) = call(e, method, &one, None).await;
        assert_eq!(code, 404, "{}", k.path);
    }
    let (_, body) = call(e, Method::GET, &format!("acme/{}", k.path), None).await;
    assert_eq!(body["data"], json!([]), "{}", k.path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_shares_the_versioned_contract() {
    let env = TestEnv::new();
    let e = Engage::start(&env, &[]).await;
    e.tenant("acme").await;
    for k in kinds() {
        put_get_list(&e, &k).await;
        refusals(&e, &k).await;
        delete(&e, &k).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_service_comes_back_with_the_next_version() {
    let env = TestEnv::new();
    let e = Engage::start(&env, &[]).await;
    e.tenant("acme").await;
    let one = "acme/services/sales";
    call(&e, Method::PUT, one, Some(json!({}))).await;
    let (code, _) = call(&e, Method::DELETE, one, None).await;
    assert_eq!(code, 200);
    // The soft delete counted as a change (version 2): the revival is version 3, a replace.
    let (code, body) = call(&e, Method::PUT, one, Some(json!({"slot_capacity": 3}))).await;
    assert_eq!((code, &body["data"]["version"]), (200, &json!(3)), "{body}");
    let (_, body) = call(&e, Method::GET, "acme/services", None).await;
    assert_eq!(body["data"][0]["settings"]["slot_capacity"], 3, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_name_other_than_the_urls_is_refused() {
    let env = TestEnv::new();
    let e = Engage::start(&env, &[]).await;
    e.tenant("acme").await;
    let (code, body) = call(
        &e,
        Method::PUT,
        "acme/services/a",
        Some(json!({"name": "b"})),
    )
    .await;
    assert_eq!(
        (code, message(&body)),
        (
            400,
            "body name \"b\" differs from the URL's service name \"a\""
        )
    );
    let (code, body) = call(
        &e,
        Method::PUT,
        "acme/business-hours/a",
        Some(json!({"name": "b", "timezone": "UTC"})),
    )
    .await;
    assert_eq!(
        (code, message(&body)),
        (400, "body name \"b\" differs from the URL's name \"a\"")
    );
    // The fields a GET adds are accepted back unchanged.
    let (code, body) = call(
        &e,
        Method::PUT,
        "acme/capacity-rules/a",
        Some(json!({"name": "a", "version": 9, "updatedAt": "x", "slot_minutes": 15})),
    )
    .await;
    assert_eq!((code, &body["data"]["version"]), (201, &json!(1)), "{body}");
}
