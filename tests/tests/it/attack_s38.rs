//! Attacks on the schedule horizon (e2eb22d, docs/derived-state.md#the-horizon): creates leave
//! callbacks due beyond `REDIS_SCHEDULE_HORIZON_S` out of the index and each worker's horizon
//! loader indexes them as they come within reach. Here: the API and the worker running with
//! different horizons (a rolling upgrade with a worker of the previous release, or a horizon
//! raised on the workers first), the horizon off, the configuration's refusals, keyed creates
//! and their replays, a shard-count change, several workers with one killed, and the idle
//! command budget with callbacks booked far ahead.

use std::time::{Duration, Instant};

use harness::{Engage, Fixture, PrivateRedis, Proc, TestEnv, WorkerProc};
use serde_json::json;

use crate::horizon::{book, horizon_env, in_secs, on_time_once, setup, worst_lateness_ms};

/// GUARD (a known limit, docs/derived-state.md#the-horizon "Changing the horizon"). The API
/// leaves out a callback due at least its own horizon + 10 s ahead; a worker whose horizon is
/// longer (60 s here against the API's 10 s: the horizon raised on the workers before the API
/// replicas) has already swept that time with its loader's window before the create
/// committed, and never lists it again (its next windows start where the last one ended). The
/// callback then waits for the overdue sweep: late by up to `WORKER_SWEEP_GRACE_S` +
/// `WORKER_SWEEP_S` (20 + 2 s here; measured 21.1 s, `engage_index_loaded_total` 0, all 5
/// re-indexed by the sweep), never lost, never twice. Hence the rule: raise the horizon on the
/// API replicas first, lower it on the workers first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_worker_horizon_longer_than_the_apis_is_late_not_lost() {
    let (env, engage, key, _redis) = setup("s38a", 20).await;
    let w = WorkerProc::start(&env, &[("REDIS_SCHEDULE_HORIZON_S", "60".to_string())]).await;
    // Its first loader pass (at start) covers up to +60 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids = book(&engage, &key, in_secs(30), 5, 100, false).await;
    let indexed = env.indexed(4).await;
    assert!(
        ids.iter().all(|id| !indexed.contains(id)),
        "beyond the API's horizon: not indexed at create"
    );
    late_not_lost(&env, &w, "s38a").await;
}

/// Waits for the 5 hand-offs of a late-not-lost guard: none later than the overdue sweep's
/// bound (grace 20 s + round 2 s + a pass), each exactly once.
async fn late_not_lost(env: &TestEnv, w: &WorkerProc, label: &str) {
    let n = env.wait_submitted(5, Duration::from_secs(60)).await;
    assert_eq!(n, 5, "worker log:\n{}", w.proc.output());
    let late = worst_lateness_ms(env).await;
    let loaded = w.metric("engage_index_loaded_total").await;
    let repaired = w.metric("engage_index_repaired_total").await;
    println!("FIGURE {label} late_ms={late} loaded={loaded} repaired_by_sweep={repaired}");
    assert!(late < 25_000, "{late} ms late: beyond the sweep's bound");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (5, 5), "each exactly once");
}

/// GUARD (what happens, as docs/SCALING.md "Upgrading: workers first" now says). A rolling
/// upgrade in the wrong order: the API replicas run the horizon (on by default), the workers
/// are still of the previous release, without a loader (modelled by a worker with
/// `REDIS_SCHEDULE_HORIZON_S=0`, whose loader does nothing and whose rebuild lists
/// everything, as before). Every callback the new API leaves out and that comes due before a
/// new worker starts waits for the overdue sweep: late by up to `WORKER_SWEEP_GRACE_S` +
/// `WORKER_SWEEP_S` (20 + 2 s here; measured 21.1 s), never lost, never twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_api_horizon_with_a_worker_without_loader_is_late_not_lost() {
    let (env, engage, key, _redis) = setup("s38b", 20).await;
    let w = WorkerProc::start(&env, &[("REDIS_SCHEDULE_HORIZON_S", "0".to_string())]).await;
    let ids = book(&engage, &key, in_secs(25), 5, 200, false).await;
    let indexed = env.indexed(4).await;
    assert!(ids.iter().all(|id| !indexed.contains(id)));
    late_not_lost(&env, &w, "s38b").await;
}

