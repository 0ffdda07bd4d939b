//! Attacks on the service windows counted in sub-window rings (docs/throttling.md, "Sliding
//! windows in sub-windows"): the promise is never more than N admissions in any T seconds,
//! whatever the load, the number of replicas, a changed window length, a lost or old-format
//! hash.

use std::time::{Duration, Instant};

use futures::future::join_all;
use harness::{Engage, TestEnv};
use serde_json::json;

pub(super) fn env() -> TestEnv {
    TestEnv::new().with("API_KEY_RATE_PER_SECOND", "0")
}

/// A valid US number, distinct per `i` (0..10000).
pub(super) fn number(i: usize) -> String {
    format!("+1 202 555 {:04}", i % 10_000)
}

/// The throttle hash of `service` of tenant `acme`.
pub(super) fn act(env: &TestEnv, service: &str) -> String {
    format!("{{{}:thr:acme:{service}}}:act", env.id)
}

/// (id field, Redis admission ms) of the service's live `i:` entries (`<number>|<ms>[|d]`).
pub(super) async fn admission_ids(env: &TestEnv, service: &str) -> Vec<(String, i64)> {
    let mut redis = env.redis().await;
    let all: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(act(env, service))
        .query_async(&mut redis)
        .await
        .unwrap();
    all.into_iter()
        .filter(|(f, v)| f.starts_with("i:") && !v.is_empty())
        .filter_map(|(f, v)| Some((f, v.split('|').nth(1)?.parse().ok()?)))
        .collect()
}

/// The Redis admission times (ms) of the service's active callbacks, sorted.
async fn admission_times(env: &TestEnv, service: &str) -> Vec<i64> {
    let mut times: Vec<i64> = admission_ids(env, service)
        .await
        .into_iter()
        .map(|(_, ms)| ms)
        .collect();
    times.sort_unstable();
    times
}

/// Two `engage` replicas on `env` and service `s` of tenant `acme` with `settings`; returns
/// both and an API key.
pub(super) async fn two(env: &TestEnv, settings: serde_json::Value) -> (Engage, Engage, String) {
    let a = Engage::start(env, &[]).await;
    let b = Engage::start(env, &[]).await;
    let key = a.provision("acme", "s", settings).await;
    (a, b, key)
}

/// Creates `n` callbacks on service `s` through `a` (numbers 0..n), each admitted.
pub(super) async fn admit(a: &Engage, key: &str, n: usize) {
    for i in 0..n {
        let (code, body) = a.create(key).service("s").phone(&number(i)).send().await;
        assert_eq!(code, 200, "{body}");
    }
}

/// Service settings with window 1 only (`limit` per `ttl` s; no per-number limits).
pub(super) fn window1(limit: u32, ttl: u32) -> serde_json::Value {
    json!({"throttle_per_service_1": limit, "throttle_ttl_1": ttl,
           "throttle_per_number_24h": 0, "in_queue_checking": false})
}

/// `n` concurrent creates alternating between `a` and `b`; returns (admitted, refused) and
/// panics on anything but 200/429.
pub(super) async fn burst(
    a: &Engage,
    b: &Engage,
    key: &str,
    service: &str,
    n: usize,
    from: usize,
) -> usize {
    let calls = (0..n).map(|j| {
        let target = if j % 2 == 0 { a } else { b };
        target
            .create(key)
            .service(service)
            .phone(&number(from + j))
            .send()
    });
    let mut admitted = 0;
    for (code, body) in join_all(calls).await {
        match code {
            200 => admitted += 1,
            429 => {}
            _ => panic!("{code} {body}"),
        }
    }
    admitted
}

/// Sets one field of the service's throttle hash.
pub(super) async fn hset(env: &TestEnv, service: &str, field: &str, value: &str) {
    let mut redis = env.redis().await;
    let _: () = redis::cmd("HSET")
        .arg(act(env, service))
        .arg(field)
        .arg(value)
        .query_async(&mut redis)
        .await
        .unwrap();
}

