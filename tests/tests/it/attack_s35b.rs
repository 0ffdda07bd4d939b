//! Attacks on 2df0a0a ("A 200 always names a callback that stays"): an Idempotency-Key replay
//! commits `idempotency_keys.replayed` before it answers, the compensation of a keyed create
//! answered 503 locks the key first and keeps a marked callback, and a keyed create's throttle
//! reservation is given back inside the withdrawal transaction (`compensate_with`'s
//! `before_commit`, functions/src/callbacks/create/commit.rs).
//!
//! Promises attacked: every 200 names a callback that stays active; a number never ends with
//! two active callbacks from one key; the Redis create-time count (`n:<number>` of the
//! throttle hash) equals what stays active; no 5xx other than the documented 503s.
//! PostgreSQL is slowed in the test's own schema only (deferred constraint triggers waiting on
//! advisory locks the test holds), and the one fault injected is a lost connection of the
//! test's own Engage process (`pg_terminate_backend` of the backend running the withdrawal's
//! `COMMIT`, as on a PostgreSQL restart, failover or network reset).

use std::{future::Future, time::Duration};

use harness::{CREATE, Engage, TestEnv, open_service};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::attack_s34_client_gone::{
    act_key, active_rows, all_rows, number_key, rand_u16, redis_count, slow_commits_of,
};

/// Installs a deferred constraint trigger on the test schema's `callbacks`: the `COMMIT` of a
/// transaction that withdrew a row of `phone` (a `LIKE` pattern; COMPLETED/CANCELLED, what
/// `withdraw_unanswered` writes) waits until the advisory lock `lock` is free.
async fn slow_withdrawals_of(pg: &tokio_postgres::Client, phone: &str, lock: i64) {
    pg.batch_execute(&format!(
        "CREATE FUNCTION attack_s35b_slow_withdrawal() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.phone_number LIKE '{phone}' AND NEW.state = 'COMPLETED'
              AND NEW.reason = 'CANCELLED' THEN
             PERFORM pg_advisory_xact_lock_shared({lock});
           END IF;
           RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER attack_s35b_slow_withdrawal AFTER UPDATE ON callbacks
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
           EXECUTE FUNCTION attack_s35b_slow_withdrawal();"
    ))
    .await
    .expect("trigger");
}

/// Backends whose `COMMIT` waits on the advisory lock `lock` (this test's own: other tests
/// running at the same time hold locks of their own, never terminated here).
pub(crate) async fn held_commits(pg: &tokio_postgres::Client, lock: i64) -> Vec<i32> {
    let (class, obj) = ((lock >> 32) as u32, (lock & 0xffff_ffff) as u32);
    pg.query(
        "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
         WHERE a.datname = current_database() AND a.query = 'COMMIT'
           AND l.locktype = 'advisory' AND NOT l.granted
           AND l.classid = $1::int8::oid AND l.objid = $2::int8::oid",
        &[&i64::from(class), &i64::from(obj)],
    )
    .await
    .expect("activity")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Backends waiting on a lock that one of `pids` holds (other tests' waiters in the same
/// database do not count).
pub(crate) async fn lock_waiters(pg: &tokio_postgres::Client, pids: &[i32]) -> i64 {
    pg.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE pg_blocking_pids(pid) && $1::int4[]",
        &[&pids],
    )
    .await
    .expect("activity")
    .get(0)
}

/// Polls `f` every 50 ms up to `ms`.
pub(crate) async fn until<F, Fut>(ms: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..ms / 50 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f().await
}

pub(crate) fn id_of(body: &Value) -> Option<Uuid> {
    body["data"]["id"].as_str().and_then(|s| s.parse().ok())
}

async fn state_of(pg: &tokio_postgres::Client, id: Uuid) -> Option<(String, Option<String>)> {
    pg.query_opt("SELECT state, reason FROM callbacks WHERE id = $1", &[&id])
        .await
        .expect("state")
        .map(|r| (r.get(0), r.get(1)))
}

pub(crate) fn keyed_request(
    engage: &Engage,
    key: &str,
    idem: &str,
    body: &Value,
) -> reqwest::RequestBuilder {
    engage
        .http
        .post(format!("{}{CREATE}", engage.external))
        .header("x-api-key", key)
        .header("Idempotency-Key", idem)
        .json(body)
}

/// Attack; a finding of helper-57, fixed on 2026-12-04 (stop 35): the withdrawal keeps a
/// handle of the reservation it gave back and counts the callback again (`throttle::restore`)
/// when a later attempt spares it. The finding (Redis count errs low; strict in-queue check
/// broken): `compensate_with` may run
/// `before_commit` more than once ("It may run again if the commit fails"), and the keyed
/// create's closure (commit.rs `write`) takes the reservation out on the first run whenever
/// nothing is spared, gives it back to Redis, and has nothing left to keep on a later run.
/// Sequence: a keyed create's `COMMIT` is held past its deadline (answered 503); it lands; the
/// withdrawal locks the key (not marked), gives the throttle reservation back (Redis
/// `n:<number>` 1 -> 0) and sends its `COMMIT`, which is lost (the backend is terminated, as on
/// a PostgreSQL restart). The client's retry with the same key and body, waiting on the key
/// row, then gets it, marks it, commits and is answered 200 with the first callback's id. The
/// withdrawal's second attempt finds the key marked and spares the callback: it stays active
/// and indexed, but its reservation is already gone. Promised: Redis counts equal what stays
/// active (1). Observed: `n:` = 0 with one active callback, and a second create of the number
/// without the key is admitted under `in_queue_checking: "strict"` (two active callbacks for
/// the number) until the next re-seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s35b_withdrawal_commit_lost_then_replay_keeps_an_uncounted_callback() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("s35b", "svc", svc).await;
    let phone = "+15550179101";
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let lost = LostWithdrawal {
        env: &env,
        engage: &engage,
        key: &key,
        act: act_key(&env, "s35b", "svc"),
        phone,
        locks: (0x5b35_0000, 0x5b36_0000),
    };
    lost.run("order-s35b-1", &body).await;
    let other = engage.create(&key).service("svc").phone(phone).send().await;
    lost.only_one_after(other).await;
}

