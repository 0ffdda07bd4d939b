//! The create pipeline's typed outcomes and attributes, end to end: a limit reached on the
//! transactional path (a slot claim) answers as that limit, not as a full slot; a full slot
//! answers with proposals; the request's overrides reach the voice stream.

use std::time::Duration;

use harness::{CREATE, Fixture, TestEnv, WorkerProc, wire};
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde_json::{Value, json};

fn noon_in_two_days() -> Timestamp {
    let today = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    harness::local(
        "UTC",
        today.checked_add(2.days()).expect("date in range"),
        12,
        0,
    )
}

/// Books five past the slot at noon in two days on the fixture's service (15-minute slots);
/// returns the status, the `Retry-After` header and the envelope.
async fn book(fx: &Fixture) -> (u16, Option<String>, Value) {
    let at = wire(noon_in_two_days() + SignedDuration::from_mins(5));
    let resp = fx
        .engage
        .http
        .post(format!("{}{CREATE}", fx.engage.external))
        .header("x-api-key", &fx.key)
        .json(&fx.create().at(&at).body())
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

/// A slot claim goes through the transactional path; a throttle refusal there was taken for a
/// full slot by its shape (a 429 without data) and answered "fully booked" with proposals and
/// without `Retry-After`.
#[tokio::test]
async fn a_throttled_slot_claim_answers_its_limit_not_a_full_slot() {
    let fx = Fixture::start(json!({"slot_minutes": 15, "slot_capacity": 10,
        "in_queue_checking": false, "throttle_per_service_1": 1, "throttle_ttl_1": 300}))
    .await;
    let (code, _, first) = book(&fx).await;
    assert_eq!(code, 200, "{first}");

    let (code, retry, second) = book(&fx).await;
    assert_eq!(code, 429, "{second}");
    let message = second["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("throttle_per_service_1 reached: 1 requests per 300 s"),
        "{second}"
    );
    assert!(second.get("data").is_none(), "no proposals: {second}");
    assert!(retry.is_some(), "Retry-After is sent for a window limit");
    let booked: i32 = fx
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
    let fx =
        Fixture::start(json!({"slot_minutes": 15, "slot_capacity": 1, "in_queue_checking": false}))
            .await;
    assert_eq!(book(&fx).await.0, 200);
    let (code, retry, full) = book(&fx).await;
    assert_eq!(code, 429, "{full}");
    assert_eq!(
        full["status"]["message"],
        format!(
            "the slot starting {} of service sales is fully booked; data.slots proposes the nearest open slots",
            wire(noon_in_two_days())
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
    let service = json!({"route_point": "5000", "survey_rp": "6000", "language": "en-US"});
    let fx = Fixture::dispatch(TestEnv::new(), "acme", "sales", service).await;
    let _worker = WorkerProc::start(&fx.env, &[]).await;
    let overrides = json!({"routePoint": "7001", "surveyRP": "8001", "language": "fr-CA"});
    let id = fx.create().fields(overrides).id().await;
    let entries = fx.env.wait_handoffs(1, Duration::from_secs(10)).await;
    let (_, entry) = entries
        .iter()
        .find(|(_, f)| f["callback_id"] == id)
        .expect("the hand-off");
    assert_eq!(entry["route_point"], "7001");
    assert_eq!(entry["survey_rp"], "8001");
    assert_eq!(entry["language"], "fr-CA");
}
