//! Attacks (helper round s46d) on 90c47ed, d595491 and 6effdc3: the throttle's refusal on the
//! node's clock and its `Retry-After` (the script's `<frees_at> <wait_ms>`), a window off in a
//! replica's cached settings counting in a live ring (`alive[k]`), a re-seed placing a held
//! admission at its own Redis time, and the worker fleet's coalesced hello answers with their
//! `Signal::Resync`. Each test documents a promise: a failing one is a finding (see its
//! comment), a passing one guards what held. The six findings were fixed in the same stop
//! (docs/throttling.md, docs/costs.md, docs/derived-state.md); their tests now guard the fixes.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use harness::{Engage, Fixture, PrivateRedis, TestEnv, WorkerProc, wire};
use serde_json::{Value, json};
use shared::redis::Keys;

use super::attack_s28_windows::{act, env, hset, number};
use super::attack_s46c_fleet::{Heard, count, listen};

type Conn = redis::aio::MultiplexedConnection;

async fn hget(env: &TestEnv, service: &str, field: &str) -> Option<String> {
    let mut redis = env.redis().await;
    redis::cmd("HGET")
        .arg(act(env, service))
        .arg(field)
        .query_async(&mut redis)
        .await
        .unwrap()
}

async fn hgetall(env: &TestEnv, service: &str) -> HashMap<String, String> {
    let mut redis = env.redis().await;
    redis::cmd("HGETALL")
        .arg(act(env, service))
        .query_async(&mut redis)
        .await
        .unwrap()
}

/// Redis's clock (ms).
async fn redis_ms(env: &TestEnv) -> i64 {
    let mut redis = env.redis().await;
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(&mut redis).await.unwrap();
    s * 1000 + us / 1000
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

fn two_replica_settings(limit: u32) -> Value {
    json!({"throttle_per_service_1": limit, "throttle_ttl_1": 60,
           "throttle_per_service_2": 0, "throttle_per_number_24h": 0,
           "in_queue_checking": false, "max_queued": 1000})
}

/// Finding: a give-back by a replica whose cached settings have the window off (d595491: its
/// admissions now count in the live ring, `alive[k]`) leaves the admission in the ring:
/// GIVE_BACK takes a sub-window count back only for `sub_ms(k) > 0` of the *caller's* limits,
/// which is 0 for an off window. Replica `a` (window 1 still off, cached) creates, its insert
/// fails (backend terminated: 503, nothing stored) and the reservation is given back; the ring
/// keeps it. Replica `b` (window on, 3 per 60 s) then refuses a create although PostgreSQL holds
/// 2 creations in the window (and nothing re-seeds until the period: the give-back's empty field
/// is not counted by the next seed, only the ring is wrong). Each failed insert or given-back
/// replay through `a` eats one of `b`'s window slots. Before d595491 `a`'s admission voided the
/// ring (`~s1` = 0) and `b` re-seeded from PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46d_a_give_back_by_a_replica_with_the_window_off_stays_in_the_ring() {
    give_back_then_create_on_b(0).await;
}

/// Control of the finding above: the same with `a`'s cached settings having the window on
/// (3 per 60 s too): its give-back takes the admission out of the ring, and `b` admits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46d_a_give_back_by_a_replica_with_the_window_on_leaves_the_ring_exact() {
    give_back_then_create_on_b(3).await;
}

