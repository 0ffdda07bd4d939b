//! Attacks on d2dbdd8 (with 38e0076 for `UndoUnlessStored`):
//!
//! 1. `db::outcome::Waiter::wait` keeps its receiver while it waits, so a request the server
//!    drops because its client went away now gives its write up (WAITING -> ABANDONED,
//!    COMMITTING -> ABANDONED_IN_DOUBT) and the writer withdraws what then commits
//!    (docs/bounded-answers.md). Taken back after finding 1 below: a dropped wait gives
//!    nothing up again (the tests of it are kept as guards and records);
//! 2. `db::throttle::recent` leaves withdrawn creates (COMPLETED/CANCELLED with a
//!    `compensation` event) out of the re-seeded windows and 24 h counts (docs/throttling.md);
//! 3. `schedule::INDEX_MISSING` with the overdue flag: the sweep announces overdue callbacks
//!    already indexed and in-flight ones whose lease ran out (docs/derived-state.md#wake-ups);
//!    since finding 4, only those due by their index score (a paced entry is not).
//!
//! PostgreSQL is slowed only in the test's own schema (a deferred constraint trigger waiting
//! on an advisory lock the test holds, or `LOCK TABLE callbacks`); Redis is frozen only when it
//! is a `PrivateRedis` of the test; workers are frozen only when the test started them.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use harness::{
    CREATE, Engage, Fixture, PrivateRedis, TestEnv, WorkerProc, commandstats, open_service, signal,
};
use serde_json::json;
use shared::redis::Keys;
use uuid::Uuid;

use crate::attack_s34_client_gone::impatient_create;

/// Installs a deferred constraint trigger on the test schema's `callbacks`: the `COMMIT` of a
/// transaction that inserted a row of `phone` waits until the advisory lock `lock` is free.
async fn slow_commits_of(pg: &tokio_postgres::Client, phone: &str, lock: i64) {
    pg.batch_execute(&format!(
        "CREATE FUNCTION attack_c_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.phone_number = '{phone}' THEN PERFORM pg_advisory_xact_lock_shared({lock}); END IF;
           RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER attack_c_slow_commit AFTER INSERT ON callbacks
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION attack_c_slow_commit();"
    ))
    .await
    .expect("trigger");
}

fn rand_lock() -> i64 {
    let b = Uuid::new_v4();
    let b = b.as_bytes();
    0x5a3c_0000 + i64::from(b[0]) * 256 + i64::from(b[1])
}

