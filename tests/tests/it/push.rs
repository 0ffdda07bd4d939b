//! Push notifications (docs/push.md) through the real binaries and a fake FCM that verifies
//! the service account's RS256 assertion (`harness::fake_fcm`): `CALLBACK_UPCOMING` once per
//! callback whatever the estimate does, across a kill -9 and two workers; `CALLBACK_READY` once
//! per attempt when the voice platform routes a USERORIGINATED callback; retries through 500s
//! and hangs; no retry of an `UNREGISTERED` token; rejected credentials; cancelled callbacks
//! never notified; retrieve never shows a device token.

use std::time::{Duration, Instant};

use harness::{
    Engage, Proc, TestEnv, WorkerProc,
    fake_fcm::{FakeFcm, Mode},
    open_service,
};
use serde_json::{Value, json};

const TENANT: &str = "pushco";
const SERVICE: &str = "app";

/// Engage (no worker), the fake FCM, a USERORIGINATED service with `threshold` minutes and the
/// tenant's FCM credentials stored through the admin API.
async fn setup(threshold: u32) -> (TestEnv, Engage, String, FakeFcm) {
    let fcm = FakeFcm::start().await;
    let env = TestEnv::new()
        .with("FCM_URL", &fcm.url)
        .with("FCM_TIMEOUT_MS", "500")
        .with("PUSH_WATCH_MS", "100")
        .with("PUSH_SEND_MS", "100")
        .with("PUSH_BACKOFF_MS", "100");
    let engage = Engage::start(&env, &[]).await;
    let key = engage.provision(TENANT, SERVICE, service(threshold)).await;
    store_credentials(&env, &fcm).await;
    (env, engage, key, fcm)
}

/// Stores the fake's service account as the tenant's FCM credentials, sealed by the vault
/// under the environment's `CREDENTIALS_KEY` (what the admin API's PUT does).
async fn store_credentials(env: &TestEnv, fcm: &FakeFcm) {
    let vars = env.vars.iter().map(|(k, v)| (k.clone(), v.clone()));
    let cfg = shared::Config::from_vars(vars).expect("config");
    let res = shared::Resources::connect(cfg).expect("resources");
    let record = shared::credentials::FcmCredentials::from_service_account(&fcm.service_account)
        .expect("service account");
    let client = res.db.get().await.expect("pool");
    res.vault
        .store(&client, TENANT, &record)
        .await
        .expect("credentials stored");
}

fn service(threshold: u32) -> Value {
    open_service(json!({"call_direction": "USERORIGINATED", "push_threshold_minutes": threshold}))
}

async fn create(engage: &Engage, key: &str, device: &str) -> String {
    engage
        .create(key)
        .service(SERVICE)
        .phone(&harness::next_phone())
        .field("pushTargets", json!([{"channel": "FCM", "target": device}]))
        .id()
        .await
}