/// GUARD. The safe direction of a horizon mismatch (an API replica's horizon longer than the
/// worker's: the horizon raised on the API replicas first, or lowered on the workers first):
/// the worker's loader reaches every callback the API left out after its commit, on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_api_horizon_longer_than_the_workers_is_on_time() {
    let (env, engage, key, _redis) = setup("s38h", 20).await;
    let env = env.with("REDIS_SCHEDULE_HORIZON_S", "30");
    let engage30 = Engage::start(&env, &[]).await;
    let w = WorkerProc::start(&env, &[("REDIS_SCHEDULE_HORIZON_S", "10".to_string())]).await;
    let ids = book(&engage30, &key, in_secs(44), 5, 800, false).await;
    let indexed = env.indexed(4).await;
    assert!(
        ids.iter().all(|id| !indexed.contains(id)),
        "beyond 30 + 10 s"
    );
    let n = env.wait_submitted(5, Duration::from_secs(70)).await;
    assert_eq!(n, 5, "worker log:\n{}", w.proc.output());
    let late = worst_lateness_ms(&env).await;
    assert!(late < 3_000, "{late} ms late");
    assert_eq!(w.metric("engage_index_repaired_total").await, 0.0);
    drop(engage);
}

/// GUARD. `REDIS_SCHEDULE_HORIZON_S=0` behaves as before the horizon: a create far ahead is
/// indexed at once (plain and keyed), and after a `FLUSHALL` the rebuild puts it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_horizon_off_indexes_everything() {
    let (env, engage, key, redis) = setup("s38c", 2).await;
    let env = env.with("REDIS_SCHEDULE_HORIZON_S", "0");
    // The server read the 10 s horizon; this test needs one with it off.
    let engage_off = Engage::start(&env, &[]).await;
    let mut ids = book(&engage_off, &key, in_secs(3_600), 3, 300, false).await;
    ids.extend(book(&engage_off, &key, in_secs(7_200), 3, 310, true).await);
    let indexed = env.indexed(4).await;
    assert!(
        ids.iter().all(|id| indexed.contains(id)),
        "horizon off: everything indexed at create"
    );
    let w = WorkerProc::start(&env, &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut redis.conn().await)
        .await
        .expect("flushall");
    let started = Instant::now();
    loop {
        let indexed = env.indexed(4).await;
        if ids.iter().all(|id| indexed.contains(id)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not rebuilt with the horizon off: {}",
            w.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(engage);
}

/// Starts `bin` with `extra` and returns its exit status and output (panics if it runs on).
async fn refused(env: &TestEnv, bin: &str, args: &[&str], extra: &[(&str, &str)]) -> String {
    let vars: Vec<(&str, String)> = extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let mut p = Proc::spawn(env, bin, args, &vars);
    let status = p.wait_exit(Duration::from_secs(20)).await;
    let out = p.output();
    assert!(!status.success(), "{bin} {extra:?} started: {out}");
    out
}

/// GUARD. The configuration refuses a horizon shorter than two sweep rounds or outside
/// 10 s .. 7 days, in the worker and in the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_config_refuses_short_horizons() {
    let env = TestEnv::new();
    for (bin, args) in [("engage-worker", &[][..]), ("engage", &["serve"][..])] {
        let out = refused(
            &env,
            bin,
            args,
            &[("REDIS_SCHEDULE_HORIZON_S", "11"), ("WORKER_SWEEP_S", "6")],
        )
        .await;
        assert!(out.contains("REDIS_SCHEDULE_HORIZON_S"), "{bin}: {out}");
        let out = refused(&env, bin, args, &[("REDIS_SCHEDULE_HORIZON_S", "9")]).await;
        assert!(out.contains("REDIS_SCHEDULE_HORIZON_S"), "{bin}: {out}");
        let out = refused(&env, bin, args, &[("REDIS_SCHEDULE_HORIZON_S", "604801")]).await;
        assert!(out.contains("REDIS_SCHEDULE_HORIZON_S"), "{bin}: {out}");
        let out = refused(&env, bin, args, &[("REDIS_SCHEDULE_HORIZON_S", "-1")]).await;
        assert!(out.contains("REDIS_SCHEDULE_HORIZON_S"), "{bin}: {out}");
    }
    // Exactly two rounds, and 0, are accepted.
    let ok = [("REDIS_SCHEDULE_HORIZON_S", "12"), ("WORKER_SWEEP_S", "6")];
    let ok: Vec<(&str, String)> = ok.iter().map(|(k, v)| (*k, v.to_string())).collect();
    drop(WorkerProc::start(&env, &ok).await);
    drop(WorkerProc::start(&env, &[("REDIS_SCHEDULE_HORIZON_S", "0".to_string())]).await);
}