async fn all_rows(pg: &tokio_postgres::Client, phone: &str) -> Vec<(String, Option<String>)> {
    pg.query(
        "SELECT state, reason FROM callbacks WHERE phone_number = $1 ORDER BY created_at",
        &[&phone],
    )
    .await
    .expect("rows")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

async fn active_rows(pg: &tokio_postgres::Client, phone: &str) -> i64 {
    pg.query_one(
        "SELECT count(*) FROM callbacks WHERE phone_number = $1 AND state <> 'COMPLETED'",
        &[&phone],
    )
    .await
    .expect("count")
    .get(0)
}

/// The `source`s of a callback's history.
async fn sources(pg: &tokio_postgres::Client, id: &Uuid) -> Vec<String> {
    pg.query(
        "SELECT source FROM callback_events WHERE callback_id = $1 ORDER BY at",
        &[id],
    )
    .await
    .expect("events")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Sessions of the test schema's database waiting on an advisory lock in their `COMMIT`.
async fn commits_held(pg: &tokio_postgres::Client) -> i64 {
    pg.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory' AND query = 'COMMIT'",
        &[],
    )
    .await
    .expect("activity")
    .get(0)
}

/// Attack; a finding of helper-55 (200 then withdrawn; a regression of d2dbdd8, taken back in
/// 1a7ec0d), now a guard of the replay mark (stop 35). The ordinary Idempotency-Key retry:
/// the customer's HTTP client times out (here 700 ms, far inside the server's 15 s
/// `REQUEST_TIMEOUT_MS`) while the keyed create's `COMMIT` is in flight (slow: a stalled disk, a
/// synchronous standby), and retries at once with the same key and body — exactly what the
/// key is for. The server drops the first request (client gone); since d2dbdd8 that drop gives
/// the write up in doubt, so its task withdraws the callback once its `COMMIT` lands. The
/// retry waits on the first transaction's key row, sees it committed and replays its id: 200.
/// A moment later the first task's compensation cancels that very callback and deletes the
/// key. The customer holds a 200 for a callback that will never be dialled. Before d2dbdd8 the
/// dropped create was kept and the replay named a live callback; docs/bounded-answers.md
/// ("Open: a replay of a withdrawn create") says the open case "needs ... a keyed create
/// answered 503 at its deadline" — it now needs only a client-side timeout, no server 503.
/// The same test at d2dbdd8^ passes (the callback QUEUED, and the unkeyed create then 429).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34c_keyed_retry_after_client_timeout_replays_a_withdrawn_callback() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"throttle_per_number_24h": 1}));
    let key = engage.provision("kreplay", "svc", svc).await;
    let phone = "+15550178001";
    let pg = env.pg().await;
    let lock = rand_lock();
    slow_commits_of(&pg, phone, lock).await;
    pg.execute("SELECT pg_advisory_lock($1)", &[&lock])
        .await
        .expect("hold");
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let idem = "order-s34c-1";
    let gave_up = impatient_create(&engage, &key, &body, 700, Some(idem)).await;
    assert!(
        gave_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the keyed create answered while its COMMIT was held: {gave_up:?}"
    );
    assert!(
        commits_held(&pg).await >= 1,
        "the first create's COMMIT is not the one held: nothing to attack"
    );
    // The client retries at once, with the same key and body (its first connection is closed).
    let retry = {
        let req = engage
            .http
            .post(format!("{}{CREATE}", engage.external))
            .header("x-api-key", &key)
            .header("Idempotency-Key", idem)
            .json(&body);
        tokio::spawn(harness::send(req))
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.execute("SELECT pg_advisory_unlock($1)", &[&lock])
        .await
        .expect("release");
    let (code, resp) = retry.await.expect("retry task");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let rows = all_rows(&pg, phone).await;
    // What the number's 24 h limit (1) says now: a create without the key.
    let again = engage.create(&key).service("svc").phone(phone).send().await;
    println!(
        "FIGURE s34c_keyed_retry code={code} rows={rows:?} then_unkeyed_create={}",
        again.0
    );
    assert_eq!(
        code, 200,
        "the keyed retry answered {code}: {resp}; rows {rows:?}"
    );
    let id: Uuid = resp["data"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let (state, reason): (String, Option<String>) = pg
        .query_one("SELECT state, reason FROM callbacks WHERE id = $1", &[&id])
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("the answered callback exists");
    let history = sources(&pg, &id).await;
    assert_ne!(
        state, "COMPLETED",
        "the retry was answered 200 with callback {id}, which was then withdrawn ({state}/{reason:?}, \
         history {history:?}); all rows of the number: {rows:?}; an unkeyed create of the same \
         number under throttle_per_number_24h = 1 then answered {} (the customer now holds two \
         200s for it)",
        again.0
    );
}

/// Attack on the late-value grace path (`Waited::DoneLate`), with its timing measured: the
/// request's write settles as stored before its commit deadline, but the writer hands over
/// its answer only after indexing, and the service Redis is frozen (the index write waits
/// `REDIS_TIMEOUT_MS`, here 4 s). The waiter gives up nothing at its commit deadline
/// (`REQUEST_TIMEOUT_MS` + 1 s), waits `LATE_VALUE_GRACE` (1 s) and answers 200; the
/// middleware's last resort fired at `REQUEST_TIMEOUT_MS` + `ANSWER_MARGIN`, also + 2 s, with
/// no slack between the two (`ANSWER_MARGIN` was `COMMIT_GRACE + LATE_VALUE_GRACE`), and a handler
/// dropped there during the grace gives nothing up ("dropping now gives nothing up"): a 503
/// "request timed out" with the callback stored and kept. Plain creates (batcher), keyed
/// creates (task) and cancels, each sent while PostgreSQL is held (creates) and answered while
/// Redis is frozen. Fails if any 503 hides a stored create or a landed cancel.
///
/// Fixed on 2026-12-04 (stop 35): `ANSWER_MARGIN` now ends `ANSWER_SLACK` (250 ms) after the
/// waiter's late grace. The finding it was (503 hides a stored callback; not introduced by
/// d2dbdd8, the path it touched):
/// measured 4 of 24 creates (two runs: 3 plain + 1 keyed, then 2 + 2) answered 503 "request
/// timed out" at 3.003 s with their callback stored and active, the other 20 and all 6
/// cancels 200 at the same instant. Under the default `REDIS_TIMEOUT_MS` (500) a batch
/// indexing into several shards (one round trip each, in turn) during a Redis stall can take
/// the > 1 s it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34c_late_answer_races_the_last_resort_503() {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("REQUEST_TIMEOUT_MS", "1000")
        .with("REDIS_TIMEOUT_MS", "4000")
        .with("DB_POOL_SIZE", "20");
    let engage = Engage::start(&env, &[]).await;
    let key = engage
        .provision("late", "svc", open_service(json!({})))
        .await;
    // Warm caches and scripts; and callbacks to cancel later.
    let mut to_cancel = Vec::new();
    for i in 0..6 {
        let id = engage
            .create(&key)
            .service("svc")
            .phone(&format!("+1555017820{i}"))
            .id()
            .await;
        to_cancel.push(id);
    }
    let mut pg = env.pg().await;
    let mut outcomes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for round in 0..3 {
        let lock = pg.transaction().await.expect("begin");
        lock.batch_execute("LOCK TABLE callbacks IN EXCLUSIVE MODE")
            .await
            .expect("lock");
        let t0 = Instant::now();
        let mut pending = Vec::new();
        for i in 0..8 {
            let phone = format!("+155501783{round}{i:02}");
            let mut req = engage
                .http
                .post(format!("{}{CREATE}", engage.external))
                .header("x-api-key", &key)
                .json(&json!({"serviceName": "svc", "phoneNumber": phone}));
            if i % 2 == 1 {
                req = req.header("Idempotency-Key", format!("late-{round}-{i}"));
            }
            let path = if i % 2 == 1 { "keyed" } else { "plain" };
            pending.push((
                phone,
                path,
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let answer = harness::send(req).await;
                    (answer, sent.elapsed())
                }),
            ));
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
        // Past admission (Redis) and into the held INSERT / COMMIT.
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis.freeze();
        // Cancels commit at once; their follow-ups then wait on the frozen Redis.
        let mut cancels = Vec::new();
        if round == 0 {
            lock.rollback().await.expect("unlock");
            for id in &to_cancel {
                let (e, k, id) = (engage.external.clone(), key.clone(), id.clone());
                let http = engage.http.clone();
                cancels.push((
                    id.clone(),
                    tokio::spawn(async move {
                        harness::send(
                            http.post(format!("{e}/engagement/v3/callbacks/cancel"))
                                .header("x-api-key", &k)
                                .json(&json!({"id": id})),
                        )
                        .await
                    }),
                ));
            }
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            lock.rollback().await.expect("unlock");
        }
        for (phone, path, task) in pending {
            let ((code, resp), took) = task.await.expect("create task");
            let active = active_rows(&pg, &phone).await;
            let msg = resp["status"]["message"].as_str().unwrap_or("").to_string();
            let tag = format!("create {code} {path} active={active}");
            outcomes
                .entry(tag)
                .or_default()
                .push(format!("{phone} answered after {took:?}: {msg}"));
        }
        for (id, task) in cancels {
            let (code, resp) = task.await.expect("cancel task");
            let state: String = pg
                .query_one(
                    "SELECT state FROM callbacks WHERE id = $1::text::uuid",
                    &[&id],
                )
                .await
                .expect("row")
                .get(0);
            let msg = resp["status"]["message"].as_str().unwrap_or("").to_string();
            outcomes
                .entry(format!("cancel {code} state={state}"))
                .or_default()
                .push(format!("{id} at {:?}: {msg}", t0.elapsed()));
        }
        redis.thaw();
        tokio::time::sleep(Duration::from_millis(4_500)).await;
    }
    for (k, v) in &outcomes {
        println!("FIGURE s34c_late {k}: {}", v.len());
    }
    let hidden: Vec<_> = outcomes
        .iter()
        .filter(|(k, _)| {
            (k.starts_with("create 503") && !k.ends_with("active=0"))
                || (k.starts_with("cancel 503") && k.ends_with("COMPLETED"))
        })
        .collect();
    assert!(
        hidden.is_empty(),
        "503s that hide a stored callback or a landed cancel: {hidden:#?}; all: {outcomes:#?}"
    );
}