/// `a` (window 1 at `a_limit` per 60 s in its cached settings) creates once; `b` switches the
/// window to 3 per 60 s and creates (its re-seed); `a`'s next create fails its insert (503)
/// and is given back; `b`'s next create must pass (2 creations in the window).
async fn give_back_then_create_on_b(a_limit: u32) {
    let env = env()
        .with("CACHE_TTL_MS", "600000")
        .with("REQUEST_TIMEOUT_MS", "2000");
    let a = Engage::start(&env, &[]).await;
    let b = Engage::start(&env, &[]).await;
    let key = a
        .provision("acme", "s", two_replica_settings(a_limit))
        .await;
    assert_eq!(
        a.create(&key).service("s").phone(&number(1)).send().await.0,
        200
    );
    // Switched on through b; a keeps its cached settings (window off when `a_limit` = 0).
    b.service("acme", "s", two_replica_settings(3)).await;
    let (code, body) = b.create(&key).service("s").phone(&number(2)).send().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        hget(&env, "s", "~s1").await.as_deref(),
        Some("1000"),
        "b's re-seed"
    );
    // a's create: its insert waits on a lock, its backend is terminated: 503, nothing stored,
    // the reservation given back.
    let mut locker = env.pg().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE callbacks IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let call = {
        let req = a
            .http
            .post(format!("{}{}", a.external, harness::CREATE))
            .header("x-api-key", &key)
            .json(&json!({"serviceName": "s", "phoneNumber": number(3)}));
        tokio::spawn(harness::send(req))
    };
    let killer = env.pg().await;
    super::bounded::terminate_waiting_insert(&killer).await;
    let (code, answer) = call.await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(code, 503, "{answer}");
    // The give-back landed (an emptied `i:` field).
    let started = Instant::now();
    while !hgetall(&env, "s")
        .await
        .iter()
        .any(|(f, v)| f.starts_with("i:") && v.is_empty())
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no give-back: {:?}",
            hgetall(&env, "s").await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A 503 means nothing will be dispatched: a row whose insert committed after all is
    // withdrawn (docs/bounded-answers.md), so only the two admitted ones are active.
    let stored: i64 = killer
        .query_one(
            "SELECT count(*) FROM callbacks WHERE service = 's' AND state <> 'COMPLETED'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 2, "503 means nothing active stored");
    let ring: Vec<String> = {
        let mut r: Vec<String> = hgetall(&env, "s")
            .await
            .into_iter()
            .filter(|(f, _)| f.starts_with("w1:") || f.starts_with("~w1") || f == "~s1")
            .map(|(f, v)| format!("{f}={v}"))
            .collect();
        r.sort();
        r
    };
    let (code, body) = b.create(&key).service("s").phone(&number(4)).send().await;
    assert_eq!(
        code,
        200,
        "b refused a create with {stored} creations in its window of 3 per 60 s (a's given-back \
         admission still counted, a's window limit {a_limit}; ring {ring:?}): {}",
        harness::message(&body)
    );
}

/// Guard: the off replica's admissions count for the on replica (d595491), and its refusal
/// carries a `Retry-After` of at least 1 s and within the window (no re-seed in between).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46d_an_off_replicas_admissions_fill_the_on_replicas_window() {
    let env = env().with("CACHE_TTL_MS", "600000");
    let a = Engage::start(&env, &[]).await;
    let b = Engage::start(&env, &[]).await;
    let key = a.provision("acme", "s", two_replica_settings(0)).await;
    assert_eq!(
        a.create(&key).service("s").phone(&number(1)).send().await.0,
        200
    );
    b.service("acme", "s", two_replica_settings(3)).await;
    assert_eq!(
        b.create(&key).service("s").phone(&number(2)).send().await.0,
        200
    );
    // a (window off) admits beyond b's limit: it counts, it is not limited.
    for i in 3..5 {
        let (code, body) = a.create(&key).service("s").phone(&number(i)).send().await;
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(hget(&env, "s", "~s1").await.as_deref(), Some("1000"));
    let (code, retry, body) = create_raw(&b, &key, "s", &number(9)).await;
    assert_eq!(code, 429, "{body}");
    assert!(
        retry.is_some_and(|r| (1..=61).contains(&r)),
        "Retry-After {retry:?}: {body}"
    );
    assert_eq!(hget(&env, "s", "~s1").await.as_deref(), Some("1000"));
}

/// Takes every sub-window count of window `k` out of the ring (as if its admissions were a
/// window old) and sets its bound to 0.
async fn clear_ring(env: &TestEnv, service: &str, k: u8) {
    let mut redis = env.redis().await;
    let prefix = format!("w{k}:");
    for f in hgetall(env, service).await.into_keys() {
        if f.starts_with(&prefix) {
            let _: i64 = redis::cmd("HDEL")
                .arg(act(env, service))
                .arg(&f)
                .query_async(&mut redis)
                .await
                .unwrap();
        }
    }
    hset(env, service, &format!("~w{k}"), "0").await;
}

