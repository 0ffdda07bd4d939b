//! Attacks (helper round s46b) on the create-time limits and the time a caller passes the
//! admission script (docs/throttling.md, docs/costs.md#time-from-the-caller) after 90c47ed
//! (a refusal re-reads `TIME`; a create re-seeds up to three times before failing open).
//! Each test documents a promise: a failing one is a finding (see its comment). The four
//! "Attack" tests failed when written, and were fixed in the same stop (the `Retry-After` is
//! the node's wait, an off window counts in a live ring, a held admission re-seeds at its own
//! time): they now guard the fixes (docs/throttling.md).

use std::time::{Duration, Instant};

use futures::{StreamExt as _, future::join_all};
use harness::{Engage, TestEnv};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::attack_s28_windows::{act, admission_ids, env, hset, most_in_any_window, number};

/// libfaketime's preload library (Debian package `faketime`), as attack_s38 uses it.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The time in a 429 message's "; retry after <time>".
fn retry_time(body: &Value) -> Timestamp {
    let msg = harness::message(body);
    let at = msg
        .split("retry after ")
        .nth(1)
        .unwrap_or_else(|| panic!("no retry time: {msg}"));
    at.trim().parse().unwrap_or_else(|e| panic!("{e}: {msg}"))
}

async fn sleep_until(t: Timestamp) {
    let d = t.duration_since(Timestamp::now());
    if d.is_positive() {
        tokio::time::sleep(Duration::try_from(d).unwrap()).await;
    }
}

/// Redis's clock (ms).
async fn redis_ms(env: &TestEnv) -> i64 {
    let mut redis = env.redis().await;
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(&mut redis).await.unwrap();
    s * 1000 + us / 1000
}

async fn hget(env: &TestEnv, service: &str, field: &str) -> Option<String> {
    let mut redis = env.redis().await;
    redis::cmd("HGET")
        .arg(act(env, service))
        .arg(field)
        .query_async(&mut redis)
        .await
        .unwrap()
}

/// Sets `notify-keyspace-events`; returns the value it had.
async fn notify(redis: &mut redis::aio::MultiplexedConnection, value: &str) -> String {
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(redis)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(value)
        .query_async(redis)
        .await
        .unwrap();
    got.get(1).cloned().unwrap_or_default()
}

/// A create through `engage`'s public port: (status, `Retry-After` header, envelope).
async fn create_raw(
    engage: &Engage,
    key: &str,
    service: &str,
    phone: &str,
) -> (u16, Option<u64>, Value) {
    let resp = engage
        .http
        .post(format!("{}{}", engage.external, harness::CREATE))
        .header("x-api-key", key)
        .json(&json!({"serviceName": service, "phoneNumber": phone}))
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = resp.json().await.unwrap_or(Value::Null);
    (code, retry, body)
}

/// Attack: the API host's wall clock 15 s ahead of the Redis host's (NTP gone wrong on one
/// replica; attack_s38 shows the rest of the create path ignores it). The window is decided on
/// the node's clock and the message's "retry after" time is the node's, but `Retry-After` is
/// computed as that time minus the API host's `Timestamp::now()` (limits.rs `rejected`), so it
/// says 1 s for a window that frees in ~10 s, and a client that obeys it is refused again.
/// Docs: "Admissions are timed by the Redis clock, so the API replicas' clock skew does not
/// matter" and Retry-After says "when the next request would pass".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46b_retry_after_header_from_an_api_clock_ahead_of_redis() {
    assert!(
        std::path::Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} missing: apt-get install faketime (infra/local/deps.sh does)"
    );
    let env = env();
    let a0 = Engage::start(&env, &[]).await;
    let key = a0
        .provision(
            "acme",
            "s",
            json!({"throttle_per_service_1": 1, "throttle_ttl_1": 10,
                   "throttle_per_service_2": 0, "throttle_per_number_24h": 0,
                   "in_queue_checking": false}),
        )
        .await;
    let ahead = env
        .clone()
        .with("LD_PRELOAD", FAKETIME_LIB)
        .with("FAKETIME", "+15")
        .with("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let a = Engage::start(&ahead, &[]).await;
    let (code, _, body) = create_raw(&a, &key, "s", &number(1)).await;
    assert_eq!(code, 200, "{body}");
    let (code, retry, body) = create_raw(&a, &key, "s", &number(2)).await;
    assert_eq!(code, 429, "{body}");
    let frees = retry_time(&body);
    let retry = retry.expect("Retry-After on a window refusal");
    let true_wait = frees.duration_since(Timestamp::now()).as_secs_f64();
    // Obey the header, as a client does.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (code, _, again) = create_raw(&a, &key, "s", &number(3)).await;
    assert!(
        code == 200 && retry as f64 >= true_wait,
        "Retry-After: {retry} s, but the window frees in {true_wait:.1} s ({}); the retry after \
         {retry} s answered {code}: {}",
        harness::message(&body),
        harness::message(&again)
    );
}