/// GUARD (limits do not err low for cancelled callbacks). A customer's cancel is not a
/// withdrawal: with `throttle_per_number_24h: 1`, a number whose callback was created (200) and
/// then cancelled by the customer stays counted, live and after the periodic re-seed (the
/// re-seed's new filter must only skip rows with a `compensation` event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34c_customer_cancel_still_counts_after_the_reseed() {
    let env = TestEnv::new().with("THROTTLE_RESEED_SECONDS", "10");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"throttle_per_number_24h": 1}));
    let key = engage.provision("ccount", "svc", svc).await;
    let phone = "+15550178101";
    let id = engage.create(&key).service("svc").phone(phone).id().await;
    let (code, body) = engage.cancel(&key, &id).await;
    assert_eq!(code, 200, "{body}");
    let live = engage.create(&key).service("svc").phone(phone).send().await;
    assert_eq!(live.0, 429, "live: {}", live.1);
    tokio::time::sleep(Duration::from_secs(11)).await;
    // The re-seed runs on the service's next create.
    let other = engage
        .create(&key)
        .service("svc")
        .phone("+15550178102")
        .send()
        .await;
    assert_eq!(other.0, 200, "{}", other.1);
    let after = engage.create(&key).service("svc").phone(phone).send().await;
    assert_eq!(
        after.0, 429,
        "after the re-seed the customer-cancelled callback no longer counts: {}",
        after.1
    );
}

