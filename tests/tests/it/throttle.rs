//! Create-time limits (issue 5): exact across two `engage` processes sharing one Redis and one
//! PostgreSQL, rejected requests count nothing, the active counts heal from PostgreSQL, and
//! limits fail open when Redis is down.

use std::collections::BTreeMap;

use futures::future::join_all;
use harness::{Engage, TestEnv, free_port};
use serde_json::{Value, json};

/// Two `engage` processes on one environment and tenant `acme` with its API key.
struct Two {
    a: Engage,
    b: Engage,
    key: String,
}

/// Starts [`Two`] (per-key rate limit off: these tests measure throttles).
async fn two(env: &TestEnv) -> Two {
    // Sequential starts: the first applies the migrations.
    let a = Engage::start(env, &[]).await;
    let b = Engage::start(env, &[]).await;
    let key = a.tenant("acme").await;
    Two { a, b, key }
}

fn env() -> TestEnv {
    TestEnv::new().with("API_KEY_RATE_PER_SECOND", "0")
}

/// A valid US number, distinct per `i` (0..10000).
fn number(i: usize) -> String {
    format!("+1 202 555 {:04}", i % 10_000)
}

impl Two {
    /// Creates or replaces a service of `acme`.
    async fn service(&self, name: &str, settings: Value) {
        self.a.service("acme", name, settings).await;
    }

    /// Sends `n` creates on `service` at once (numbers from `phone`), alternating between
    /// the two processes; returns the status counts and the distinct 429 messages.
    async fn burst(
        &self,
        n: usize,
        service: &str,
        phone: impl Fn(usize) -> String,
    ) -> (BTreeMap<u16, usize>, Vec<String>) {
        let calls = (0..n).map(|i| {
            let target = if i % 2 == 0 { &self.a } else { &self.b };
            target
                .create(&self.key)
                .service(service)
                .phone(&phone(i))
                .send()
        });
        let mut codes = BTreeMap::new();
        let mut messages = Vec::new();
        for (code, body) in join_all(calls).await {
            *codes.entry(code).or_insert(0) += 1;
            let m = harness::message(&body).to_string();
            if code == 429 && !messages.contains(&m) {
                messages.push(m);
            }
        }
        (codes, messages)
    }

    /// A metric summed over both processes.
    async fn metric(&self, name: &str) -> f64 {
        self.a.metric_sum(name).await + self.b.metric_sum(name).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_window_is_exact_across_two_processes() {
    let env = env();
    let t = two(&env).await;
    t.service(
        "sales",
        json!({"throttle_per_service_1": 50, "throttle_ttl_1": 300,
               "in_queue_checking": false, "max_queued": 0}),
    )
    .await;

    let (codes, messages) = t.burst(200, "sales", number).await;
    assert_eq!(codes.get(&200), Some(&50), "{codes:?}");
    assert_eq!(codes.get(&429), Some(&150), "{codes:?}");
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].starts_with(
            "throttle_per_service_1 reached: 50 requests per 300 s for service sales; retry after 20"
        ),
        "{}",
        messages[0]
    );
    assert_eq!(t.metric("CB_TTL_LIMIT_REACHED").await, 150.0);
    assert_eq!(t.metric("ges_callbacks_created").await, 50.0);
    let stored = env
        .count("SELECT count(*) FROM callbacks WHERE service = 'sales'")
        .await;
    assert_eq!(stored, 50);