/// Two replicas that disagree on window 1 (60 s): `a` caches it off, `b` switched it on at
/// `limit`; each has admitted one create (numbers 1 and 2). Returns both and an API key.
async fn disagreeing(env: &TestEnv, limit: u32, max_queued: u32) -> (Engage, Engage, String) {
    let a = Engage::start(env, &[]).await;
    let b = Engage::start(env, &[]).await;
    let settings = |limit: u32| {
        json!({"throttle_per_service_1": limit, "throttle_ttl_1": 60,
               "throttle_per_service_2": 0, "throttle_per_number_24h": 0,
               "in_queue_checking": "strict", "max_queued": max_queued})
    };
    let key = a.provision("acme", "s", settings(0)).await;
    assert_eq!(
        a.create(&key).service("s").phone(&number(1)).send().await.0,
        200
    );
    // Switched on through b; a keeps its cached settings (window off).
    b.service("acme", "s", settings(limit)).await;
    let (code, body) = b.create(&key).service("s").phone(&number(2)).send().await;
    assert_eq!(code, 200, "{body}");
    (a, b, key)
}

/// Attack: two replicas whose cached settings differ (up to `CACHE_TTL_MS` after an admin
/// change; here held with a long cache). Replica `a` still has window 1 off, `b` has it on
/// (switched on through `b`). Every admission of `a` marks the ring unusable (`~s1` = 0, "a
/// window switched off"), so `b`'s next create re-seeds from PostgreSQL, and so on at every
/// alternation. Docs (throttling.md, "A changed window length"): "So replicas that disagree
/// never undo each other's rings". The consequence under load (`b` fails open) is the next test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46b_replicas_disagreeing_on_a_window_undo_each_others_ring() {
    let env = env().with("CACHE_TTL_MS", "600000");
    let (a, b, key) = disagreeing(&env, 50, 1000).await;
    assert_eq!(
        hget(&env, "s", "~s1").await.as_deref(),
        Some("1000"),
        "b's re-seed"
    );
    let act = act(&env, "s");
    let mut redis = env.redis().await;
    let before = notify(&mut redis, "Kg").await;
    let mut sub = env.redis_pubsub().await;
    sub.psubscribe(format!("__keyspace@*__:{act}"))
        .await
        .unwrap();
    let mut events = sub.into_on_message();
    let mut rounds = Vec::new();
    for i in 0..3 {
        // a admits a fresh number, then b does.
        assert_eq!(
            a.create(&key)
                .service("s")
                .phone(&number(10 + i))
                .send()
                .await
                .0,
            200
        );
        let ring = hget(&env, "s", "~s1").await;
        let (code, body) = b
            .create(&key)
            .service("s")
            .phone(&number(20 + i))
            .send()
            .await;
        assert_eq!(code, 200, "{body}");
        // The re-seeds b's create ran (each DELs the hash).
        let mut seeds = 0;
        while let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(100), events.next()).await
        {
            if msg.get_payload::<String>().unwrap_or_default() == "del" {
                seeds += 1;
            }
        }
        rounds.push((ring, seeds));
    }
    notify(&mut redis, &before).await;
    assert!(
        rounds
            .iter()
            .all(|(ring, seeds)| ring.as_deref() == Some("1000") && *seeds == 0),
        "(~s1 after a's admission, re-seeds of b's next create) per round: {rounds:?}"
    );
}

