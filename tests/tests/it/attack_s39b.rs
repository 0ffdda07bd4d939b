//! Attacks on claims that know the leases (commit 23a7bb2, worker/src/claim.rs `Known`,
//! worker/src/dispatch.rs `Shards::known`, docs/derived-state.md#claims-that-know-the-leases):
//! a claim skips the read of the shard's in-flight head while the worker's bound of the lease
//! deadlines (its last read, trusted for 4 leases, and every lease announcement heard since)
//! is in the future by Redis's clock. The promises attacked: with no message loss a dead or
//! frozen worker's claim is taken over right after its lease runs out, as before; with lost
//! announcements at most 4 leases late, and an overdue callback at most about
//! `WORKER_SWEEP_GRACE_S` + `WORKER_SWEEP_S` late; never a callback lost or handed off twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{Fixture, PrivateRedis, TestEnv, WorkerProc};
use redis::aio::ConnectionLike;
use serde_json::json;
use shared::redis::Keys;
use tokio::sync::Notify;

const LEASE_MS: i64 = 1_500;

/// Redis time (ms).
async fn redis_ms<C: ConnectionLike + Send>(conn: &mut C) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(conn).await.expect("TIME");
    s * 1000 + us / 1000
}

/// Every shard's in-flight entries (member → score).
async fn inflight<C: ConnectionLike + Send>(conn: &mut C, keys: &Keys) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for shard in 0..keys.shards() {
        let raw: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(keys.inflight(shard))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(conn)
            .await
            .expect("ZRANGE inflight");
        out.extend(raw.into_iter().map(|(m, s)| (m, s as i64)));
    }
    out
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Creates an immediate callback every `every` until `stop` fires; the ids created.
fn creator(
    fx: Arc<Fixture>,
    every: Duration,
    stop: Arc<Notify>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut ids = Vec::new();
        loop {
            let (code, resp) = fx.create().immediate().send().await;
            assert_eq!(code, 200, "{resp}");
            ids.push(resp["data"]["id"].as_str().expect("id").to_string());
            tokio::select! {
                () = stop.notified() => return ids,
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// An environment on a private service Redis with one schedule shard.
async fn setup(tenant: &str, extra: &[(&str, &str)]) -> (PrivateRedis, Arc<Fixture>, Keys) {
    let redis = PrivateRedis::new(false);
    let mut env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("REDIS_SCHEDULE_SHARDS", "1");
    for (k, v) in extra {
        env = env.with(k, v);
    }
    let fx = Fixture::dispatch(env, tenant, "svc", json!({})).await;
    let keys = Keys::new(&fx.env.id, 1);
    (redis, Arc::new(fx), keys)
}

/// How a round's holder of a claim goes away.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    /// SIGKILL.
    Killed,
    /// SIGSTOP (connections stay open), and every pub/sub client of the service Redis is
    /// killed (`CLIENT KILL TYPE pubsub`) at the freeze and every 300 ms of its lease.
    FrozenPubsubKilled,
}

/// One round: a worker A whose voice Redis is frozen (its hand-off hangs, holding its claim)
/// runs beside the survivors while immediate callbacks are created every 40 ms; once A holds a
/// claim (an in-flight entry that stays 250 ms), A is killed or frozen. Returns how long after
/// A's lease deadline its claims left the in-flight set (Redis clock), or `None` after 10 s.
async fn round<C: ConnectionLike + Send>(
    fx: &Arc<Fixture>,
    keys: &Keys,
    conn: &mut C,
    fate: Fate,
    created: &Arc<Mutex<Vec<String>>>,
) -> Option<i64> {
    let voice = PrivateRedis::new(false);
    let extra = [
        ("WORKER_LEASE_MS", LEASE_MS.to_string()),
        ("VOICE_REDIS_URL", voice.url()),
        ("REDIS_TIMEOUT_MS", "20000".to_string()),
    ];
    let mut a = WorkerProc::start(&fx.env, &extra).await;
    voice.freeze();
    let stop = Arc::new(Notify::new());
    let making = creator(fx.clone(), Duration::from_millis(40), stop.clone());
    // member → (first seen, score)
    let mut seen: BTreeMap<String, (Instant, i64)> = BTreeMap::new();
    let started = Instant::now();
    let held = loop {
        let now = Instant::now();
        let cur = inflight(conn, keys).await;
        seen.retain(|m, (_, s)| cur.get(m) == Some(s));
        for (m, s) in &cur {
            seen.entry(m.clone()).or_insert((now, *s));
        }
        if let Some((_, (_, score))) = seen
            .iter()
            .find(|(_, (t, _))| now.duration_since(*t) > Duration::from_millis(250))
        {
            let score = *score;
            let victims: BTreeSet<String> = cur
                .iter()
                .filter(|(_, s)| **s == score)
                .map(|(m, _)| m.clone())
                .collect();
            break Some((score, victims));
        }
        if started.elapsed() > Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let Some((deadline, victims)) = held else {
        stop.notify_one();
        let made = making.await.expect("creator");
        created.lock().unwrap().extend(made);
        panic!("worker A never held a claim\n{}", a.proc.output());
    };
    let pid = a.proc.child.id();
    match fate {
        Fate::Killed => a.proc.kill(),
        Fate::FrozenPubsubKilled => signal(pid, "-STOP"),
    }
    let killed_at = redis_ms(conn).await;
    let started = Instant::now();
    let mut last_kill = Instant::now() - Duration::from_secs(1);
    let taken = loop {
        if fate == Fate::FrozenPubsubKilled && last_kill.elapsed() > Duration::from_millis(300) {
            let _: redis::Value = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(conn)
                .await
                .expect("CLIENT KILL");
            last_kill = Instant::now();
        }
        let cur = inflight(conn, keys).await;
        if victims.iter().all(|v| cur.get(v) != Some(&deadline)) {
            break Some(redis_ms(conn).await);
        }
        if started.elapsed() > Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Survivors stay busy a little longer, then the creates stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.notify_one();
    let made = making.await.expect("creator");
    created.lock().unwrap().extend(made);
    if fate == Fate::FrozenPubsubKilled {
        signal(pid, "-KILL");
    }
    let late = taken.map(|t| t - deadline);
    println!(
        "FIGURE s39b_takeover fate={fate:?} victims={} deadline={deadline} killed_at={killed_at} \
         late_ms={late:?}",
        victims.len()
    );
    drop(a);
    late
}

/// Runs rounds with two busy survivors and checks every create reached the voice stream once.
async fn takeovers<C: ConnectionLike + Send>(
    fx: Arc<Fixture>,
    keys: Keys,
    mut conn: C,
    (fate, n_survivors): (Fate, usize),
) {
    let extra = [("WORKER_LEASE_MS", LEASE_MS.to_string())];
    let mut survivors = Vec::new();
    for _ in 0..n_survivors {
        survivors.push(WorkerProc::start(&fx.env, &extra).await);
    }
    let created = Arc::new(Mutex::new(Vec::new()));
    let mut lates = Vec::new();
    for _ in 0..3 {
        lates.push(round(&fx, &keys, &mut conn, fate, &created).await);
    }
    let n = created.lock().unwrap().len();
    let got = fx
        .env
        .wait_submitted(n as i64, Duration::from_secs(10))
        .await;
    let (total, distinct, per) = fx.env.census().await;
    let dup: Vec<_> = per.iter().filter(|(_, c)| **c > 1).collect();
    println!(
        "FIGURE s39b_takeovers fate={fate:?} survivors={n_survivors} shards={} lates={lates:?} created={n} \
         submitted={got} census={total}/{distinct} dup={dup:?}",
        keys.shards()
    );
    assert!(
        lates.iter().all(|l| l.is_some_and(|l| l < 1_000)),
        "takeover late: {lates:?}\n{}",
        survivors[0].proc.output()
    );
    assert_eq!(got, n as i64, "created {n}, submitted {got}");
    assert_eq!((total, distinct), (n, n), "dup: {dup:?}");
}

/// Guard (docs/derived-state.md#claims-that-know-the-leases: "with no message loss, takeover
/// as before"). One shard, lease 1500 ms, two survivors kept busy by an immediate callback every
/// 40 ms (so their claims of the shard skip the in-flight read on the bound they heard), and a
/// third worker A whose voice Redis is frozen (its hand-off hangs with its claim held). Once A
/// holds a claim for 250 ms it is SIGKILLed; three rounds with a new A each. A's claims must
/// leave the in-flight set right after its lease deadline, and every callback reach the
/// voice stream exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s39b_killed_claimer_taken_over_on_time_by_busy_survivors() {
    let (redis, fx, keys) = setup("s39bkill", &[]).await;
    let conn = redis.conn().await;
    takeovers(fx, keys, conn, (Fate::Killed, 2)).await;
}

/// Guard: the killed rounds with one survivor: its own leases are all released (own
/// announcements dropped, its bound "nothing in flight"), so only A's announcement, heard, makes
/// its bound fall to A's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s39b_killed_claimer_taken_over_on_time_by_a_lone_survivor() {
    let (redis, fx, keys) = setup("s39blone", &[]).await;
    let conn = redis.conn().await;
    takeovers(fx, keys, conn, (Fate::Killed, 1)).await;
}

/// Guard: the killed rounds on the shared Redis Cluster with four shards (spread over the
/// primaries; the workers listen on one node, and a shard's own announcements come back over
/// the cluster bus).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s39b_killed_claimer_taken_over_on_time_on_a_cluster() {
    let env = TestEnv::new()
        .with("REDIS_URL", harness::cluster())
        .with("REDIS_CLUSTER", "true")
        .with("REDIS_SCHEDULE_SHARDS", "4");
    let fx = Fixture::dispatch(env, "s39bclu", "svc", json!({})).await;
    let keys = Keys::new(&fx.env.id, 4);
    let client =
        redis::cluster::ClusterClient::new(harness::cluster().split(',').collect::<Vec<_>>())
            .expect("cluster client");
    let conn = client.get_async_connection().await.expect("cluster conn");
    takeovers(Arc::new(fx), keys, conn, (Fate::Killed, 2)).await;
}

/// Guard: as the killed round, but A is frozen (SIGSTOP) and every pub/sub connection of the
/// service Redis is killed at the freeze and every 300 ms after it (the survivors re-subscribe
/// over and over, losing announcements in each gap): every re-subscription must drop the bound,
/// so the takeover stays on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s39b_frozen_claimer_taken_over_on_time_while_pubsub_is_killed() {
    let (redis, fx, keys) = setup("s39bfrz", &[]).await;
    let conn = redis.conn().await;
    takeovers(fx, keys, conn, (Fate::FrozenPubsubKilled, 2)).await;
}