/// GUARD (cost of the re-seed's filter). `db::throttle::recent` on a service with 48,000 rows
/// created in the horizon, half of them COMPLETED/CANCELLED (an event each: `api` for 20,000,
/// 4,000 withdrawn: a `compensation` event and the row marked `withdrawn`): timed against the
/// statement before d2dbdd8, within a loose bound (measured 21.7 -> 26.3 ms with the former
/// `callback_events` subquery); see [`attack_s34c_reseed_filter_cost_with_a_long_history`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34c_reseed_filter_cost_on_a_big_service() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let _key = engage
        .provision("bigseed", "svc", open_service(json!({})))
        .await;
    let pg = env.pg().await;
    pg.batch_execute(
        "INSERT INTO callbacks (id, tenant_id, service, state, reason, phone_number, desired_time,
                                dispatch_at, scheduled, created_at)
         SELECT gen_random_uuid(), 'bigseed', 'svc',
                CASE WHEN g % 2 = 0 THEN 'COMPLETED' ELSE 'SCHEDULED' END,
                CASE WHEN g % 2 = 0 THEN 'CANCELLED' END,
                '+1555' || lpad(g::text, 7, '0'), now(), now() + interval '1 day', true,
                now() - (g % 3600) * interval '1 second'
         FROM generate_series(1, 48000) g;
         INSERT INTO callback_events (callback_id, state, reason, source)
         SELECT id, 'COMPLETED', 'CANCELLED',
                CASE WHEN substr(phone_number, 6)::int % 12 = 0 THEN 'compensation' ELSE 'api' END
         FROM callbacks WHERE tenant_id = 'bigseed' AND state = 'COMPLETED';
         UPDATE callbacks SET withdrawn = true WHERE id IN
           (SELECT callback_id FROM callback_events WHERE source = 'compensation');
         ANALYZE callbacks; ANALYZE callback_events;",
    )
    .await
    .expect("rows");
    // (48,000 rows: under the seed's cap of 50,000, so both statements read them all.)
    let (old_ms, old_n) = best_of_three_recent(&pg, "bigseed", false).await;
    let (new_ms, new_n) = best_of_three_recent(&pg, "bigseed", true).await;
    println!(
        "FIGURE s34c_reseed_cost old_ms={old_ms:.1} rows={old_n} new_ms={new_ms:.1} rows={new_n}"
    );
    assert_eq!(old_n - new_n, 4_000, "withdrawn rows left out");
    assert!(
        new_ms < old_ms * 4.0 + 100.0,
        "the filter costs {new_ms:.1} ms against {old_ms:.1} ms"
    );
}

/// The fastest of three runs of the re-seed's statement (`db::throttle::recent`, 24 h
/// horizon) on service `svc` of `tenant`, with or without its filter of withdrawn rows (ms),
/// and its row count.
async fn best_of_three_recent(
    pg: &tokio_postgres::Client,
    tenant: &str,
    filtered: bool,
) -> (f64, usize) {
    let mut sql = shared::db::throttle::recent_sql();
    if !filtered {
        let unfiltered = sql.replace(" AND NOT withdrawn", "");
        assert_ne!(unfiltered, sql, "the statement's filter moved");
        sql = unfiltered;
    }
    let mut best = f64::MAX;
    let mut n = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let cap = shared::db::throttle::SEED_ROW_CAP;
        n = pg
            .query(&sql, &[&tenant, &"svc", &86_400f64, &cap])
            .await
            .expect("recent")
            .len();
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
    }
    (best, n)
}

/// Every message on `channel`, as heard by the test.
async fn listen(url: &str, channel: String) -> Arc<Mutex<Vec<(Instant, String)>>> {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let mut ps = redis::Client::open(url)
        .expect("client")
        .get_async_pubsub()
        .await
        .expect("pubsub");
    ps.subscribe(channel).await.expect("subscribe");
    let h = heard.clone();
    tokio::spawn(async move {
        let mut s = ps.into_on_message();
        while let Some(m) = s.next().await {
            if let Ok(p) = m.get_payload::<String>() {
                h.lock().unwrap().push((Instant::now(), p));
            }
        }
    });
    heard
}

