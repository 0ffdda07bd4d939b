//! Attacks on the busy phase (commit 7ffb7bb, worker/src/dispatch/busy.rs): each shard's claim
//! (or lease look) goes out as soon as it falls due, whatever is out for the others; wake-ups
//! for a shard whose claim is out are held until it is taken in.

use std::time::{Duration, Instant};

use harness::{Fixture, PrivateCluster, WorkerProc, wire};

use crate::{
    attack_s36b::{frozen_node, submitted_ms, tenant_off},
    failing_shard::partial_cluster,
};
use serde_json::json;
use shared::redis::Keys;
use uuid::Uuid;

/// A private Redis Cluster with a node to freeze (not node 0, where the worker listens), a
/// dispatch fixture whose tenant's pace and queue keys are off that node, and a worker with
/// `REDIS_TIMEOUT_MS`.
struct Frozen {
    cluster: PrivateCluster,
    keys: Keys,
    frozen: usize,
    fx: Fixture,
    w: WorkerProc,
}

impl Frozen {
    async fn set_up(tag: &str, timeout_ms: u64) -> Self {
        let (cluster, env) = partial_cluster();
        let (shards, frozen) = frozen_node(&cluster, &env.id);
        let keys = Keys::new(&env.id, shards);
        let env = env.with("REDIS_SCHEDULE_SHARDS", &shards.to_string());
        let tenant = tenant_off(&cluster, &keys, frozen, tag);
        let fx = Fixture::dispatch(env, &tenant, "svc", json!({})).await;
        let w = WorkerProc::start(&fx.env, &[("REDIS_TIMEOUT_MS", timeout_ms.to_string())]).await;
        Self {
            cluster,
            keys,
            frozen,
            fx,
            w,
        }
    }
}

/// CPU time (ns, from each thread's schedstat) and voluntary context switches of process
/// `pid` so far (`None` once it is gone).
fn cpu_of(pid: u32) -> Option<(u64, u64)> {
    let mut ns = 0u64;
    let mut switches = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = t.ok()?.path();
        let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                switches += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Some((ns, switches))
}

/// What `pid` used between two readings: CPU ms and voluntary context switches.
fn used(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (
        (b.0.saturating_sub(a.0)) / 1_000_000,
        b.1.saturating_sub(a.1),
    )
}

/// Sleeps until local time `ms` (Unix ms).
async fn until(ms: i64) {
    let left = ms - jiff::Timestamp::now().as_millisecond();
    if left > 0 {
        tokio::time::sleep(Duration::from_millis(left as u64)).await;
    }
}