/// Finding: `Retry-After` is now `frees_at - now` of the script (d595491), and the script's
/// `now` follows `~t` up to 1 s ahead of the node's `TIME` ("never earlier than the latest
/// admission counted": what a Redis clock stepped back by under a second, or a failover to a
/// host whose clock is behind by that much, leaves). The window then frees at `frees_at` by the
/// node's clock, which is up to that second later than `now` + wait: the header is short by
/// it. Here `~t` = TIME + ~0.97 s on a sub-window boundary (played: the step back), a 12 s
/// window of 1: the refusal's wait is 12.2 s (`Retry-After: 13`) while the window frees
/// ~13.15 s after it by `TIME`; the retry sent after 13 s is refused. (The message's
/// "retry after" time is right; the API-host computation before d595491 said 14 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46d_retry_after_short_while_the_service_time_runs_ahead_of_time() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            json!({"throttle_per_service_1": 1, "throttle_ttl_1": 12,
                   "throttle_per_service_2": 0, "throttle_per_number_24h": 0,
                   "in_queue_checking": false}),
        )
        .await;
    // Seeded; its admission then out of the ring (as if 12 s old).
    assert_eq!(
        a.create(&key).service("s").phone(&number(0)).send().await.0,
        200
    );
    clear_ring(&env, "s", 1).await;
    // The sub-window is 200 ms: ~t on a boundary 960..990 ms ahead of TIME.
    let planted = loop {
        let now = redis_ms(&env).await;
        let t = (now + 960 + 199) / 200 * 200;
        if t - now <= 990 {
            hset(&env, "s", "~t", &t.to_string()).await;
            break t;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let (c1, _, b1) = create_raw(&a, &key, "s", &number(1)).await;
    assert_eq!(c1, 200, "{b1}");
    let (c2, retry, b2) = create_raw(&a, &key, "s", &number(2)).await;
    let refused_at = redis_ms(&env).await;
    let got = Instant::now();
    assert_eq!(c2, 429, "{b2}");
    let retry = retry.unwrap_or_else(|| panic!("no Retry-After: {b2}"));
    let id1 = b1["data"]["id"].as_str().unwrap();
    let admitted: i64 = hget(&env, "s", &harness::throttle_field(id1))
        .await
        .and_then(|v| v.split('|').nth(1)?.parse().ok())
        .expect("admission of the first create");
    tokio::time::sleep_until((got + Duration::from_secs(retry)).into()).await;
    let (c3, _, b3) = create_raw(&a, &key, "s", &number(3)).await;
    assert_eq!(
        c3,
        200,
        "the retry sent {retry} s (Retry-After) after the refusal was refused; ~t planted at \
         {planted} = TIME + {} ms at the refusal, admission counted at {admitted}, window frees \
         at {} = refusal + {} ms by TIME; refusal said: {}; retry: {}",
        planted - refused_at,
        admitted + 12_200,
        admitted + 12_200 - refused_at,
        harness::message(&b2),
        harness::message(&b3)
    );
}

/// Finding (weaker: needs a held admission time far behind its row's `created_at`, i.e. a Redis
/// clock that ran behind and was stepped forward, or an altered hash): a re-seed now places a
/// held admission at its Redis time alone (d595491; before, the later of that and PostgreSQL's
/// `created_at`). A window of 2 per 60 s with 2 creations in it, the first one's `i:` time
/// 120 s back: the re-seed drops it from the window and a third create is admitted, 3
/// creations in 60 s by PostgreSQL, "the truth" of the self-healing re-seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46d_a_held_admission_time_behind_its_row_ages_out_at_a_reseed() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            json!({"throttle_per_service_1": 2, "throttle_ttl_1": 60,
                   "throttle_per_service_2": 0, "throttle_per_number_24h": 0,
                   "in_queue_checking": false}),
        )
        .await;
    let (c, b1) = a.create(&key).service("s").phone(&number(1)).send().await;
    assert_eq!(c, 200, "{b1}");
    assert_eq!(
        a.create(&key).service("s").phone(&number(2)).send().await.0,
        200
    );
    let (c, body) = a.create(&key).service("s").phone(&number(3)).send().await;
    assert_eq!(c, 429, "{body}");
    let field = harness::throttle_field(b1["data"]["id"].as_str().unwrap());
    let v = hget(&env, "s", &field).await.expect("held");
    let mut parts: Vec<String> = v.split('|').map(str::to_string).collect();
    let ms: i64 = parts[1].parse().unwrap();
    parts[1] = (ms - 120_000).to_string();
    hset(&env, "s", &field, &parts.join("|")).await;
    // The periodic re-seed deadline passes.
    hset(&env, "s", "~seed", "0").await;
    let (c, body) = a.create(&key).service("s").phone(&number(4)).send().await;
    let pg = env.pg().await;
    let in_window: i64 = pg
        .query_one(
            "SELECT count(*) FROM callbacks WHERE service = 's'
             AND created_at > now() - interval '60 seconds'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        c, 429,
        "admitted: {in_window} creations in the last 60 s by PostgreSQL against a limit of 2 \
         (the first one's held admission time {} ms behind its row); {body}",
        120_000
    );
}