/// GUARD. Keyed creates (the commit.rs path) far ahead, replayed with the same key before they
/// are loaded: left out at create, never duplicated by the replay, loaded and dispatched once
/// on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_keyed_creates_and_replays_beyond_the_horizon() {
    let (env, engage, key, _redis) = setup("s38e", 2).await;
    let w = WorkerProc::start(&env, &[]).await;
    let at = in_secs(30);
    let ids = book(&engage, &key, at, 5, 500, true).await;
    let again = book(&engage, &key, at, 5, 500, true).await;
    assert_eq!(ids, again, "replays name the same callbacks");
    let indexed = env.indexed(4).await;
    assert!(ids.iter().all(|id| !indexed.contains(id)));
    let n = env.wait_submitted(5, Duration::from_secs(60)).await;
    assert_eq!(n, 5, "worker log:\n{}", w.proc.output());
    let late = worst_lateness_ms(&env).await;
    assert!(late < 3_000, "{late} ms late");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (5, 5));
}

/// GUARD. A shard-count change (docs/SCALING.md#changing-the-shard-count, step 1): the API
/// still on 4 shards, the worker on 8 draining 4. Near callbacks sit in the 4-shard layout,
/// the far ones are loaded into the 8-shard one; each is handed off once, on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_shard_change_with_the_horizon() {
    let (env, engage, key, _redis) = setup("s38f", 2).await;
    let near = book(&engage, &key, in_secs(12), 5, 600, false).await;
    let far = book(&engage, &key, in_secs(30), 10, 610, false).await;
    let w = WorkerProc::start(
        &env,
        &[
            ("REDIS_SCHEDULE_SHARDS", "8".to_string()),
            ("REDIS_SCHEDULE_SHARDS_OLD", "4".to_string()),
        ],
    )
    .await;
    let n = env.wait_submitted(15, Duration::from_secs(60)).await;
    assert_eq!(n, 15, "worker log:\n{}", w.proc.output());
    on_time_once(&env, 15).await;
    let _ = (near, far);
}

/// GUARD. Two workers load the same windows; one is killed (SIGKILL) while the callbacks come
/// within the horizon and another starts later: every callback once, on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_two_workers_one_killed_mid_way() {
    let (env, engage, key, _redis) = setup("s38g", 2).await;
    let mut w1 = WorkerProc::start(&env, &[]).await;
    let w2 = WorkerProc::start(&env, &[]).await;
    let a = book(&engage, &key, in_secs(24), 10, 700, false).await;
    let b = book(&engage, &key, in_secs(34), 10, 720, false).await;
    tokio::time::sleep(Duration::from_secs(13)).await;
    w1.proc.kill();
    let w3 = WorkerProc::start(&env, &[]).await;
    let n = env.wait_submitted(20, Duration::from_secs(60)).await;
    assert_eq!(
        n,
        20,
        "w2:\n{}\nw3:\n{}",
        w2.proc.output(),
        w3.proc.output()
    );
    on_time_once(&env, 20).await;
    let _ = (a, b);
}

