//! Limits that hold across processes (docs/pacing.md, docs/throttling.md): a service's
//! dispatch rate across three `engage-worker`s (one of them SIGKILLed halfway), the per-API-key
//! request rate across two `engage serve` replicas, and the Redis cost of both when far below
//! the limit or idle. Figures are printed as `FIGURE name=value` lines.

use std::time::{Duration, Instant};

use harness::{Engage, Fixture, PrivateRedis, TestEnv, WorkerProc, commandstats};
use serde_json::json;

/// The configured pace and what is due at once.
const RATE: i64 = 20;
const DUE: usize = 600;

/// Milliseconds of a stream entry id (`<ms>-<seq>`: the voice Redis clock when it was added).
fn entry_ms(id: &str) -> i64 {
    id.split('-').next().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The most entries in any window of `len_ms` starting at an entry.
fn max_in_window(times: &[i64], len_ms: i64) -> usize {
    let mut best = 0;
    let mut j = 0;
    for i in 0..times.len() {
        while j < times.len() && times[j] < times[i] + len_ms {
            j += 1;
        }
        best = best.max(j - i);
    }
    best
}

/// 600 callbacks due at once, three workers, a service paced at 20/s; `kill_after`: SIGKILL
/// one worker this long after the first started. Checks exactly once, the spread and the
/// per-second windows.
async fn three_workers(tenant: &str, kill_after: Option<Duration>) {
    let pace = json!({ "dispatch_rate_per_second": RATE });
    let (env, engage, key) = Fixture::dispatch(TestEnv::new(), tenant, "paced", pace)
        .await
        .parts();
    // No worker runs yet: all 600 wait in the index, due.
    engage.create_immediate(&key, "paced", DUE, 0).await;
    let extra = [("WORKER_LEASE_MS", "3000".to_string())];
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(WorkerProc::start(&env, &extra).await);
    }
    if let Some(after) = kill_after {
        tokio::time::sleep(after.saturating_sub(started.elapsed())).await;
        workers[0].proc.kill();
    }
    let n = env.wait_submitted(DUE as i64, Duration::from_secs(60)).await;
    assert_eq!(n, DUE as i64, "log of worker 2:\n{}", workers[1].proc.output());
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (DUE, DUE), "each exactly once");
    let mut times: Vec<i64> = env.handoffs().await.iter().map(|(id, _)| entry_ms(id)).collect();
    times.sort_unstable();
    let spread = (times[DUE - 1] - times[0]) as f64 / 1_000.0;
    let per_s = max_in_window(&times, 1_000);
    let label = if kill_after.is_some() { "one_killed" } else { "all_alive" };
    println!("FIGURE fleet_pacing_{label} spread_s={spread:.2} max_per_1s_window={per_s} (20/s, burst 20, 3 workers, 600 due)");
    // One second's burst at once, then 20 per second: the last goes out 29 s after the first.
    assert!((27.0..=33.0).contains(&spread), "spread {spread} s, not 30 s ± 10 %");
    // Any one-second window: the burst plus a second's rate, plus one free permit per worker
    // not yet reported (docs/pacing.md#bounds).
    assert!(per_s <= 2 * RATE as usize + 3, "{per_s} in one second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_three_workers_hold_the_service_rate() {
    three_workers("pc1", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_three_workers_hold_it_when_one_is_killed_halfway() {
    three_workers("pc2", Some(Duration::from_secs(15))).await;
}