/// Attack: stop (SIGTERM) while a claim is out on a frozen node. In 7ffb7bb, after the stop
/// `busy::run` no longer sends claims (`if !stop.is_cancelled() { send(..) }`) but keeps
/// waiting for what is out, and `Shards::wait_beside` still counted every shard with nothing
/// out: a healthy shard falling due meanwhile (its target passed, `catch_up_beside` marks it
/// pending, nothing sends it) made the wait zero, so the phase looped on `sleep(0)` until the
/// frozen node's claim timed out (up to `REDIS_TIMEOUT_MS` per stop).
///
/// Setup: a private Redis Cluster, one worker with `REDIS_TIMEOUT_MS=4000` (so the frozen claim
/// is out long enough to measure). Shard F on node N (frozen), a callback due in F at D-1.5 s
/// and one in a healthy shard H at D. N is frozen at D-2.5 s, so F's claim goes out at D-1.5 s
/// and waits on N. SIGTERM at D-0.3 s. The worker's CPU (per-thread schedstat) and voluntary
/// context switches are read over [D-1.4, D-0.4] s (claim out, no stop: the control) and over
/// [D+0.2, D+2.2] s (claim out, stopped, H due); N is resumed at D+2.2 s.
///
/// Found: the hole is real in 7ffb7bb by reading (fixed before this test ran: while stopping
/// the phase waits only for what is out), and against the fix: control 0 ms CPU / 2–29 wake-ups in 1 s (noisy under strace/gdb runs),
/// stopped 0 ms CPU / 1–6 wake-ups in 2 s; H stays in the schedule (not dispatched after the
/// stop), the worker exits 0 once N answers. Kept as a guard: a spin would burn most of a core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s43_stop_with_a_claim_out_on_a_frozen_node_spins() {
    let Frozen {
        cluster,
        keys,
        frozen,
        fx,
        mut w,
    } = Frozen::set_up("s43a", 4_000).await;
    let on_frozen = |s: u16| cluster.node_of(&keys.sched(s)) == frozen;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let pid = w.proc.child.id();

    let d = jiff::Timestamp::now().as_millisecond() + 6_000;
    let at = |ms: i64| wire(jiff::Timestamp::from_millisecond(ms).expect("ms"));
    // One callback in a healthy shard due at D, one in a frozen shard due at D-1.5 s.
    let mut have = (None, None);
    while have.0.is_none() || have.1.is_none() {
        let healthy_wanted = have.0.is_none();
        let when = if healthy_wanted { d } else { d - 1_500 };
        let id = fx.create().at(&at(when)).id().await;
        let shard = keys.shard_of(&Uuid::parse_str(&id).expect("uuid"));
        match (on_frozen(shard), healthy_wanted) {
            (false, true) => have.0 = Some(id),
            (true, false) => have.1 = Some(id),
            _ => assert_eq!(fx.cancel(&id).await.0, 200),
        }
    }
    assert!(
        jiff::Timestamp::now().as_millisecond() < d - 2_600,
        "setup too slow"
    );
    until(d - 2_500).await;
    cluster.pause(frozen);
    // Control: F's claim is out on the frozen node, no stop; H falls due at D.
    until(d - 1_400).await;
    let c0 = cpu_of(pid).expect("worker alive");
    until(d - 400).await;
    let c1 = cpu_of(pid).expect("worker alive");
    until(d - 300).await;
    w.proc.terminate();
    // Stopped, F's claim still out (until about D+2.5 s), H due since D.
    until(d + 200).await;
    let s0 = cpu_of(pid);
    let t0 = Instant::now();
    until(d + 2_200).await;
    let s1 = cpu_of(pid);
    let window = t0.elapsed().as_millis();
    cluster.resume(frozen);
    let status = w.proc.wait_exit(Duration::from_secs(15)).await;
    let mut subs = Vec::new();
    for id in [have.0.as_deref(), have.1.as_deref()].into_iter().flatten() {
        let at = submitted_ms(&fx.env, id, Duration::ZERO).await;
        subs.push(at.map(|t| t - d));
    }
    println!("FIGURE s43_stop_spin submitted after D (healthy, frozen): {subs:?}");
    let control = used(c0, c1);
    let stopped = match (s0, s1) {
        (Some(a), Some(b)) => Some(used(a, b)),
        _ => None,
    };
    println!(
        "FIGURE s43_stop_spin (cpu_ms, wakeups) control={control:?} (of 1000 ms) \
         stopped={stopped:?} (of {window} ms) exit={status:?}"
    );
    let Some((stopped, _)) = stopped else {
        // The worker exited before the window ended: it did not wait for the frozen claim.
        return;
    };
    assert!(
        stopped < 600,
        "after SIGTERM the worker burnt {stopped} ms of CPU in {window} ms while a claim \
         waited on a frozen node (control before the stop: {control:?} in 1000 ms)\n{}",
        w.proc.output()
    );
}

