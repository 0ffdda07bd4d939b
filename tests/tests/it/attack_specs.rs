//! Attack on issue 13's serde parsing of business hours and capacity rules: each bad spec
//! answers 400 with a message naming the field to fix (the paths the hand-written walkers of
//! d77e8d8 named). A field of the wrong JSON type says what it must be, as d77e8d8 did
//! (`model::hours::type_hint`); deeper type mismatches read serde's "invalid type: …, expected …".

use harness::TestEnv;
use serde_json::{Value, json};

async fn put(e: &harness::Engage, kind: &str, body: Value) -> (u16, String) {
    let path = format!("/ges/v1/tenants/acme/{kind}/x");
    let (code, answer) = e.admin(reqwest::Method::PUT, &path, Some(body)).await;
    let msg = answer["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (code, msg)
}

#[tokio::test]
async fn bad_business_hours_name_the_field() {
    let (_env, e, _key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    let cases = [
        (json!({"weekly": {}}), "timezone"),
        (json!({"timezone": "Mars/Base"}), "Mars/Base"),
        (
            json!({"timezone": "UTC", "weekly": {"monday": []}}),
            "weekly.monday",
        ),
        (
            json!({"timezone": "UTC", "weekly": {"mon": [["09:00"]]}}),
            "weekly.mon[0]",
        ),
        (
            json!({"timezone": "UTC", "weekly": {"mon": [["24:00", "24:00"]]}}),
            "24:00",
        ),
        (
            json!({"timezone": "UTC", "weekly": {"mon": [["09:00", "12:00"], ["11:00", "13:00"]]}}),
            "overlap",
        ),
        (
            json!({"timezone": "UTC", "weekly": {"mon": [["9:00", "12:00"]]}}),
            "HH:MM",
        ),
        (
            json!({"timezone": "UTC", "exceptions": [{"date": "2026-13-01"}]}),
            "exceptions[0].date",
        ),
        (json!({"timezone": "UTC", "weeky": {}}), "weeky"),
        (
            json!({"timezone": "UTC", "weekly": {"mon": "09:00-17:00"}}),
            "weekly.mon",
        ),
        (json!({"timezone": 5}), "timezone"),
        (json!([]), "object"),
        (json!({"timezone": "UTC", "exceptions": {}}), "exceptions"),
    ];
    for (body, needle) in cases {
        let (code, msg) = put(&e, "business-hours", body.clone()).await;
        assert_eq!(code, 400, "{body}: {msg}");
        assert!(msg.contains(needle), "{body}: {msg} lacks {needle}");
    }
}

#[tokio::test]
async fn bad_capacity_rules_name_the_field() {
    let (_env, e, _key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    let cases = [
        (json!({"slot_minutes": 7}), "slot_minutes"),
        (json!({"slot_minutes": "15"}), "slot_minutes"),
        (
            json!({"slot_minutes": 15, "weekly": {"monday": []}}),
            "weekly.monday",
        ),
        (
            json!({"slot_minutes": 15, "weekly": {"1": {"0900": -1}}}),
            "weekly.1.0900",
        ),
        (
            json!({"slot_minutes": 15, "weekly": {"1": {"0907": 5}}}),
            "weekly.1.0907",
        ),
        (json!({"slot_minutes": 15, "weekly": []}), "weekly"),
        (
            json!({"slot_minutes": 15, "overrides": [{"date": "nope"}]}),
            "overrides[0]",
        ),
        (json!({"slot_minutes": 15, "weekli": {}}), "weekli"),
        (json!([]), "object"),
    ];
    for (body, needle) in cases {
        let (code, msg) = put(&e, "capacity-rules", body.clone()).await;
        assert_eq!(code, 400, "{body}: {msg}");
        assert!(msg.contains(needle), "{body}: {msg} lacks {needle}");
    }
}