/// Cost (a paced backlog is not a lost announcement). 2,500 callbacks overdue by PostgreSQL
/// but placed an hour ahead in the schedule (as pacing places a long line of a service at a
/// low `dispatch_rate_per_second`); two idle workers, sweep every 2 s. Before d2dbdd8 a sweep
/// of them cost its `INDEX_MISSING` scripts only (`ZADD NX` adds nothing, no `PUBLISH`); now
/// every page of 1,000 publishes its earliest PostgreSQL time (long past), and every worker
/// runs the sweep, so each sweep period brings workers × pages messages, each waking every
/// worker for an empty claim (workers² × pages claims), for as long as the line lasts. Counted
/// with `INFO commandstats` on a private Redis and on the wake channel; bounded (passes), the
/// figure is the evidence: in 10 s, 30 `PUBLISH` and 60 empty claims, 360 commands where the
/// same sweeps cost 90 before (`EVALSHA`, `ZMSCORE`, `ZADD` per page and worker; this test at
/// d2dbdd8^: 90 commands, no wake message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34c_sweep_wakes_every_worker_for_a_paced_backlog() {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("REDIS_SCHEDULE_SHARDS", "1");
    let (env, _api, _key) = Fixture::dispatch(env, "paced", "svc", json!({}))
        .await
        .parts();
    let keys = Keys::new(&env.id, 1);
    let pg = env.pg().await;
    let ids: Vec<Uuid> = pg
        .query(
            "INSERT INTO callbacks (id, tenant_id, service, state, phone_number, desired_time,
                                    dispatch_at, scheduled)
             SELECT gen_random_uuid(), 'paced', 'svc', 'SCHEDULED',
                    '+1555' || lpad(g::text, 7, '0'),
                    now() - interval '60 s', now() - interval '60 s' + g * interval '1 ms', true
             FROM generate_series(1, 2500) g RETURNING id",
            &[],
        )
        .await
        .expect("insert")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ahead = jiff::Timestamp::now().as_millisecond() + 3_600_000;
    let mut conn = redis.conn().await;
    for chunk in ids.chunks(500) {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(keys.sched(0));
        for (i, id) in chunk.iter().enumerate() {
            cmd.arg(ahead + i as i64).arg(id.to_string());
        }
        let _: i64 = cmd.query_async(&mut conn).await.expect("ZADD");
    }
    let heard = listen(&redis.url(), keys.wake_channel(0)).await;
    let sweep = [
        ("WORKER_SWEEP_S", "2".to_string()),
        ("WORKER_SWEEP_GRACE_S", "1".to_string()),
    ];
    let _a = WorkerProc::start(&env, &sweep).await;
    let _b = WorkerProc::start(&env, &sweep).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .expect("resetstat");
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let stats: BTreeMap<String, u64> = commandstats(&mut conn).await.into_iter().collect();
    let msgs: Vec<String> = heard
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t >= from)
        .map(|(_, m)| m.clone())
        .collect();
    let total: u64 = stats
        .iter()
        .filter(|(k, _)| !["info", "config", "ping"].iter().any(|s| k.starts_with(s)))
        .map(|(_, v)| v)
        .sum();
    let submitted = env.submitted_count().await;
    println!(
        "FIGURE s34c_paced_backlog 10s: commands={total} {stats:?} wake_messages={} first={:?} submitted={submitted}",
        msgs.len(),
        msgs.iter().take(6).collect::<Vec<_>>()
    );
    assert_eq!(submitted, 0, "nothing was due in Redis");
    // Each worker sweeps (five or six times in 10 s), three pages each: bounded by pages and
    // workers, not by callbacks; every message wakes both workers for an empty claim.
    assert!(
        msgs.len() <= 2 * 6 * 3,
        "{} wake-ups in 10 s for a backlog nobody missed: {msgs:?}",
        msgs.len()
    );
}

/// GUARD (each once with slow owners). One shard, two workers with a 1 s lease, a sweep every
/// 2 s (grace 1 s) that now announces lapsed leases; 120 callbacks due at once for a service
/// paced at 30/s, so passes run while leases lapse. One worker is frozen (SIGSTOP) for 2.5 s,
/// three times, mid-line — a slow owner, not a dead one: after the thaw it finishes the pass
/// whose claims the other worker took over after a sweep's or a lease's announcement. Every
/// callback reaches the voice stream exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34c_slow_owner_and_sweep_wakes_hand_off_each_once() {
    let env = TestEnv::new().with("REDIS_SCHEDULE_SHARDS", "1");
    let fx = Fixture::dispatch(env, "slow", "svc", json!({"dispatch_rate_per_second": 30})).await;
    let extra = [
        ("WORKER_LEASE_MS", "1000".to_string()),
        ("WORKER_SWEEP_S", "2".to_string()),
        ("WORKER_SWEEP_GRACE_S", "1".to_string()),
    ];
    let a = WorkerProc::start(&fx.env, &extra).await;
    let _b = WorkerProc::start(&fx.env, &extra).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let ids = fx
        .engage
        .create_immediate(&fx.key, "svc", 120, 178_300)
        .await;
    let pid = [a.proc.child.id()];
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        signal(&pid, "STOP");
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        signal(&pid, "CONT");
    }
    let n = fx.env.wait_submitted(120, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (total, distinct, per) = fx.env.census().await;
    let twice: Vec<_> = per.iter().filter(|(_, c)| **c > 1).collect();
    println!("FIGURE s34c_slow_owner submitted={n} total={total} distinct={distinct}");
    assert_eq!(n, 120);
    assert_eq!(
        (total, distinct),
        (ids.len(), ids.len()),
        "handed off twice: {twice:?}"
    );
}

