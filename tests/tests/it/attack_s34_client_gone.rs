//! Attack on 38e0076 (a create dropped by the server because its client went away gives its
//! throttle reservation back exactly when the row is not kept: `UndoUnlessStored` in
//! `db::batch`, `Unread` in `redis::admission`; docs/throttling.md#group-admission).
//!
//! Promises attacked: the create-time limits never err low and do not stay high after a
//! dropped create; no 5xx; a callback the client never heard about is never left active.
//! PostgreSQL is slowed by the test's own schema only: `LOCK TABLE callbacks IN EXCLUSIVE
//! MODE` (holds a plain create's autocommit `INSERT`, sent after `begin_commit`), or a
//! deferred constraint trigger that waits on an advisory lock the test holds (a `COMMIT` that
//! is slow, as on a stalled disk or a synchronous standby: the keyed and slot paths commit
//! after `begin_commit`).

use std::time::Duration;

use harness::{CREATE, Engage, TestEnv, open_service};
use redis::AsyncCommands;
use serde_json::{Value, json};

/// The throttle hash of a service (docs/throttling.md: `{<prefix>:thr:<tenant>:<service>}:act`).
pub(crate) fn act_key(env: &TestEnv, tenant: &str, service: &str) -> String {
    format!("{{{}:thr:{tenant}:{service}}}:act", env.id)
}

pub(crate) async fn hget(env: &TestEnv, key: &str, field: &str) -> Option<String> {
    let mut conn = env.redis().await;
    conn.hget(key, field).await.expect("HGET")
}

/// `n:<number>` as a count (absent = 0).
pub(crate) async fn redis_count(env: &TestEnv, key: &str, number: &str) -> i64 {
    hget(env, key, &format!("n:{number}"))
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) async fn active_rows(pg: &tokio_postgres::Client, phone: &str) -> i64 {
    pg.query_one(
        "SELECT count(*) FROM callbacks WHERE phone_number = $1 AND state <> 'COMPLETED'",
        &[&phone],
    )
    .await
    .expect("count")
    .get(0)
}

pub(crate) async fn all_rows(
    pg: &tokio_postgres::Client,
    phone: &str,
) -> Vec<(String, Option<String>)> {
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

/// A create whose client gives up after `ms`; the raw outcome.
pub(crate) async fn impatient_create(
    engage: &Engage,
    key: &str,
    body: &Value,
    ms: u64,
    idem: Option<&str>,
) -> Result<reqwest::Response, reqwest::Error> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(ms))
        .build()
        .expect("client");
    let mut req = client
        .post(format!("{}{CREATE}", engage.external))
        .header("x-api-key", key)
        .json(body);
    if let Some(k) = idem {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await
}

/// The digits the limits key on for a `+1…` number without a number rule.
pub(crate) fn number_key(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

/// Installs a deferred constraint trigger on the test schema's `callbacks`: the `COMMIT` of a
/// transaction that inserted a row of `phone` (a `LIKE` pattern) waits until the advisory lock
/// `lock` is free.
pub(crate) async fn slow_commits_of(pg: &tokio_postgres::Client, phone: &str, lock: i64) {
    pg.batch_execute(&format!(
        "CREATE FUNCTION attack_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.phone_number LIKE '{phone}' THEN PERFORM pg_advisory_xact_lock_shared({lock}); END IF;
           RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER attack_slow_commit AFTER INSERT ON callbacks
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION attack_slow_commit();"
    ))
    .await
    .expect("trigger");
}

/// Attack; a finding of 2026-12-04 (client never heard, left active; a retry without the key
/// refused), fixed for good on 2026-12-04 (stop 35) by giving the write up on a dropped wait
/// once a replay marks its key (the first fix, taken back the same day, let the key's own
/// retry replay a callback withdrawn a moment later: helper-55). A create with an
/// `Idempotency-Key` (the spawned-task path, `create::commit`) is dropped by the server while
/// its `COMMIT` is in flight (its client went away). docs/bounded-answers.md: "Dropping a
/// handler drops its waiter, which gives the write up the same way"; outcome.rs's `Drop for
/// Waiter`: "A request dropped mid-wait (client gone, hard request timeout) gives up the same
/// way". It does not: `Waiter::wait(mut self)` takes `self.rx` first, and `Drop` gives up only
/// `if self.rx.is_some()`, so a waiter dropped *inside* `wait` never leaves WAITING/COMMITTING.
/// The task then settles as if the request still waited: the callback is kept (active) and its
/// reservation too. The plain path is saved only by `UndoUnlessStored`'s own CAS. A retry of the
/// same number without the key is refused under `in_queue_checking: "strict"` — the 429 this
/// change set out to remove — and the same holds for slot creates and for the middleware's
/// last-resort 503 (which drops the handler in `wait`: a 503 with the row stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_keyed_create_dropped_mid_commit_is_kept_and_blocks_the_retry() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("kgone", "svc", svc).await;
    let act = act_key(&env, "kgone", "svc");
    let phone = "+15550177001";
    let pg = env.pg().await;
    let lock: i64 = 0x5a34_0000 + i64::from(rand_u16());
    slow_commits_of(&pg, phone, lock).await;
    pg.execute("SELECT pg_advisory_lock($1)", &[&lock])
        .await
        .expect("hold");
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let gave_up = impatient_create(&engage, &key, &body, 700, Some("order-4711")).await;
    assert!(
        gave_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the keyed create answered while its COMMIT was held: {gave_up:?}"
    );
    let waiting: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory' AND query = 'COMMIT'",
            &[],
        )
        .await
        .expect("activity")
        .get(0);
    assert!(
        waiting >= 1,
        "the dropped create's COMMIT is not the one held"
    );
    // The server notices the closed connection and drops the request meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.execute("SELECT pg_advisory_unlock($1)", &[&lock])
        .await
        .expect("release");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let rows = all_rows(&pg, phone).await;
    let counted = redis_count(&env, &act, &number_key(phone)).await;
    let retry = engage.create(&key).service("svc").phone(phone).send().await;
    assert_eq!(
        (active_rows(&pg, phone).await, retry.0),
        (1, 200),
        "the create dropped mid-COMMIT was kept: rows {rows:?}, Redis n: = {counted}; the \
         retry without the key answered {} {}",
        retry.0,
        retry.1
    );
}

