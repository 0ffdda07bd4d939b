//! Attacks on the tagged lease announcement (commit 15a9e60, worker/src/claim.rs `CLAIM`,
//! worker/src/dispatch/pass.rs `finish`, worker/src/dispatch.rs `Shards::passed` / `signal`,
//! docs/derived-state.md#wake-ups): a claiming worker whose claim found nothing in flight and
//! whose pass left nothing in flight forgets its own lease deadline and drops its own
//! `<deadline>.<tag>:<shard>` message. The promise attacked: a worker frozen (SIGSTOP) or killed
//! while holding a claim has it taken over about one lease later by a survivor, never by the
//! 120 s safety poll, and every callback reaches the voice stream exactly once.
//!
//! The worst interleaving for the survivor A: its own claim finds the in-flight set empty, a
//! peer claims after it while A's pass is still running (the peer then freezes), and A's pass
//! releases everything it took. A's pass is held open by locking the claimed row in PostgreSQL
//! (`mark_submitted` waits for the lock after the hand-off). Peers are either real workers
//! frozen with SIGSTOP or a "fake peer": the test runs what a claim does (`ZREM` from the
//! schedule, `ZADD` to in-flight with a deadline, `PUBLISH` of the announcement in the new or
//! the former format) and then never settles, as a frozen worker would.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use harness::{Fixture, PrivateRedis, TestEnv, WorkerProc, command_total, signal, wire};
use serde_json::json;
use shared::redis::Keys;

const SHARD: u16 = 0;

/// Redis time (ms).
pub(super) async fn redis_ms(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(conn).await.expect("TIME");
    s * 1000 + us / 1000
}