/// GUARD (score formatting). The sweep's announcement of a lapsed lease and of an indexed
/// overdue callback carries the exact millisecond score (`string.format('%d', …)` of a
/// 13-digit Lua number, no exponent, no fraction), so a worker of this or an earlier release
/// parses it; and the rebuild path (overdue flag off) announces nothing for entries already
/// indexed. Since 2026-12-05 a lapsed lease is announced as a lease with tag 0
/// (`<ms>.0:<shard>`, docs/derived-state.md#claims-that-know-the-leases); an earlier release
/// reads `<ms>.0` as the same number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34c_sweep_announces_exact_scores() {
    let env = TestEnv::new().with("REDIS_SCHEDULE_SHARDS", "1");
    let (env, _api, _key) = Fixture::dispatch(env, "score", "svc", json!({}))
        .await
        .parts();
    let keys = Keys::new(&env.id, 1);
    let heard = listen(&env.vars["REDIS_URL"], keys.wake_channel(0)).await;
    let _w = WorkerProc::start(
        &env,
        &[
            ("WORKER_SWEEP_S", "2".to_string()),
            ("WORKER_SWEEP_GRACE_S", "1".to_string()),
        ],
    )
    .await;
    // Past the start-up rebuild and the first look at every shard (which would take the
    // lapsed lease over by itself).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut pg = env.pg().await;
    let (leased, indexed) = (Uuid::now_v7(), Uuid::now_v7());
    // The rows commit after the Redis entries are written: a sweep between an insert and its
    // `ZADD` would find the row missing from Redis and index it itself (what failed CI on
    // 215e14f), announcing its PostgreSQL time instead of the lease's.
    let tx = pg.transaction().await.expect("begin");
    for (id, ago) in [(leased, "30 s"), (indexed, "20 s")] {
        tx.execute(
            &format!(
                "INSERT INTO callbacks (id, tenant_id, service, state, phone_number, desired_time,
                                        dispatch_at, scheduled)
                 VALUES ($1, 'score', 'svc', 'SCHEDULED', '+15550178401', now() - interval '{ago}',
                         now() - interval '{ago}', true)"
            ),
            &[&id],
        )
        .await
        .expect("insert");
    }
    let now = jiff::Timestamp::now().as_millisecond();
    // The lease ran out 40 s ago (earlier than both PostgreSQL times); the indexed entry is
    // held an hour ahead (paced).
    let lease = now - 40_000 + 7;
    let mut conn = env.redis().await;
    let _: i64 = redis::cmd("ZADD")
        .arg(keys.inflight(0))
        .arg(lease)
        .arg(leased.to_string())
        .query_async(&mut conn)
        .await
        .expect("ZADD");
    let _: i64 = redis::cmd("ZADD")
        .arg(keys.sched(0))
        .arg(now + 3_600_000)
        .arg(indexed.to_string())
        .query_async(&mut conn)
        .await
        .expect("ZADD");
    tx.commit().await.expect("commit");
    let started = Instant::now();
    let want = format!("{lease}.0:0");
    while started.elapsed() < Duration::from_secs(6)
        && !heard.lock().unwrap().iter().any(|(_, m)| *m == want)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let msgs: Vec<String> = heard
        .lock()
        .unwrap()
        .iter()
        .map(|(_, m)| m.clone())
        .collect();
    println!("FIGURE s34c_scores heard={msgs:?}");
    assert!(
        msgs.contains(&want),
        "no exact announcement {want} of the lapsed lease: {msgs:?}"
    );
    for m in &msgs {
        let (at, shard) = m.split_once(':').expect("<ms>:<shard>");
        assert_eq!(shard, "0", "{m}");
        let whole = at.split('.').next().unwrap();
        assert!(
            whole
                .parse::<i64>()
                .is_ok_and(|v| v > 1_600_000_000_000 || v == 0),
            "unparseable announcement {m}"
        );
        assert!(!at.contains('e') && !at.contains('E'), "{m}");
    }
    // The leased callback was taken over and handed off once.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !env.row(&leased.to_string()).await.2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        env.row(&leased.to_string()).await.2,
        "lapsed lease not taken over"
    );
    assert!(
        !env.row(&indexed.to_string()).await.2,
        "the entry held an hour ahead went early"
    );
}

/// Places booked in the test schema's slots of service `svc`.
async fn booked(pg: &tokio_postgres::Client) -> i64 {
    pg.query_one(
        "SELECT coalesce(sum(booked), 0)::int8 FROM slot_bookings WHERE service = 'svc'",
        &[],
    )
    .await
    .expect("booked")
    .get::<_, i64>(0)
}