/// Attack; a finding of helper-54 (a 200 naming a withdrawn callback), fixed on 2026-12-04
/// (stop 35): the replay commits a mark on the key before it answers, and the compensation
/// locks the key first and keeps a marked callback. A keyed create whose `COMMIT` outlives the
/// request's commit deadline is answered 503 ("nothing was stored, retry later"); the customer
/// retries with the same key and body, as told. The retry waits on the first transaction's key
/// row, sees it committed, and is answered 200 with the first callback's id (a replay). Then
/// the first request's task finds its waiter gone (ABANDONED_IN_DOUBT) and withdraws that very
/// callback (COMPLETED/CANCELLED, key deleted): the customer holds a 200 for a cancelled
/// callback, and no active one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_keyed_retry_after_503_is_answered_with_a_withdrawn_callback() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("kgone", "svc", svc).await;
    let phone = "+15550177011";
    let pg = env.pg().await;
    let lock: i64 = 0x5a35_0000 + i64::from(rand_u16());
    slow_commits_of(&pg, phone, lock).await;
    pg.execute("SELECT pg_advisory_lock($1)", &[&lock])
        .await
        .expect("hold");
    let idem = "order-4712";
    let first = engage
        .create(&key)
        .service("svc")
        .phone(phone)
        .idempotency_key(idem)
        .send()
        .await;
    assert_eq!(first.0, 503, "{}", first.1);
    let retry = {
        let req = engage
            .http
            .post(format!("{}{CREATE}", engage.external))
            .header("x-api-key", &key)
            .header("Idempotency-Key", idem)
            .json(&json!({"serviceName": "svc", "phoneNumber": phone}));
        tokio::spawn(harness::send(req))
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    pg.execute("SELECT pg_advisory_unlock($1)", &[&lock])
        .await
        .expect("release");
    let (code, resp) = retry.await.expect("retry task");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let rows = all_rows(&pg, phone).await;
    assert!(
        code < 500,
        "the keyed retry answered {code}: {resp}; rows {rows:?}"
    );
    if code == 200 {
        let id: uuid::Uuid = resp["data"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid");
        let state: (String, Option<String>) = pg
            .query_one("SELECT state, reason FROM callbacks WHERE id = $1", &[&id])
            .await
            .map(|r| (r.get(0), r.get(1)))
            .expect("the answered callback exists");
        assert_ne!(
            state.0, "COMPLETED",
            "the retry was answered 200 with callback {id}, which was then withdrawn \
             ({state:?}); all rows of the number: {rows:?}"
        );
    }
    assert_eq!(
        active_rows(&pg, phone).await,
        1,
        "retry {code} {resp}; rows {rows:?}"
    );
}

pub(crate) fn rand_u16() -> u16 {
    uuid::Uuid::new_v4().as_bytes()[0] as u16 * 256 + uuid::Uuid::new_v4().as_bytes()[1] as u16
}

/// Attack; a finding of 2026-12-04, fixed the same day (`db::throttle::recent` leaves
/// withdrawn rows out) (stays high). A plain create dropped mid-insert (the `INSERT` held by a table lock,
/// so it commits and is withdrawn) gives back everything it counted, the number's 24 h entry
/// included. But the withdrawn row stays in PostgreSQL (COMPLETED, reason CANCELLED) and the
/// re-seed rebuilds the windows from `db::throttle::recent`, every row created in the horizon,
/// withdrawn ones too; the give-back's tombstone is empty, so the seed does not recognise it.
/// After the next periodic re-seed the dropped create counts again in
/// `throttle_per_number_24h` (for 24 h) and in the service windows: the number's first real
/// create is refused with a 429 although the number never kept a callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_reseed_counts_a_withdrawn_dropped_create_again() {
    let env = TestEnv::new().with("THROTTLE_RESEED_SECONDS", "10");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"throttle_per_number_24h": 1}));
    let key = engage.provision("rgone", "svc", svc).await;
    let act = act_key(&env, "rgone", "svc");
    let phone = "+15550177002";
    let num = number_key(phone);
    let mut pg = env.pg().await;
    let lock = pg.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE callbacks IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let gave_up = impatient_create(&engage, &key, &body, 700, None).await;
    assert!(
        gave_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "{gave_up:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.rollback().await.expect("unlock");
    let mut rows = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rows = all_rows(&pg, phone).await;
        if !rows.is_empty() && rows.iter().all(|r| r.0 == "COMPLETED") {
            break;
        }
    }
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.0 == "COMPLETED"),
        "the dropped create was not stored-and-withdrawn as expected: {rows:?}"
    );
    let day_before = hget(&env, &act, &format!("d:{num}")).await;
    assert!(
        day_before.as_deref().unwrap_or("").is_empty(),
        "the give-back left the number's 24 h entry: {day_before:?}"
    );
    // The periodic re-seed (THROTTLE_RESEED_SECONDS) runs on the service's next create.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let other = engage
        .create(&key)
        .service("svc")
        .phone("+15550177992")
        .send()
        .await;
    assert_eq!(other.0, 200, "{}", other.1);
    let day_after = hget(&env, &act, &format!("d:{num}")).await;
    let first = engage.create(&key).service("svc").phone(phone).send().await;
    assert_eq!(
        first.0, 200,
        "the number's first kept create is refused: the re-seed counted the withdrawn dropped \
         create (d:{num} = {day_after:?} after the re-seed, {day_before:?} before); rows {rows:?}: {}",
        first.1
    );
}