/// Fakes a claim of `id` (ZREM schedule, ZADD in-flight at Redis time + `lease_ms`) that
/// announces nothing; returns the deadline.
async fn silent_claim(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    id: &str,
    lease_ms: i64,
) -> i64 {
    let claim = redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], deadline, ARGV[1])
return tostring(deadline)",
    );
    let d: String = claim
        .key(keys.sched(0))
        .key(keys.inflight(0))
        .arg(id)
        .arg(lease_ms)
        .invoke_async(conn)
        .await
        .expect("fake claim");
    d.parse().expect("deadline")
}

/// Waits until `id` leaves the in-flight set at `deadline`; the Redis time then.
async fn wait_taken(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    id: &str,
    deadline: i64,
    limit: Duration,
) -> Option<i64> {
    let started = Instant::now();
    loop {
        let s: Option<f64> = redis::cmd("ZSCORE")
            .arg(keys.inflight(0))
            .arg(id)
            .query_async(conn)
            .await
            .expect("ZSCORE");
        if s.map(|f| f as i64) != Some(deadline) {
            return Some(redis_ms(conn).await);
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How the lease of [`lost_announcement`]'s fake claimer is (not) heard.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Heard {
    /// Not announced at all (a lost announcement).
    Nothing,
    /// Announced in the format of a release before 2026-12-04 (`<ms>:<shard>`, read as a due
    /// time, not a lease).
    Untagged,
}

/// One survivor, lease 1500 ms, kept busy (an immediate callback every 100 ms) or idle; a fake
/// peer claims X (due now) with a lease of 1500 ms, not heard as a lease, and dies. Returns how
/// late after the deadline X was taken over, and X's census count.
async fn lost_announcement(
    tenant: &str,
    busy: bool,
    heard: Heard,
    (sweep, grace): (&str, &str),
    settle_ms: u64,
) -> (Option<i64>, usize) {
    let (redis, fx, keys) = setup(
        tenant,
        &[("WORKER_SWEEP_S", sweep), ("WORKER_SWEEP_GRACE_S", grace)],
    )
    .await;
    let mut conn = redis.conn().await;
    let extra = [("WORKER_LEASE_MS", LEASE_MS.to_string())];
    let w = WorkerProc::start(&fx.env, &extra).await;
    let stop = Arc::new(Notify::new());
    let making = creator(fx.clone(), Duration::from_millis(100), stop.clone());
    // Let the survivor read and settle into skipping reads (its own leases all released).
    tokio::time::sleep(Duration::from_millis(800)).await;
    if !busy {
        stop.notify_one();
    }
    // (The control: long enough for the survivor's last read to be older than 4 leases.)
    tokio::time::sleep(Duration::from_millis(settle_ms)).await;
    // X is created due in 1 s, so the worker does not claim it before the fake peer does.
    let x = fx.create().in_secs(1).id().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let deadline = silent_claim(&mut conn, &keys, &x, LEASE_MS).await;
    if heard == Heard::Untagged {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(keys.wake_channel(0))
            .arg(format!("{deadline}:0"))
            .query_async(&mut conn)
            .await
            .expect("publish");
    }
    let taken = wait_taken(&mut conn, &keys, &x, deadline, Duration::from_secs(25)).await;
    let late = taken.map(|t| t - deadline);
    stop.notify_one();
    let mut ids = making.await.expect("creator");
    ids.push(x.clone());
    let got = fx
        .env
        .wait_submitted(ids.len() as i64, Duration::from_secs(10))
        .await;
    let (total, distinct, per) = fx.env.census().await;
    let x_count = per.get(&x).copied().unwrap_or(0);
    println!(
        "FIGURE s39b_lost busy={busy} heard={heard:?} sweep={sweep}/{grace} late_ms={late:?} created={} \
         submitted={got} census={total}/{distinct} x={x_count}",
        ids.len()
    );
    if late.is_none_or(|l| l > 4 * LEASE_MS) {
        println!("{}", w.proc.output());
    }
    assert_eq!((total, distinct), (ids.len(), ids.len()));
    (late, x_count)
}

/// Guard (the promise under lost announcements: "a takeover is late by at most 4 leases").
/// One busy survivor (its bound says "nothing in flight": every lease it saw was its own and
/// released); a fake peer's claim of X announces nothing and the peer dies. The survivor's
/// claims skip the in-flight read until its last read is 4 leases old (or the sweep, every 3 s
/// with a 2 s grace here, announces X's lapsed lease with tag 0): X must be taken over within
/// 4 leases of its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s39b_lost_announcement_busy_survivor_within_four_leases() {
    let (late, x) = lost_announcement("s39blostb", true, Heard::Nothing, ("3", "2"), 0).await;
    assert!(late.is_some_and(|l| l <= 4 * LEASE_MS), "late {late:?}");
    assert_eq!(x, 1);
}

/// Guard: as above with an idle survivor: nothing makes it claim, so only the sweep's tag-0
/// announcement (a lease that ran out, `<ms>.0:0`) brings it: within `WORKER_SWEEP_GRACE_S` +
/// `WORKER_SWEEP_S` (5 s here) of X's time, plus the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s39b_lost_announcement_idle_survivor_within_the_sweep() {
    let (late, x) = lost_announcement("s39blosti", false, Heard::Nothing, ("3", "2"), 0).await;
    assert!(late.is_some_and(|l| l <= 5_000 + 500), "late {late:?}");
    assert_eq!(x, 1);
}

