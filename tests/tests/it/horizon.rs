//! The schedule horizon (docs/derived-state.md#the-horizon), attacked: callbacks due beyond
//! `REDIS_SCHEDULE_HORIZON_S` are left out of the index at create and must still reach the
//! voice stream on time and exactly once, with the worker down while they enter the horizon,
//! after Redis lost everything, with Redis refusing the loader's writes, and when cancelled or
//! rescheduled before they were loaded. Short horizons (10 s) and sweep rounds (2 s) keep the
//! tests short; the margin (10 s) is the real one.

use std::time::Duration;

use harness::{Engage, Fixture, PrivateRedis, TestEnv, WorkerProc};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

const RESCHEDULE: &str = "/engagement/v3/callbacks/reschedule";

/// An environment on `redis` with a 10 s horizon, 2 s sweep rounds and a sweep grace of
/// `grace` s.
pub(crate) fn horizon_env(redis: &PrivateRedis, grace: u32) -> TestEnv {
    TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("REDIS_SCHEDULE_HORIZON_S", "10")
        .with("WORKER_SWEEP_S", "2")
        .with("WORKER_SWEEP_GRACE_S", &grace.to_string())
}

/// A dispatch fixture on a private Redis with a 10 s horizon, 2 s sweep rounds and a sweep
/// grace of `grace` s: (env, server, key, redis).
pub(crate) async fn setup(tenant: &str, grace: u32) -> (TestEnv, Engage, String, PrivateRedis) {
    let redis = PrivateRedis::new(false);
    let env = horizon_env(&redis, grace).with("WORKER_RECONCILE_CHECK_S", "2");
    let (env, engage, key) = Fixture::dispatch(env, tenant, "svc", json!({}))
        .await
        .parts();
    (env, engage, key, redis)
}

/// Creates `n` callbacks due at `at` (distinct numbers from `base`), each with an
/// Idempotency-Key when `keyed`; returns their ids.
pub(crate) async fn book(
    engage: &Engage,
    key: &str,
    at: Timestamp,
    n: usize,
    base: u32,
    keyed: bool,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut req = engage
            .create(key)
            .service("svc")
            .phone(&format!("+1555{:07}", base as usize + i))
            .field("desiredTime", json!(harness::wire(at)));
        if keyed {
            req = req.idempotency_key(&format!("hz-{base}-{i}"));
        }
        let (code, body) = req.send().await;
        assert_eq!(code, 200, "{body}");
        ids.push(body["data"]["id"].as_str().expect("id").to_string());
    }
    ids
}

/// The latest hand-off after its due time among submitted callbacks, in ms (database clock).
pub(crate) async fn worst_lateness_ms(env: &TestEnv) -> i64 {
    env.count(
        "SELECT coalesce(max(extract(epoch FROM submitted_at - dispatch_at) * 1000), 0)::bigint
         FROM callbacks WHERE submitted_at IS NOT NULL",
    )
    .await
}

/// Asserts that every hand-off so far went within 3 s of its due time and, 3 s later (room
/// for a stray second one), that the voice stream holds `n` entries, one per callback.
pub(crate) async fn on_time_once(env: &TestEnv, n: usize) {
    let late = worst_lateness_ms(env).await;
    assert!(late < 3_000, "handed off {late} ms late");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (n, n), "each exactly once");
}

/// `s` seconds from now.
pub(crate) fn in_secs(s: i64) -> Timestamp {
    Timestamp::now() + SignedDuration::from_secs(s)
}

/// Callbacks beyond the horizon are not indexed at create; those within it are. The loader
/// puts the far ones in as their time comes within reach, and every one reaches the voice
/// stream once, on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn horizon_far_callbacks_wait_outside_the_index_and_dispatch_on_time() {
    let (env, engage, key, _redis) = setup("hz1", 2).await;
    let w = WorkerProc::start(&env, &[]).await;
    let near = book(&engage, &key, in_secs(15), 5, 100, false).await;
    let far = book(&engage, &key, in_secs(30), 20, 200, false).await;
    let indexed = env.indexed(4).await;
    assert!(
        near.iter().all(|id| indexed.contains(id)),
        "within 10 s + 10 s: indexed"
    );
    assert!(
        far.iter().all(|id| !indexed.contains(id)),
        "beyond the horizon: not indexed at create"
    );
    let n = env.wait_submitted(25, Duration::from_secs(60)).await;
    assert_eq!(n, 25, "worker log:\n{}", w.proc.output());
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (25, 25), "each exactly once");
    let late = worst_lateness_ms(&env).await;
    println!("horizon: worst hand-off {late} ms after due");
    assert!(late < 3_000, "handed off {late} ms late");
    assert!(w.metric("engage_index_loaded_total").await >= 20.0);
    assert_eq!(
        w.metric("engage_index_repaired_total").await,
        0.0,
        "the loader, not the overdue sweep, indexed them"
    );
}