/// The largest number of `times` (ms, sorted) inside any window of `ttl_ms`.
pub(super) fn most_in_any_window(times: &[i64], ttl_ms: i64) -> usize {
    let (mut most, mut lo) = (0, 0);
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= ttl_ms {
            lo += 1;
        }
        most = most.max(hi - lo + 1);
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_window_of_t_seconds_ever_holds_more_than_n_under_sustained_load_on_two_replicas() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let b = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            json!({"throttle_per_service_1": 6, "throttle_ttl_1": 2,
                   "throttle_per_service_2": 20, "throttle_ttl_2": 7,
                   "throttle_per_number_24h": 0, "in_queue_checking": false}),
        )
        .await;
    // 9 s of bursts of 8 concurrent creates on both replicas: far above both limits.
    let start = Instant::now();
    let (mut admitted, mut refused, mut i) = (0, 0, 0);
    while start.elapsed() < Duration::from_secs(9) {
        let calls = (0..8).map(|j| {
            let target = if j % 2 == 0 { &a } else { &b };
            target
                .create(&key)
                .service("s")
                .phone(&number(i + j))
                .send()
        });
        for (code, body) in join_all(calls).await {
            match code {
                200 => admitted += 1,
                429 => refused += 1,
                _ => panic!("{code} {body}"),
            }
        }
        i += 8;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let times = admission_times(&env, "s").await;
    assert_eq!(times.len(), admitted, "every admission is one callback");
    assert!(refused > 0);
    let in_2s = most_in_any_window(&times, 2_000);
    let in_7s = most_in_any_window(&times, 7_000);
    println!(
        "{admitted} admitted, {refused} refused; most in any 2 s: {in_2s} (limit 6), in any 7 s: {in_7s} (limit 20)"
    );
    assert!(in_2s <= 6, "{in_2s} admissions in one 2 s window");
    assert!(in_7s <= 20, "{in_7s} admissions in one 7 s window");
    // Conservative by at most one sub-window, not more: the long window admits its 20 in
    // 9 s (the short one alone would allow 27).
    assert!(admitted >= 20, "only {admitted} admitted in 9 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_window_length_keeps_counting_what_was_admitted() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let settings = |ttl: u32| {
        json!({"throttle_per_service_1": 4, "throttle_ttl_1": ttl,
               "throttle_per_number_24h": 0, "in_queue_checking": false})
    };
    let key = a.provision("acme", "s", settings(300)).await;
    admit(&a, &key, 4).await;
    // A longer window (other sub-windows): the 4 admissions still count, from PostgreSQL.
    a.service("acme", "s", settings(600)).await;
    let (code, body) = a.create(&key).service("s").phone(&number(10)).send().await;
    assert_eq!(code, 429, "{body}");
    // A shorter one that still covers them: the same.
    a.service("acme", "s", settings(120)).await;
    let (code, body) = a.create(&key).service("s").phone(&number(11)).send().await;
    assert_eq!(code, 429, "{body}");
    let msg = body["status"]["message"].as_str().unwrap();
    assert!(msg.starts_with("throttle_per_service_1"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_windows_rebuild_from_postgresql_after_redis_loses_them() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            json!({"throttle_per_service_1": 3, "throttle_per_number_24h": 0,
                   "in_queue_checking": false}),
        )
        .await;
    admit(&a, &key, 3).await;
    let mut redis = env.redis().await;
    let act = act(&env, "s");
    // The hash of an older release: no sub-window length, the old bound fields.
    let _: i64 = redis::cmd("HDEL")
        .arg(&act)
        .arg("~s1")
        .arg("w1:0")
        .query_async(&mut redis)
        .await
        .unwrap();
    let (code, body) = a.create(&key).service("s").phone(&number(7)).send().await;
    assert_eq!(code, 429, "old-format hash: {body}");
    // Redis loses the hash altogether.
    let _: i64 = redis::cmd("DEL")
        .arg(&act)
        .query_async(&mut redis)
        .await
        .unwrap();
    let (code, body) = a.create(&key).service("s").phone(&number(8)).send().await;
    assert_eq!(code, 429, "lost hash: {body}");
    // Ring counters wiped but the bound left: the bound is only an upper bound, the ring is
    // rebuilt at the next re-seed, which forcing the deadline brings now.
    let _: () = redis::cmd("HSET")
        .arg(&act)
        .arg("~seed")
        .arg(0)
        .query_async(&mut redis)
        .await
        .unwrap();
    let (code, body) = a.create(&key).service("s").phone(&number(9)).send().await;
    assert_eq!(code, 429, "re-seeded: {body}");
    let held: i64 = redis::cmd("HGET")
        .arg(&act)
        .arg("~count")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(held, 3, "the three callbacks, counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_during_a_reseed_are_counted_once() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let b = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            json!({"throttle_per_service_1": 30, "throttle_per_number_24h": 0,
                   "in_queue_checking": false}),
        )
        .await;
    let mut redis = env.redis().await;
    let act = act(&env, "s");
    let mut admitted = 0;
    for round in 0..6 {
        // Every round forces a re-seed in the middle of 10 concurrent creates.
        let force = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _: () = redis::cmd("HSET")
                .arg(&act)
                .arg("~seed")
                .arg(0)
                .query_async(&mut redis.clone())
                .await
                .unwrap();
        };
        let calls = (0..10).map(|j| {
            let target = if j % 2 == 0 { &a } else { &b };
            target
                .create(&key)
                .service("s")
                .phone(&number(round * 10 + j))
                .send()
        });
        let (results, ()) = tokio::join!(join_all(calls), force);
        admitted += results.iter().filter(|(c, _)| *c == 200).count();
    }
    assert_eq!(admitted, 30, "exactly the limit, re-seeds or not");
    let _: () = redis::cmd("HSET")
        .arg(&act)
        .arg("~seed")
        .arg(0)
        .query_async(&mut redis)
        .await
        .unwrap();
    let (code, body) = a.create(&key).service("s").phone(&number(99)).send().await;
    assert_eq!(code, 429, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_switched_off_and_on_again_counts_what_it_missed() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let settings = |lim1: u32| {
        json!({"throttle_per_service_1": lim1, "throttle_ttl_1": 300,
               "throttle_per_service_2": 100, "throttle_ttl_2": 3600,
               "throttle_per_number_24h": 0, "in_queue_checking": false})
    };
    let key = a.provision("acme", "s", settings(3)).await;
    admit(&a, &key, 3).await;
    // Window 1 off: the second window alone counts these.
    a.service("acme", "s", settings(0)).await;
    for n in 3..8 {
        assert_eq!(
            a.create(&key).service("s").phone(&number(n)).send().await.0,
            200
        );
    }
    // On again at 6: the 8 admissions of the last 300 s are over it.
    a.service("acme", "s", settings(6)).await;
    let (code, body) = a.create(&key).service("s").phone(&number(9)).send().await;
    assert_eq!(code, 429, "{body}");
    let msg = body["status"]["message"].as_str().unwrap();
    assert!(msg.starts_with("throttle_per_service_1"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_lost_hash_no_admission_leaves_its_window_early() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let key = a.provision("acme", "s", window1(2, 2)).await;
    // Creates with an Idempotency-Key: their insert's transaction begins before the admission,
    // so PostgreSQL's creation time precedes Redis's admission time.
    for n in 0..2 {
        let (code, body) = a
            .create(&key)
            .service("s")
            .phone(&number(n))
            .idempotency_key(&format!("lost-{n}"))
            .send()
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let first = admission_times(&env, "s").await[0];
    let mut redis = env.redis().await;
    let _: i64 = redis::cmd("DEL")
        .arg(act(&env, "s"))
        .query_async(&mut redis)
        .await
        .unwrap();
    // Rebuilt from PostgreSQL alone: the next admission comes no sooner than the first one
    // leaves the 2 s window.
    for n in 2.. {
        let (code, body) = a.create(&key).service("s").phone(&number(n)).send().await;
        match code {
            429 => tokio::time::sleep(Duration::from_millis(5)).await,
            200 => break,
            _ => panic!("{code} {body}"),
        }
    }
    let times = admission_times(&env, "s").await;
    let last = *times.last().unwrap();
    assert!(
        last >= first + 2_000,
        "admitted {} ms after the first admission (window 2 s)",
        last - first
    );
}