/// A keyed create answered 503 while its `COMMIT` is held (advisory lock `locks.0`), whose
/// withdrawal then holds at its own `COMMIT` (`locks.1`) after giving the reservation back;
/// the client's retry waits on the key row, and the withdrawal's connection is lost.
struct LostWithdrawal<'a> {
    env: &'a TestEnv,
    engage: &'a Engage,
    key: &'a str,
    act: String,
    phone: &'a str,
    locks: (i64, i64),
}

impl LostWithdrawal<'_> {
    /// Plays the scenario with key `idem` and `body`; checks that the retry was answered 200
    /// with a callback that stays, the only active one of the number, counted once.
    async fn run(&self, idem: &str, body: &Value) {
        let (env, engage, key, phone) = (self.env, self.engage, self.key, self.phone);
        let num = number_key(phone);
        let pg = env.pg().await;
        let (insert_lock, withdraw_lock) = {
            let r = i64::from(rand_u16());
            (self.locks.0 + r, self.locks.1 + r)
        };
        slow_commits_of(&pg, phone, insert_lock).await;
        slow_withdrawals_of(&pg, phone, withdraw_lock).await;
        for l in [insert_lock, withdraw_lock] {
            pg.execute("SELECT pg_advisory_lock($1)", &[&l])
                .await
                .expect("hold");
        }
        let first = harness::send(keyed_request(engage, key, idem, body)).await;
        assert_eq!(first.0, 503, "the held create answered: {}", first.1);
        // The create commits; its withdrawal gives the reservation back and holds at COMMIT.
        pg.execute("SELECT pg_advisory_unlock($1)", &[&insert_lock])
            .await
            .expect("release insert");
        let held = until(3_000, || async {
            !held_commits(&pg, withdraw_lock).await.is_empty()
        })
        .await;
        assert!(held, "the withdrawal's COMMIT is not held");
        let pids = held_commits(&pg, withdraw_lock).await;
        let counted_during = redis_count(env, &self.act, &num).await;
        // The client's retry, as told by the 503: it waits on the key row the withdrawal holds.
        let retry = tokio::spawn(harness::send(keyed_request(engage, key, idem, body)));
        let waiting = until(2_000, || async { lock_waiters(&pg, &pids).await >= 1 }).await;
        assert!(
            waiting,
            "the retry does not wait on the withdrawal's key row"
        );
        // The withdrawal's connection is lost at COMMIT: its transaction is rolled back.
        for pid in &pids {
            pg.execute("SELECT pg_terminate_backend($1)", &[pid])
                .await
                .expect("terminate");
        }
        let (code, resp) = retry.await.expect("retry");
        pg.execute("SELECT pg_advisory_unlock($1)", &[&withdraw_lock])
            .await
            .expect("release withdrawal");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let rows = all_rows(&pg, phone).await;
        let active = active_rows(&pg, phone).await;
        let counted = redis_count(env, &self.act, &num).await;
        let named = match id_of(&resp) {
            Some(id) => state_of(&pg, id).await,
            None => None,
        };
        println!(
            "FIGURE s35b_lost_withdrawal phone={phone} retry_waited={waiting} retry={code} \
             named={named:?} counted_during_withdrawal={counted_during} rows={rows:?} \
             active={active} n={counted}"
        );
        assert_eq!(code, 200, "the retry answered {code}: {resp}");
        assert!(
            named.as_ref().is_some_and(|s| s.0 != "COMPLETED"),
            "the 200 named a callback that did not stay: {named:?}; rows {rows:?}"
        );
        assert_eq!(
            (active, counted),
            (1, 1),
            "the number keeps {active} active callback(s) but Redis counts n:{num} = {counted} \
             (rows {rows:?})"
        );
    }

    /// Under `in_queue_checking: "strict"`, `other` (a create of the number without the key,
    /// sent after [`Self::run`]) is refused and the number keeps one active callback.
    async fn only_one_after(&self, other: (u16, Value)) {
        let active_after = active_rows(&self.env.pg().await, self.phone).await;
        assert_eq!(
            (other.0, active_after),
            (429, 1),
            "a create of the number without the key was answered {} under strict: {} active",
            other.0,
            active_after
        );
    }
}