// ---------------------------------------------------------------- worker fleet (6effdc3)

/// Waits until a `hello.<id>.1` is heard; its id.
async fn first_hello(heard: &Heard) -> String {
    let started = Instant::now();
    loop {
        let found = heard
            .lock()
            .unwrap()
            .iter()
            .find_map(|m| Some(m.strip_prefix("hello.")?.strip_suffix(".1")?.to_string()));
        if let Some(id) = found {
            return id;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no hello");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn fake_hello() -> String {
    format!(
        "hello.{:x}.1",
        uuid::Uuid::new_v4().as_u64_pair().0 | 1 << 60
    )
}

async fn publish(conn: &mut Conn, keys: &Keys, msg: &str) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg(keys.former_wake_channel())
        .arg(msg)
        .query_async(conn)
        .await
        .expect("PUBLISH");
}

/// Commands the server processed, by name (`INFO commandstats`).
async fn commandstats(conn: &mut Conn) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

/// Commands processed between two `commandstats`, the test's own (`PUBLISH`, `INFO`) left out.
fn worker_commands(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> u64 {
    after
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "publish" | "info"))
        .map(|(n, c)| c - before.get(n).copied().unwrap_or(0))
        .sum()
}

/// Finding (cost), bounded in stop 46: the read of every shard a hello brings is spaced a
/// second apart, so a hello costs a claim per shard and a trickle of 1,000 no more than 1,000
/// commands (576 in one run; 161,901 before). Found as: a hello heard sends
/// `Signal::Resync` (6effdc3): every shard is claimed again. docs/derived-state.md's cost line still says "in a fleet, two `PUBLISH`es per worker
/// start and one answer per other worker", and worker/src/fleet.rs "a flood costs at most one
/// answer per answer's round trip, never more than the hellos themselves". With 64 shards
/// (`REDIS_SCHEDULE_SHARDS` up to 1,024; SCALING.md: ≥ 2 × workers) one hello costs an idle
/// worker ~one claim per shard besides its answer, and a trickle of hellos (1 per ms from any
/// publisher on `<prefix>:wake`) keeps it claiming every shard flat out: more commands than
/// hellos.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46d_a_hello_costs_a_claim_per_shard_and_a_trickle_outspends_itself() {
    const SHARDS: u16 = 64;
    const HELLOS: usize = 1_000;
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("REDIS_SCHEDULE_SHARDS", &SHARDS.to_string());
    let keys = Keys::new(&env.id, SHARDS);
    let mut conn = redis.conn().await;
    let heard = listen(&redis.url(), &keys).await;
    let _a = WorkerProc::start(&env, &[]).await;
    let a_id = first_hello(&heard).await;
    let answer = format!("hello.{a_id}.0");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Idle.
    let s0 = commandstats(&mut conn).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let s1 = commandstats(&mut conn).await;
    let idle = worker_commands(&s0, &s1);
    // One hello.
    publish(&mut conn, &keys, &fake_hello()).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let s2 = commandstats(&mut conn).await;
    let one = worker_commands(&s1, &s2);
    let one_answers = count(&heard, &answer);
    // A trickle: one hello per millisecond or so.
    let started = Instant::now();
    for _ in 0..HELLOS {
        publish(&mut conn, &keys, &fake_hello()).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s3 = commandstats(&mut conn).await;
    let trickle = worker_commands(&s2, &s3);
    let answers = count(&heard, &answer) - one_answers;
    let claims: u64 = ["evalsha", "eval"]
        .iter()
        .map(|n| s3.get(*n).copied().unwrap_or(0) - s2.get(*n).copied().unwrap_or(0))
        .sum();
    println!(
        "FIGURE s46d_hello_cost shards={SHARDS} idle_per_s={idle} one_hello={one} \
         (answers {one_answers}) trickle_hellos={HELLOS} in {took:?}: worker_commands={trickle} \
         scripts={claims} answers={answers}"
    );
    // Since the fix: a hello's read of every shard costs a claim each (3 commands), at most
    // once a second (docs/derived-state.md#a-lone-worker).
    let read = 3 * u64::from(SHARDS);
    assert!(
        one <= idle + read + 2 && trickle <= HELLOS as u64,
        "one hello cost the idle worker {one} commands (idle: {idle}/s; docs: one answer); \
         {HELLOS} hellos over {took:?} cost it {trickle} commands ({claims} scripts, {answers} \
         answers) with {SHARDS} shards"
    );
}