/// GUARD (held for the row). SIGTERM while a plain create's `INSERT` is held by a table lock
/// for longer than `SHUTDOWN_GRACE_MS`: the process exits, the client sees its connection
/// closed, and no active callback is left behind once the lock goes (observed: no row at all).
/// The reservation's give-back, spawned into the closing runtime, is lost: Redis keeps
/// `n:<number>` = 1 for a number with no row until the next re-seed (documented in
/// `store.rs`: "a drop outside the runtime leaves it to the next re-seed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_sigterm_mid_insert_leaves_no_unanswered_callback_active() {
    let env = TestEnv::new().with("SHUTDOWN_GRACE_MS", "500");
    let mut engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("sgone", "svc", svc).await;
    let act = act_key(&env, "sgone", "svc");
    let phone = "+15550177003";
    let mut pg = env.pg().await;
    let lock = pg.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE callbacks IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let req = engage
        .http
        .post(format!("{}{CREATE}", engage.external))
        .header("x-api-key", &key)
        .json(&json!({"serviceName": "svc", "phoneNumber": phone}));
    let pending = tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(400)).await;
    engage.proc.terminate();
    let status = engage.proc.wait_exit(Duration::from_secs(20)).await;
    let answer = pending.await.expect("task");
    tokio::time::sleep(Duration::from_millis(200)).await;
    lock.rollback().await.expect("unlock");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let rows = all_rows(&pg, phone).await;
    let counted = redis_count(&env, &act, &number_key(phone)).await;
    let active = active_rows(&pg, phone).await;
    eprintln!("sigterm: exit {status}, answer {answer:?}, rows {rows:?}, redis {counted}");
    assert!(
        answer.as_ref().map_or(true, |c| *c != 200),
        "the create was answered {answer:?}: nothing to attack"
    );
    assert_eq!(
        active, 0,
        "after SIGTERM (exit {status}) the create's client got {answer:?}, yet its callback is \
         active in PostgreSQL (rows {rows:?}; Redis n: = {counted})"
    );
}