/// Attack: the same disagreement with two real replicas only: `a` (window still off) busy
/// with creates of fresh numbers while `b` (window on) keeps asking for a number that holds
/// its one active callback (strict `in_queue_checking`). Nothing is played by the test: when
/// `a` admits between `b`'s re-seed and its recheck three times in a row, `b` fails open and the
/// number gets a second active callback, with Redis healthy. Runs until that happens or 12 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46b_a_busy_replica_with_the_window_still_off_under_real_load() {
    let env = env().with("CACHE_TTL_MS", "600000");
    let (a, b, key) = disagreeing(&env, 100_000, 100_000).await;
    let stop = Instant::now() + Duration::from_secs(12);
    let broke = std::sync::atomic::AtomicBool::new(false);
    let go = || Instant::now() < stop && !broke.load(std::sync::atomic::Ordering::Relaxed);
    let load = async {
        let mut next = 100;
        let mut admitted = 0;
        while go() {
            let from = next;
            let calls = (0..16).map(|j| {
                a.create(&key)
                    .service("s")
                    .phone(&format!("+1 303 {:07}", from + j))
                    .send()
            });
            next += 16;
            admitted += join_all(calls)
                .await
                .into_iter()
                .filter(|(c, _)| *c == 200)
                .count();
        }
        admitted
    };
    let probe = async {
        let mut codes = Vec::new();
        while go() {
            let calls = (0..4).map(|_| b.create(&key).service("s").phone(&number(2)).send());
            codes.extend(join_all(calls).await.into_iter().map(|(c, _)| c));
            if codes.contains(&200) {
                broke.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        codes
    };
    let (loaded, codes) = tokio::join!(load, probe);
    let passed = codes.iter().filter(|c| **c == 200).count();
    let fail_open = b.metric_sum("engage_throttle_fail_open_total").await;
    assert!(
        passed == 0 && fail_open == 0.0,
        "a admitted {loaded}; of b's {} creates of an active number (strict), {passed} \
         admitted, b failed open {fail_open} times",
        codes.len()
    );
}

/// Attack: the announced retry time after a periodic re-seed. A create is admitted at Redis
/// time `t`, but its insert waits behind an in-flight batch (here a table lock held 300 ms,
/// `DB_BATCH_IN_FLIGHT` = 1; under load the batch queue does it), so PostgreSQL's
/// `created_at` is ~300 ms later. The next create is refused with "retry after" = when `t`'s
/// sub-window leaves the 1 s window. Then the service's re-seed deadline passes (forced, as
/// attack_s46 does) and the re-seed places the admission at the *later* of its Redis time and
/// `created_at` (throttle.rs SEED): the retry sent at the announced time is refused.
/// Docs: "the announced free time ... a request at that time passes".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46b_a_reseed_after_a_late_insert_refuses_the_announced_retry() {
    let env = env().with("DB_BATCH_IN_FLIGHT", "1");
    let a = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            json!({"throttle_per_service_1": 1, "throttle_ttl_1": 1,
                   "throttle_per_service_2": 0, "throttle_per_number_24h": 0,
                   "in_queue_checking": false}),
        )
        .await;
    a.service(
        "acme",
        "b",
        json!({"throttle_per_service_1": 0, "throttle_per_service_2": 0,
               "throttle_per_number_24h": 0, "in_queue_checking": false}),
    )
    .await;
    // Seeded, then the window left empty.
    assert_eq!(
        a.create(&key).service("s").phone(&number(0)).send().await.0,
        200
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let pg = env.pg().await;
    pg.batch_execute("BEGIN; LOCK TABLE callbacks IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let (blocker, x, refused) = tokio::join!(
        // Holds the one batch in flight on the lock.
        a.create(&key).service("b").phone(&number(50)).send(),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            a.create(&key).service("s").phone(&number(1)).send().await
        },
        async {
            // Once x is admitted (its insert queued behind the blocker): refused, announced.
            let started = Instant::now();
            while admission_ids(&env, "s").await.len() < 2 {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "x never admitted"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let refused = a.create(&key).service("s").phone(&number(2)).send().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            pg.batch_execute("COMMIT").await.unwrap();
            refused
        }
    );
    assert_eq!(blocker.0, 200, "{}", blocker.1);
    assert_eq!(x.0, 200, "{}", x.1);
    assert_eq!(refused.0, 429, "{}", refused.1);
    let announced = retry_time(&refused.1);
    let x_id = x.1["data"]["id"].as_str().unwrap().to_string();
    let field = harness::throttle_field(&x_id);
    let admitted_ms: i64 = hget(&env, "s", &field)
        .await
        .and_then(|v| v.split('|').nth(1)?.parse().ok())
        .expect("x's admission");
    let created_ms: i64 = pg
        .query_one(
            "SELECT (extract(epoch FROM created_at) * 1000)::int8 FROM callbacks WHERE id::text = $1",
            &[&x_id.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    // The periodic re-seed deadline passes before the retry.
    hset(&env, "s", "~seed", "0").await;
    sleep_until(announced).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (code, body) = a.create(&key).service("s").phone(&number(3)).send().await;
    assert_eq!(
        code,
        200,
        "retry at the announced {announced} (+20 ms) refused after a re-seed; x admitted at \
         {admitted_ms}, created_at {created_ms} (+{} ms): {}",
        created_ms - admitted_ms,
        harness::message(&body)
    );
}

/// Guard (the refusal's `TIME` re-read): a 1 s window of 1, four rounds of admit, refuse,
/// retry exactly at the announced time (the caller's estimate lags `TIME` by its round trip:
/// the refusal re-reads `TIME` and passes). Recorded admissions stay ≥ 1 s apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46b_one_per_second_retry_at_the_announced_time_passes() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            json!({"throttle_per_service_1": 1, "throttle_ttl_1": 1,
                   "throttle_per_service_2": 0, "throttle_per_number_24h": 0,
                   "in_queue_checking": false}),
        )
        .await;
    let (code, body) = a.create(&key).service("s").phone(&number(0)).send().await;
    assert_eq!(code, 200, "{body}");
    for round in 0..4 {
        let (code, body) = a
            .create(&key)
            .service("s")
            .phone(&number(100 + round))
            .send()
            .await;
        assert_eq!(code, 429, "round {round}: {body}");
        let at = retry_time(&body);
        sleep_until(at).await;
        let (code, body) = a
            .create(&key)
            .service("s")
            .phone(&number(200 + round))
            .send()
            .await;
        assert_eq!(code, 200, "round {round}: retry at {at} refused: {body}");
    }
    let mut times: Vec<i64> = admission_ids(&env, "s")
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    times.sort_unstable();
    assert_eq!(most_in_any_window(&times, 1000), 1, "{times:?}");
}