/// GUARD. The idle budget with the horizon on and callbacks booked far beyond it: the loader
/// reads PostgreSQL each round and sends Redis nothing; the worker's idle commands stay as
/// few as without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_idle_budget_with_far_bookings() {
    let redis = PrivateRedis::new(false);
    let env = horizon_env(&redis, 2);
    env.engage_cli(&["migrate"]);
    env.pg()
        .await
        .execute(
            "INSERT INTO callbacks (id, tenant_id, service, state, phone_number, desired_time, dispatch_at, scheduled)
             SELECT gen_random_uuid(), 'idle', 'svc', 'SCHEDULED', '+15550100000',
                    now() + make_interval(secs => 3600 + g), now() + make_interval(secs => 3600 + g), true
             FROM generate_series(1, 2000) g",
            &[],
        )
        .await
        .expect("insert");
    let w = WorkerProc::start(&env, &[]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(env.indexed(4).await.is_empty(), "beyond the horizon");
    let mut conn = redis.conn().await;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await
        .expect("resetstat");
    tokio::time::sleep(Duration::from_secs(20)).await;
    let stats = harness::commandstats(&mut conn).await;
    let seen: Vec<String> = stats
        .iter()
        .filter(|(n, _)| !n.starts_with("config") && n != "ping")
        .map(|(n, c)| format!("{n}={c}"))
        .collect();
    let calls: u64 = stats
        .iter()
        .filter(|(n, _)| !n.starts_with("config") && n != "ping")
        .map(|(_, c)| c)
        .sum();
    println!("FIGURE s38 idle_redis_commands_20s={calls} {seen:?}");
    assert!(
        calls < 10,
        "idle worker issued {calls} commands: {seen:?}\n{}",
        w.proc.output()
    );
}