/// A keyed create whose client gives up after `ms` (`None`: waits); the answer, `None` when
/// the client left first.
async fn keyed_impatient(
    engage: &Engage,
    key: &str,
    idem: &str,
    body: &Value,
    ms: Option<u64>,
) -> Option<(u16, Value)> {
    let mut client = reqwest::Client::builder();
    if let Some(ms) = ms {
        client = client.timeout(Duration::from_millis(ms));
    }
    let resp = client
        .build()
        .expect("client")
        .post(format!("{}{CREATE}", engage.external))
        .header("x-api-key", key)
        .header("Idempotency-Key", idem)
        .json(body)
        .send()
        .await
        .ok()?;
    let code = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Some((code, body))
}

/// Places booked in the test schema's slots of service `svc`.
async fn booked(pg: &tokio_postgres::Client) -> i64 {
    pg.query_one(
        "SELECT coalesce(sum(booked), 0)::int8 FROM slot_bookings WHERE service = 'svc'",
        &[],
    )
    .await
    .expect("booked")
    .get(0)
}

async fn active_like(pg: &tokio_postgres::Client, like: &str) -> i64 {
    pg.query_one(
        "SELECT count(*) FROM callbacks WHERE phone_number LIKE $1 AND state <> 'COMPLETED'",
        &[&like],
    )
    .await
    .expect("count")
    .get(0)
}