/// Attack: a frozen node holds up every shard through a script's first load. The busy phase
/// works each claim that comes back through one at a time, inside its loop
/// (`take_in` → `work_through` → `pass::finish`), so while one pass waits nothing else is sent
/// or taken in. A pass on a healthy node that hands a claim back runs the settle script
/// (worker/src/claim.rs `SETTLE`); the first time it runs on a node Redis answers NOSCRIPT, and
/// redis-rs (`ScriptInvocation::invoke_async`) then sends `SCRIPT LOAD`, which the cluster
/// client routes to ALL nodes (redis-rs 1.8 `routing.rs`: `RouteBy::AllNodes`, every node must
/// answer), the frozen one included: the pass waits `REDIS_TIMEOUT_MS` and fails, and every
/// other shard's callbacks wait with it (docs/derived-state.md#a-failing-shard: "a shard whose
/// node is slow or frozen delays no other shard's claim").
///
/// Setup: a private Redis Cluster (nothing handed back on it yet, so the settle script is not
/// cached on any node), one worker with `REDIS_TIMEOUT_MS=2000`; node N (not node 0) frozen at
/// D-1.5 s. Callback G in a healthy shard due at D-0.4 s whose row is then moved a minute later
/// in PostgreSQL (its pass hands it back: the settle script), callback H in another healthy
/// shard due at D (the tenant's pace and queue keys off N). Neither has anything on N.
///
/// Found: a real bug: H handed off 1 607 ms after D (control: the same run with G simply
/// dispatched, released by `ZREM` with no script: H 8 ms late); the worker logged G's shard
/// `dispatch pass failed … service redis: timed out`. With the default 500 ms timeout the hold
/// was `REDIS_TIMEOUT_MS` per pass that first ran a script on a node (settle, pacing's `TAKE`,
/// any `invoke_async`): after a node restart or failover the scripts are not cached. Fixed by
/// `shared::redis::script`: on `NOSCRIPT` the script's text goes by `EVAL` to the same node,
/// never `SCRIPT LOAD` to all: H 6 ms late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s43_a_script_load_on_a_frozen_node_holds_up_healthy_shards() {
    let Frozen {
        cluster,
        keys,
        frozen,
        fx,
        w,
    } = Frozen::set_up("s43b", 2_000).await;
    let on_frozen = |s: u16| cluster.node_of(&keys.sched(s)) == frozen;
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let d = jiff::Timestamp::now().as_millisecond() + 5_000;
    let at = |ms: i64| wire(jiff::Timestamp::from_millisecond(ms).expect("ms"));
    // G: a healthy shard, due at D-0.4 s. H: another healthy shard, due at D. A callback that
    // lands on the frozen node is cancelled (before the freeze).
    let mut g: Option<(String, u16)> = None;
    let h = loop {
        let when = if g.is_none() { d - 400 } else { d };
        let id = fx.create().at(&at(when)).id().await;
        let shard = keys.shard_of(&Uuid::parse_str(&id).expect("uuid"));
        match &g {
            _ if on_frozen(shard) => assert_eq!(fx.cancel(&id).await.0, 200),
            None => g = Some((id, shard)),
            Some((_, gs)) if *gs == shard => assert_eq!(fx.cancel(&id).await.0, 200),
            Some(_) => break id,
        }
    };
    let (g, _) = g.expect("G");
    // G's row moves a minute later behind the schedule's back (as a re-schedule does after
    // the entry was indexed): G's pass hands it back, with the settle script.
    let pg = fx.env.pg().await;
    let moved = pg
        .execute(
            "UPDATE callbacks SET dispatch_at = dispatch_at + interval '60 seconds'
             WHERE id = $1::text::uuid",
            &[&g],
        )
        .await
        .expect("move G");
    assert_eq!(moved, 1);
    assert!(
        jiff::Timestamp::now().as_millisecond() < d - 1_600,
        "setup too slow"
    );
    until(d - 1_500).await;
    cluster.pause(frozen);
    let h_at = submitted_ms(&fx.env, &h, Duration::from_secs(12)).await;
    cluster.resume(frozen);
    let late = h_at.map(|t| t - d);
    println!("FIGURE s43_script_load H late_ms = {late:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (total, distinct, _) = fx.env.census().await;
    println!("FIGURE s43_script_load census total={total} distinct={distinct}");
    assert_eq!(total, distinct, "each callback once");
    let h_late = late.unwrap_or(i64::MAX);
    assert!(
        h_late < 1_000,
        "a frozen node held a healthy shard's callback up {h_late} ms\n{}",
        w.proc.output()
    );
}