/// GUARD. Keyed creates due beyond the horizon answered 503 while their `COMMIT` is held
/// (request timeout 1 s), with replays of the same key racing their withdrawal (before and
/// just after the `COMMIT` is let go): whatever the race gives (the first callback kept by a
/// replay and indexed or left to the loader by `withdraw`, or withdrawn and created anew), the
/// callback every 200 names is handed off once, on time, and a withdrawn one never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_503_keyed_far_creates_racing_replays() {
    let redis = PrivateRedis::new(false);
    let env = horizon_env(&redis, 2).with("REQUEST_TIMEOUT_MS", "1000");
    let (env, engage, key) = Fixture::dispatch(env, "s38i", "svc", json!({}))
        .await
        .parts();
    let pg = env.pg().await;
    let lock: i64 = 0x5a38_0000 + i64::from(uuid::Uuid::new_v4().as_bytes()[0]);
    crate::attack_s34_client_gone::slow_commits_of(&pg, "+1555038%", lock).await;
    let w = WorkerProc::start(&env, &[]).await;
    let at = in_secs(32);
    let mut named = std::collections::BTreeSet::new();
    for (i, delay_ms) in [-200i64, 0, 5, 30].into_iter().enumerate() {
        let phone = format!("+1555038{i:04}");
        let idem = format!("s38i-{i}");
        let create = || {
            engage
                .create(&key)
                .service("svc")
                .phone(&phone)
                .idempotency_key(&idem)
                .field("desiredTime", json!(harness::wire(at)))
                .send()
        };
        pg.execute("SELECT pg_advisory_lock($1)", &[&lock])
            .await
            .expect("hold");
        let first = create().await;
        assert_eq!(first.0, 503, "the held create answered: {}", first.1);
        let replays = async {
            tokio::time::sleep(Duration::from_millis(delay_ms.max(0).unsigned_abs())).await;
            futures::future::join_all((0..3).map(|_| create())).await
        };
        let unlock = async {
            tokio::time::sleep(Duration::from_millis(delay_ms.min(0).unsigned_abs())).await;
            pg.execute("SELECT pg_advisory_unlock($1)", &[&lock]).await
        };
        let (_, answers) = tokio::join!(unlock, replays);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rows = crate::attack_s34_client_gone::all_rows(&pg, &phone).await;
        let indexed = env.indexed(4).await;
        let first_indexed = answers
            .iter()
            .filter_map(|(_, b)| b["data"]["id"].as_str())
            .any(|id| indexed.contains(&id.to_string()));
        println!("FIGURE s38i delay_ms={delay_ms} rows={rows:?} named_indexed={first_indexed}");
        for (code, body) in answers {
            assert_eq!(code, 200, "{body}");
            named.insert(body["data"]["id"].as_str().expect("id").to_string());
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let active = env
        .count("SELECT count(*) FROM callbacks WHERE state <> 'COMPLETED'")
        .await;
    assert_eq!(
        active as usize,
        named.len(),
        "one active callback per number"
    );
    let n = env
        .wait_submitted(named.len() as i64, Duration::from_secs(60))
        .await;
    assert_eq!(n as usize, named.len(), "worker log:\n{}", w.proc.output());
    let late = worst_lateness_ms(&env).await;
    assert!(late < 3_000, "{late} ms late");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (total, distinct, per) = env.census().await;
    assert_eq!((total, distinct), (named.len(), named.len()), "{per:?}");
    assert!(
        per.keys().all(|id| named.contains(id)),
        "{per:?} vs {named:?}"
    );
}

/// GUARD. On a Redis cluster (8 shards over 3 primaries): callbacks beyond the horizon are
/// loaded through the cluster (one script per shard, its wake channel announced) and handed
/// off once, on time, beside near ones indexed at create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_cluster_loads_far_callbacks_on_time() {
    let env = TestEnv::new()
        .with("REDIS_URL", harness::cluster())
        .with("REDIS_CLUSTER", "true")
        .with("REDIS_SCHEDULE_SHARDS", "8")
        .with("REDIS_SCHEDULE_HORIZON_S", "10")
        .with("WORKER_SWEEP_S", "2")
        .with("WORKER_SWEEP_GRACE_S", "2");
    let (env, engage, key) = Fixture::dispatch(env, "s38j", "svc", json!({}))
        .await
        .parts();
    let w = WorkerProc::start(&env, &[]).await;
    let near = book(&engage, &key, in_secs(12), 4, 900, false).await;
    let far = book(&engage, &key, in_secs(30), 16, 910, false).await;
    let n = env.wait_submitted(20, Duration::from_secs(60)).await;
    assert_eq!(n, 20, "worker log:\n{}", w.proc.output());
    let late = worst_lateness_ms(&env).await;
    assert!(late < 3_000, "{late} ms late");
    assert!(w.metric("engage_index_loaded_total").await >= 16.0);
    assert_eq!(w.metric("engage_index_repaired_total").await, 0.0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (20, 20), "each exactly once");
    let _ = (near, far);
}

/// GUARD. A paced service (1 per second): eight callbacks loaded by the horizon loader at the
/// same due time are handed back to the schedule at later scores by pacing (their stored
/// `dispatch_at` stays in the past); neither the loader (its window has moved on) nor the
/// overdue sweep (they are indexed) adds them again: each goes once, at its pacing slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_paced_far_callbacks_go_once_at_their_slots() {
    let redis = PrivateRedis::new(false);
    let env = horizon_env(&redis, 2);
    let pace = json!({ "dispatch_rate_per_second": 1 });
    let (env, engage, key) = Fixture::dispatch(env, "s38k", "svc", pace).await.parts();
    let w = WorkerProc::start(&env, &[]).await;
    let ids = book(&engage, &key, in_secs(28), 8, 950, false).await;
    assert!(env.indexed(4).await.is_empty());
    let n = env.wait_submitted(8, Duration::from_secs(60)).await;
    assert_eq!(n, 8, "worker log:\n{}", w.proc.output());
    let late = worst_lateness_ms(&env).await;
    println!("FIGURE s38k paced late_ms={late}");
    assert!(late < 11_000, "{late} ms late for 8 at 1/s");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (8, 8), "each exactly once");
    assert_eq!(w.metric("engage_index_repaired_total").await, 0.0);
    let _ = ids;
}

