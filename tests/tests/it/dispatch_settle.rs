//! The dispatcher settles every claim of a pass once, at its end (`worker/src/settle.rs`):
//! each claimed id is released, handed back to the schedule, or kept in flight for its lease.
//! These tests fail a pass between the hand-off to the voice stream and that settlement and
//! check that no claim is lost (every unrecorded callback stays indexed or in flight) and none
//! is doubled (one stream entry, one recorded submission per callback).
//!
//! The sweep, which would re-index a lost claim after its grace, is pushed out of the test's
//! window (`WORKER_SWEEP_S` 40 s), so only the settlement itself can keep a claim.

use std::time::{Duration, Instant};

use harness::{Engage, Fixture, PrivateRedis, TestEnv, WorkerProc};
use serde_json::json;

/// Worker settings of these tests: one shard, sweep out of the window, a short lease.
fn worker_vars(lease_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("WORKER_SWEEP_S", "40".to_string()),
        ("WORKER_SWEEP_GRACE_S", "10".to_string()),
        ("WORKER_LEASE_MS", lease_ms.to_string()),
    ]
}

/// Starts a worker whose `DB_LOCK_TIMEOUT_MS` is `lock_ms`. A short lock timeout also bounds
/// the wait for the migration advisory lock at start, which another test's process may hold
/// for longer: a worker that exited on that is started again.
async fn start_worker(env: &TestEnv, lock_ms: u64, lease_ms: u64) -> WorkerProc {
    let mut vars = worker_vars(lease_ms);
    vars.push(("DB_LOCK_TIMEOUT_MS", lock_ms.to_string()));
    for _ in 0..10 {
        let port = harness::free_port();
        let mut with_port = vars.clone();
        with_port.push(("WORKER_PORT", port.to_string()));
        let mut proc = harness::Proc::spawn(env, "engage-worker", &[], &with_port);
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if proc.child.try_wait().ok().flatten().is_some() {
                break; // exited (lock timeout in the migration): start again
            }
            if reqwest::get(format!("{url}/health"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return WorkerProc { proc, url };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("worker did not start; again: {}", proc.output());
        proc.kill();
    }
    panic!("the worker did not start");
}

/// Creates `n` callbacks due `secs` from now; returns their ids.
async fn create_due_in(engage: &Engage, key: &str, n: usize, secs: i64) -> Vec<String> {
    let due = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs);
    let mut ids = Vec::new();
    for i in 0..n {
        let create = engage
            .create(key)
            .service("s")
            .phone(&format!("+1555{i:07}"));
        ids.push(create.at(&harness::wire(due)).id().await);
    }
    ids
}

/// Where one callback is: (row recorded as submitted, in the schedule, in flight).
async fn whereabouts(
    env: &TestEnv,
    redis: &mut redis::aio::MultiplexedConnection,
    id: &str,
) -> (bool, bool, bool) {
    let submitted: bool = env
        .pg()
        .await
        .query_one(
            "SELECT submitted_at IS NOT NULL FROM callbacks WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("row")
        .get(0);
    let sched = format!("{{{}:sched:0}}", env.id);
    let score = |key: String| {
        let mut c = redis.clone();
        async move {
            redis::cmd("ZSCORE")
                .arg(key)
                .arg(id)
                .query_async::<Option<f64>>(&mut c)
                .await
                .expect("zscore")
                .is_some()
        }
    };
    let in_sched = score(sched.clone()).await;
    let in_flight = score(format!("{sched}:inflight")).await;
    (submitted, in_sched, in_flight)
}

/// Waits until the worker's log has more than `seen` lines containing `text`.
async fn wait_log(w: &WorkerProc, text: &str, seen: usize, within: Duration) {
    let started = Instant::now();
    while w.proc.output().matches(text).count() <= seen {
        assert!(
            started.elapsed() < within,
            "no {text:?} in the worker log:\n{}",
            w.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The worker's first "dispatch pass failed" log line.
fn failed_line(w: &WorkerProc) -> String {
    let out = w.proc.output();
    out.lines()
        .find(|l| l.contains("dispatch pass failed"))
        .unwrap_or_default()
        .to_string()
}

/// Waits until one of `ids` is in the voice stream.
async fn wait_in_stream(env: &TestEnv, ids: &[String], within: Duration) {
    let started = Instant::now();
    loop {
        let (_, _, per) = env.census().await;
        if ids.iter().any(|id| per.contains_key(id)) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "nothing reached the voice stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every id is recorded as submitted and gone from the schedule and in-flight
/// sets; panics with their whereabouts after `within`.
async fn wait_settled(
    env: &TestEnv,
    redis: &mut redis::aio::MultiplexedConnection,
    ids: &[String],
    within: Duration,
) {
    let started = Instant::now();
    loop {
        let mut all = Vec::new();
        for id in ids {
            all.push(whereabouts(env, redis, id).await);
        }
        if all.iter().all(|w| *w == (true, false, false)) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "not settled after {within:?}: (submitted, scheduled, in flight) = {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One stream entry and one SUBMITTED event per callback.
async fn assert_once(env: &TestEnv, ids: &[String]) {
    let (total, distinct, per) = env.census().await;
    assert_eq!((total, distinct), (ids.len(), ids.len()), "stream: {per:?}");
    let events: i64 = env
        .pg()
        .await
        .query_one(
            "SELECT count(*) FROM callback_events WHERE reason = 'SUBMITTED'",
            &[],
        )
        .await
        .expect("events")
        .get(0);
    assert_eq!(events, ids.len() as i64, "one recorded submission each");
}

/// A pass that handed a callback to the voice stream but could not record it (its row is
/// locked past `DB_LOCK_TIMEOUT_MS`, four times) must keep the claim in flight: not release it
/// (lost until the sweep) and not hand it back. When its lease runs out the re-claim finds the
/// dedupe key and records it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_settle_a_handoff_that_cannot_be_recorded_keeps_its_claim() {
    let env = TestEnv::new().with("REDIS_SCHEDULE_SHARDS", "1");
    let (env, engage, key) = Fixture::dispatch(env, "settle1", "s", json!({}))
        .await
        .parts();
    let lease_ms = 6_000;
    let w = start_worker(&env, 200, lease_ms).await;
    let ids = create_due_in(&engage, &key, 1, 3).await;

    // Hold the row so the pass cannot record the hand-off.
    let mut pg = env.pg().await;
    let tx = pg.transaction().await.expect("begin");
    tx.execute(
        "SELECT 1 FROM callbacks WHERE id = $1::text::uuid FOR UPDATE",
        &[&ids[0]],
    )
    .await
    .expect("lock");
    wait_in_stream(&env, &ids, Duration::from_secs(10)).await;
    wait_log(&w, "dispatch pass failed", 0, Duration::from_secs(10)).await;
    assert!(
        failed_line(&w).contains("database"),
        "the pass must fail at recording: {}",
        failed_line(&w)
    );

    let mut redis = env.redis().await;
    let state = whereabouts(&env, &mut redis, &ids[0]).await;
    assert_eq!(
        state,
        (false, false, true),
        "handed off but not recorded: the claim must stay in flight (submitted, scheduled, in flight)"
    );
    tx.commit().await.expect("unlock");

    // Re-claimed when the lease runs out (well before the sweep could repair a lost claim).
    wait_settled(
        &env,
        &mut redis,
        &ids,
        Duration::from_millis(lease_ms + 6_000),
    )
    .await;
    assert_once(&env, &ids).await;
}

/// A pass whose settlement the service Redis refuses (it stopped accepting writes after the
/// hand-off: `min-replicas-to-write` on a private Redis) loses nothing: the submitted claim and
/// the paced ones stay in flight, and once Redis accepts writes again every callback reaches
/// the stream once and every claim is settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_settle_a_refused_settlement_loses_and_doubles_nothing() {
    let private = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &private.url())
        .with("REDIS_SCHEDULE_SHARDS", "1");
    let paced = json!({"dispatch_rate_per_second": 1});
    let (env, engage, key) = Fixture::dispatch(env, "settle2", "s", paced).await.parts();
    let lease_ms = 4_000;
    let w = WorkerProc::start(&env, &worker_vars(lease_ms)).await;
    let ids = create_due_in(&engage, &key, 3, 3).await;

    // Hold the rows so the pass stops between the hand-off and the record.
    let mut pg = env.pg().await;
    let tx = pg.transaction().await.expect("begin");
    tx.execute(
        "SELECT 1 FROM callbacks WHERE id = ANY($1::text[]::uuid[]) FOR UPDATE",
        &[&ids],
    )
    .await
    .expect("lock");
    wait_in_stream(&env, &ids, Duration::from_secs(10)).await;
    let mut admin = private.conn().await;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-to-write")
        .arg("1")
        .query_async::<()>(&mut admin)
        .await
        .expect("refuse writes");
    tx.commit().await.expect("unlock");
    wait_log(&w, "dispatch pass failed", 0, Duration::from_secs(10)).await;
    assert!(
        failed_line(&w).contains("NOREPLICAS"),
        "the pass must fail at settling: {}",
        failed_line(&w)
    );

    // Nothing is lost while Redis refuses writes: each callback is recorded, scheduled or
    // in flight.
    let mut redis = env.redis().await;
    for id in &ids {
        let (submitted, scheduled, in_flight) = whereabouts(&env, &mut redis, id).await;
        eprintln!("{id}: recorded {submitted}, scheduled {scheduled}, in flight {in_flight}");
        assert!(
            submitted || scheduled || in_flight,
            "{id} is lost: recorded {submitted}, scheduled {scheduled}, in flight {in_flight}"
        );
    }
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-to-write")
        .arg("0")
        .query_async::<()>(&mut admin)
        .await
        .expect("accept writes");

    wait_settled(
        &env,
        &mut redis,
        &ids,
        Duration::from_millis(lease_ms + 8_000),
    )
    .await;
    assert_once(&env, &ids).await;
}