/// GUARD (no double compensation of a slot place). A slot create (capacity 1, the spawned-task
/// path) whose client leaves while its `COMMIT` is held is withdrawn once it lands: its place
/// is given back exactly once (booked 1 -> 0, not below), so the next create of the slot is
/// admitted and the one after it refused as full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34c_slot_create_dropped_mid_commit_gives_its_place_back_once() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"slot_minutes": 15, "slot_capacity": 1}));
    let key = engage.provision("slotgone", "svc", svc).await;
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let day = today.checked_add(jiff::Span::new().days(2)).expect("date");
    let at = harness::wire(harness::local("UTC", day, 12, 0) + jiff::SignedDuration::from_mins(5));
    let phone = "+15550178501";
    let pg = env.pg().await;
    let lock = rand_lock();
    slow_commits_of(&pg, phone, lock).await;
    pg.execute("SELECT pg_advisory_lock($1)", &[&lock])
        .await
        .expect("hold");
    let body = json!({"serviceName": "svc", "phoneNumber": phone, "desiredTime": at});
    let gave_up = impatient_create(&engage, &key, &body, 700, None).await;
    assert!(
        gave_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "{gave_up:?}"
    );
    assert!(
        commits_held(&pg).await >= 1,
        "the slot create's COMMIT is not held"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.execute("SELECT pg_advisory_unlock($1)", &[&lock])
        .await
        .expect("release");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let rows = all_rows(&pg, phone).await;
    let after_drop = booked(&pg).await;
    let b = engage
        .create(&key)
        .service("svc")
        .phone("+15550178502")
        .at(&at)
        .send()
        .await;
    let c = engage
        .create(&key)
        .service("svc")
        .phone("+15550178503")
        .at(&at)
        .send()
        .await;
    let end = booked(&pg).await;
    println!(
        "FIGURE s34c_slot rows={rows:?} booked_after_drop={after_drop} b={} c={} booked_end={end}",
        b.0, c.0
    );
    assert_eq!(
        active_rows(&pg, phone).await,
        0,
        "dropped slot create kept: {rows:?}"
    );
    assert_eq!(after_drop, 0, "place not given back exactly once");
    assert_eq!((b.0, c.0, end), (200, 429, 1), "{} / {}", b.1, c.1);
}

async fn zscore(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    member: &str,
) -> Option<f64> {
    redis::cmd("ZSCORE")
        .arg(key)
        .arg(member)
        .query_async(conn)
        .await
        .expect("ZSCORE")
}

/// GUARD (a cancel dropped mid-wait). The customer's cancel is dropped by the server (client
/// gone) while its `COMMIT` is held. Since d2dbdd8 the drop gives the cancel up in doubt; a
/// cancel has no compensation: the task must then treat the landed cancel as done and do its
/// follow-ups itself (the callback leaves the schedule index), never roll it back or leave it
/// indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34c_cancel_dropped_mid_commit_lands_with_its_follow_ups() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let key = engage
        .provision("cgone", "svc", open_service(json!({})))
        .await;
    let id = engage
        .create(&key)
        .service("svc")
        .phone("+15550178601")
        .in_secs(400)
        .id()
        .await;
    let uid: Uuid = id.parse().expect("uuid");
    let keys = Keys::new(&env.id, 4);
    let mut conn = env.redis().await;
    let sched_key = keys.sched(keys.shard_of(&uid));
    assert!(
        zscore(&mut conn, &sched_key, &id).await.is_some(),
        "not indexed to begin with"
    );
    let pg = env.pg().await;
    let lock = rand_lock();
    pg.batch_execute(&format!(
        "CREATE FUNCTION attack_c_slow_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_advisory_xact_lock_shared({lock}); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER attack_c_slow_cancel AFTER UPDATE ON callbacks
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
           WHEN (NEW.state = 'COMPLETED') EXECUTE FUNCTION attack_c_slow_cancel();"
    ))
    .await
    .expect("trigger");
    pg.execute("SELECT pg_advisory_lock($1)", &[&lock])
        .await
        .expect("hold");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .expect("client");
    let gave_up = client
        .post(format!(
            "{}/engagement/v3/callbacks/cancel",
            engage.external
        ))
        .header("x-api-key", &key)
        .json(&json!({"id": id}))
        .send()
        .await;
    assert!(
        gave_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "{gave_up:?}"
    );
    assert!(
        commits_held(&pg).await >= 1,
        "the cancel's COMMIT is not held"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.execute("SELECT pg_advisory_unlock($1)", &[&lock])
        .await
        .expect("release");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (state, _, _) = env.row(&id).await;
    let history = sources(&pg, &uid).await;
    let still = zscore(&mut conn, &sched_key, &id).await.is_some();
    println!("FIGURE s34c_cancel_dropped state={state} history={history:?} indexed={still}");
    assert_eq!(state, "COMPLETED", "the landed cancel is gone: {history:?}");
    assert!(!still, "a cancelled callback stays in the schedule index");
    // And the customer's retry learns it is cancelled (not a 5xx).
    let (code, body) = engage.cancel(&key, &id).await;
    assert!(code < 500, "{code} {body}");
}