/// GUARD. Step 1 of a shard-count change half done: one worker on 8 shards draining 4, one
/// still on 4, the API on 4. Each worker's loader indexes every far callback into its own
/// layout, so each is held twice and claimed by both workers at the same time; the second
/// claim must find it no longer pending or recorded: each handed off once, on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_loaders_of_two_layouts_hand_off_once() {
    let (env, engage, key, _redis) = setup("s38l", 2).await;
    let a = WorkerProc::start(
        &env,
        &[
            ("REDIS_SCHEDULE_SHARDS", "8".to_string()),
            ("REDIS_SCHEDULE_SHARDS_OLD", "4".to_string()),
        ],
    )
    .await;
    let b = WorkerProc::start(&env, &[]).await;
    let ids = book(&engage, &key, in_secs(26), 40, 1000, false).await;
    let started = Instant::now();
    loop {
        let held = env.indexed(8).await;
        let twice = ids
            .iter()
            .filter(|id| held.iter().filter(|h| h == id).count() == 2)
            .count();
        if twice > 0 {
            println!("FIGURE s38l held_in_both_layouts={twice} of {}", ids.len());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never held twice"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let n = env.wait_submitted(40, Duration::from_secs(60)).await;
    assert_eq!(n, 40, "a:\n{}\nb:\n{}", a.proc.output(), b.proc.output());
    let late = worst_lateness_ms(&env).await;
    assert!(late < 3_000, "{late} ms late");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (total, distinct, per) = env.census().await;
    let twice: Vec<_> = per.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!((total, distinct), (40, 40), "handed off twice: {twice:?}");
}

/// libfaketime's preload library (Debian package `faketime`), as the chaos stack uses it.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// GUARD. The API host's wall clock 5 minutes behind and 15 s ahead of PostgreSQL's
/// (its monotonic clock true): whether a create leaves a callback out is decided on the
/// database's clock and the monotonic one only, so far callbacks created through either
/// server are loaded and handed off once, on time (by their stored `dispatch_at`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_api_wall_clock_skew_does_not_move_the_decision() {
    assert!(
        std::path::Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} missing: apt-get install faketime (infra/local/deps.sh does)"
    );
    let (env, engage, key, _redis) = setup("s38m", 2).await;
    let skewed = |skew: &str| {
        env.clone()
            .with("LD_PRELOAD", FAKETIME_LIB)
            .with("FAKETIME", skew)
            .with("FAKETIME_DONT_FAKE_MONOTONIC", "1")
    };
    let behind = Engage::start(&skewed("-300"), &[]).await;
    // Further ahead, `desiredTime` 30 s out looks past to it (400, the API's own check).
    let ahead = Engage::start(&skewed("+15"), &[]).await;
    let w = WorkerProc::start(&env, &[]).await;
    let at = in_secs(30);
    let mut ids = book(&behind, &key, at, 4, 1100, false).await;
    ids.extend(book(&behind, &key, at, 2, 1110, true).await);
    ids.extend(book(&ahead, &key, at, 4, 1120, false).await);
    ids.extend(book(&ahead, &key, at, 2, 1130, true).await);
    let indexed = env.indexed(4).await;
    let early: Vec<_> = ids.iter().filter(|id| indexed.contains(id)).collect();
    println!("FIGURE s38m indexed_at_create={}", early.len());
    let n = env.wait_submitted(12, Duration::from_secs(60)).await;
    assert_eq!(n, 12, "worker log:\n{}", w.proc.output());
    let late = worst_lateness_ms(&env).await;
    let first = env
        .count(
            "SELECT (extract(epoch FROM min(submitted_at) - min(desired_time)) * 1000)::bigint
             FROM callbacks",
        )
        .await;
    println!("FIGURE s38m late_ms={late} first_handoff_vs_desired_ms={first}");
    assert!(late < 3_000, "{late} ms late");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (12, 12));
    drop(engage);
}

