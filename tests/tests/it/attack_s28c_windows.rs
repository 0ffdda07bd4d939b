//! Third attack round on the service window rings (docs/throttling.md, "Sliding windows in
//! sub-windows"): conversion of a ring counted in another sub-window length, stalled or
//! garbage leases, a re-seed from an older snapshot. Tests marked "Broke" revealed a broken
//! promise on 99200c2; each is fixed and stays as a regression test.

use std::time::{Duration, Instant};

use futures::future::join_all;
use harness::{Engage, TestEnv};

use super::attack_s28_windows::{
    act, admission_ids, burst, env, hset, most_in_any_window, number, two, window1,
};

// Broke on 99200c2 (fixed: a lengthened window re-seeds from PostgreSQL; only a shortened one converts).
// a ring holds only 61 sub-windows of its *old* length; lengthening the window
// converts it in place, so every admission older than the old window whose slot was reused
// is forgotten although it lies inside the new (longer) window. Before d97d531 a changed
// length re-seeded from PostgreSQL, which knows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s28c_lengthened_window_forgets_admissions_older_than_the_old_window() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let b = Engage::start(&env, &[]).await;
    // 1000 per 1 s: nothing refused, sub-window 17 ms, ring spans ~1 s.
    let key = a.provision("acme", "s", window1(1000, 1)).await;
    let start = Instant::now();
    let mut admitted = 0;
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(3_000) {
        admitted += burst(&a, &b, &key, "s", 4, i).await;
        i += 4;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // All of them lie in the next 60 s: a window of (admitted + 10) per 60 s has 10 left.
    let limit = admitted as u32 + 10;
    a.service("acme", "s", window1(limit, 60)).await;
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let mut more = 0;
    for round in 0..4 {
        more += burst(&a, &b, &key, "s", 40, 5_000 + round * 40).await;
    }
    let mut times: Vec<i64> = admission_ids(&env, "s")
        .await
        .into_iter()
        .map(|(_, ms)| ms)
        .collect();
    times.sort_unstable();
    let in_60 = most_in_any_window(&times, 60_000);
    println!(
        "{admitted} admitted in 3 s under 1000/1 s; then {more} more under {limit}/60 s; most in any 60 s: {in_60}"
    );
    assert!(
        more <= 10 && in_60 <= limit as usize,
        "window {limit}/60 s: {in_60} admissions in 60 s ({admitted} before the change, {more} after, 10 allowed)"
    );
}

// Broke on 99200c2 (fixed: a sub-window length no settings give re-seeds).
// CHECK trusts any positive `~s1` as the unit the ring was counted in. A garbage or
// corrupt small value (here "1" ms) converts every real count to a sub-window far below the
// window's start, so the full window is emptied and refills; before d97d531 a mismatching
// `~s1` re-seeded from PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s28c_garbage_small_sub_length_empties_a_full_window() {
    let env = env();
    let (a, b, key) = two(&env, window1(5, 600)).await;
    assert_eq!(burst(&a, &b, &key, "s", 5, 0).await, 5);
    assert_eq!(burst(&a, &b, &key, "s", 4, 10).await, 0, "window full");
    let mut more = 0;
    for (round, garbage) in ["1", "0.5", "7"].into_iter().enumerate() {
        hset(&env, "s", "~s1", garbage).await;
        let n = burst(&a, &b, &key, "s", 8, 100 + round * 8).await;
        println!("~s1={garbage}: {n} admitted");
        more += n;
    }
    assert_eq!(
        more, 0,
        "5 of 5 admitted in the last 600 s, then {more} more after a garbage ~s1"
    );
}

// Broke on 99200c2 (fixed: a lease outside [now, now + 10 s] is void).
// garbage `~s1`/`~lease`: a huge `~lease` (never expires) left by one step, then an
// unusable ring (`~s1` = -3 or "x"), makes every create wait ~1.1 s and fail open (the
// stalled-seeder root cause below); a huge or infinite `~s1` holds (counts move to now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s28c_garbage_lease_and_huge_sub_length() {
    let env = env();
    let (a, b, key) = two(&env, window1(5, 600)).await;
    assert_eq!(burst(&a, &b, &key, "s", 5, 0).await, 5);
    let mut more = 0;
    for (round, (field, v)) in [
        ("~s1", "1e308"),
        ("~s1", "inf"),
        ("~lease", "99999999999999999999"),
        ("~s1", "-3"),
        ("~lease", "nan"),
        ("~s1", "x"),
    ]
    .into_iter()
    .enumerate()
    {
        hset(&env, "s", field, v).await;
        let t = Instant::now();
        let n = burst(&a, &b, &key, "s", 6, 100 + round * 6).await;
        println!("{field}={v}: {n} admitted in {:?}", t.elapsed());
        more += n;
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{field}={v}: burst took {:?}",
            t.elapsed()
        );
    }
    assert_eq!(more, 0, "full window admitted {more} after garbage");
}