/// GUARD. Slot creates (capacity 1, each round its own slot) with an Idempotency-Key: the first
/// is answered 503 while its `COMMIT` is held; then five retries with the same key and body,
/// three of whose clients leave after 150, 600 and 1 400 ms (while they wait on the key, or
/// while their replay commits), are raced against the release of the `COMMIT` at several
/// delays. After each round: every 200 names one callback, which stays active; the number has
/// at most one active callback, exactly one if any retry got a 200; the slot's `booked`, the
/// Redis `n:<number>` count and the active rows agree; no 5xx but 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s35b_keyed_slot_retries_leaving_mid_replay_keep_counts_exact() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(
        json!({"slot_minutes": 15, "slot_capacity": 1, "in_queue_checking": "strict"}),
    );
    let key = engage.provision("s35bslot", "svc", svc).await;
    let act = act_key(&env, "s35bslot", "svc");
    let pg = env.pg().await;
    let lock: i64 = 0x5b37_0000 + i64::from(rand_u16());
    slow_commits_of(&pg, "+1555017930%", lock).await;
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let day = today.checked_add(jiff::Span::new().days(2)).expect("date");
    let mut wrong = Vec::new();
    let mut figures = Vec::new();
    for (i, delay_ms) in [-400i64, -50, 0, 5, 20, 60, 200].into_iter().enumerate() {
        let phone = format!("+1555017930{i}");
        let minutes = i64::try_from(i).expect("i") * 15 + 5;
        let at = harness::wire(
            harness::local("UTC", day, 12, 0) + jiff::SignedDuration::from_mins(minutes),
        );
        let body = json!({"serviceName": "svc", "phoneNumber": phone, "desiredTime": at});
        let idem = format!("order-s35b-slot-{i}");
        pg.execute("SELECT pg_advisory_lock($1)", &[&lock])
            .await
            .expect("hold");
        let first = harness::send(keyed_request(&engage, &key, &idem, &body)).await;
        if first.0 != 503 {
            wrong.push(format!("round {i}: the held create answered {}", first.0));
        }
        let timeouts = [Some(150u64), Some(600), Some(1_400), None, None];
        let sent = async {
            tokio::time::sleep(Duration::from_millis(delay_ms.max(0).unsigned_abs())).await;
            futures::future::join_all(
                timeouts
                    .iter()
                    .map(|t| keyed_impatient(&engage, &key, &idem, &body, *t)),
            )
            .await
        };
        let unlock = async {
            tokio::time::sleep(Duration::from_millis(delay_ms.min(0).unsigned_abs())).await;
            pg.execute("SELECT pg_advisory_unlock($1)", &[&lock]).await
        };
        let (_, answers) = tokio::join!(unlock, sent);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let rows = all_rows(&pg, &phone).await;
        let active = active_rows(&pg, &phone).await;
        let counted = redis_count(&env, &act, &number_key(&phone)).await;
        let total_booked = booked(&pg).await;
        let total_active = active_like(&pg, "+1555017930%").await;
        let codes: Vec<Option<u16>> = answers.iter().map(|a| a.as_ref().map(|a| a.0)).collect();
        let mut named = std::collections::BTreeSet::new();
        for (code, resp) in answers.iter().flatten() {
            if *code >= 500 && *code != 503 {
                wrong.push(format!("round {i}: a retry answered {code}: {resp}"));
            }
            if *code == 200 {
                let id = id_of(resp).expect("id");
                named.insert(id);
                let state = state_of(&pg, id).await;
                if state.as_ref().is_none_or(|s| s.0 == "COMPLETED") {
                    wrong.push(format!("round {i}: 200 named {id}, now {state:?}"));
                }
            }
        }
        figures.push(format!(
            "delay={delay_ms} codes={codes:?} rows={rows:?} n={counted} booked_total={total_booked}"
        ));
        if named.len() > 1 {
            wrong.push(format!("round {i}: the 200s named {named:?}"));
        }
        if active > 1 || (!named.is_empty() && active != 1) {
            wrong.push(format!(
                "round {i}: {active} active with 200s naming {named:?}: {rows:?}"
            ));
        }
        if counted != active {
            wrong.push(format!(
                "round {i}: Redis n: = {counted}, active {active}: {rows:?}"
            ));
        }
        if total_booked != total_active {
            wrong.push(format!(
                "round {i}: slots booked {total_booked}, active callbacks {total_active}"
            ));
        }
    }
    println!("FIGURE s35b_slot_rounds {figures:#?}");
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Installs a deferred constraint trigger on the test schema's `idempotency_keys`: the
/// `COMMIT` of a transaction that marked a key `replayed` waits until `lock` is free.
async fn slow_marks(pg: &tokio_postgres::Client, lock: i64) {
    pg.batch_execute(&format!(
        "CREATE FUNCTION attack_s35b_slow_mark() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.replayed THEN PERFORM pg_advisory_xact_lock_shared({lock}); END IF;
           RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER attack_s35b_slow_mark AFTER UPDATE ON idempotency_keys
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION attack_s35b_slow_mark();"
    ))
    .await
    .expect("trigger");
}