/// Guard (group admission with the refusal's re-read): 10 per 2 s, full; 64 concurrent creates
/// on one replica sent 15 ms before the oldest sub-window leaves, so groups meet refusals that
/// re-read `TIME` and admissions after them in one script call. No 2 s ever holds more than 10,
/// nothing but 200/429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46b_a_group_of_64_at_a_window_edge_stays_exact() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            json!({"throttle_per_service_1": 10, "throttle_ttl_1": 2,
                   "throttle_per_service_2": 0, "throttle_per_number_24h": 0,
                   "in_queue_checking": false}),
        )
        .await;
    for round in 0..3 {
        let mut admitted = 0;
        let mut i = 0;
        let at = loop {
            let (code, body) = a
                .create(&key)
                .service("s")
                .phone(&number(1000 * round + i))
                .send()
                .await;
            i += 1;
            match code {
                200 => admitted += 1,
                429 => break retry_time(&body),
                _ => panic!("{code} {body}"),
            }
            assert!(admitted <= 10, "round {round}: {admitted} admitted");
        };
        sleep_until(at - jiff::SignedDuration::from_millis(15)).await;
        let calls = (0..64).map(|j| {
            a.create(&key)
                .service("s")
                .phone(&number(1000 * round + 100 + j))
                .send()
        });
        for (code, body) in join_all(calls).await {
            assert!(code == 200 || code == 429, "{code} {body}");
        }
    }
    let mut times: Vec<i64> = admission_ids(&env, "s")
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    times.sort_unstable();
    let most = most_in_any_window(&times, 2000);
    assert!(most <= 10, "{most} admissions in one 2 s window: {times:?}");
}