/// Waits until `pred` holds of the fake, or panics after `secs`.
async fn until(fcm: &FakeFcm, secs: u64, what: &str, pred: impl Fn(&FakeFcm) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !pred(fcm) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {secs} s; fake saw {:?}",
            fcm.seen(|s| (s.accepted.clone(), s.refusals.clone()))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn outbox(env: &TestEnv, id: &str, event: &str) -> Vec<(String, i32)> {
    let pg = env.pg().await;
    pg.query(
        "SELECT status, tries FROM push_outbox WHERE callback_id = $1::text::uuid AND event = $2",
        &[&id, &event],
    )
    .await
    .expect("outbox")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

async fn worker(env: &TestEnv, engage: &Engage) -> WorkerProc {
    // The voice platform posts its events to Engage's internal port (the entry's events_url).
    WorkerProc::start(env, &[("GES_URL", engage.internal.clone())]).await
}

/// With `ors-sim` (one agent, 6 s per call): the estimate of the third callback is known once
/// two calls were taken; the threshold goes 0 → 1 min (below: sent) → 0 → 1 min again, the
/// worker is killed -9 after the send was recorded, two workers take over, and the callback is
/// routed: one `CALLBACK_UPCOMING` and one `CALLBACK_READY` for its device, whatever happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_upcoming_once_through_threshold_crossings_kill_and_two_workers() {
    let (env, engage, key, fcm) = setup(0).await;
    let mut w1 = worker(&env, &engage).await;
    let _sim = Proc::spawn(
        &env,
        "ors-sim",
        &[
            "--agents",
            "1",
            "--handle-ms",
            "6000",
            "--dist",
            "fixed",
            "--group",
            &format!("{}-sim", env.id),
        ],
        &[],
    );
    // The simulator's consumer group must exist before the first hand-off.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let f1 = create(&engage, &key, "dev-f1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let f2 = create(&engage, &key, "dev-f2").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = create(&engage, &key, "dev-t").await;
    // Two calls taken (f1, f2 PROCESSING): the estimate of `t` is known, 0 s, above a 0 threshold.
    engage
        .wait_for(&key, &f2, 15, |cb| cb["callbackState"] == "PROCESSING")
        .await;
    let cb = engage
        .wait_for(&key, &t, 5, |cb| cb.get("estimatedWaitTime").is_some())
        .await;
    assert_eq!(cb["callbackState"], "QUEUED", "{cb}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fcm.delivered("dev-t", "CALLBACK_UPCOMING"),
        0,
        "sent above the threshold"
    );

    // Below the threshold: sent once.
    engage.service(TENANT, SERVICE, service(1)).await;
    until(&fcm, 5, "upcoming", |f| {
        f.delivered("dev-t", "CALLBACK_UPCOMING") == 1
    })
    .await;
    // Above, below again: the estimate crosses twice more, nothing more is sent.
    engage.service(TENANT, SERVICE, service(0)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    engage.service(TENANT, SERVICE, service(1)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        outbox(&env, &t, "CALLBACK_UPCOMING").await,
        vec![("sent".into(), 1)]
    );

    // kill -9 after the send was recorded; two workers take over.
    w1.proc.kill();
    let _w2 = worker(&env, &engage).await;
    let _w3 = worker(&env, &engage).await;
    let cb = engage
        .wait_for(&key, &t, 20, |cb| cb["callbackState"] != "QUEUED")
        .await;
    assert_ne!(cb["callbackState"], "COMPLETED", "{cb}");
    until(&fcm, 5, "ready", |f| {
        f.delivered("dev-t", "CALLBACK_READY") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fcm.delivered("dev-t", "CALLBACK_UPCOMING"), 1);
    assert_eq!(fcm.delivered("dev-t", "CALLBACK_READY"), 1);
    // The fillers were routed too (their turn), never told "upcoming" (threshold was 0).
    for (id, dev) in [(&f1, "dev-f1"), (&f2, "dev-f2")] {
        assert_eq!(fcm.delivered(dev, "CALLBACK_READY"), 1, "{id}");
        assert_eq!(fcm.delivered(dev, "CALLBACK_UPCOMING"), 0, "{id}");
    }
    // Every accepted message: unique per (device, event), data of strings, the callback's id.
    let msgs = fcm.seen(|s| s.accepted.clone());
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    let upcoming = msgs
        .iter()
        .find(|m| m["data"]["event"] == "CALLBACK_UPCOMING")
        .expect("upcoming");
    assert_eq!(upcoming["data"]["callbackId"], t.as_str());
    assert_eq!(upcoming["data"]["serviceName"], SERVICE);
    assert_eq!(upcoming["data"]["estimatedWaitTime"], "0");
    // One access token per worker process that sent something (w1, and whichever of w2/w3
    // claimed the turn event): cached, not fetched per message.
    assert_eq!(fcm.seen(|s| s.tokens_issued), 2);
}

/// FCM answers 500 three times, then hangs past the timeout, then works: the turn event is
/// delivered exactly once, after retries, and every failed try is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_ready_survives_fcm_500s_and_a_hang_then_delivers_once() {
    let (env, engage, key, fcm) = setup(0).await;
    let w = worker(&env, &engage).await;
    let id = create(&engage, &key, "dev-r").await;
    env.wait_submitted(1, Duration::from_secs(10)).await;
    fcm.set_mode(Mode::Hang);
    let (code, body) = engage.event(&id, json!({"state": "ROUTING"})).await;
    assert_eq!(code, 200, "{body}");
    until(&fcm, 5, "a hung send", |f| f.seen(|s| s.send_requests) >= 1).await;
    fcm.set_mode(Mode::Fail500(3));
    until(&fcm, 15, "delivered", |f| {
        f.delivered("dev-r", "CALLBACK_READY") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fcm.delivered("dev-r", "CALLBACK_READY"), 1);
    let rows = outbox(&env, &id, "CALLBACK_READY").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "sent");
    assert!(rows[0].1 >= 5, "1 hang + 3 × 500 + success: {rows:?}");
    // A repeated ROUTING event owes nothing more.
    let (code, _) = engage.event(&id, json!({"state": "ROUTING"})).await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fcm.delivered("dev-r", "CALLBACK_READY"), 1);
    assert!(w.metric("ges_push_notifications_sent").await >= 5.0);
    let text = reqwest::get(format!("{}/metrics", w.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let failures = harness::metric_sum(
        &text
            .lines()
            .filter(|l| l.contains("result=\"failure\""))
            .collect::<Vec<_>>()
            .join("\n"),
        "ges_push_notifications_sent",
    );
    assert!(failures >= 4.0, "{text}");
    assert!(w.metric("NEXUS_ACCESS_FAILURE").await >= 4.0);
}

/// An uninstalled app's token (404 `UNREGISTERED`) is tried once and given up; credentials
/// the token endpoint rejects are retried (an administrator may fix them) and counted; a
/// cancelled callback's pending message is dropped, never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_unregistered_rejected_credentials_and_cancel() {
    let (env, engage, key, fcm) = setup(0).await;
    let w = worker(&env, &engage).await;
    let a = create(&engage, &key, "dev-gone").await;
    let b = create(&engage, &key, "dev-b").await;
    env.wait_submitted(2, Duration::from_secs(10)).await;

    fcm.set_mode(Mode::Unregistered);
    engage.event(&a, json!({"state": "ROUTING"})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while outbox(&env, &a, "CALLBACK_READY").await != vec![("failed".into(), 1)] {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            outbox(&env, &a, "CALLBACK_READY").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fcm.seen(|s| s.send_requests),
        1,
        "an UNREGISTERED token is not retried"
    );

    fcm.set_mode(Mode::RejectCredentials);
    engage.event(&b, json!({"state": "ROUTING"})).await;
    until(&fcm, 5, "refusals", |f| f.seen(|s| s.refusals.len()) >= 2).await;
    assert_eq!(outbox(&env, &b, "CALLBACK_READY").await[0].0, "pending");
    // Cancelled while owed: dropped, never sent, even once FCM works again.
    let (code, body) = engage.cancel(&key, &b).await;
    assert_eq!(code, 200, "{body}");
    fcm.set_mode(Mode::Normal);
    let deadline = Instant::now() + Duration::from_secs(5);
    while outbox(&env, &b, "CALLBACK_READY").await[0].0 != "dropped" {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            outbox(&env, &b, "CALLBACK_READY").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fcm.delivered("dev-b", "CALLBACK_READY"), 0);
    assert!(w.metric("NEXUS_ACCESS_FAILURE").await >= 2.0);
}

/// Retrieve shows the push channel, never the device token; the legacy single-target fields
/// are still accepted; a USERORIGINATED create without targets is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_retrieve_hides_tokens_legacy_fields_accepted() {
    let (_env, engage, key, _fcm) = setup(5).await;
    let id = create(&engage, &key, "secret-device-token").await;
    let cb = engage.retrieve(&key, &id).await;
    assert_eq!(cb["pushTargets"], json!([{"channel": "FCM"}]), "{cb}");
    assert!(!cb.to_string().contains("secret-device-token"), "{cb}");
    let legacy = engage
        .create(&key)
        .service(SERVICE)
        .phone(&harness::next_phone())
        .fields(json!({"pushChannel": "FCM", "pushTarget": "legacy-token"}))
        .id()
        .await;
    let cb = engage.retrieve(&key, &legacy).await;
    assert_eq!(cb["pushTargets"], json!([{"channel": "FCM"}]), "{cb}");
    assert!(!cb.to_string().contains("legacy-token"), "{cb}");
    let (code, body) = engage
        .create(&key)
        .service(SERVICE)
        .phone(&harness::next_phone())
        .send()
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(harness::message(&body).contains("pushTargets"), "{body}");
}
