//! Attacks on the lazy connection of create (`functions::callbacks::create::Conn`,
//! docs/costs.md#create-throughput-against-the-postgresql-insert-ceiling): a plain create takes
//! no PostgreSQL connection of its own; the batcher draws one for the insert, and a re-seed of
//! the throttle state takes one only when it runs. Two promises:
//! - a stalled Redis admission holds no connection, so PostgreSQL-only answers (a retrieve)
//!   are not starved of the pool while creates wait on Redis;
//! - with a pool of one connection, a burst of creates that all need a re-seed still gets
//!   exact limits, no 5xx and no hang (the re-seed and the batcher share the one connection).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use futures::future::join_all;
use harness::{Engage, PrivateRedis, TestEnv, open_service};
use serde_json::json;

/// `CLIENT PAUSE WRITE` of `redis` for `ms` (scripts wait; reads go on).
async fn pause_writes(redis: &PrivateRedis, ms: u64) {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("WRITE")
        .query_async(&mut conn)
        .await
        .expect("CLIENT PAUSE");
}

/// Attack. A pool of 2 connections; the service Redis pauses writes for 1.5 s
/// (`REDIS_TIMEOUT_MS` 3 s, so the admissions wait the whole pause); 8 plain creates are sent
/// into the pause, then a retrieve. Before: each create held a pooled connection across its
/// admission, so the retrieve waited for the pause to end. Promised: the retrieve answers
/// within 500 ms of being sent; every create answers 200 after the pause and is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s41_a_stalled_admission_holds_no_connection() {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("DB_POOL_SIZE", "2")
        .with("REDIS_TIMEOUT_MS", "3000");
    let engage = Engage::start(&env, &[]).await;
    let key = engage.provision("lz", "lz", open_service(json!({}))).await;
    let first = engage
        .create(&key)
        .service("lz")
        .phone("+12125550100")
        .id()
        .await;
    engage.retrieve(&key, &first).await;

    pause_writes(&redis, 1_500).await;
    let paused = Instant::now();
    let creates = (0..8).map(|i| {
        let (engage, key) = (&engage, &key);
        async move {
            let phone = format!("+1212555{:04}", 200 + i);
            engage.create(key).service("lz").phone(&phone).send().await
        }
    });
    let retrieve = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = Instant::now();
        let (code, _) = engage
            .post(&key, harness::RETRIEVE, json!({"id": first}))
            .await;
        (code, sent.elapsed())
    };
    let (answers, (code, took)) = tokio::join!(join_all(creates), retrieve);
    let all_done = paused.elapsed();
    println!(
        "FIGURE lazy_conn retrieve_ms={} creates_done_ms={}",
        took.as_millis(),
        all_done.as_millis()
    );
    assert_eq!(code, 200, "the retrieve during the pause");
    assert!(
        took < Duration::from_millis(500),
        "a retrieve waited {took:?} while creates waited on Redis: they held the pool"
    );
    assert!(
        all_done >= Duration::from_millis(1_200),
        "the creates did not wait for Redis ({all_done:?}): the attack did not bite"
    );
    let mut ids = Vec::new();
    for (code, body) in &answers {
        assert_eq!(*code, 200, "{body}");
        ids.push(body["data"]["id"].as_str().expect("id").to_string());
    }
    let stored = env
        .count(&format!(
            "SELECT count(*) FROM callbacks WHERE id::text IN ('{}')",
            ids.join("','")
        ))
        .await;
    assert_eq!(stored, 8, "each create stored once");
}

/// Attack. A pool of 1 connection, a service window of 10 per 300 s, and the throttle state
/// deleted from Redis before a burst of 30 concurrent creates: every create's admission asks
/// for a re-seed, which now takes the pool's one connection while the batcher needs it for the
/// inserts. Promised: exactly 10 answered 200 and stored, 20 answered 429, no other status,
/// within 20 s; then the state is seeded and a 31st create is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s41_reseed_burst_with_a_pool_of_one() {
    let (engage, key) = reseed_burst_with_a_pool_of_one("ls", 300, false).await;
    let (code, body) = engage
        .create(&key)
        .service("ls")
        .phone("+12125550399")
        .send()
        .await;
    assert_eq!(code, 429, "{body}");
}

/// The burst of [`attack_s41_reseed_burst_with_a_pool_of_one`] on tenant and service `name`
/// (numbers from `+1212555` + `first_phone`), every other create with an Idempotency-Key when
/// `keyed` (those re-seed inside their own transaction). Asserts exactly 10 × 200 and
/// 20 × 429 within 20 s and 10 rows stored; returns the server and the key.
pub(crate) async fn reseed_burst_with_a_pool_of_one(
    name: &str,
    first_phone: usize,
    keyed: bool,
) -> (Engage, String) {
    let env = TestEnv::new().with("DB_POOL_SIZE", "1");
    let engage = Engage::start(&env, &[]).await;
    let settings = open_service(json!({"throttle_per_service_1": 10, "throttle_ttl_1": 300}));
    let key = engage.provision(name, name, settings).await;
    let mut redis = env.redis().await;
    let pattern = format!("{{{}:thr:{name}:{name}}}*", env.id);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut redis)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut redis)
            .await
            .expect("DEL");
    }
    let started = Instant::now();
    let creates = (0..30).map(|i| {
        let (engage, key) = (&engage, &key);
        async move {
            let phone = format!("+1212555{:04}", first_phone + i);
            let create = engage.create(key).service(name).phone(&phone);
            match keyed && i % 2 == 0 {
                true => create.idempotency_key(&format!("k{i}")).send().await,
                false => create.send().await,
            }
        }
    });
    let answers = tokio::time::timeout(Duration::from_secs(20), join_all(creates))
        .await
        .expect("the burst answered within 20 s");
    let mut codes = BTreeMap::new();
    for (code, _) in &answers {
        *codes.entry(*code).or_insert(0) += 1;
    }
    println!(
        "FIGURE lazy_conn_reseed service={name} keyed={keyed} codes={codes:?} took_ms={}",
        started.elapsed().as_millis()
    );
    assert_eq!(codes, BTreeMap::from([(200, 10), (429, 20)]));
    let stored = env
        .count(&format!(
            "SELECT count(*) FROM callbacks WHERE service = '{name}'"
        ))
        .await;
    assert_eq!(stored, 10);
    (engage, key)
}