/// Cost (the re-seed's new filter against a long history). As
/// [`attack_s34c_reseed_filter_cost_on_a_big_service`], with the history of other callbacks
/// (another tenant's 600,000 completed callbacks, one event each: `callback_events` holds every
/// state change of every tenant until retention). The planner may answer the `NOT EXISTS` with
/// a hashed subplan, which reads every `compensation` event of every tenant through a scan
/// of all of `callback_events` (no index on `source`), once per re-seed of each service
/// (every `THROTTLE_RESEED_SECONDS`, 300 s, on the create that finds the seed due). FINDING
/// (cost): measured 14.7 ms -> 58.5 ms with 624,000 events, a parallel seq scan of them all;
/// the scan grows with every tenant's history, not with the service's rows (a lookup of the
/// cancelled rows' events by id measured worse, 97 ms, with half the rows cancelled). Fixed on
/// 2026-12-04 (stop 35): a withdrawal marks its row (`callbacks.withdrawn`, V19) and the
/// re-seed filters on it; timed through `db::throttle::recent` itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s34c_reseed_filter_cost_with_a_long_history() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let _key = engage
        .provision("bighist", "svc", open_service(json!({})))
        .await;
    let pg = env.pg().await;
    pg.batch_execute(
        "INSERT INTO callbacks (id, tenant_id, service, state, reason, phone_number, desired_time,
                                dispatch_at, scheduled, created_at)
         SELECT gen_random_uuid(), 'other', 'svc', 'COMPLETED', 'ANSWERED',
                '+1555' || lpad(g::text, 7, '0'), now() - interval '3 days',
                now() - interval '3 days', true, now() - interval '3 days'
         FROM generate_series(1, 600000) g;
         INSERT INTO callback_events (callback_id, state, reason, source)
         SELECT id, 'COMPLETED', 'ANSWERED', 'ors' FROM callbacks WHERE tenant_id = 'other';
         INSERT INTO callbacks (id, tenant_id, service, state, reason, phone_number, desired_time,
                                dispatch_at, scheduled, created_at)
         SELECT gen_random_uuid(), 'bighist', 'svc',
                CASE WHEN g % 2 = 0 THEN 'COMPLETED' ELSE 'SCHEDULED' END,
                CASE WHEN g % 2 = 0 THEN 'CANCELLED' END,
                '+1555' || lpad(g::text, 7, '0'), now(), now() + interval '1 day', true,
                now() - (g % 3600) * interval '1 second'
         FROM generate_series(1, 48000) g;
         INSERT INTO callback_events (callback_id, state, reason, source)
         SELECT id, 'COMPLETED', 'CANCELLED',
                CASE WHEN substr(phone_number, 6)::int % 12 = 0 THEN 'compensation' ELSE 'api' END
         FROM callbacks WHERE tenant_id = 'bighist' AND state = 'COMPLETED';
         UPDATE callbacks SET withdrawn = true WHERE id IN
           (SELECT callback_id FROM callback_events WHERE source = 'compensation');
         ANALYZE callbacks; ANALYZE callback_events;",
    )
    .await
    .expect("rows");
    let mut figures = Vec::new();
    for (service_rows, tenant) in [("48,000", "bighist")] {
        let (old_ms, old_n) = best_of_three_recent(&pg, tenant, false).await;
        let (new_ms, new_n) = best_of_three_recent(&pg, tenant, true).await;
        let plan: Vec<String> = pg
            .query(
                &format!(
                    "EXPLAIN SELECT id FROM callbacks WHERE tenant_id = '{tenant}'
                       AND service = 'svc' AND created_at > now() - make_interval(secs => 86400)
                       AND NOT withdrawn LIMIT 50000"
                ),
                &[],
            )
            .await
            .expect("explain")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let scans_history = plan.iter().any(|l| l.contains("callback_events"));
        figures.push((service_rows, old_ms, new_ms, scans_history));
        println!(
            "FIGURE s34c_reseed_history service_rows={service_rows} old_ms={old_ms:.1} ({old_n}) new_ms={new_ms:.1} ({new_n})\n{}",
            plan.join("\n")
        );
    }
    // The plan is the guard; the times are figures only (a timed bound failed CI on c136402
    // at 282 against 83 ms, best of three each, on a loaded machine; figures of cost come
    // from `just bench`).
    for (rows, old_ms, new_ms, scans_history) in figures {
        assert!(
            !scans_history,
            "service of {rows} rows: the re-seed reads all of callback_events (every tenant's \
             history) to find compensation events: {new_ms:.1} ms against {old_ms:.1} ms"
        );
    }
}