/// Waits until `workers` subscribers listen on shard 0's wake channel, then the 1.5 s past the
/// workers' start-up rebuild and first look. A worker that missed an announcement because it
/// was not subscribed yet would claim only at its safety poll (30 s): on a loaded CI machine
/// a fixed 1.5 s was not always enough (`…_frozen_first_claimer_then_survivor_claims` failed
/// CI on 850e744 with Y never claimed).
async fn workers_listening(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    workers: i64,
) {
    let started = Instant::now();
    loop {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(keys.wake_channel(SHARD))
            .query_async(conn)
            .await
            .expect("PUBSUB NUMSUB");
        if n >= workers {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{n} of {workers} workers subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
}

/// The lease deadline of `id` in shard 0's in-flight set.
pub(super) async fn lease_of(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    id: &str,
) -> Option<i64> {
    let s: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.inflight(SHARD))
        .arg(id)
        .query_async(conn)
        .await
        .expect("ZSCORE");
    s.map(|f| f as i64)
}

/// Polls until `id` is in flight; its deadline.
pub(super) async fn wait_claimed(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    id: &str,
    limit: Duration,
) -> i64 {
    let started = Instant::now();
    loop {
        if let Some(d) = lease_of(conn, keys, id).await {
            return d;
        }
        assert!(started.elapsed() < limit, "{id} never claimed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls until the lease `deadline` of `id` is gone (re-leased or settled); the Redis time then,
/// or `None` after `limit`.
pub(super) async fn wait_taken_over(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    id: &str,
    deadline: i64,
    limit: Duration,
) -> Option<i64> {
    let started = Instant::now();
    loop {
        if lease_of(conn, keys, id).await != Some(deadline) {
            return Some(redis_ms(conn).await);
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Locks the row of `id` (a transaction held open until [`unlock`]): a pass that handed it off
/// waits in `mark_submitted`, with its claim still in flight.
pub(super) async fn lock_row(env: &TestEnv, id: &str) -> tokio_postgres::Client {
    let c = env.pg().await;
    c.batch_execute("BEGIN").await.expect("begin");
    c.execute(
        "SELECT 1 FROM callbacks WHERE id = $1::text::uuid FOR UPDATE",
        &[&id],
    )
    .await
    .expect("lock row");
    c
}

pub(super) async fn unlock(c: &tokio_postgres::Client) {
    c.batch_execute("COMMIT").await.expect("commit");
}

/// Whether `id` is on the voice stream.
async fn on_stream(env: &TestEnv, id: &str) -> bool {
    env.census().await.2.contains_key(id)
}

pub(super) async fn wait_on_stream(env: &TestEnv, id: &str, limit: Duration) {
    let started = Instant::now();
    while !on_stream(env, id).await {
        assert!(started.elapsed() < limit, "{id} never handed off");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(super) fn pid(w: &WorkerProc) -> u32 {
    w.proc.child.id()
}

/// What a frozen peer's claim did: `id` moved from the schedule into in-flight with a lease of
/// `lease_ms`, and (unless `publish` is false) the announcement published: `<deadline>.<tag>:0`
/// with `Some(tag)`, the former `<deadline>:0` with `None`. Returns the deadline.
async fn fake_claim(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    id: &str,
    lease_ms: i64,
    tag: Option<u32>,
    publish: bool,
) -> i64 {
    let script = redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], deadline, ARGV[1])
return tostring(deadline)",
    );
    let d: String = script
        .key(keys.sched(SHARD))
        .key(keys.inflight(SHARD))
        .arg(id)
        .arg(lease_ms)
        .invoke_async(conn)
        .await
        .expect("fake claim");
    let d: i64 = d.parse().expect("deadline");
    if publish {
        announce(conn, keys, d, tag).await;
    }
    d
}

async fn announce(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    deadline: i64,
    tag: Option<u32>,
) {
    let msg = match tag {
        Some(t) => format!("{deadline}.{t}:{SHARD}"),
        None => format!("{deadline}:{SHARD}"),
    };
    let _: i64 = redis::cmd("PUBLISH")
        .arg(keys.wake_channel(SHARD))
        .arg(msg)
        .query_async(conn)
        .await
        .expect("publish");
}

/// Every message on shard 0's wake channel, as heard by the test.
async fn listen(url: &str, keys: &Keys) -> Arc<Mutex<Vec<String>>> {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let mut ps = redis::Client::open(url)
        .expect("client")
        .get_async_pubsub()
        .await
        .expect("pubsub");
    ps.subscribe(keys.wake_channel(SHARD))
        .await
        .expect("subscribe");
    let h = heard.clone();
    tokio::spawn(async move {
        let mut s = ps.into_on_message();
        while let Some(m) = s.next().await {
            if let Ok(p) = m.get_payload::<String>() {
                h.lock().unwrap().push(p);
            }
        }
    });
    heard
}

/// The tag of the claim announcement with `deadline`, as heard.
async fn tag_of(heard: &Arc<Mutex<Vec<String>>>, deadline: i64) -> u32 {
    let prefix = format!("{deadline}.");
    for _ in 0..200 {
        if let Some(m) = heard
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.starts_with(&prefix))
        {
            let tag = m[prefix.len()..].split(':').next().unwrap();
            return tag.parse().expect("tag");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "no announcement for {deadline}: {:?}",
        heard.lock().unwrap()
    );
}

/// One shard (every claim collides), the API, and its environment.
async fn one_shard(tenant: &str) -> Fixture {
    let env = TestEnv::new().with("REDIS_SCHEDULE_SHARDS", "1");
    Fixture::dispatch(env, tenant, "svc", json!({})).await
}

/// A callback due `ms` from now.
async fn due_in(fx: &Fixture, ms: i64) -> String {
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(ms);
    fx.create().at(&wire(at)).id().await
}

/// How the fake peer announces its claim in one round of
/// [`attack_s34_lease_tag_fake_peer_claims_inside_an_own_released_pass`].
#[derive(Debug, Clone, Copy)]
enum Peer {
    /// A new-release claim with a tag of its own.
    NewTag,
    /// A new-release claim whose announcement reaches the survivor only after the survivor's
    /// pass has finished (a slow subscriber).
    Delayed,
    /// A claim whose tag equals the survivor's own released claim (a tag collision).
    SameTagAsSurvivor,
    /// A worker of the previous release: `<deadline>:<shard>`.
    Former,
}

/// Attack (the worst interleaving, controlled exactly): the only live worker A (lease 2000 ms,
/// one shard) claims X with nothing in flight, hands it off and waits in `mark_submitted` on a
/// locked row; meanwhile a peer claims Y (a callback due in an hour: the re-lease hands it back
/// to the schedule, which is how the test sees the takeover) and freezes for ever. Then X's
/// row is unlocked, A's pass releases X (`released_tag` set: A drops its own announcement and
/// forgets its own deadline). A must still re-lease Y at Y's deadline, for four ways the peer's
/// announcement may reach it: its own tag, delivered only after A's pass ended, the same tag as
/// A's own claim, and the former untagged format. Lateness is measured on the Redis clock
/// against Y's deadline; exactly-once is checked on the stream (X only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34_lease_tag_fake_peer_claims_inside_an_own_released_pass() {
    let fx = one_shard("ltfake").await;
    let keys = Keys::new(&fx.env.id, 1);
    let mut conn = fx.env.redis().await;
    let heard = listen(&fx.env.vars["REDIS_URL"], &keys).await;
    let lease = 2_000;
    let a = WorkerProc::start(&fx.env, &[("WORKER_LEASE_MS", lease.to_string())]).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // The fake peer is a worker: it greets the others as every worker does when it subscribes,
    // so A's claims announce their leases (docs/derived-state.md#a-lone-worker).
    let _: i64 = redis::cmd("PUBLISH")
        .arg(keys.former_wake_channel())
        .arg("hello.fa4e.1")
        .query_async(&mut conn)
        .await
        .expect("hello");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut report = Vec::new();
    let mut xs = Vec::new();
    for (round, peer) in [
        Peer::NewTag,
        Peer::Delayed,
        Peer::SameTagAsSurvivor,
        Peer::Former,
    ]
    .into_iter()
    .enumerate()
    {
        let y = fx.create().in_secs(3_600).id().await;
        let x = due_in(&fx, 1_000).await;
        let lock = lock_row(&fx.env, &x).await;
        let dx = wait_claimed(&mut conn, &keys, &x, Duration::from_secs(10)).await;
        wait_on_stream(&fx.env, &x, Duration::from_secs(5)).await;
        // A is now inside its pass (waiting on the row lock); its claim found nothing in flight.
        let own_tag = tag_of(&heard, dx).await;
        let tag = match peer {
            Peer::NewTag | Peer::Delayed => Some(own_tag.wrapping_add(1).max(1)),
            Peer::SameTagAsSurvivor => Some(own_tag),
            Peer::Former => None,
        };
        let dy = fake_claim(
            &mut conn,
            &keys,
            &y,
            lease,
            tag,
            !matches!(peer, Peer::Delayed),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        unlock(&lock).await;
        // A's pass ends: X released.
        let started = Instant::now();
        while lease_of(&mut conn, &keys, &x).await.is_some() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "X never settled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if matches!(peer, Peer::Delayed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            announce(&mut conn, &keys, dy, tag).await;
        }
        let taken = wait_taken_over(&mut conn, &keys, &y, dy, Duration::from_secs(12)).await;
        let late = taken.map(|t| t - dy);
        println!("FIGURE lease_tag round={round} peer={peer:?} dx={dx} dy={dy} late_ms={late:?}");
        report.push((peer, late));
        xs.push(x);
        // Y went back to the schedule (due in an hour); nothing left in flight for the next round.
        let started = Instant::now();
        while lease_of(&mut conn, &keys, &y).await.is_some() {
            if started.elapsed() > Duration::from_secs(3) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let (total, distinct, per) = fx.env.census().await;
    println!("FIGURE lease_tag census total={total} distinct={distinct}");
    for (peer, late) in &report {
        assert!(
            late.is_some_and(|l| l < 1_000),
            "{peer:?}: the frozen peer's claim was taken over {late:?} ms after its deadline \
             (None: not within 12 s): {report:?}\n{}",
            a.proc.output()
        );
    }
    assert_eq!((total, distinct), (xs.len(), xs.len()), "{per:?}");
}

/// Attack with real workers and SIGSTOP (one shard, lease 4000 ms): C is frozen while A claims
/// X with nothing in flight (A then waits in `mark_submitted` on X's locked row); C is thawed,
/// claims Y after A's claim (Y's row locked too, so C waits after its hand-off) and is frozen
/// again for good, holding Y. X's row is unlocked: A's pass releases X and drops its own
/// announcement. A must re-lease Y about at Y's deadline (C's announcement reached A during its
/// pass), not at the 120 s safety poll; then Y's row is unlocked and Y must be on the stream
/// exactly once (C's hand-off; A's is absorbed by the dedupe key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34_lease_tag_frozen_peer_claimed_after_an_own_released_claim() {
    let fx = one_shard("ltfrz").await;
    let keys = Keys::new(&fx.env.id, 1);
    let mut conn = fx.env.redis().await;
    let extra = [("WORKER_LEASE_MS", "4000".to_string())];
    let a = WorkerProc::start(&fx.env, &extra).await;
    let c = WorkerProc::start(&fx.env, &extra).await;
    workers_listening(&mut conn, &keys, 2).await;
    signal(&[pid(&c)], "STOP");
    let x = due_in(&fx, 1_000).await;
    let lock_x = lock_row(&fx.env, &x).await;
    let dx = wait_claimed(&mut conn, &keys, &x, Duration::from_secs(10)).await;
    wait_on_stream(&fx.env, &x, Duration::from_secs(5)).await;
    signal(&[pid(&c)], "CONT");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let y = due_in(&fx, 800).await;
    let lock_y = lock_row(&fx.env, &y).await;
    let dy = wait_claimed(&mut conn, &keys, &y, Duration::from_secs(10)).await;
    wait_on_stream(&fx.env, &y, Duration::from_secs(5)).await;
    signal(&[pid(&c)], "STOP");
    let frozen_at = redis_ms(&mut conn).await;
    assert!(dy > dx, "Y ({dy}) claimed after X ({dx})");
    assert!(
        frozen_at < dx,
        "X's lease ran out before the setup was done"
    );
    unlock(&lock_x).await;
    let taken = wait_taken_over(&mut conn, &keys, &y, dy, Duration::from_secs(15)).await;
    let late = taken.map(|t| t - dy);
    println!(
        "FIGURE lease_tag_frozen dx={dx} dy={dy} frozen_at={frozen_at} takeover_after_freeze_ms={:?} late_ms={late:?}",
        taken.map(|t| t - frozen_at)
    );
    unlock(&lock_y).await;
    let n = fx.env.wait_submitted(2, Duration::from_secs(10)).await;
    let (total, distinct, per) = fx.env.census().await;
    signal(&[pid(&c)], "CONT");
    assert!(
        late.is_some_and(|l| l < 1_000),
        "frozen C's claim taken over {late:?} ms after its deadline (None: not in 15 s)\nA:\n{}",
        a.proc.output()
    );
    assert_eq!(n, 2);
    assert_eq!((total, distinct), (2, 2), "{per:?}");
}

/// Guard, the other order (real workers, SIGSTOP, one shard, lease 3000 ms): C claims Y with
/// nothing in flight and freezes after its hand-off (row locked); A then claims X (its claim
/// finds C's lease, so it keeps waking for it) and releases it. A must take Y over about at its
/// deadline, and Y must be on the stream once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34_lease_tag_frozen_first_claimer_then_survivor_claims() {
    let fx = one_shard("ltfirst").await;
    let keys = Keys::new(&fx.env.id, 1);
    let mut conn = fx.env.redis().await;
    let extra = [("WORKER_LEASE_MS", "3000".to_string())];
    let a = WorkerProc::start(&fx.env, &extra).await;
    let c = WorkerProc::start(&fx.env, &extra).await;
    workers_listening(&mut conn, &keys, 2).await;
    signal(&[pid(&a)], "STOP");
    let y = due_in(&fx, 800).await;
    let lock_y = lock_row(&fx.env, &y).await;
    let dy = wait_claimed(&mut conn, &keys, &y, Duration::from_secs(10)).await;
    wait_on_stream(&fx.env, &y, Duration::from_secs(5)).await;
    signal(&[pid(&c)], "STOP");
    signal(&[pid(&a)], "CONT");
    let x = due_in(&fx, 300).await;
    // A's pass over X may be over within the 5 ms between two looks at in-flight: the stream
    // says that A claimed it (two failures under a loaded run, 2026-12-05).
    wait_on_stream(&fx.env, &x, Duration::from_secs(10)).await;
    let taken = wait_taken_over(&mut conn, &keys, &y, dy, Duration::from_secs(15)).await;
    let late = taken.map(|t| t - dy);
    println!("FIGURE lease_tag_first dy={dy} late_ms={late:?}");
    unlock(&lock_y).await;
    let n = fx.env.wait_submitted(2, Duration::from_secs(10)).await;
    let (total, distinct, per) = fx.env.census().await;
    signal(&[pid(&c)], "CONT");
    assert!(
        late.is_some_and(|l| l < 1_000),
        "taken over {late:?} ms late\nA:\n{}",
        a.proc.output()
    );
    assert_eq!(n, 2);
    assert_eq!((total, distinct), (2, 2), "{per:?}");
}

/// Attack under a stream of lone callbacks (the very case the change optimises: each claim
/// finds nothing in flight, each pass releases all, each claimer drops its own announcement):
/// three workers, one shard, lease 1500 ms, six rounds. Each round hands one callback off to
/// the end, then creates one whose row is locked so that its claimer waits in its pass; then
/// every worker is frozen and all but one (a different one each round) thawed, and the row
/// unlocked. When the frozen one holds the claim, the survivors must take it over about at its
/// deadline; otherwise the holder settles it before (negative lateness, a control). At the end
/// every callback is on the stream exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34_lease_tag_rounds_freeze_whoever_holds_the_claim() {
    let fx = one_shard("ltrounds").await;
    let keys = Keys::new(&fx.env.id, 1);
    let mut conn = fx.env.redis().await;
    let lease: i64 = 1_500;
    let extra = [("WORKER_LEASE_MS", lease.to_string())];
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(WorkerProc::start(&fx.env, &extra).await);
    }
    workers_listening(&mut conn, &keys, 3).await;
    let pids: Vec<u32> = workers.iter().map(pid).collect();
    let mut lates = Vec::new();
    let mut ids = Vec::new();
    for round in 0..6 {
        // A lone callback, handled to the end (released, own announcement dropped).
        let warm = due_in(&fx, 0).await;
        wait_on_stream(&fx.env, &warm, Duration::from_secs(5)).await;
        ids.push(warm);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Then one whose claimer is held in its pass and frozen.
        let y = due_in(&fx, 300).await;
        let lock = lock_row(&fx.env, &y).await;
        let dy = wait_claimed(&mut conn, &keys, &y, Duration::from_secs(10)).await;
        wait_on_stream(&fx.env, &y, Duration::from_secs(5)).await;
        // One worker frozen, a different one each round: the holder or not.
        let victim = pids[round % 3];
        signal(&pids, "STOP");
        signal(
            &pids
                .iter()
                .copied()
                .filter(|p| *p != victim)
                .collect::<Vec<_>>(),
            "CONT",
        );
        unlock(&lock).await;
        let taken = wait_taken_over(&mut conn, &keys, &y, dy, Duration::from_secs(10)).await;
        let late = taken.map(|t| t - dy);
        println!("FIGURE lease_tag_round round={round} victim={victim} late_ms={late:?}");
        lates.push(late);
        signal(&[victim], "CONT");
        ids.push(y);
        tokio::time::sleep(Duration::from_millis(lease as u64 + 300)).await;
    }
    let n = fx
        .env
        .wait_submitted(ids.len() as i64, Duration::from_secs(15))
        .await;
    let (total, distinct, per) = fx.env.census().await;
    println!("FIGURE lease_tag_rounds census total={total} distinct={distinct} lates={lates:?}");
    // Late is negative (settled before the deadline) when the holder was alive.
    assert!(
        lates.iter().all(|l| l.is_some_and(|l| l < 1_000)),
        "{lates:?}"
    );
    assert_eq!(n, ids.len() as i64);
    assert_eq!((total, distinct), (ids.len(), ids.len()), "{per:?}");
}

/// Cost claim of docs/costs.md: what a second worker adds to a spaced lone callback. Its
/// wake-up at the lease deadline is a lease look (two `ZRANGE` in one round trip: the
/// shard's schedule and in-flight heads), not an empty claim (four commands): 23.0 commands
/// per callback before the look, 21.0 with it (create to hand-off, no voice-platform events:
/// the owner's 15 plus the second worker's empty claim at the create's announcement, 4, and
/// its look, 2). Two workers on a private Redis, lease 1000 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34_lease_tag_spaced_lone_callbacks_cost_with_two_workers() {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("REDIS_SCHEDULE_SHARDS", "1");
    let fx = Fixture::dispatch(env, "ltcost", "svc", json!({})).await;
    let extra = [("WORKER_LEASE_MS", "1000".to_string())];
    let _a = WorkerProc::start(&fx.env, &extra).await;
    let _b = WorkerProc::start(&fx.env, &extra).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let warm = due_in(&fx, 0).await;
    wait_on_stream(&fx.env, &warm, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .expect("resetstat");
    const N: usize = 6;
    for _ in 0..N {
        let id = due_in(&fx, 0).await;
        wait_on_stream(&fx.env, &id, Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(1_300)).await;
    }
    let (total, by) = command_total(&mut conn, &["info", "config", "ping"]).await;
    let per = total as f64 / N as f64;
    println!("FIGURE lease_tag_two_workers_per_spaced_lone_callback={per:.1} {by:?}");
    assert!(per <= 21.5, "{per} per callback with two workers: {by:?}");
}

/// A lone worker's claims publish no lease announcement (docs/derived-state.md#a-lone-worker);
/// a second worker that joins while the first holds such a lease must still take it over at
/// its deadline should the first freeze (its first claim of every shard reads the in-flight
/// head; A, crowded now, announces it too once its pass ends). One shard, lease 3000 ms: A
/// (alone for seconds) claims Y and waits in its pass on Y's locked row; no announcement of
/// Y's lease is heard; B starts and subscribes; A is frozen; B must re-lease Y about at Y's
/// deadline, and Y must be on the stream once. A later claim of A announces (crowded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s44_a_lone_worker_announces_what_it_holds_when_another_joins() {
    let fx = one_shard("ltlone").await;
    let keys = Keys::new(&fx.env.id, 1);
    let mut conn = fx.env.redis().await;
    let heard = listen(&fx.env.vars["REDIS_URL"], &keys).await;
    let extra = [("WORKER_LEASE_MS", "3000".to_string())];
    let a = WorkerProc::start(&fx.env, &extra).await;
    workers_listening(&mut conn, &keys, 2).await;
    // Alone by now (its hello came back; the grace is 1 s with the test's REDIS_TIMEOUT_MS).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let warm = due_in(&fx, 0).await;
    wait_on_stream(&fx.env, &warm, Duration::from_secs(5)).await;
    let y = due_in(&fx, 300).await;
    let lock = lock_row(&fx.env, &y).await;
    let dy = wait_claimed(&mut conn, &keys, &y, Duration::from_secs(10)).await;
    wait_on_stream(&fx.env, &y, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let announced = |heard: &Arc<Mutex<Vec<String>>>| {
        let prefix = format!("{dy}.");
        heard.lock().unwrap().iter().any(|m| m.starts_with(&prefix))
    };
    assert!(
        !announced(&heard),
        "a lone worker announced its lease: {:?}",
        heard.lock().unwrap()
    );
    let b = WorkerProc::start(&fx.env, &extra).await;
    workers_listening(&mut conn, &keys, 3).await;
    signal(&[pid(&a)], "STOP");
    let taken = wait_taken_over(&mut conn, &keys, &y, dy, Duration::from_secs(15)).await;
    let late = taken.map(|t| t - dy);
    println!("FIGURE lone_then_joined dy={dy} late_ms={late:?}");
    unlock(&lock).await;
    let n = fx.env.wait_submitted(2, Duration::from_secs(10)).await;
    let (total, distinct, per) = fx.env.census().await;
    signal(&[pid(&a)], "CONT");
    assert!(
        late.is_some_and(|l| l < 1_000),
        "taken over {late:?} ms late\nB:\n{}",
        b.proc.output()
    );
    assert_eq!(n, 2);
    assert_eq!((total, distinct), (2, 2), "{per:?}");
    // Two workers now: whichever claims Z announces its lease.
    let z = due_in(&fx, 300).await;
    let lock = lock_row(&fx.env, &z).await;
    let dz = wait_claimed(&mut conn, &keys, &z, Duration::from_secs(10)).await;
    tag_of(&heard, dz).await;
    unlock(&lock).await;
}