/// Guard: a peer of a release before 2026-12-04 announces its lease untagged (`<ms>:<shard>`):
/// the survivor reads it as a due time and claims at the deadline with its bound (which does
/// not hold the peer's lease) and may skip the read; the documented correction: within 4 leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s39b_untagged_lease_of_an_old_release_within_four_leases() {
    let (late, x) = lost_announcement("s39bold", true, Heard::Untagged, ("40", "10"), 0).await;
    assert!(late.is_some_and(|l| l <= 4 * LEASE_MS), "late {late:?}");
    assert_eq!(x, 1);
}

/// Guard: the age alone. As the busy survivor above with the sweep out of reach (every 40 s,
/// 10 s grace): only the 4-lease age of the survivor's last read makes a claim read the
/// in-flight head again. X must be taken over within 4 leases of its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s39b_lost_announcement_busy_survivor_by_age_alone() {
    let (late, x) = lost_announcement("s39bage", true, Heard::Nothing, ("40", "10"), 0).await;
    assert!(late.is_some_and(|l| l <= 4 * LEASE_MS), "late {late:?}");
    assert_eq!(x, 1);
}

/// Finding: an idle survivor and a peer of a release before 2026-12-04 (rolling upgrade: its
/// lease announcement is untagged, `<deadline>:0`, read as a due time). Before 23a7bb2 the
/// survivor's claim at that time read the in-flight head and took the dead peer's lease over
/// right at the deadline (the control of `attack_s36b`: 9–11 ms). Now that claim passes the
/// survivor's bound ("nothing in flight", from its start-up read, fresh for 4 leases), skips the
/// read and takes nothing; the survivor claims nothing more, so the 4-lease age never gets a
/// claim to correct, and X waits for the sweep (every 12 s, 3 s grace here): the takeover is
/// late by far more than the "at most four leases" (6 s) of
/// docs/derived-state.md#claims-that-know-the-leases, in a fault where it was on time before.
/// Fixed: a claim that takes nothing due reads the in-flight head anyway (it was woken for
/// something, perhaps a lease it could not count). Guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s39b_untagged_lease_idle_survivor_waits_for_the_sweep() {
    // Control: the survivor's last read is older than 4 leases, so the claim at the deadline
    // reads the in-flight head (as every claim did before 23a7bb2): on time.
    let (control, _) =
        lost_announcement("s39boldc", false, Heard::Untagged, ("12", "3"), 6_500).await;
    assert!(control.is_some_and(|l| l < 500), "control {control:?}");
    let (late, x) = lost_announcement("s39boldi", false, Heard::Untagged, ("12", "3"), 0).await;
    assert!(
        late.is_some_and(|l| l <= 4 * LEASE_MS),
        "taken over {late:?} ms after the deadline; promise: at most {} ms",
        4 * LEASE_MS
    );
    assert_eq!(x, 1);
}

