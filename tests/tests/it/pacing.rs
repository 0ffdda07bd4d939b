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
    id.split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
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
    let n = env
        .wait_submitted(DUE as i64, Duration::from_secs(60))
        .await;
    assert_eq!(
        n,
        DUE as i64,
        "log of worker 2:\n{}",
        workers[1].proc.output()
    );
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (DUE, DUE), "each exactly once");
    let mut times: Vec<i64> = env
        .handoffs()
        .await
        .iter()
        .map(|(id, _)| entry_ms(id))
        .collect();
    times.sort_unstable();
    let spread = (times[DUE - 1] - times[0]) as f64 / 1_000.0;
    let per_s = max_in_window(&times, 1_000);
    let label = if kill_after.is_some() {
        "one_killed"
    } else {
        "all_alive"
    };
    println!(
        "FIGURE fleet_pacing_{label} spread_s={spread:.2} max_per_1s_window={per_s} (20/s, burst 20, 3 workers, 600 due)"
    );
    // One second's burst at once, then 20 per second: the last goes out 29 s after the first.
    assert!(
        (27.0..=33.0).contains(&spread),
        "spread {spread} s, not 30 s ± 10 %"
    );
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

/// What an offered load got: accepted, refused, and one refusal (Retry-After, envelope).
struct Offered {
    accepted: usize,
    refused: usize,
    refusal: Option<(Option<String>, serde_json::Value)>,
}

