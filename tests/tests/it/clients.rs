//! What real clients send is accepted (issue 12, promise 10): the exact bodies of the published
//! Engagement API clients (`tests/fixtures/clients/`, sources in its README) go through the real
//! `engage` binary with the client's headers, and each books a retrievable callback with the
//! right offer type. Informational fields never refuse a create; the strict ones still do.

use harness::{Engage, TestEnv, wire};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const CREATE: &str = "/engagement/v3/callbacks/create";
const RETRIEVE: &str = "/engagement/v3/callbacks/retrieve";

/// The `cbOfferType` the clients' generated models send by default.
const CLIENT_DEFAULT: &str = "ASAP if the request does not include the desiredTime parameter and SCHEDULED if the request includes the desiredTime parameter.";

/// The fixtures' fixed desired times (JS `Date.toJSON`, Java `ISO_OFFSET_DATE_TIME`).
const JS_TIME: &str = "2026-05-28T15:30:00.000Z";
const JAVA_TIME: &str = "2026-05-28T15:30:00Z";

fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/clients/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Two days ahead on the hour, in the fixture's own format.
fn future(format_like: &str) -> (String, Timestamp) {
    let t = Timestamp::now() + SignedDuration::from_hours(48);
    let t = Timestamp::from_second(t.as_second() - t.as_second() % 3600).unwrap();
    let text = if format_like == JS_TIME {
        wire(t)
    } else {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    };
    (text, t)
}

async fn setup() -> (TestEnv, Engage, String) {
    let (env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    e.service(
        "acme",
        "CB_Support",
        json!({"slot_minutes": 15, "slot_capacity": 10, "in_queue_checking": false}),
    )
    .await;
    (env, e, key)
}

/// Posts raw bytes the way engagement-client-js 9.0.84 (superagent 3.7.0) does.
async fn post_as_js_client(e: &Engage, key: &str, body: String) -> (u16, Value) {
    harness::send(
        e.http
            .post(format!("{}{CREATE}", e.external))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("user-agent", "node-superagent/3.7.0")
            .body(body),
    )
    .await
}

/// Posts the fixture (desired time moved to the future) and returns the stored callback.
async fn book(e: &Engage, key: &str, name: &str) -> (Value, Option<Timestamp>) {
    let mut body = fixture(name);
    let mut desired = None;
    for like in [JS_TIME, JAVA_TIME] {
        if body.contains(like) {
            let (text, t) = future(like);
            body = body.replace(like, &text);
            desired = Some(t);
        }
    }
    let (code, answer) = post_as_js_client(e, key, body).await;
    assert_eq!(code, 200, "{name}: {answer}");
    let id = answer["data"]["id"].as_str().expect("data.id").to_string();
    let (code, got) = e.post(key, RETRIEVE, json!({ "id": id })).await;
    assert_eq!(code, 200, "{name}: {got}");
    (got["data"].clone(), desired)
}

#[tokio::test]
async fn published_client_bodies_book_callbacks() {
    let (_env, e, key) = setup().await;
    for name in ["js-9.0.84-immediate.json", "java-9.0.76-immediate.json"] {
        let (cb, _) = book(&e, &key, name).await;
        assert_eq!(cb["callbackState"], "QUEUED", "{name}: {cb}");
        assert_eq!(cb["cbOfferType"], "ASAP", "{name}: {cb}");
        assert_eq!(cb["cbOfferTypeRaw"], CLIENT_DEFAULT, "{name}: {cb}");
        assert_eq!(cb["language"], "en-US", "{name}: {cb}");
        assert_eq!(cb["phoneNumber"], "+15551234567");
    }
    for name in [
        "js-9.0.84-scheduled.json",
        "js-9.0.84-from-object.json",
        "java-9.0.76-scheduled.json",
    ] {
        let (cb, desired) = book(&e, &key, name).await;
        assert_eq!(cb["callbackState"], "SCHEDULED", "{name}: {cb}");
        assert_eq!(cb["cbOfferType"], "SCHEDULED", "{name}: {cb}");
        assert_eq!(cb["cbOfferTypeRaw"], CLIENT_DEFAULT, "{name}: {cb}");
        assert_eq!(cb["desiredTime"], wire(desired.expect("desired time")));
    }
    let (cb, _) = book(&e, &key, "js-9.0.84-scheduled.json").await;
    assert_eq!(
        cb["userData"],
        json!({"orderId": "A-17", "vip": true, "n": 3})
    );
}

#[tokio::test]
async fn informational_fields_never_refuse_a_create() {
    let (_env, e, key) = setup().await;
    let (desired, _) = future(JS_TIME);
    let body = json!({
        "serviceName": "CB_Support", "phoneNumber": "+15551234568", "desiredTime": desired,
        "cbOfferType": "SOON", "language": "English", "offerTiming": "<unspecified>",
        "offerThreshold": "five minutes", "inboundVQ": "x".repeat(1000),
        "channel": "web\nchat", "cbOriginationIxnId": 12345, "somethingNew": {"a": 1}
    });
    let (code, answer) = e.create(&key).fields(body).send().await;
    assert_eq!(code, 200, "{answer}");
    let id = answer["data"]["id"].clone();
    let (_, got) = e.post(&key, RETRIEVE, json!({ "id": id })).await;
    let cb = &got["data"];
    assert_eq!(cb["cbOfferType"], "SCHEDULED", "{cb}");
    assert_eq!(cb["cbOfferTypeRaw"], "SOON");
    assert_eq!(cb["languageRaw"], "English");
    assert!(cb.get("language").is_none(), "{cb}");
    assert_eq!(cb["offerTimingRaw"], "<unspecified>");
    assert_eq!(cb["offerThresholdRaw"], "five minutes");
    assert_eq!(cb["inboundVQ"].as_str().unwrap().len(), 255);
    assert_eq!(cb["channel"], "web chat");
    assert_eq!(cb["cbOriginationIxnId"], "12345");
    assert!(cb.get("somethingNew").is_none());
}

#[tokio::test]
async fn strict_fields_still_say_what_to_fix() {
    let (_env, e, key) = setup().await;
    let base = json!({"serviceName": "CB_Support", "phoneNumber": "+15551234569",
                      "cbOfferType": CLIENT_DEFAULT, "language": "en-US"});
    let cases = [
        (json!({"serviceName": null}), "serviceName"),
        (json!({"phoneNumber": "call me"}), "phoneNumber"),
        (json!({"desiredTime": "tomorrow"}), "desiredTime"),
        (json!({"desiredTime": "2030-05-28T15:30:00"}), "desiredTime"),
        (json!({"priority": 1.5}), "priority"),
        (json!({"userData": "orderId=1"}), "userData"),
        (json!({"routePoint": "rp\u{0}1"}), "routePoint"),
        (
            json!({"pushTargets": [{"channel": "APNS", "target": "t"}]}),
            "pushTargets",
        ),
        (json!({"alwaysCheckCapacity": "yes"}), "alwaysCheckCapacity"),
    ];
    for (change, field) in cases {
        let mut body = base.clone();
        body.as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        let (code, answer) = e.create(&key).fields(body).send().await;
        assert_eq!(code, 400, "{field}: {answer}");
        let msg = answer["status"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(field), "{field}: {msg}");
    }
}