async fn wait_on_stream(env: &TestEnv, id: &str, limit: Duration) {
    let started = Instant::now();
    while !env.census().await.2.contains_key(id) {
        assert!(started.elapsed() < limit, "{id} never handed off");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Guard: a lone worker with 64 shards under a steady trickle of hellos (each answered and
/// resyncing every shard) still hands 10 callbacks off within 1.5 s of their time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46d_a_hello_trickle_on_64_shards_keeps_the_dispatch_pace() {
    trickle_pace(64, true).await;
}

/// Attack: the same trickle with `REDIS_SCHEDULE_SHARDS` = 1,024 (the most the settings allow):
/// every answered hello has the worker claim 1,024 shards again. Each of the 10 callbacks must
/// still be handed off within 1.5 s of its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46d_a_hello_trickle_on_1024_shards_keeps_the_dispatch_pace() {
    trickle_pace(1_024, true).await;
}

/// Control of the attack above: 1,024 shards, no hellos: on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46d_no_hellos_on_1024_shards_keeps_the_dispatch_pace() {
    trickle_pace(1_024, false).await;
}

/// A lone worker with `shards` under a 2.5 s trickle of fake hellos (one per ms or so) while 10
/// callbacks fall due 1.0 to 1.9 s after the start: each handed off within 1.5 s of its time.
async fn trickle_pace(shards: u16, hellos: bool) {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("REDIS_SCHEDULE_SHARDS", &shards.to_string());
    let fx = Fixture::dispatch(env, "s46dpace", "svc", json!({})).await;
    let keys = Keys::new(&fx.env.id, shards);
    let _a = WorkerProc::start(&fx.env, &[]).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut ids = Vec::new();
    for k in 0..10 {
        let at = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(1_000 + k * 100);
        ids.push(fx.create().at(&wire(at)).id().await);
    }
    let due_by = Instant::now() + Duration::from_millis(2_000);
    let mut conn = redis.conn().await;
    let until = Instant::now() + Duration::from_millis(2_500);
    let mut sent = 0;
    while Instant::now() < until {
        if hellos {
            publish(&mut conn, &keys, &fake_hello()).await;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for id in &ids {
        wait_on_stream(&fx.env, id, Duration::from_secs(10)).await;
    }
    let late = Instant::now().saturating_duration_since(due_by);
    let (total, distinct, per) = fx.env.census().await;
    println!("FIGURE s46d_pace shards={shards} hellos={sent} last_handoff_late={late:?}");
    assert!(
        late < Duration::from_millis(1_500),
        "with {shards} shards and {sent} hellos over 2.5 s, the last of 10 callbacks handed off \
         {late:?} late"
    );
    assert_eq!((total, distinct), (10, 10), "{per:?}");
}

/// Guard: Redis paused (`CLIENT PAUSE 1500 ALL`) while a lone worker answers two hellos (one
/// answer in flight, one more asked): the answer task's `PUBLISH`es time out and it ends, so
/// `answering` is not left set; a hello after the pause is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46d_an_answer_frozen_in_flight_leaves_later_hellos_answered() {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("REDIS_SCHEDULE_SHARDS", "4");
    let keys = Keys::new(&env.id, 4);
    let mut conn = redis.conn().await;
    let heard = listen(&redis.url(), &keys).await;
    let _a = WorkerProc::start(&env, &[]).await;
    let a_id = first_hello(&heard).await;
    let answer = format!("hello.{a_id}.0");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = count(&heard, &answer);
    let mut pipe = redis::pipe();
    pipe.cmd("PUBLISH")
        .arg(keys.former_wake_channel())
        .arg(fake_hello())
        .ignore()
        .cmd("PUBLISH")
        .arg(keys.former_wake_channel())
        .arg(fake_hello())
        .ignore()
        .cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_500)
        .arg("ALL")
        .ignore();
    let _: () = pipe.query_async(&mut conn).await.expect("hellos, pause");
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut conn)
        .await
        .expect("CLIENT UNPAUSE");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let after_pause = count(&heard, &answer);
    publish(&mut conn, &keys, &fake_hello()).await;
    let started = Instant::now();
    while count(&heard, &answer) <= after_pause {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a hello after the pause never answered (answers before: {before}, after the \
             pause: {after_pause})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Guard: `engage serve --with-worker` alone hears only its own hello: it pays no answer and no
/// resync, and its idle command rate stays that of a lone worker (no hello traffic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46d_a_single_node_with_worker_stays_alone_and_quiet() {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("REDIS_SCHEDULE_SHARDS", "4");
    let keys = Keys::new(&env.id, 4);
    let mut conn = redis.conn().await;
    let heard = listen(&redis.url(), &keys).await;
    let _e = Engage::start(&env, &["--with-worker"]).await;
    let id = first_hello(&heard).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let s0 = commandstats(&mut conn).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let s1 = commandstats(&mut conn).await;
    let idle = worker_commands(&s0, &s1);
    let msgs = heard.lock().unwrap().clone();
    println!("FIGURE s46d_single idle_2s={idle} heard={msgs:?}");
    let hellos: HashSet<&String> = msgs.iter().filter(|m| m.starts_with("hello.")).collect();
    assert_eq!(
        hellos,
        HashSet::from([&format!("hello.{id}.1")]),
        "only its own hello"
    );
    assert!(idle <= 6, "{idle} commands in 2 s idle");
}