/// Every shard's in-flight entries (member → (shard, score)); `None` when a read failed (a
/// node down).
async fn try_inflight<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
) -> Option<BTreeMap<String, (u16, i64)>> {
    let mut out = BTreeMap::new();
    for shard in 0..keys.shards() {
        let raw: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(keys.inflight(shard))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(conn)
            .await
            .ok()?;
        out.extend(raw.into_iter().map(|(m, s)| (m, (shard, s as i64))));
    }
    Some(out)
}

/// Guard: a failover during dispatch. A private cluster with replicas (node timeout 1500 ms),
/// four shards, two busy survivors and a worker A holding a claim (frozen voice Redis); A is
/// SIGKILLed and, at once, the primary of A's shard. The survivors' passes on that node fail
/// (their bound of the shard is dropped), the replica is promoted, and A's claim must be taken
/// over once both its lease and the failover are through, with every callback handed off once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s39b_primary_of_a_dead_claimers_shard_killed() {
    let mut cluster = harness::PrivateCluster::with_replicas(1_500);
    let env = TestEnv::new()
        .with("REDIS_URL", &cluster.urls())
        .with("REDIS_CLUSTER", "true")
        .with("REDIS_SCHEDULE_SHARDS", "4");
    let fx = Arc::new(Fixture::dispatch(env, "s39bfo", "svc", json!({})).await);
    let keys = Keys::new(&fx.env.id, 4);
    let urls = cluster.urls();
    let client = redis::cluster::ClusterClient::new(urls.split(',').collect::<Vec<_>>())
        .expect("cluster client");
    let mut conn = client.get_async_connection().await.expect("cluster conn");
    let extra = [("WORKER_LEASE_MS", LEASE_MS.to_string())];
    let survivors = [
        WorkerProc::start(&fx.env, &extra).await,
        WorkerProc::start(&fx.env, &extra).await,
    ];
    let voice = PrivateRedis::new(false);
    let a_extra = [
        ("WORKER_LEASE_MS", LEASE_MS.to_string()),
        ("VOICE_REDIS_URL", voice.url()),
        ("REDIS_TIMEOUT_MS", "20000".to_string()),
    ];
    let mut a = WorkerProc::start(&fx.env, &a_extra).await;
    voice.freeze();
    let stop = Arc::new(Notify::new());
    let making = creator(fx.clone(), Duration::from_millis(40), stop.clone());
    let mut seen: BTreeMap<String, (Instant, u16, i64)> = BTreeMap::new();
    let started = Instant::now();
    let (shard, deadline, victims) = loop {
        let now = Instant::now();
        let cur = try_inflight(&mut conn, &keys).await.expect("inflight");
        seen.retain(|m, (_, sh, s)| cur.get(m) == Some(&(*sh, *s)));
        for (m, (sh, s)) in &cur {
            seen.entry(m.clone()).or_insert((now, *sh, *s));
        }
        if let Some((_, (_, sh, score))) = seen
            .iter()
            .find(|(_, (t, _, _))| now.duration_since(*t) > Duration::from_millis(250))
        {
            let (sh, score) = (*sh, *score);
            let victims: BTreeSet<String> = cur
                .iter()
                .filter(|(_, v)| **v == (sh, score))
                .map(|(m, _)| m.clone())
                .collect();
            break (sh, score, victims);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "A never held a claim\n{}",
            a.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let node = cluster.node_of(&keys.inflight(shard));
    let replica = cluster.replica_of(node);
    a.proc.kill();
    cluster.kill(node);
    let killed_ms = jiff::Timestamp::now().as_millisecond();
    let promoted = tokio::task::block_in_place(|| cluster.wait_promoted(replica));
    let started = Instant::now();
    let taken = loop {
        if let Some(cur) = try_inflight(&mut conn, &keys).await
            && victims
                .iter()
                .all(|v| cur.get(v) != Some(&(shard, deadline)))
        {
            break Some(jiff::Timestamp::now().as_millisecond());
        }
        if started.elapsed() > Duration::from_secs(12) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.notify_one();
    let ids = making.await.expect("creator");
    let n = ids.len();
    let got = fx
        .env
        .wait_submitted(n as i64, Duration::from_secs(15))
        .await;
    let (total, distinct, per) = fx.env.census().await;
    let missing: Vec<_> = ids.iter().filter(|id| !per.contains_key(*id)).collect();
    let late = taken.map(|t| t - deadline);
    let after_kill = taken.map(|t| t - killed_ms);
    println!(
        "FIGURE s39b_failover shard={shard} node={node} victims={} lease_left_ms={} \
         promoted_ms={} late_after_deadline_ms={late:?} after_kill_ms={after_kill:?} \
         created={n} submitted={got} census={total}/{distinct} missing={missing:?}",
        victims.len(),
        deadline - killed_ms,
        promoted.as_millis()
    );
    assert!(
        after_kill.is_some_and(|t| t < promoted.as_millis() as i64 + 2 * LEASE_MS + 1_000),
        "taken {after_kill:?} ms after the kill (promoted after {promoted:?})\n{}",
        survivors[0].proc.output()
    );
    assert_eq!(got, n as i64, "missing {missing:?}");
    assert_eq!((total, distinct), (n, n));
}

/// Publishes each message, then creates an immediate callback: whether it went out within 3 s,
/// per message; and the Redis commands of 3 s idle afterwards.
async fn hand_published(
    tenant: &str,
    msgs: &[&'static str],
) -> (Vec<(&'static str, bool)>, u64, String) {
    let (redis, fx, keys) = setup(tenant, &[]).await;
    let mut conn = redis.conn().await;
    let extra = [("WORKER_LEASE_MS", LEASE_MS.to_string())];
    let w = WorkerProc::start(&fx.env, &extra).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids = Vec::new();
    let mut outs = Vec::new();
    for msg in msgs {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(keys.wake_channel(0))
            .arg(*msg)
            .query_async(&mut conn)
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(100)).await;
        ids.push(fx.create().immediate().id().await);
        let n = fx
            .env
            .wait_submitted(ids.len() as i64, Duration::from_secs(3))
            .await;
        outs.push((*msg, n == ids.len() as i64));
    }
    let before = harness::command_total(&mut conn, &["info", "config", "ping"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = harness::command_total(&mut conn, &["info", "config", "ping"]).await;
    let idle = after.0 - before.0;
    println!("FIGURE s39b_hand_published outs={outs:?} idle_commands_3s={idle}");
    (outs, idle, w.proc.output())
}

/// Guard: hand-published wake messages, tagged (`<ms>.<tag>:<shard>`, tag 0 as the sweep's)
/// and untagged, far in the future, at 0, negative, with the largest tag: the worker keeps
/// dispatching (an immediate callback created after each goes out within 3 s) and does not
/// spin (next to no Redis commands in 3 s idle afterwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s39b_hand_published_lease_messages() {
    let (outs, idle, log) = hand_published(
        "s39bhand",
        &[
            "9223372036854775807.5:0",
            "0.0:0",
            "-1.4294967295:0",
            "-5000000000000.0:0",
            "9223372036854775807:0",
            "1.5:0",
        ],
    )
    .await;
    assert!(outs.iter().all(|(_, ok)| *ok), "{outs:?}\n{log}");
    assert!(idle <= 10, "{idle} commands in 3 s idle");
}

/// Finding (pre-existing, not 23a7bb2: `Shards::sleep`, worker/src/dispatch.rs, since
/// 6bc4168): a wake message whose time is near `i64::MIN` (`-9223372036854775808.5:0`, a lease
/// with tag 5, or the same untagged, or `-1e30:0` through the float fallback) becomes the
/// shard's target, and `sleep` computes `t - offset_ms - local_ms()`, which overflows. In the
/// debug build the dispatcher task panics ("attempt to subtract with overflow",
/// dispatch.rs:318, measured with the tagged message) and the worker never dispatches again
/// while its process stays up. By reading (not measured): the untagged `<ms>:<shard>` takes the
/// same path through `announced`; in a release build the subtraction wraps to a huge sleep, the
/// loop sleeps to the safety poll, which does not mark the shard due (`Woke::Polled`), so the
/// worker would hand nothing off until a re-subscription or rebuild resyncs it. Fixed: a wake
/// time outside 0..2^53 ms parses as no time (a look at every shard), and the sleep's
/// arithmetic saturates. Guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s39b_min_time_wake_message_stops_the_dispatcher() {
    let (outs, _, log) = hand_published("s39bmin", &["-9223372036854775808.5:0", "1.5:0"]).await;
    assert!(
        outs.iter().all(|(_, ok)| *ok),
        "{outs:?}\n{}",
        log.lines()
            .filter(|l| l.contains("panicked") || l.contains("overflow"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