/// Redis's clock in ms.
async fn redis_now_ms(env: &TestEnv) -> i64 {
    let mut redis = env.redis().await;
    let t: (i64, i64) = redis::cmd("TIME").query_async(&mut redis).await.unwrap();
    t.0 * 1000 + t.1 / 1000
}

// Broke on 99200c2 (fixed: a create that waited out a lease re-seeds itself and asks again).
// a seeder that took the lease on a lost hash and then stalls (SIGSTOPped, a slow
// PostgreSQL, a crash: the lease lives 10 s). Every other create is told 'busy' 50 times
// (~1 s), then, in the last round (round == BUSY_ROUNDS), re-seeds itself — and the loop in
// `reserve` (functions/src/callbacks/create/limits.rs) ends right there, without asking
// again: it falls out to "throttle state did not stay seeded" and fails open. So every
// create that waits out a stuck lease is admitted without limits although Redis is up and
// the re-seed it just ran would have refused it. Here the stalled seeder is its lease field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s28c_stalled_seeder_makes_waiting_creates_fail_open() {
    let env = env();
    let (a, b, key) = two(&env, window1(5, 600)).await;
    assert_eq!(burst(&a, &b, &key, "s", 5, 0).await, 5);
    assert_eq!(burst(&a, &b, &key, "s", 4, 10).await, 0, "window full");
    // The hash is lost; a seeder took the lease and stalled.
    let mut redis = env.redis().await;
    let _: () = redis::cmd("DEL")
        .arg(act(&env, "s"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let lease = redis_now_ms(&env).await + 10_000;
    hset(&env, "s", "~lease", &lease.to_string()).await;
    let t = Instant::now();
    let more = burst(&a, &b, &key, "s", 8, 100).await;
    let took = t.elapsed();
    let fail_open = a.metric_sum("engage_throttle_fail_open_total").await
        + b.metric_sum("engage_throttle_fail_open_total").await;
    println!("{more} admitted in {took:?}, {fail_open} failed open");
    assert_eq!(
        (more, fail_open),
        (0, 0.0),
        "5 of 5 admitted in the last 600 s; behind a stalled seeder {more} more were admitted ({fail_open} failed open) in {took:?}"
    );
}

// Broke on 99200c2 (fixed: a lease outside [now, now + 10 s] is void; a create that waited
// re-seeds and asks again).
// a `~lease` that never compares below the clock ("nan") is never
// taken over, so a ring that cannot count (here `~s1` garbage) leaves every create waiting
// ~1 s and then failing open, until the hash expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s28c_nan_lease_and_unusable_ring_fail_open() {
    let env = env();
    let (a, b, key) = two(&env, window1(5, 600)).await;
    assert_eq!(burst(&a, &b, &key, "s", 5, 0).await, 5);
    hset(&env, "s", "~lease", "nan").await;
    hset(&env, "s", "~s1", "x").await;
    let more = burst(&a, &b, &key, "s", 6, 100).await;
    assert_eq!(more, 0, "full window: {more} admitted behind a 'nan' lease");
}

