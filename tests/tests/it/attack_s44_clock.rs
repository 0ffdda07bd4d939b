//! Attacks on the time the admission script takes from its caller
//! (docs/costs.md#time-from-the-caller): a caller whose estimate of the node's clock is stale
//! (its process stopped between estimating and sending) or ahead (the node's clock was stepped
//! back) must not let a service window admit more than its limit, and must not stall it. The
//! test process plants the estimate (`shared::redis::clock::observe`) and calls the library as
//! an API replica does; another "replica" is a call made with no estimate (`TIME`).

use std::time::{Duration, Instant};

use harness::{PrivateRedis, TestEnv};
use shared::redis::{
    Keys, RedisConn, clock,
    throttle::{self, Limits, ThrottleKeys, Verdict},
};
use uuid::Uuid;

/// 3 creates per 60 s for the service, nothing else.
fn window() -> Limits {
    Limits {
        per_service_1: (3, 60),
        per_service_2: (0, 0),
        per_number_24h: 0,
        in_queue: 0,
        max_queued: 0,
    }
}

/// A private standalone Redis, a connection and a seeded throttle hash.
async fn service(tenant: &str) -> (PrivateRedis, RedisConn, ThrottleKeys) {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new().with("REDIS_URL", &redis.url());
    let cfg = shared::Config::from_vars(env.vars.clone()).expect("config");
    let h = shared::redis::service(&cfg.redis).expect("redis handle");
    let tk = ThrottleKeys::new(&Keys::new(&env.id, 4), tenant, "s");
    let mut conn = h.conn().await.expect("conn");
    let now = jiff::Timestamp::now().as_millisecond();
    throttle::seed(&mut conn, &tk, &window(), &[], &[], (60, now))
        .await
        .expect("seed");
    (redis, conn, tk)
}

/// Redis's clock (ms).
async fn redis_ms(conn: &mut RedisConn) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(conn).await.expect("TIME");
    s * 1000 + us / 1000
}

/// Plants `offset_ms` (negative: behind) as this process's estimate of the standalone node.
async fn plant(conn: &mut RedisConn, offset_ms: i64) {
    let at = Instant::now();
    let now = redis_ms(conn).await;
    clock::observe("", now + offset_ms, at, at);
}

async fn admit(conn: &mut RedisConn, tk: &ThrottleKeys) -> Verdict {
    throttle::check_and_count(conn, tk, Uuid::new_v4(), "+15550100000", &window())
        .await
        .expect("admission")
}

/// Attack: the window is full by the node's clock (3 admitted just now); a caller whose
/// estimate is 120 s stale (older than the whole 60 s window, so its window looks empty)
/// asks. It must be refused: `~t` shows the time is stale and the script reads `TIME`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s44_a_stale_caller_does_not_pass_a_full_window() {
    let (_redis, mut conn, tk) = service("stale").await;
    clock::forget("");
    for _ in 0..3 {
        assert_eq!(admit(&mut conn, &tk).await, Verdict::Admitted);
        // Each call read TIME and left a reading: forget it, so the next reads TIME again.
        clock::forget("");
    }
    plant(&mut conn, -120_000).await;
    let v = admit(&mut conn, &tk).await;
    assert!(matches!(v, Verdict::Rejected(_)), "a stale caller: {v:?}");
    clock::forget("");
    let v = admit(&mut conn, &tk).await;
    assert!(matches!(v, Verdict::Rejected(_)), "then a true one: {v:?}");
}

/// Attack: a caller whose estimate runs an hour ahead (the node's clock was stepped back)
/// admits once; the callers with the node's clock must neither be stalled for that hour by
/// the `~t` it left (they do not follow a `~t` more than a second ahead of `TIME`) nor pass
/// more than the limit: the window holds 3 whatever the clocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s44_a_caller_an_hour_ahead_neither_stalls_nor_widens_the_window() {
    let (_redis, mut conn, tk) = service("ahead").await;
    plant(&mut conn, 3_600_000).await;
    assert_eq!(admit(&mut conn, &tk).await, Verdict::Admitted);
    clock::forget("");
    let mut admitted = 1;
    for _ in 0..5 {
        if admit(&mut conn, &tk).await == Verdict::Admitted {
            admitted += 1;
        }
        clock::forget("");
    }
    assert!(admitted <= 3, "{admitted} admitted in one window of 3");
    let started = Instant::now();
    // A refusal answers promptly (no stall, no loop in the script).
    let _ = admit(&mut conn, &tk).await;
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// Guard: callers a few milliseconds behind each other (two replicas' estimates) count in one
/// window, exactly: 3 pass, the 4th is refused, whatever order the estimates arrive in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s44_replicas_a_little_behind_each_other_stay_exact() {
    let (_redis, mut conn, tk) = service("lag").await;
    let mut admitted = 0;
    for (i, lag) in [0, -15, -3, -19, 0, -8].into_iter().enumerate() {
        plant(&mut conn, lag).await;
        if admit(&mut conn, &tk).await == Verdict::Admitted {
            admitted += 1;
        }
        assert!(admitted <= 3, "call {i}: {admitted} admitted");
    }
    assert_eq!(admitted, 3);
}