/// Finding (cost): a refusal with the caller's time now reads `TIME` and is checked again
/// (90c47ed), and the second check repeats the whole check: its `HMGET` and, since a window
/// refusal always sums its ring, the 61-field `HMGET` of the ring again. docs/costs.md: "one
/// command more per refusal". Measured on a private Redis over 20 refusals of a full 1-per-60 s
/// window: the script's `HMGET`s and `TIME`s per refusal (before 90c47ed: 2 `HMGET`s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46d_a_refusal_repeats_its_ring_sum() {
    const N: u64 = 20;
    let redis = PrivateRedis::new(false);
    let env = env().with("REDIS_URL", &redis.url());
    let a = Engage::start(&env, &[]).await;
    let key = a
        .provision(
            "acme",
            "s",
            json!({"throttle_per_service_1": 1, "throttle_ttl_1": 60,
                   "throttle_per_service_2": 0, "throttle_per_number_24h": 0,
                   "in_queue_checking": false}),
        )
        .await;
    assert_eq!(
        a.create(&key).service("s").phone(&number(0)).send().await.0,
        200
    );
    // Warm: the replica holds a reading of the node's clock.
    for i in 1..3 {
        assert_eq!(
            a.create(&key).service("s").phone(&number(i)).send().await.0,
            429
        );
    }
    let mut conn = redis.conn().await;
    let s0 = commandstats(&mut conn).await;
    for i in 0..N {
        let (code, body) = a
            .create(&key)
            .service("s")
            .phone(&number(10 + i as usize))
            .send()
            .await;
        assert_eq!(code, 429, "{body}");
    }
    let s1 = commandstats(&mut conn).await;
    let delta = |n: &str| s1.get(n).copied().unwrap_or(0) - s0.get(n).copied().unwrap_or(0);
    let mut all: Vec<(String, u64)> = s1
        .keys()
        .map(|n| (n.clone(), delta(n)))
        .filter(|(n, d)| *d > 0 && n != "info")
        .collect();
    all.sort();
    let (hmget, time) = (delta("hmget"), delta("time"));
    println!("FIGURE s46d_refusal_cost per {N} refusals: {all:?}");
    assert!(
        hmget + time <= 3 * N,
        "{N} refusals: {hmget} HMGET and {time} TIME ({:.1} per refusal; docs: one command more \
         than the 2 HMGETs); all: {all:?}",
        (hmget + time) as f64 / N as f64
    );
}