// Broke on 99200c2 (fixed: a release's tombstone keeps the admission, which the re-seed counts).
// a re-seed merges a PostgreSQL snapshot read *before* its script runs. An admission
// made meanwhile (other callers count on while the lease is held) is kept through its `i:`
// entry — unless it was released (cancelled, or completed) before the script ran: its entry
// is then a tombstone, the snapshot does not have it, and the rebuilt ring forgets it
// although it was admitted inside the window. Here the stalled seeder is the library call
// `throttle::seed` with the snapshot of before the admissions (0 rows); in production the
// gap is the seeder's two queries plus any stall (GC, SIGSTOP, a slow network).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s28c_reseed_with_an_older_snapshot_forgets_released_admissions() {
    use shared::redis::{Keys, throttle};
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let b = Engage::start(&env, &[]).await;
    let mut settings = window1(3, 600);
    settings["throttle_per_service_2"] = 0.into();
    let key = a.provision("acme", "s", settings).await;
    // The seeder's snapshot: nothing created yet.
    let limits = throttle::Limits {
        per_service_1: (3, 600),
        per_service_2: (0, 0),
        per_number_24h: 0,
        in_queue: 0,
        max_queued: 0,
    };
    // Meanwhile: 3 admitted (the window is full), then cancelled.
    let mut ids = vec![];
    for i in 0..3 {
        let (code, body) = a.create(&key).service("s").phone(&number(i)).send().await;
        assert_eq!(code, 200, "{body}");
        ids.push(body["data"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(burst(&a, &b, &key, "s", 4, 10).await, 0, "window full");
    for id in &ids {
        let (code, body) = b.cancel(&key, id).await;
        assert_eq!(code, 200, "{body}");
    }
    // The stalled seeder's script lands.
    let cfg = shared::Config::from_vars(env.vars.clone()).expect("config");
    let h = shared::redis::service(&cfg.redis).unwrap();
    let mut conn = h.conn().await.unwrap();
    let tk = throttle::ThrottleKeys::new(&Keys::new(&env.id, 4), "acme", "s");
    assert_eq!(tk.act(), act(&env, "s"));
    throttle::seed(
        &mut conn,
        &tk,
        &limits,
        &[],
        &[],
        (60, jiff::Timestamp::now().as_millisecond()),
    )
    .await
    .unwrap();
    let more = burst(&a, &b, &key, "s", 6, 100).await;
    assert_eq!(
        more, 0,
        "3 of 3 admitted in the last 600 s (then cancelled); {more} more admitted after the re-seed"
    );
}

// Holds: per-number 24 h and in_queue_checking stay exact under concurrent creates of one
// number on two replicas while every round forces a re-seed (`~seed` 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s28c_per_number_and_in_queue_exact_under_forced_reseeds() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let b = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            serde_json::json!({"throttle_per_service_1": 0, "throttle_per_service_2": 0,
                   "throttle_per_number_24h": 3, "in_queue_checking": false}),
        )
        .await;
    let key2 = a
        .provision(
            "acme",
            "q",
            serde_json::json!({"throttle_per_service_1": 0, "throttle_per_service_2": 0,
                   "throttle_per_number_24h": 0, "in_queue_checking": true}),
        )
        .await;
    let (mut n24, mut inq) = (0, 0);
    for _ in 0..8 {
        hset(&env, "s", "~seed", "0").await;
        let mut redis = env.redis().await;
        let _: () = redis::cmd("HSET")
            .arg(format!("{{{}:thr:acme:q}}:act", env.id))
            .arg("~seed")
            .arg("0")
            .query_async(&mut redis)
            .await
            .unwrap();
        let calls = (0..8).map(|j| {
            let t = if j % 2 == 0 { &a } else { &b };
            let (k, svc) = if j < 4 { (&key, "s") } else { (&key2, "q") };
            t.create(k).service(svc).phone(&number(7)).send()
        });
        for (j, (code, body)) in join_all(calls).await.into_iter().enumerate() {
            match code {
                200 if j < 4 => n24 += 1,
                200 => inq += 1,
                429 => {}
                _ => panic!("{code} {body}"),
            }
        }
    }
    assert_eq!(n24, 3, "per-number 24 h = 3");
    assert!(inq <= 2, "in_queue_checking: {inq} active for one number");
}

// Holds: all three timed limits refuse at once; the announced time is the latest (the
// number's 24 h), and it names that limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s28c_retry_time_with_three_timed_limits() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            serde_json::json!({"throttle_per_service_1": 1, "throttle_ttl_1": 60,
                   "throttle_per_service_2": 1, "throttle_ttl_2": 3600,
                   "throttle_per_number_24h": 1, "in_queue_checking": false}),
        )
        .await;
    let (code, body) = a.create(&key).service("s").phone(&number(1)).send().await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = a.create(&key).service("s").phone(&number(1)).send().await;
    assert_eq!(code, 429, "{body}");
    let msg = harness::message(&body);
    let at: jiff::Timestamp = msg
        .split("retry after ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let secs = at.duration_since(jiff::Timestamp::now()).as_secs_f64();
    assert!(msg.starts_with("throttle_per_number_24h"), "{msg}");
    assert!((86_000.0..=86_401.0).contains(&secs), "{secs} s: {msg}");
}