/// Guard (the number's 24 h limit): an immediate admission of the number made 24 h minus
/// 1.5 s ago (planted in `d:<number>` as the admission left it); the next create of that
/// number is refused with "retry after" = that admission + 24 h, and a create sent then passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46b_number_24h_retry_at_the_announced_time_passes() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            json!({"throttle_per_service_1": 0, "throttle_per_service_2": 0,
                   "throttle_per_number_24h": 1, "in_queue_checking": false}),
        )
        .await;
    assert_eq!(
        a.create(&key).service("s").phone(&number(0)).send().await.0,
        200
    );
    let old = redis_ms(&env).await - 86_400_000 + 1_500;
    hset(&env, "s", "d:12025550001", &old.to_string()).await;
    let (code, body) = a.create(&key).service("s").phone(&number(1)).send().await;
    assert_eq!(code, 429, "{body}");
    let at = retry_time(&body);
    assert_eq!(at.as_millisecond(), old + 86_400_000, "{body}");
    sleep_until(at).await;
    let (code, body) = a.create(&key).service("s").phone(&number(1)).send().await;
    assert_eq!(code, 200, "retry at {at}: {body}");
}

/// Guard: the announced retry time across a shortened window and the periodic re-seed. A
/// service counts 1 per 60 s (sub-windows of 1000 ms); one create is admitted at Redis time
/// `t` a few tens of ms before a whole second `B`. The window is shortened to 7 s (sub-windows
/// of 117 ms): the next create counts on the old ring "as it is" and is refused with "retry
/// after" `B` + 7 s. The re-seed deadline then passes (forced, as attack_s46 does) and the
/// re-seed rebuilds the ring in 117 ms sub-windows, where `t`'s sub-window straddles `B`; a
/// create sent at the announced time still passes (the re-seed counts an admission only while
/// it is younger than the window itself, so `t` is dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46b_a_shortened_window_reseeded_passes_the_announced_retry() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let settings = |ttl: u32| {
        json!({"throttle_per_service_1": 1, "throttle_ttl_1": ttl,
               "throttle_per_service_2": 0, "throttle_per_number_24h": 0,
               "in_queue_checking": false})
    };
    let key = a.provision("acme", "s", json!({})).await;
    for attempt in 0..4 {
        let service = format!("s{attempt}");
        a.service("acme", &service, settings(60)).await;
        // A whole second B at least 400 ms ahead whose 117 ms sub-window starts 60-90 ms
        // before it (so it ends > 20 ms after it); the admission aimed at the middle of that
        // stretch.
        let now = redis_ms(&env).await;
        let mut b = (now / 1000 + 1) * 1000;
        while b - now < 400 || !(60..=90).contains(&(b % 117)) {
            b += 1000;
        }
        let r = b % 117;
        let aim = b - r / 2;
        tokio::time::sleep(Duration::from_millis(
            (aim - redis_ms(&env).await).max(0) as u64
        ))
        .await;
        let x = a
            .create(&key)
            .service(&service)
            .phone(&number(1))
            .id()
            .await;
        let t: i64 = hget(&env, &service, &harness::throttle_field(&x))
            .await
            .and_then(|v| v.split('|').nth(1)?.parse().ok())
            .expect("x's admission");
        if !(b - r + 5..b - 5).contains(&t) {
            continue; // missed the stretch: again on a fresh service
        }
        a.service("acme", &service, settings(7)).await;
        let (code, body) = a
            .create(&key)
            .service(&service)
            .phone(&number(2))
            .send()
            .await;
        assert_eq!(code, 429, "{body}");
        let announced = retry_time(&body);
        assert_eq!(announced.as_millisecond(), b + 7_000, "{body}");
        hset(&env, &service, "~seed", "0").await;
        sleep_until(announced).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (code, body) = a
            .create(&key)
            .service(&service)
            .phone(&number(3))
            .send()
            .await;
        assert_eq!(
            code,
            200,
            "x admitted at {t} ({} ms before {b}, 117 ms sub-window from {}); retry at the announced {announced} (+20 ms) \
             after the re-seed: {}",
            b - t,
            b - r,
            harness::message(&body)
        );
        return;
    }
    panic!("the admission never landed in the aimed stretch");
}