/// GUARD (the documented "one case left", plus a second retry behind it). A keyed create is
/// answered 503 while its `COMMIT` is held; its retry replays it, but the replay's own mark
/// `COMMIT` is held too, and that retry's client leaves meanwhile; a second retry queues behind
/// the mark on the key row. When the mark lands: the first callback is kept (the
/// compensation found the key marked), counted once in Redis, and the second retry is answered
/// 200 with that very callback; a third retry afterwards replays it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s35b_replay_whose_client_left_mid_mark_keeps_one_counted_callback() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("s35bmark", "svc", svc).await;
    let act = act_key(&env, "s35bmark", "svc");
    let phone = "+15550179401";
    let pg = env.pg().await;
    let (insert_lock, mark_lock) = {
        let r = i64::from(rand_u16());
        (0x5b38_0000 + r, 0x5b39_0000 + r)
    };
    slow_commits_of(&pg, phone, insert_lock).await;
    slow_marks(&pg, mark_lock).await;
    for l in [insert_lock, mark_lock] {
        pg.execute("SELECT pg_advisory_lock($1)", &[&l])
            .await
            .expect("hold");
    }
    let idem = "order-s35b-mark";
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let first = harness::send(keyed_request(&engage, &key, idem, &body)).await;
    assert_eq!(first.0, 503, "{}", first.1);
    let leaving = {
        let (engage, key, body) = (&engage, key.clone(), body.clone());
        let url = format!("{}{CREATE}", engage.external);
        tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .timeout(Duration::from_millis(700))
                .build()
                .expect("client");
            c.post(url)
                .header("x-api-key", key)
                .header("Idempotency-Key", "order-s35b-mark")
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    pg.execute("SELECT pg_advisory_unlock($1)", &[&insert_lock])
        .await
        .expect("release insert");
    // The first create commits; the retry marks the key and holds at its COMMIT.
    let held = until(3_000, || async {
        !held_commits(&pg, mark_lock).await.is_empty()
    })
    .await;
    let left = leaving.await.expect("task");
    let second = tokio::spawn(harness::send(keyed_request(&engage, &key, idem, &body)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.execute("SELECT pg_advisory_unlock($1)", &[&mark_lock])
        .await
        .expect("release mark");
    let second = second.await.expect("second");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let third = harness::send(keyed_request(&engage, &key, idem, &body)).await;
    let rows = all_rows(&pg, phone).await;
    let counted = redis_count(&env, &act, &number_key(phone)).await;
    println!(
        "FIGURE s35b_mark held={held} leaving={left:?} second={} third={} rows={rows:?} n={counted}",
        second.0, third.0
    );
    assert!(left.is_err(), "the leaving retry was answered: {left:?}");
    assert_eq!(
        (second.0, third.0),
        (200, 200),
        "{} / {}",
        second.1,
        third.1
    );
    assert_eq!(id_of(&second.1), id_of(&third.1));
    let state = state_of(&pg, id_of(&second.1).expect("id")).await;
    assert!(state.is_some_and(|s| s.0 != "COMPLETED"), "{rows:?}");
    assert_eq!((active_rows(&pg, phone).await, counted), (1, 1), "{rows:?}");
}

/// Attack; fixed with the one above. The finding (the same as
/// `attack_s35b_withdrawal_commit_lost_then_replay_keeps_an_uncounted_callback`, through the
/// CAPTCHA pre-check: `captcha::check` → `db::callbacks::earlier_use`, which marks the key in its
/// own autocommit statement). Service with `captcha_required`; a keyed create is answered 503
/// while its `COMMIT` is held, it lands, the withdrawal gives the reservation back and its
/// `COMMIT` is lost; the retry (same key, same body, same token), waiting in `earlier_use` on the
/// key row, marks it and is answered 200 with the first callback without a second
/// verification; the withdrawal's second attempt spares it. Promised: Redis `n:` = 1 for the one
/// active callback; observed 0, and a new create for the number is admitted under strict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s35b_captcha_replay_after_lost_withdrawal_keeps_an_uncounted_callback() {
    let CaptchaStage {
        fake,
        env,
        engage,
        key,
    } = captcha_stage("s35bcap").await;
    let phone = "+15550179501";
    let body = json!({"serviceName": "svc", "phoneNumber": phone, "captchaToken": fake.issue()});
    let lost = LostWithdrawal {
        env: &env,
        engage: &engage,
        key: &key,
        act: act_key(&env, "s35bcap", "svc"),
        phone,
        locks: (0x5b3a_0000, 0x5b3b_0000),
    };
    lost.run("order-s35b-cap", &body).await;
    // The first create verified its token; the replay answered without a second verification.
    assert_eq!(fake.calls(), 1, "verifications");
    let other = engage
        .create(&key)
        .service("svc")
        .phone(phone)
        .field("captchaToken", json!(fake.issue()))
        .send()
        .await;
    lost.only_one_after(other).await;
}

/// GUARD (the 409 path racing the withdrawal). A keyed create is answered 503 while its
/// `COMMIT` is held; two retries with the same key wait on its key row, one with the same body
/// and one with another (a different `userData`), sent before or after the `COMMIT` is let go.
/// Whatever order they get the key in: no 5xx; every 200 names a callback that stays; the
/// number has exactly one active callback (or none when no retry got a 200), counted once in
/// Redis; and a final retry with the first body replays the one that stays, or creates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s35b_mismatched_retry_racing_the_withdrawal_names_nothing_withdrawn() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("s35b409", "svc", svc).await;
    let act = act_key(&env, "s35b409", "svc");
    let pg = env.pg().await;
    let lock: i64 = 0x5b3c_0000 + i64::from(rand_u16());
    slow_commits_of(&pg, "+1555017960%", lock).await;
    let mut wrong = Vec::new();
    let mut figures = Vec::new();
    for (i, delay_ms) in [-300i64, 0, 3, 10, 40].into_iter().enumerate() {
        let phone = format!("+1555017960{i}");
        let idem = format!("order-s35b-409-{i}");
        let same = json!({"serviceName": "svc", "phoneNumber": phone});
        let other = json!({"serviceName": "svc", "phoneNumber": phone, "userData": {"x": "1"}});
        pg.execute("SELECT pg_advisory_lock($1)", &[&lock])
            .await
            .expect("hold");
        let first = harness::send(keyed_request(&engage, &key, &idem, &same)).await;
        if first.0 != 503 {
            wrong.push(format!("round {i}: held create answered {}", first.0));
        }
        let sent = async {
            tokio::time::sleep(Duration::from_millis(delay_ms.max(0).unsigned_abs())).await;
            let (mismatch, same) = tokio::join!(
                harness::send(keyed_request(&engage, &key, &idem, &other)),
                async {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    harness::send(keyed_request(&engage, &key, &idem, &same)).await
                }
            );
            vec![mismatch, same]
        };
        let unlock = async {
            tokio::time::sleep(Duration::from_millis(delay_ms.min(0).unsigned_abs())).await;
            pg.execute("SELECT pg_advisory_unlock($1)", &[&lock]).await
        };
        let (_, answers) = tokio::join!(unlock, sent);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let last = harness::send(keyed_request(&engage, &key, &idem, &same)).await;
        let rows = all_rows(&pg, &phone).await;
        let active = active_rows(&pg, &phone).await;
        let counted = redis_count(&env, &act, &number_key(&phone)).await;
        figures.push(format!(
            "delay={delay_ms} mismatch={} same={} last={} rows={rows:?} n={counted}",
            answers[0].0, answers[1].0, last.0
        ));
        for (code, resp) in answers.iter().chain(std::iter::once(&last)) {
            if *code >= 500 && *code != 503 {
                wrong.push(format!("round {i}: {code} {resp}"));
            }
            if *code == 200 {
                let id = id_of(resp).expect("id");
                let state = state_of(&pg, id).await;
                if state.as_ref().is_none_or(|s| s.0 == "COMPLETED") {
                    wrong.push(format!(
                        "round {i}: 200 named {id}, now {state:?}; {rows:?}"
                    ));
                }
            }
        }
        if active != 1 || counted != 1 {
            wrong.push(format!(
                "round {i}: {active} active, n: = {counted}: {rows:?}"
            ));
        }
    }
    println!("FIGURE s35b_409 {figures:#?}");
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// GUARD (the 24 h expiry: `claim_idempotency_key`'s `ON CONFLICT DO UPDATE` resets
/// `replayed`). A key was used and replayed more than 24 h ago (the test backdates its row and
/// marks it). A new create with that key claims it anew and is answered 503 while its
/// `COMMIT` is held; when it lands, the stale mark must not spare it: it is withdrawn, the key
/// row no longer names it, the old callback stays, and Redis counts what is active. A replay
/// through the CAPTCHA-less path of the expired key is a new claim, never the old id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s35b_expired_replayed_key_does_not_spare_its_new_claim() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({}));
    let key = engage.provision("s35bexp", "svc", svc).await;
    let act = act_key(&env, "s35bexp", "svc");
    let phone = "+15550179701";
    let pg = env.pg().await;
    let lock: i64 = 0x5b3d_0000 + i64::from(rand_u16());
    let idem = "order-s35b-exp";
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let old = harness::send(keyed_request(&engage, &key, idem, &body)).await;
    assert_eq!(old.0, 200, "{}", old.1);
    let old_id = id_of(&old.1).expect("id");
    let n = pg
        .execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours', replayed = true
             WHERE key = $1",
            &[&idem],
        )
        .await
        .expect("backdate");
    assert_eq!(n, 1);
    slow_commits_of(&pg, phone, lock).await;
    pg.execute("SELECT pg_advisory_lock($1)", &[&lock])
        .await
        .expect("hold");
    let first = harness::send(keyed_request(&engage, &key, idem, &body)).await;
    assert_eq!(first.0, 503, "{}", first.1);
    pg.execute("SELECT pg_advisory_unlock($1)", &[&lock])
        .await
        .expect("release");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let rows = all_rows(&pg, phone).await;
    let key_row: Option<(Uuid, bool)> = pg
        .query_opt(
            "SELECT callback_id, replayed FROM idempotency_keys WHERE key = $1",
            &[&idem],
        )
        .await
        .expect("key")
        .map(|r| (r.get(0), r.get(1)));
    let active = active_rows(&pg, phone).await;
    let counted = redis_count(&env, &act, &number_key(phone)).await;
    let old_state = state_of(&pg, old_id).await;
    let retry = harness::send(keyed_request(&engage, &key, idem, &body)).await;
    println!(
        "FIGURE s35b_expired rows={rows:?} key_row={key_row:?} active={active} n={counted} \
         old={old_state:?} retry={} retry_is_old={}",
        retry.0,
        id_of(&retry.1) == Some(old_id)
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[1],
        ("COMPLETED".to_string(), Some("CANCELLED".to_string())),
        "the 503'd claim of the expired key was kept: {rows:?} (key row {key_row:?})"
    );
    assert!(key_row.is_none_or(|k| k.0 == old_id), "{key_row:?}");
    assert_eq!((active, counted), (1, 1), "{rows:?}");
    assert_eq!(retry.0, 200, "{}", retry.1);
    assert_ne!(
        id_of(&retry.1),
        Some(old_id),
        "the expired key replayed the old callback"
    );
}