/// Sends `per_s` requests a second for `secs` seconds with API key `key` to the external
/// ports `bases` in turn (a cheap route: the key limit is checked before any handler).
async fn offer(bases: &[String], key: &str, per_s: u64, secs: u64) -> Offered {
    let http = reqwest::Client::new();
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..per_s * secs {
        tokio::time::sleep_until(start + Duration::from_micros(i * 1_000_000 / per_s)).await;
        let req = http
            .get(format!(
                "{}/ges/v1/health/live",
                bases[i as usize % bases.len()]
            ))
            .header("x-api-key", key);
        tasks.spawn(async move {
            let resp = req.send().await.expect("request");
            let code = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            (code, retry, body)
        });
    }
    let mut out = Offered {
        accepted: 0,
        refused: 0,
        refusal: None,
    };
    while let Some(r) = tasks.join_next().await {
        let (code, retry, body) = r.expect("task");
        match code {
            429 => {
                out.refused += 1;
                out.refusal.get_or_insert((retry, body));
            }
            c if c < 300 => out.accepted += 1,
            c => panic!("unexpected {c}: {body}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_api_key_rate_holds_across_two_replicas() {
    let env = TestEnv::new()
        .with("API_KEY_RATE_PER_SECOND", "100")
        .with("API_KEY_BURST", "100");
    let a = Engage::start(&env, &[]).await;
    let b = Engage::start(&env, &[]).await;
    let key = a.provision("pc3", "svc", json!({})).await;
    let (secs, offered) = (5u64, 400u64);
    let got = offer(
        &[a.external.clone(), b.external.clone()],
        &key,
        offered,
        secs,
    )
    .await;
    let per_s = got.accepted as f64 / secs as f64;
    // docs/throttling.md#request-rate-per-api-key: over W seconds at most
    // B + R·W + N·(R/2)·H with N replicas, H = 1 s (free requests not yet reported).
    let bound = 100 + 100 * secs as usize + 2 * 50;
    println!(
        "FIGURE api_key_rate_two_replicas accepted={} ({per_s:.0}/s) refused={} offered={offered}/s for {secs} s, limit 100/s burst 100, bound {bound}",
        got.accepted, got.refused
    );
    assert!(got.accepted <= bound, "{} accepted > {bound}", got.accepted);
    assert!(
        got.accepted >= 100 * secs as usize * 9 / 10,
        "over-limited: {}",
        got.accepted
    );
    let (retry, body) = got.refusal.expect("some refused");
    assert_eq!(body["status"]["code"], 429, "{body}");
    let message = body["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("request rate limit reached"), "{body}");
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s >= 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_api_key_far_below_the_limit_costs_no_redis() {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("API_KEY_RATE_PER_SECOND", "100")
        .with("API_KEY_BURST", "100");
    let engage = Engage::start(&env, &[]).await;
    let key = engage.provision("pc4", "svc", json!({})).await;
    let mut conn = redis.conn().await;
    let scripts = |stats: Vec<(String, u64)>| -> u64 {
        stats
            .iter()
            .filter(|(n, _)| n.starts_with("eval"))
            .map(|(_, c)| c)
            .sum()
    };
    let total = |stats: &[(String, u64)]| -> u64 { stats.iter().map(|(_, c)| c).sum() };
    let before = commandstats(&mut conn).await;
    let got = offer(std::slice::from_ref(&engage.external), &key, 50, 5).await;
    let after = commandstats(&mut conn).await;
    let extra = total(&after) - total(&before) - 1; // the first INFO
    let scripted = scripts(after) - scripts(before);
    println!(
        "FIGURE api_key_rate_alone_50_per_s accepted={} redis_commands={extra} scripts={scripted} (250 requests)",
        got.accepted
    );
    assert_eq!((got.accepted, got.refused), (250, 0));
    assert_eq!(scripted, 0, "the key's bucket was asked");
    assert!(extra < 5, "{extra} Redis commands for 250 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_idle_worker_asks_redis_nothing() {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new().with("REDIS_URL", &redis.url());
    let pace = json!({ "dispatch_rate_per_second": RATE });
    let (env, engage, key) = Fixture::dispatch(env, "pc5", "idle", pace).await.parts();
    engage.create_immediate(&key, "idle", 60, 0).await;
    let extra = [("WORKER_RECONCILE_CHECK_S", "50".to_string())];
    let w = WorkerProc::start(&env, &extra).await;
    assert_eq!(env.wait_submitted(60, Duration::from_secs(15)).await, 60);
    assert!(
        w.metric("engage_dispatch_paced_total").await > 0.0,
        "not paced"
    );
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .expect("resetstat");
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The wake subscription's liveness PING (one per 2 s while no message arrives) is not
    // pacing's: counted apart.
    let (calls, seen) = harness::command_total(&mut conn, &["config", "ping"]).await;
    let pings: u64 = commandstats(&mut conn)
        .await
        .iter()
        .filter(|(n, _)| n == "ping")
        .map(|(_, c)| c)
        .sum();
    println!("FIGURE idle_after_paced_burst_redis_commands_10s={calls} pings={pings} {seen:?}");
    assert!(pings <= 6, "{pings} pings in 10 s");
    assert!(
        !seen.iter().any(|c| c.starts_with("eval")),
        "a script ran while idle: {seen:?}"
    );
    assert!(calls < 5, "{calls} commands while idle: {seen:?}");
}

/// Attack: the service Redis goes away under a flood of one key. The replica's own limit
/// still holds (never unlimited), nothing answers 5xx, and the fallback is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_api_key_rate_falls_back_to_the_replica_limit_when_redis_is_down() {
    let mut redis = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("API_KEY_RATE_PER_SECOND", "100")
        .with("API_KEY_BURST", "100");
    let engage = Engage::start(&env, &[]).await;
    let key = engage.provision("pc6", "svc", json!({})).await;
    redis.stop();
    let (secs, offered) = (3u64, 300u64);
    // `offer` panics on anything but 2xx and 429.
    let got = offer(std::slice::from_ref(&engage.external), &key, offered, secs).await;
    let local_only = engage
        .metric_sum("engage_api_key_rate_local_only_total")
        .await;
    println!(
        "FIGURE api_key_rate_redis_down accepted={} refused={} local_only={local_only}",
        got.accepted, got.refused
    );
    // The replica's own limit: B + R·W.
    assert!(
        got.accepted <= 100 + 100 * secs as usize,
        "{} accepted",
        got.accepted
    );
    assert!(
        got.accepted >= 100 * secs as usize * 9 / 10,
        "over-limited: {}",
        got.accepted
    );
    assert!(local_only > 0.0, "fallback not counted");
}

/// The pacing script on the 3-node Redis Cluster: one key per tenant, so one slot. Two workers
/// pace a burst of 60 at 20/s together (never alone: the log has no fallback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_on_a_redis_cluster() {
    let env = TestEnv::new()
        .with("REDIS_URL", harness::cluster())
        .with("REDIS_CLUSTER", "true");
    let pace = json!({ "dispatch_rate_per_second": RATE });
    let (env, engage, key) = Fixture::dispatch(env, "pc7", "clustered", pace)
        .await
        .parts();
    engage.create_immediate(&key, "clustered", 60, 0).await;
    let a = WorkerProc::start(&env, &[]).await;
    let b = WorkerProc::start(&env, &[]).await;
    assert_eq!(env.wait_submitted(60, Duration::from_secs(20)).await, 60);
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (60, 60));
    let mut times: Vec<i64> = env
        .handoffs()
        .await
        .iter()
        .map(|(id, _)| entry_ms(id))
        .collect();
    times.sort_unstable();
    let spread = (times[59] - times[0]) as f64 / 1_000.0;
    println!("FIGURE fleet_pacing_cluster spread_s={spread:.2} (60 at 20/s, 2 workers)");
    // The burst of 20, then 40 at 20/s: 2 s.
    assert!((1.8..=2.4).contains(&spread), "spread {spread}");
    for w in [&a, &b] {
        assert!(
            !w.proc.output().contains("fleet pacing unavailable"),
            "{}",
            w.proc.output()
        );
    }
}
