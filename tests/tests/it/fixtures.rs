//! The harness's own promises (tests/README.md, "Writing a new test"): the README's example
//! runs as written, the create builder sends exactly the fields set, the stream readers see
//! each hand-off once, and a private PostgreSQL freezes, thaws and restarts.

use std::time::Duration;

use harness::{Fixture, PrivatePostgres, TestEnv, WorkerProc};
use serde_json::json;

#[tokio::test]
async fn a_test_in_a_few_lines() {
    let fx = Fixture::start(json!({"route_point": "5000"})).await;
    let id = fx
        .create()
        .phone("+1 202 555 0100")
        .in_secs(3600)
        .id()
        .await;
    assert_eq!(fx.cancel(&id).await.0, 200);
    assert_eq!(fx.retrieve(&id).await["callbackReason"], "CANCELLED");
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 1);
}

#[tokio::test]
async fn the_create_builder_sends_exactly_the_fields_set() {
    let fx = Fixture::start(json!({})).await;
    // Without a fixture nothing is added: a missing number stays missing.
    let bare = fx.engage.create(&fx.key).service("sales");
    assert_eq!(bare.body(), json!({"serviceName": "sales"}));
    let (code, body) = bare.send().await;
    harness::assert_refused((code, &body), 400, "phoneNumber is required");
    // The fixture's creates get a distinct number each.
    let (a, b) = (fx.create().body(), fx.create().body());
    assert_ne!(a["phoneNumber"], b["phoneNumber"]);
    let later = fx
        .create()
        .in_secs(60)
        .immediate()
        .user_data(json!({"k": 1}));
    assert!(later.body().get("desiredTime").is_none());
    assert_eq!(later.body()["userData"], json!({"k": 1}));
    // Fields merge; a body that is not an object replaces what was set.
    let merged = fx.create().phone("5550100").fields(json!({"priority": 2}));
    assert_eq!(merged.body()["phoneNumber"], "5550100");
    assert_eq!(merged.body()["priority"], 2);
    let (code, body) = fx.create().fields(json!(["not an object"])).send().await;
    harness::assert_refused((code, &body), 400, "JSON object");
    // An idempotent retry names the same callback.
    let keyed = || fx.create().phone("5550101").idempotency_key("k-1");
    assert_eq!(keyed().id().await, keyed().id().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_readers_see_each_hand_off_once() {
    let fx = Fixture::dispatch(TestEnv::new(), "acme", "sales", json!({})).await;
    let _worker = WorkerProc::start(&fx.env, &[]).await;
    let ids = fx.engage.create_immediate(&fx.key, "sales", 5, 0).await;
    let entries = fx.env.wait_handoffs(5, Duration::from_secs(20)).await;
    assert_eq!(entries.len(), 5);
    let (total, distinct, _) = fx.env.census().await;
    assert_eq!((total, distinct), (5, 5));
    let mut seen = fx.env.ids_in(fx.env.voice_stream()).await;
    let mut want = ids.clone();
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(fx.env.wait_submitted(5, Duration::from_secs(10)).await, 5);
    let (code, body) = fx
        .engage
        .event(
            &ids[0],
            json!({"state": "COMPLETED", "reason": "AGENT_CONNECTED"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let done = fx.engage.wait_for(&fx.key, &ids[0], 10, |cb| {
        cb["callbackState"] == "COMPLETED"
    });
    assert_eq!(done.await["callbackReason"], "AGENT_CONNECTED");
    assert_eq!(fx.env.row(&ids[0]).await.0, "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_postgres_freezes_thaws_and_restarts() {
    let pg = PrivatePostgres::new();
    let env = TestEnv::new().with("DATABASE_URL", &pg.url());
    assert_eq!(env.count("SELECT 1::bigint").await, 1);
    pg.freeze();
    let frozen = tokio::time::timeout(Duration::from_millis(500), env.pg()).await;
    assert!(frozen.is_err(), "a frozen server answered");
    pg.thaw();
    assert_eq!(env.count("SELECT 2::bigint").await, 2);
    pg.stop_server().unwrap();
    pg.ensure_running();
    assert_eq!(env.count("SELECT 3::bigint").await, 3);
}
