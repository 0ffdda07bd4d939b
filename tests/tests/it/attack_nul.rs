//! Attacks on issue 13's error mapping (one `shared::Error` → `ApiError` at the edge) and the
//! generic versioned admin store: text PostgreSQL cannot store (a NUL character) answers 400
//! on every path that writes or looks up by name, as it did before, never a 500.

use harness::{Fixture, TestEnv};
use serde_json::json;

fn not_5xx(what: &str, code: u16, body: &serde_json::Value) {
    assert!((400..500).contains(&code), "{what}: {code} {body}");
}

/// NUL in the create fields that are stored (route point, survey routing point, user data, an
/// informational field), scheduled and immediate.
#[tokio::test]
async fn nul_in_stored_create_fields_answers_4xx() {
    let fx = Fixture::start(json!({})).await;
    let nul = "a\u{0}b";
    for (field, value) in [
        ("routePoint", json!(nul)),
        ("surveyRP", json!(nul)),
        ("channel", json!(nul)),
        ("userData", json!({"k": nul})),
    ] {
        let (code, body) = fx.create().field(field, value.clone()).send().await;
        assert!(code < 500, "immediate {field}: {code} {body}");
        let (code, body) = fx.create().in_secs(3600).field(field, value).send().await;
        assert!(code < 500, "scheduled {field}: {code} {body}");
    }
}

/// NUL in the name of every versioned admin object (PUT, GET, DELETE) and in a published row.
#[tokio::test]
async fn nul_in_admin_object_names_answers_4xx() {
    let (_env, e, _key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    let bodies = [
        ("services", json!({})),
        ("number-rules", json!({"rule": {}})),
        ("business-hours", json!({"timezone": "UTC"})),
        ("capacity-rules", json!({"slot_minutes": 15})),
    ];
    for (kind, body) in bodies {
        let path = format!("/ges/v1/tenants/acme/{kind}/a%00b");
        let (code, answer) = e.admin(reqwest::Method::PUT, &path, Some(body)).await;
        not_5xx(&format!("PUT {kind}"), code, &answer);
        let (code, answer) = e.admin(reqwest::Method::GET, &path, None).await;
        not_5xx(&format!("GET {kind}"), code, &answer);
        let (code, answer) = e.admin(reqwest::Method::DELETE, &path, None).await;
        not_5xx(&format!("DELETE {kind}"), code, &answer);
    }
    let (code, answer) = e
        .admin_post(
            "/ges/v1/tenants/acme/callback-settings",
            json!([{"name": "a\u{0}b"}]),
        )
        .await;
    not_5xx("publish", code, &answer);
}