/// GUARD. Step 3 of shrinking the shard count from 8 to 4 (docs/SCALING.md): an API replica
/// still on 8 indexed near callbacks (due in 19 s, inside horizon + margin) into shards 4-7,
/// which a worker on 4 without `REDIS_SCHEDULE_SHARDS_OLD` never reads; that worker starts
/// at once, so they are beyond its start-up rebuild's window (now + 10 s): only its loader
/// puts them into its own layout, in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_shrunk_shards_beyond_the_rebuild_window_are_loaded() {
    let (env, engage, key, _redis) = setup("s38n", 2).await;
    let env8 = env.clone().with("REDIS_SCHEDULE_SHARDS", "8");
    let engage8 = Engage::start(&env8, &[]).await;
    let ids = book(&engage8, &key, in_secs(19), 16, 1200, false).await;
    let mut redis = env.redis().await;
    let mut stranded = 0usize;
    for shard in 4..8 {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("{{{}:sched:{shard}}}", env.id))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await
            .expect("ZRANGE");
        stranded += members.len();
    }
    assert!(stranded > 0, "none in shards 4-7: pick other ids");
    let w = WorkerProc::start(&env, &[]).await;
    println!("FIGURE s38n ids={} in_shards_4_to_7={stranded}", ids.len());
    let n = env.wait_submitted(16, Duration::from_secs(45)).await;
    assert_eq!(n, 16, "worker log:\n{}", w.proc.output());
    let late = worst_lateness_ms(&env).await;
    assert!(late < 3_000, "{late} ms late");
    assert_eq!(w.metric("engage_index_repaired_total").await, 0.0);
    drop(engage);
}

/// GUARD (helper-66's findings 1 and 2 on 01ca176, the shorter throttle names). The throttle
/// hash after an upgrade from the 36-character field names: a re-seed reads both spellings of
/// one callback as one callback. An old live field keeps its admission time and `|d` under
/// the new name (its windows do not move to PostgreSQL's earlier time), and a live spelling
/// wins over an emptied one (a withdrawal and a readmission by replicas of two releases), so
/// the count never goes low: strict still refuses the number's second callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s38_guard_old_throttle_names_count_once_after_a_reseed() {
    use super::attack_s28_windows::{act, env, hset, number};
    use super::attack_s28d_windows::hget;
    let env = env();
    let e = Engage::start(&env, &[]).await;
    let settings = json!({"throttle_per_service_1": 0, "throttle_per_service_2": 0,
        "throttle_per_number_24h": 6, "in_queue_checking": "strict", "max_queued": 0});
    let key = e.provision("acme", "s", settings).await;
    let create = |n: usize| e.create(&key).service("s").phone(&number(n)).id();
    let (x, y) = (create(1).await, create(2).await);
    let field = |id: &str| harness::throttle_field(id);
    let vx = hget(&env, "s", &field(&x)).await.expect("x counted");
    let vy = hget(&env, "s", &field(&y)).await.expect("y counted");
    assert!(
        vx.ends_with("|d"),
        "an immediate admission in the 24 h list: {vx}"
    );
    // X was admitted by a replica of the former release; Y was counted again under the old
    // name after a give-back under the new one.
    let mut redis = env.redis().await;
    let _: i64 = redis::cmd("HDEL")
        .arg(act(&env, "s"))
        .arg(field(&x))
        .query_async(&mut redis)
        .await
        .expect("HDEL");
    hset(&env, "s", &format!("i:{x}"), &vx).await;
    hset(&env, "s", &format!("i:{y}"), &vy).await;
    hset(&env, "s", &field(&y), "").await;
    hset(&env, "s", "~seed", "0").await;
    let (code, body) = e.create(&key).service("s").phone(&number(3)).send().await;
    assert_eq!(code, 200, "the re-seeding create: {body}");
    assert_eq!(
        hget(&env, "s", &field(&x)).await,
        Some(vx),
        "x keeps its admission"
    );
    assert_eq!(hget(&env, "s", &field(&y)).await, Some(vy), "y counted");
    for old in [&x, &y] {
        assert_eq!(
            hget(&env, "s", &format!("i:{old}")).await,
            None,
            "old name left"
        );
    }
    assert_eq!(hget(&env, "s", "~count").await.as_deref(), Some("3"));
    let (code, body) = e.create(&key).service("s").phone(&number(2)).send().await;
    assert_eq!(code, 429, "strict lets y's number in twice: {body}");
}