    // Window 2 is exact in the same way, whichever process answers.
    t.service(
        "support",
        json!({"throttle_per_service_1": 0, "throttle_per_service_2": 30,
               "in_queue_checking": false}),
    )
    .await;
    let (codes, messages) = t.burst(80, "support", |i| number(1000 + i)).await;
    assert_eq!(codes.get(&200), Some(&30), "{codes:?}");
    assert!(
        messages[0].starts_with("throttle_per_service_2 reached: 30 requests per 3600 s"),
        "{messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_number_in_queue_and_max_queued_are_exact() {
    let env = env();
    let t = two(&env).await;
    let (a, key) = (&t.a, &t.key);

    // Immediate requests per number per 24 h.
    t.service(
        "perno",
        json!({"throttle_per_number_24h": 5, "in_queue_checking": false}),
    )
    .await;
    let (codes, messages) = t.burst(40, "perno", |_| "(202) 555-0142".into()).await;
    assert_eq!(codes.get(&200), Some(&5), "{codes:?}");
    assert_eq!(codes.get(&429), Some(&35), "{codes:?}");
    assert!(
        messages[0].starts_with(
            "throttle_per_number_24h reached: 5 immediate requests per phone number per 24 h; retry after"
        ),
        "{messages:?}"
    );
    // The same number written another way is the same number.
    let (code, _) = a
        .create(key)
        .service("perno")
        .phone("+12025550142")
        .send()
        .await;
    assert_eq!(code, 429);

    // Active callbacks per number: strict = 1, true = 2.
    for (service, setting, limit) in [("strict", json!("strict"), 1), ("two", json!(true), 2)] {
        t.service(
            service,
            json!({"in_queue_checking": setting, "throttle_per_number_24h": 0}),
        )
        .await;
        let (codes, messages) = t.burst(30, service, |_| "+1 202 555 0177".into()).await;
        assert_eq!(codes.get(&200), Some(&limit), "{service}: {codes:?}");
        assert_eq!(codes.get(&429), Some(&(30 - limit)), "{service}: {codes:?}");
        assert!(
            messages[0].starts_with(&format!(
                "in_queue_checking reached: this phone number already has {limit} active callback(s) on service {service}"
            )),
            "{messages:?}"
        );
    }

    // Cancelling frees the place (the release path the worker uses on completion too).
    let pg = env.pg().await;
    let id: uuid::Uuid = pg
        .query_one("SELECT id FROM callbacks WHERE service = 'strict'", &[])
        .await
        .unwrap()
        .get(0);
    let (code, body) = t.b.cancel(key, &id.to_string()).await;
    assert_eq!(code, 200, "{body}");
    let (codes, _) = t.burst(10, "strict", |_| "+1 202 555 0177".into()).await;
    assert_eq!(codes.get(&200), Some(&1), "after cancel: {codes:?}");

    // max_queued: active callbacks per service.
    t.service(
        "small",
        json!({"max_queued": 10, "in_queue_checking": false}),
    )
    .await;
    let (codes, messages) = t.burst(40, "small", |i| number(2000 + i)).await;
    assert_eq!(codes.get(&200), Some(&10), "{codes:?}");
    assert!(
        messages[0]
            .starts_with("max_queued reached: service small already has 10 active callbacks"),
        "{messages:?}"
    );

    // 35 + 29 + 28 + 9 + 30 = 131 refusals of number and queue limits, plus the single one.
    assert_eq!(t.metric("CB_ENQUEUE_LIMIT_REACHED").await, 132.0);
    assert_eq!(t.metric("CB_TTL_LIMIT_REACHED").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_consume_no_quota() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            json!({"throttle_per_service_1": 3, "throttle_per_number_24h": 1,
               "in_queue_checking": false}),
        )
        .await;
    let create = |n: usize| a.create(&key).service("s").phone(&number(n)).send();
    assert_eq!(create(1).await.0, 200);
    for _ in 0..5 {
        // Refused by the per-number limit: must not use the service window.
        assert_eq!(create(1).await.0, 429);
    }
    assert_eq!(create(2).await.0, 200);
    assert_eq!(create(3).await.0, 200);
    let (code, body) = create(4).await;
    assert_eq!(code, 429);
    assert!(
        body["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("throttle_per_service_1"),
        "{body}"
    );
    // Each refusal left no trace in the window (3 admissions only).
    let mut redis = env.redis().await;
    let act = format!("{{{}:thr:acme:s}}:act", env.id);
    assert_eq!(window_count(&mut redis, &act, 1).await, 3);
}

/// The admissions window `k` of a service's throttle hash counts (its ring of sub-window
/// counters, summed).
async fn window_count(redis: &mut redis::aio::MultiplexedConnection, act: &str, k: u8) -> i64 {
    let all: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(act)
        .query_async(redis)
        .await
        .unwrap();
    let prefix = format!("w{k}:");
    all.iter()
        .filter(|(f, _)| f.starts_with(&prefix))
        .map(|(_, v)| v.rsplit(':').next().unwrap().parse::<i64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_counts_heal_from_postgresql() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            json!({"in_queue_checking": "strict", "throttle_per_number_24h": 0}),
        )
        .await;
    let create = |n: &str| a.create(&key).service("s").phone(n).send();
    assert_eq!(create("+1 202 555 0101").await.0, 200);

    // Redis loses the service's state (flush, failover): the next create re-seeds from
    // PostgreSQL, so the active callback still counts.
    let mut redis = env.redis().await;
    let tag = format!("{{{}:thr:acme:s}}", env.id);
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{tag}:act"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let (code, body) = create("+1 202 555 0101").await;
    assert_eq!(code, 429, "{body}");

    // A leaked place (a release that never came, older than the grace period) blocks a
    // number until the next re-seed, which PostgreSQL does not confirm: it is dropped.
    let phantom = uuid::Uuid::new_v4();
    let _: () = redis::cmd("HSET")
        .arg(format!("{tag}:act"))
        .arg(harness::throttle_field(&phantom.to_string()))
        .arg("12025550202|1000")
        .arg("n:12025550202")
        .arg(1)
        .query_async(&mut redis)
        .await
        .unwrap();
    let (code, _) = create("+1 202 555 0202").await;
    assert_eq!(code, 429, "the leak blocks until the re-seed");
    let _: () = redis::cmd("HSET")
        .arg(format!("{tag}:act"))
        .arg("~seed")
        .arg(0)
        .query_async(&mut redis)
        .await
        .unwrap();
    let (code, body) = create("+1 202 555 0202").await;
    assert_eq!(code, 200, "re-seeded: {body}");
    let held: i64 = redis::cmd("HGET")
        .arg(format!("{tag}:act"))
        .arg("~count")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(held, 2, "the two real callbacks, not the phantom");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_fail_open_when_redis_is_down() {
    // Nothing listens on this port: every Redis call fails at once.
    let env = env().with("REDIS_URL", &format!("redis://127.0.0.1:{}", free_port()));
    let a = Engage::start(&env, &[]).await;
    let key = a
        .provision("acme", "s", json!({"throttle_per_service_1": 1}))
        .await;
    for i in 0..3 {
        let (code, body) = a.create(&key).service("s").phone(&number(i)).send().await;
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(a.metric_sum("engage_throttle_fail_open_total").await, 3.0);
    assert_eq!(a.metric_sum("ges_callbacks_created").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_on_a_redis_cluster() {
    // Every throttle script touches one hash tag: no CROSSSLOT errors, same exactness.
    let env = env()
        .with("REDIS_URL", harness::cluster())
        .with("REDIS_CLUSTER", "true");
    let t = two(&env).await;
    let (a, key) = (&t.a, &t.key);
    t.service(
        "c",
        json!({"throttle_per_service_1": 20, "throttle_per_number_24h": 3,
               "in_queue_checking": false}),
    )
    .await;
    let (codes, _) = t.burst(12, "c", |_| "+1 202 555 0190".into()).await;
    assert_eq!(codes.get(&200), Some(&3), "per number: {codes:?}");
    let (codes, _) = t.burst(60, "c", |i| number(3000 + i)).await;
    assert_eq!(
        codes.get(&200),
        Some(&17),
        "window (3 used above): {codes:?}"
    );
    assert_eq!(t.metric("engage_throttle_fail_open_total").await, 0.0);
    // Cancel releases on the cluster too.
    let id: uuid::Uuid = env
        .pg()
        .await
        .query_one("SELECT id FROM callbacks LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let (code, body) = a.cancel(key, &id.to_string()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(t.metric("engage_redis_write_failed_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_cost_per_create_is_small() {
    // A private Redis, so the test may reset its statistics.
    let private = harness::PrivateRedis::new(false);
    let env = env().with("REDIS_URL", &private.url());
    let a = Engage::start(&env, &[]).await;
    let key = a.provision("acme", "s", json!({})).await; // GMS defaults: every limit on
    let mut redis = env.redis().await;
    // Warm up (first create seeds), then count only steady-state creates.
    let (code, _) = a
        .create(&key)
        .service("s")
        .phone(&number(9999))
        .send()
        .await;
    assert_eq!(code, 200);
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut redis)
        .await
        .unwrap();
    let n = 200;
    for i in 0..n {
        let (code, body) = a.create(&key).service("s").phone(&number(i)).send().await;
        assert_eq!(code, 200, "{body}");
    }
    let stats = harness::commandstats(&mut redis).await;
    let calls = |cmd: &str| stats.iter().find(|(n, _)| n == cmd).map_or(0, |(_, c)| *c);
    let total: u64 = stats
        .iter()
        .filter(|(n, _)| !n.starts_with("info") && !n.starts_with("config"))
        .map(|(_, c)| c)
        .sum();
    // The schedule index (create's other Redis write) is a plain pipeline, not a script.
    let throttle_scripts = calls("evalsha") + calls("eval");
    let tag = format!("{{{}:thr:acme:s}}", env.id);
    // The numbers' 24 h lists and the windows' counters live in `act`.
    let keys = [format!("{tag}:act")];
    let mut resident = 0i64; // lives as long as the callback is active
    let mut transient = 0i64; // expires with the windows (1 h, 24 h)
    for k in &keys {
        let b: Option<i64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(k)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut redis)
            .await
            .unwrap();
        if k.ends_with(":act") {
            // The numbers' 24 h lists (`d:` fields) expire with their day, not with the
            // callbacks, and the windows' counters (`w1:`, `w2:`) are per service: count
            // their share of the hash (by fields) as transient.
            let fields: Vec<String> = redis::cmd("HKEYS")
                .arg(k)
                .query_async(&mut redis)
                .await
                .unwrap();
            let days = fields
                .iter()
                .filter(|f| f.starts_with("d:") || f.starts_with('w'))
                .count() as i64;
            let all = (fields.len() as i64).max(1);
            let b = b.unwrap_or(0);
            transient += b * days / all;
            resident += b - b * days / all;
        } else {
            transient += b.unwrap_or(0);
        }
    }
    let per_create = total as f64 / n as f64;
    let created = (n + 1) as f64;
    let (resident, transient) = (resident as f64 / created, transient as f64 / created);
    println!(
        "throttle cost: {per_create:.1} Redis commands per create in all (script-internal calls and the \
         schedule index included), {throttle_scripts} throttle scripts for {n} creates; \
         {resident:.0} B per active callback (resident), {transient:.0} B per immediate create in the \
         windows (expires), one distinct number per callback"
    );
    assert_eq!(
        throttle_scripts,
        u64::try_from(n).unwrap(),
        "one throttle script per create"
    );
    assert!(
        per_create <= 20.0,
        "{per_create} commands per create\n{stats:?}"
    );
    assert!(resident <= 200.0, "{resident} B per active callback");
    assert!(
        transient <= 300.0,
        "{transient} B per create in the windows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_never_hit_the_limits() {
    let env = env();
    let t = two(&env).await;
    let (a, key) = (&t.a, &t.key);
    t.service(
        "s",
        json!({"in_queue_checking": "strict", "throttle_per_service_1": 1}),
    )
    .await;
    let body = json!({"serviceName": "s", "phoneNumber": "+1 202 555 0150"});
    let calls = (0..20).map(|i| {
        let target = if i % 2 == 0 { &t.a } else { &t.b };
        let create = target.create(key).fields(body.clone());
        create.idempotency_key("retry-me").send()
    });
    let ids: std::collections::BTreeSet<String> = join_all(calls)
        .await
        .into_iter()
        .map(|(code, body)| {
            assert_eq!(code, 200, "{body}");
            body["data"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every retry names the one callback");
    assert_eq!(t.metric("CB_ENQUEUE_LIMIT_REACHED").await, 0.0);
    assert_eq!(t.metric("CB_TTL_LIMIT_REACHED").await, 0.0);
    // The one reservation is the one callback: the next request is over both limits.
    let (code, _) = a.create(key).fields(body).send().await;
    assert_eq!(code, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_slides_and_frees_up_when_announced() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            json!({"throttle_per_service_1": 2, "throttle_ttl_1": 2, "in_queue_checking": false}),
        )
        .await;
    let create = |n: usize| a.create(&key).service("s").phone(&number(n)).send();
    assert_eq!(create(1).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(create(2).await.0, 200);
    let (code, body) = create(3).await;
    assert_eq!(code, 429);
    let msg = body["status"]["message"].as_str().unwrap();
    let at: jiff::Timestamp = msg
        .rsplit("retry after ")
        .next()
        .unwrap()
        .parse()
        .expect("an RFC 3339 time");
    // Frees up when the first admission leaves the 2 s window, not when the second does.
    let wait = at.duration_since(jiff::Timestamp::now());
    assert!(
        wait > jiff::SignedDuration::from_millis(300)
            && wait < jiff::SignedDuration::from_millis(1_500),
        "{msg}: {wait:?}"
    );
    // The same, machine-readable: Retry-After in whole seconds, rounded up.
    let raw = a
        .http
        .post(format!("{}/engagement/v3/callbacks/create", a.external))
        .header("x-api-key", &key)
        .json(&json!({"serviceName": "s", "phoneNumber": number(6)}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 429);
    let retry_after: u64 = raw.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    tokio::time::sleep(std::time::Duration::try_from(wait).unwrap()).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(create(4).await.0, 200, "freed at the announced time");
    assert_eq!(
        create(5).await.0,
        429,
        "only one slot freed: the second admission still counts"
    );
}