/// No worker runs while the callbacks enter the horizon: the first pass of the worker that
/// starts loads them, and they still go on time; callbacks already overdue when it starts go
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn horizon_worker_down_while_callbacks_enter_the_horizon() {
    let (env, engage, key, _redis) = setup("hz2", 2).await;
    let overdue = book(&engage, &key, in_secs(21), 5, 300, false).await;
    let on_time = book(&engage, &key, in_secs(40), 5, 400, false).await;
    assert!(env.indexed(4).await.is_empty(), "none indexed at create");
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(
        env.indexed(4).await.is_empty(),
        "nothing loads them without a worker"
    );
    let w = WorkerProc::start(&env, &[]).await;
    let n = env.wait_submitted(5, Duration::from_secs(10)).await;
    assert!(n >= 5, "overdue ones not handed off: {}", w.proc.output());
    let n = env.wait_submitted(10, Duration::from_secs(40)).await;
    assert_eq!(n, 10, "worker log:\n{}", w.proc.output());
    let late = env
        .count(&format!(
            "SELECT coalesce(max(extract(epoch FROM submitted_at - dispatch_at) * 1000), 0)::bigint
             FROM callbacks WHERE id IN ({})",
            on_time
                .iter()
                .map(|id| format!("'{id}'"))
                .collect::<Vec<_>>()
                .join(",")
        ))
        .await;
    assert!(late < 3_000, "loaded after the restart, {late} ms late");
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (10, 10), "each exactly once");
    let _ = overdue;
}

/// Redis loses everything after the loader indexed the callbacks: the rebuild lists the
/// horizon's window again and they go on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn horizon_loaded_callbacks_survive_a_flushall() {
    let (env, engage, key, redis) = setup("hz3", 2).await;
    let w = WorkerProc::start(&env, &[]).await;
    let ids = book(&engage, &key, in_secs(32), 10, 500, false).await;
    assert!(env.indexed(4).await.is_empty());
    let started = std::time::Instant::now();
    while env.indexed(4).await.len() < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "not loaded: {}",
            w.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut redis.conn().await)
        .await
        .expect("flushall");
    let n = env.wait_submitted(10, Duration::from_secs(40)).await;
    assert_eq!(n, 10, "worker log:\n{}", w.proc.output());
    let late = worst_lateness_ms(&env).await;
    assert!(late < 3_000, "{late} ms late after the flush");
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (ids.len(), ids.len()));
}

/// Redis refuses writes while the callbacks enter the horizon: the loader's passes fail, keep
/// their window, and load them once Redis takes writes again; still on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn horizon_loader_passes_refused_by_redis_are_repeated() {
    let (env, engage, key, redis) = setup("hz4", 2).await;
    let w = WorkerProc::start(&env, &[]).await;
    let ids = book(&engage, &key, in_secs(30), 10, 600, false).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut conn = redis.conn().await;
    harness::config_set(&mut conn, "maxmemory-policy", "noeviction").await;
    harness::config_set(&mut conn, "maxmemory", "1").await;
    // They enter the horizon (at about +20 s) while every write is refused.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        env.indexed(4).await.is_empty(),
        "refused writes indexed something"
    );
    harness::config_set(&mut conn, "maxmemory", "0").await;
    let n = env.wait_submitted(10, Duration::from_secs(30)).await;
    assert_eq!(n, 10, "worker log:\n{}", w.proc.output());
    let late = worst_lateness_ms(&env).await;
    assert!(late < 3_000, "{late} ms late");
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (ids.len(), ids.len()));
}

/// Before they are loaded: a cancelled callback is never dialled, one moved nearer is indexed
/// by the reschedule and goes at its new time, one moved further goes at its new time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn horizon_cancel_and_reschedule_before_loading() {
    let (env, engage, key, _redis) = setup("hz5", 2).await;
    let w = WorkerProc::start(&env, &[]).await;
    let ids = book(&engage, &key, in_secs(35), 3, 700, false).await;
    let (cancelled, nearer, further) = (&ids[0], &ids[1], &ids[2]);
    assert_eq!(engage.cancel(&key, cancelled).await.0, 200);
    let to = harness::wire(in_secs(6));
    let (code, body) = engage
        .post(&key, RESCHEDULE, json!({"id": nearer, "desiredTime": to}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        env.indexed(4).await.contains(nearer),
        "a reschedule indexes"
    );
    let to = harness::wire(in_secs(45));
    let (code, body) = engage
        .post(&key, RESCHEDULE, json!({"id": further, "desiredTime": to}))
        .await;
    assert_eq!(code, 200, "{body}");
    let n = env.wait_submitted(1, Duration::from_secs(15)).await;
    assert_eq!(n, 1, "worker log:\n{}", w.proc.output());
    let n = env.wait_submitted(2, Duration::from_secs(50)).await;
    assert_eq!(n, 2, "worker log:\n{}", w.proc.output());
    let late = worst_lateness_ms(&env).await;
    assert!(late < 3_000, "{late} ms late");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let handed: Vec<String> = env.census().await.2.into_keys().collect();
    assert!(
        !handed.contains(cancelled),
        "a cancelled callback was dialled"
    );
    assert_eq!(handed.len(), 2, "{handed:?}");
}