/// GUARD. Twelve creates of twelve numbers, in one group commit, all dropped while the
/// `INSERT` is held: every row is withdrawn, every reservation given back, and each number's
/// retry passes under `in_queue_checking: "strict"`, leaving exactly one active row and a count
/// of one per number in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_many_drops_in_one_batch_give_back_exactly() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict", "max_queued": 12}));
    let key = engage.provision("bgone", "svc", svc).await;
    let act = act_key(&env, "bgone", "svc");
    let phones: Vec<String> = (0..12).map(|i| format!("+1555017710{i:02}")).collect();
    let mut pg = env.pg().await;
    let lock = pg.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE callbacks IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let drops = phones.iter().map(|p| {
        let body = json!({"serviceName": "svc", "phoneNumber": p});
        let (engage, key) = (&engage, &key);
        async move {
            impatient_create(engage, key, &body, 700, None)
                .await
                .is_err()
        }
    });
    let dropped = futures::future::join_all(drops).await;
    assert!(dropped.iter().all(|d| *d), "{dropped:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.rollback().await.expect("unlock");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let total: Option<String> = hget(&env, &act, "~count").await;
    for p in &phones {
        assert_eq!(
            active_rows(&pg, p).await,
            0,
            "{p}: {:?}",
            all_rows(&pg, p).await
        );
        assert_eq!(
            redis_count(&env, &act, &number_key(p)).await,
            0,
            "{p} still counted"
        );
    }
    assert!(total.as_deref().unwrap_or("0") == "0", "~count {total:?}");
    let retries = phones
        .iter()
        .map(|p| engage.create(&key).service("svc").phone(p).send());
    let answers = futures::future::join_all(retries).await;
    for (p, (code, body)) in phones.iter().zip(&answers) {
        assert_eq!(*code, 200, "{p}: {body}");
        assert_eq!(active_rows(&pg, p).await, 1, "{p}");
        assert_eq!(redis_count(&env, &act, &number_key(p)).await, 1, "{p}");
    }
    // max_queued = 12 is now reached, and exactly so.
    let over = engage
        .create(&key)
        .service("svc")
        .phone("+15550177199")
        .send()
        .await;
    assert_eq!(over.0, 429, "{}", over.1);
}

/// GUARD. Client timeouts from 1 ms to 200 ms on an unloaded server (the drop lands in the
/// admission, the verdict's oneshot, the batch queue or the insert): after each, PostgreSQL's
/// active rows of the number equal Redis's count, and the retry's answer follows from them
/// (200 when nothing was kept, 429 under strict when the dropped create was kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_drop_at_every_moment_keeps_redis_equal_to_postgres() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("tgone", "svc", svc).await;
    let act = act_key(&env, "tgone", "svc");
    let pg = env.pg().await;
    let timeouts = [
        1u64, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 60, 100, 200,
    ];
    let mut wrong = Vec::new();
    let mut kept = 0;
    for (i, ms) in timeouts.iter().enumerate() {
        let phone = format!("+1555017720{i:02}");
        let body = json!({"serviceName": "svc", "phoneNumber": phone});
        let _ = impatient_create(&engage, &key, &body, *ms, None).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let active = active_rows(&pg, &phone).await;
        let counted = redis_count(&env, &act, &number_key(&phone)).await;
        kept += active;
        let (code, resp) = engage
            .create(&key)
            .service("svc")
            .phone(&phone)
            .send()
            .await;
        let expected = if active == 0 { 200 } else { 429 };
        if active != counted || code != expected {
            wrong.push(format!(
                "{ms} ms: PostgreSQL {active} active, Redis {counted}, retry {code} {resp}"
            ));
        }
    }
    eprintln!("dropped creates kept: {kept} of {}", timeouts.len());
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// GUARD. A plain create dropped while the batch's `INSERT` is held, then the same number's
/// retry sent at once (before the lock goes): the retry is admitted on the given-back place
/// and both rows commit, but the dropped one is withdrawn right after its `INSERT` returns, so
/// the number ends with one active callback (strict holds after the fact; transiently, between
/// the two statements, PostgreSQL shows two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_retry_admitted_while_dropped_insert_is_in_doubt_ends_with_one() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("igone", "svc", svc).await;
    let act = act_key(&env, "igone", "svc");
    let phone = "+15550177004";
    let mut pg = env.pg().await;
    let lock = pg.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE callbacks IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let gave_up = impatient_create(&engage, &key, &body, 700, None).await;
    assert!(gave_up.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let retry = {
        let req = engage
            .http
            .post(format!("{}{CREATE}", engage.external))
            .header("x-api-key", &key)
            .json(&body);
        tokio::spawn(harness::send(req))
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.rollback().await.expect("unlock");
    let (code, resp) = retry.await.expect("retry");
    assert_eq!(code, 200, "{resp}");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let rows = all_rows(&pg, phone).await;
    assert_eq!(active_rows(&pg, phone).await, 1, "{rows:?}");
    assert_eq!(
        redis_count(&env, &act, &number_key(phone)).await,
        1,
        "{rows:?}"
    );
}