/// A service `svc` of `tenant` under `in_queue_checking: "strict"` that requires a CAPTCHA,
/// with the tenant's CAPTCHA secret stored and a fake `siteverify` that knows it (kept alive
/// here); `REQUEST_TIMEOUT_MS` 1 000.
pub(crate) struct CaptchaStage {
    pub(crate) fake: harness::siteverify::FakeSiteverify,
    pub(crate) env: TestEnv,
    pub(crate) engage: Engage,
    pub(crate) key: String,
}

/// Sets up a [`CaptchaStage`] for `tenant`.
pub(crate) async fn captcha_stage(tenant: &str) -> CaptchaStage {
    let secret = format!("captcha-secret-{tenant}");
    let fake = harness::siteverify::FakeSiteverify::start(&secret).await;
    let env = TestEnv::new()
        .with("REQUEST_TIMEOUT_MS", "1000")
        .with("CAPTCHA_VERIFY_URL", &fake.url)
        .with("CAPTCHA_TIMEOUT_MS", "700");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict", "captcha_required": true}));
    let key = engage.provision(tenant, "svc", svc).await;
    let put = engage
        .admin_put(
            &format!("/ges/v1/tenants/{tenant}/credentials/captcha"),
            json!({"secret": secret, "siteKey": "site-1"}),
        )
        .await;
    assert_eq!(put.0, 200, "{}", put.1);
    CaptchaStage {
        fake,
        env,
        engage,
        key,
    }
}
