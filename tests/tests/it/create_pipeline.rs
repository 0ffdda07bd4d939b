//! The create pipeline's typed outcomes and attributes, end to end: a limit reached on the
//! transactional path (a slot claim) answers as that limit, not as a full slot; a full slot
//! answers with proposals; the request's overrides reach the voice stream.

use std::time::{Duration, Instant};

use harness::{Engage, TestEnv, WorkerProc, stream_entries, wire};
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde_json::{Value, json};

const CREATE: &str = "/engagement/v3/callbacks/create";

fn noon_in_two_days() -> Timestamp {
    let today = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    harness::local(
        "UTC",
        today.checked_add(2.days()).expect("date in range"),
        12,
        0,
    )
}

/// Posts a create; returns the status, the `Retry-After` header and the body.
async fn create(e: &Engage, key: &str, body: Value) -> (u16, Option<String>, Value) {
    let resp = e
        .http
        .post(format!("{}{CREATE}", e.external))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let code = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (code, retry, resp.json().await.unwrap_or(Value::Null))
}

/// An engage with tenant `acme` and service `s` (15-minute slots, `settings` added); creates
/// ask for five past the slot at noon in two days.
struct Slotted {
    env: TestEnv,
    e: Engage,
    key: String,
    slot: Timestamp,
}

impl Slotted {
    async fn start(settings: Value) -> Self {
        let env = TestEnv::new();
        let e = Engage::start(&env, &[]).await;
        let key = e.tenant("acme").await;
        let mut all = json!({"slot_minutes": 15, "in_queue_checking": false});
        if let (Some(all), Value::Object(extra)) = (all.as_object_mut(), settings) {
            all.extend(extra);
        }
        e.service("acme", "s", all).await;
        let slot = noon_in_two_days();
        Self { env, e, key, slot }
    }

    async fn book(&self, phone: &str) -> (u16, Option<String>, Value) {
        let at = wire(self.slot + SignedDuration::from_mins(5));
        let body = json!({"serviceName": "s", "phoneNumber": phone, "desiredTime": at});
        create(&self.e, &self.key, body).await
    }
}

/// A slot claim goes through the transactional path; a throttle refusal there was taken for a
/// full slot by its shape (a 429 without data) and answered "fully booked" with proposals and
/// without `Retry-After`.
#[tokio::test]
async fn a_throttled_slot_claim_answers_its_limit_not_a_full_slot() {
    let t = Slotted::start(
        json!({"slot_capacity": 10, "throttle_per_service_1": 1, "throttle_ttl_1": 300}),
    )
    .await;
    let (code, _, first) = t.book("+15550000001").await;
    assert_eq!(code, 200, "{first}");

    let (code, retry, second) = t.book("+15550000002").await;
    assert_eq!(code, 429, "{second}");
    let message = second["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("throttle_per_service_1 reached: 1 requests per 300 s"),
        "{second}"
    );
    assert!(second.get("data").is_none(), "no proposals: {second}");
    assert!(retry.is_some(), "Retry-After is sent for a window limit");
    let booked: i32 = t
        .env
        .pg()
        .await
        .query_one(
            "SELECT coalesce(sum(booked), 0)::int FROM slot_bookings",
            &[],
        )
        .await
        .expect("booked")
        .get(0);
    assert_eq!(booked, 1, "the refused create holds no slot place");
}

/// The insert's full slot is a typed refusal carrying the proposals.
#[tokio::test]
async fn a_full_slot_answers_with_proposals_and_without_retry_after() {
    let t = Slotted::start(json!({"slot_capacity": 1})).await;
    assert_eq!(t.book("+15550000001").await.0, 200);
    let (code, retry, full) = t.book("+15550000002").await;
    assert_eq!(code, 429, "{full}");
    assert_eq!(
        full["status"]["message"],
        format!(
            "the slot starting {} of service s is fully booked; data.slots proposes the nearest open slots",
            wire(t.slot)
        )
    );
    let proposed = full["data"]["slots"].as_object().expect("data.slots");
    assert_eq!(proposed.len(), 5, "{full}");
    assert!(retry.is_none());
}

/// `routePoint`, `surveyRP` and `language` of the request win over the service's settings in
/// the voice-stream entry (written by create, read by the worker: one typed struct).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_overrides_reach_the_voice_stream() {
    let env = TestEnv::new();
    let e = Engage::start(&env, &[]).await;
    let key = e.tenant("acme").await;
    let settings = crate::worker::open_service(
        json!({"route_point": "5000", "survey_rp": "6000", "language": "en-US"}),
    );
    e.service("acme", "s", settings).await;
    let env = env.with("GES_URL", &e.internal);
    let _worker = WorkerProc::start(&env, &[]).await;
    let mut voice = env.voice().await;
    let (code, _, body) = create(
        &e,
        &key,
        json!({"serviceName": "s", "phoneNumber": "+15550000001", "routePoint": "7001",
               "surveyRP": "8001", "language": "fr-CA"}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let id = body["data"]["id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let entry = loop {
        let entries = stream_entries(&mut voice, env.voice_stream()).await;
        if let Some((_, f)) = entries.into_iter().find(|(_, f)| f["callback_id"] == id) {
            break f;
        }
        assert!(Instant::now() < deadline, "no hand-off of {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(entry["route_point"], "7001");
    assert_eq!(entry["survey_rp"], "8001");
    assert_eq!(entry["language"], "fr-CA");
}
