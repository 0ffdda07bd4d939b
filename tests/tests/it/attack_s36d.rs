//! Attacks on 2d4465f (after helper-61: `limits::readmit` admits any active callback that is
//! not counted, a given-back one like a create and one whose field is missing or a tombstone
//! under the active limits only, `throttle::readmit_active`; the admission script answers
//! `counted` for an id counted already; `captcha::replayed` runs its transaction in a task of
//! its own; every withdrawing attempt gives back again) and on 770f02e (`readmit` itself).
//!
//! Promises attacked (docs/bounded-answers.md#a-replay-of-a-create-answered-503,
//! docs/throttling.md): a 200 names a callback that stays and a 429/503 names nothing that
//! stays unless a later answer named it; a retry of a create under its Idempotency-Key never
//! gets a 429; "an admission never counts an id twice"; the 24 h and window counts equal the
//! admissions that stay.
//!
//! PostgreSQL is slowed in the test's own schema only (attack_s35c's deferred triggers on
//! advisory locks the test holds); the one PostgreSQL fault is a lost connection of the test's
//! own Engage process (`pg_terminate_backend` of the withdrawal's `COMMIT`, attack_s35c's
//! scene). Redis faults only on the test's own throttle hash (`~seed` expired), or on a
//! `PrivateRedis` of the test's own (refusing writes: `maxmemory 1`, as attack_s32 does).
//!
//! Findings of helper-62 (open, ignored; 3 of 3 each): the CAPTCHA replay's spawned task marks
//! the key after its request was answered 503, so a callback both requests were told 503 about
//! stays; a readmission that re-seeds counts the admission twice (24 h list, windows) until the
//! next re-seed; a replay of a fail-open create is answered 429 while it stays; two re-seeds
//! around a gap create, or a lost hash in the gap, keep two active callbacks under strict
//! (`readmit` checks nothing on `counted` or `gone`). Guard: the create path's replay answered
//! 503 marks nothing.

use std::time::{Duration, Instant};

use harness::{Engage, PrivateRedis, TestEnv, open_service};
use redis::AsyncCommands;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::attack_s34_client_gone::{
    act_key, active_rows, all_rows, hget, number_key, redis_count,
};
use crate::attack_s35b::{CaptchaStage, captcha_stage, id_of, keyed_request};
use crate::attack_s35c::{Scene, force_reseed, hold_withdrawal};

/// The id of the oldest callback of `phone` (the first, keyed create).
async fn first_id(pg: &tokio_postgres::Client, phone: &str) -> Uuid {
    pg.query_one(
        "SELECT id FROM callbacks WHERE phone_number = $1 ORDER BY created_at LIMIT 1",
        &[&phone],
    )
    .await
    .expect("first id")
    .get(0)
}

/// Whether Idempotency-Key `idem` is stored and marked `replayed` (`None`: no key row).
async fn key_marked(pg: &tokio_postgres::Client, idem: &str) -> Option<bool> {
    pg.query_opt(
        "SELECT replayed FROM idempotency_keys WHERE key = $1",
        &[&idem],
    )
    .await
    .expect("key row")
    .map(|r| r.get(0))
}

/// Backends of this test's database waiting on a lock in a statement on
/// `idempotency_keys` (a replay waiting for the key row).
async fn key_waiters(pg: &tokio_postgres::Client) -> i64 {
    pg.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
           AND wait_event_type = 'Lock' AND query LIKE '%idempotency_keys%'",
        &[],
    )
    .await
    .expect("waiters")
    .get(0)
}

/// What a replay-answered-503 scene left.
#[derive(Debug)]
struct Late {
    retry: (u16, Value),
    retry_ms: u128,
    /// Replays still waiting on the key row once the retry was answered.
    waiting_after_answer: i64,
    marked: Option<bool>,
    rows: Vec<(String, Option<String>)>,
    active: i64,
    counted: i64,
    field: Option<String>,
}

impl Late {
    fn figure(&self) -> String {
        format!(
            "retry={} ({:?}) after {} ms, still waiting on the key={} then: key marked={:?} \
             rows={:?} active={} n={} field={:?}",
            self.retry.0,
            self.retry.1["status"]["message"],
            self.retry_ms,
            self.waiting_after_answer,
            self.marked,
            self.rows,
            self.active,
            self.counted,
            self.field
        )
    }
}

/// The lost-withdrawal scene (attack_s35c) where the client's retry, waiting on the key row the
/// withdrawal holds, is answered (503) *before* the withdrawal's `COMMIT` is lost; then the
/// withdrawal's connection is lost, and it is tried again.
async fn answered_before_the_loss(scene: &Scene<'_>, idem: &str, body: &Value) -> Late {
    let (env, act, phone) = (scene.env, scene.act, scene.phone);
    let (h, retry) = hold_withdrawal(scene, idem, body, async {}).await;
    let started = Instant::now();
    let retry = retry.await.expect("retry");
    let retry_ms = started.elapsed().as_millis();
    let waiting_after_answer = key_waiters(&h.pg).await;
    h.lose_withdrawal().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.release().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let id = first_id(&h.pg, phone).await;
    Late {
        retry,
        retry_ms,
        waiting_after_answer,
        marked: key_marked(&h.pg, idem).await,
        rows: all_rows(&h.pg, phone).await,
        active: active_rows(&h.pg, phone).await,
        counted: redis_count(env, act, &number_key(phone)).await,
        field: hget(env, act, &harness::throttle_field(&id.to_string())).await,
    }
}

/// Attack on 2d4465f ("captcha::replayed runs its transaction in a task of its own").
/// FINDING (fails; ignored).
///
/// Promise (docs/bounded-answers.md): "a 503 names nothing that stays unless a later answer
/// named it"; the one exception left is a replay whose own mark `COMMIT` is in flight at its
/// deadline. The CAPTCHA replay's task is spawned and awaited by the handler; the request
/// timeout drops the handler (503) but not the task, which goes on waiting for the key row
/// and then marks the key, readmits and commits, although nobody will read its answer: the
/// create path's replay asks `Writer::begin_commit` first, this one asks nothing. Sequence:
/// attack_s35c's lost-withdrawal scene on a `captcha_required` service (strict); the retry
/// (same key, body, token) waits on the key row the withdrawal holds and is answered 503 at
/// `REQUEST_TIMEOUT_MS`; only then is the withdrawal's `COMMIT` lost. Both requests were
/// answered 503 and neither was in its `COMMIT` at its deadline. Expected: the withdrawal's
/// next attempt withdraws the callback (nothing stays). Observed (3 of 3, 2026-12-04): retry
/// 503 "request timed out" (947 to 950 ms after the withdrawal was seen holding) with its
/// replay still waiting on the key row (1 waiter); then the key is marked (`replayed` true),
/// the callback stays QUEUED (active 1, indexed) and counted (n = 1, field
/// `<number>|<readmission ms>|d`): it will be called, and both of the client's requests said
/// 503. Before 2d4465f the transaction lived in the handler and went with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s36d_captcha_replay_answered_503_marks_the_key_afterwards() {
    let CaptchaStage {
        fake,
        env,
        engage,
        key,
    } = captcha_stage("s36d1").await;
    let act = act_key(&env, "s36d1", "svc");
    let phone = "+15550197101";
    let body = json!({"serviceName": "svc", "phoneNumber": phone, "captchaToken": fake.issue()});
    let scene = Scene {
        env: &env,
        engage: &engage,
        key: &key,
        act: &act,
        phone,
    };
    let seen = answered_before_the_loss(&scene, "order-s36d-1", &body).await;
    println!("FIGURE s36d_captcha_late_mark {}", seen.figure());
    assert_eq!(seen.retry.0, 503, "{seen:?}");
    assert_eq!(
        seen.active, 0,
        "both requests of the key were answered 503, yet the callback stays active \
         (key marked {:?} after the retry's answer): {seen:?}",
        seen.marked
    );
    assert_eq!(seen.counted, 0, "{seen:?}");
}

/// GUARD on 770f02e/2d4465f (the same scene in the create's own transaction: `commit::replay`
/// asks `Writer::begin_commit` before it commits the mark). The retry waits on the key row and
/// is answered 503 at the commit deadline before the withdrawal's `COMMIT` is lost; its task
/// then readmits the callback, finds the request gone, rolls back and gives the readmission
/// back; the withdrawal withdraws. Promised: nothing stays, nothing counted. Observed (3 of 3,
/// 2026-12-04): retry 503 "the database did not confirm the callback in time" after 1 948 ms
/// (1 replay waiting on the key), key row gone, rows [COMPLETED/CANCELLED], n = 0 (field ""),
/// the number's next create 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s36d_replay_answered_503_marks_nothing() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("s36d2", "svc", svc).await;
    let act = act_key(&env, "s36d2", "svc");
    let phone = "+15550197201";
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let scene = Scene {
        env: &env,
        engage: &engage,
        key: &key,
        act: &act,
        phone,
    };
    let seen = answered_before_the_loss(&scene, "order-s36d-2", &body).await;
    let plain = engage.create(&key).service("svc").phone(phone).send().await;
    println!(
        "FIGURE s36d_task_late_mark {} plain_create={}",
        seen.figure(),
        plain.0
    );
    assert_eq!(seen.retry.0, 503, "{seen:?}");
    assert_eq!((seen.active, seen.counted), (0, 0), "{seen:?}");
    assert_eq!(plain.0, 200, "{}", plain.1);
}

/// Attack on 770f02e/2d4465f ("an admission never counts an id twice"; `readmit` of a given-back
/// callback goes through `reserve_id`, which may re-seed). FINDING, fixed in stop 37 (V20
/// `given_back`).
///
/// Promise (docs/throttling.md): `throttle_per_number_24h` counts each immediate admission
/// that stays once. When the replay's readmission finds the hash due for a re-seed, it
/// re-seeds itself (inside its transaction): the re-seed drops the give-back's empty field
/// (ended) and counts the callback's admission from PostgreSQL (row active, not withdrawn)
/// in the windows and in its number's 24 h list; the script asked again finds the field
/// missing (not `counted`) and admits the callback like a create: a second 24 h entry and a
/// second window admission. Sequence: attack_s35c's lost-withdrawal scene on a service with
/// `throttle_per_number_24h: 2` (in-queue check off); after the give-back the hash's `~seed`
/// is expired (nothing else); the retry replays (200, the first callback). Expected: the
/// number's one immediate admission of the day counted once, and its next immediate create
/// admitted. Observed (3 of 3, 2026-12-04): `d:<number>` "" after the give-back; retry 200
/// naming the first callback (active 1, n = 1); `d:<number>` then holds 2 entries (the created
/// time from the re-seed, the readmission time); the next create of the number 429
/// `throttle_per_number_24h` with one admission in 24 h; healed by the next re-seed only
/// (1 entry, then 200).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s36d_readmission_that_reseeds_counts_the_admission_twice() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"throttle_per_number_24h": 2}));
    let key = engage.provision("s36d3", "svc", svc).await;
    let act = act_key(&env, "s36d3", "svc");
    let phone = "+15550197301";
    let num = number_key(phone);
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let scene = Scene {
        env: &env,
        engage: &engage,
        key: &key,
        act: &act,
        phone,
    };
    let day_key = format!("d:{num}");
    let gap_day = std::sync::Mutex::new(None);
    let between = async {
        let d = hget(&env, &act, &day_key).await;
        *gap_day.lock().unwrap() = d;
        let mut conn = env.redis().await;
        let _: () = conn.hset(&act, "~seed", 0).await.expect("HSET ~seed");
    };
    let (h, retry) = hold_withdrawal(&scene, "order-s36d-3", &body, between).await;
    h.lose_withdrawal().await;
    let (code, resp) = retry.await.expect("retry");
    h.release().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let id = first_id(&h.pg, phone).await;
    let entries = |v: &Option<String>| {
        v.as_deref()
            .map_or(0, |s| s.split(',').filter(|e| !e.is_empty()).count())
    };
    let day = hget(&env, &act, &day_key).await;
    let active = active_rows(&h.pg, phone).await;
    let counted = redis_count(&env, &act, &num).await;
    let field = hget(&env, &act, &harness::throttle_field(&id.to_string())).await;
    let next = engage.create(&key).service("svc").phone(phone).send().await;
    let (day_reseeded, next_after_reseed) = if next.0 == 200 {
        (None, 0)
    } else {
        let code = force_reseed(&env, &engage, &key, &act, "+15550197391").await;
        assert_eq!(code, 200, "the re-seeding create");
        let d = hget(&env, &act, &day_key).await;
        let c = engage.create(&key).service("svc").phone(phone).send().await;
        (d, c.0)
    };
    let gap_day = gap_day.lock().unwrap().clone();
    println!(
        "FIGURE s36d_readmit_reseed d_after_give_back={gap_day:?} retry={code} id={:?} \
         d={day:?} ({} entries) active={active} n={counted} field={field:?} next_create={} \
         ({:?}) d_after_reseed={day_reseeded:?} next_after_reseed={next_after_reseed}",
        id_of(&resp),
        entries(&day),
        next.0,
        next.1["status"]["message"]
    );
    assert_eq!(code, 200, "{resp}");
    assert_eq!(id_of(&resp), Some(id));
    assert_eq!(active, 1);
    assert_eq!(
        entries(&day),
        1,
        "the number's one immediate admission is counted {} times in its 24 h list ({day:?})",
        entries(&day)
    );
    assert_eq!(
        next.0, 200,
        "one immediate admission of the number in 24 h, yet refused under \
         throttle_per_number_24h 2: {}",
        next.1
    );
}

/// Attack on 2d4465f (`readmit`: a field that is missing, "or it was never counted" ->
/// `readmit_active`, refused -> 429 and no mark). FINDING (fails; ignored).
///
/// Promise (docs/throttling.md "Ordering with the PostgreSQL insert"): a retry of a create
/// under its Idempotency-Key is answered with the winner's callback and never gets a 429;
/// docs/bounded-answers.md: a 429 names nothing that stays. A callback admitted while Redis
/// refused the write (fail open, documented: created, counted by nobody until a re-seed) has
/// no field. `readmit` treats it like a callback whose withdrawal is pending: checked under
/// the active limits, and refused with 429 — but no withdrawal is pending, so the callback
/// stays and is called while its own retry was told 429. Sequence (a `PrivateRedis` of the
/// test): a create of another number seeds the hash; `maxmemory 1` (writes refused); a keyed
/// create of the number under strict (200, fail open, no field); `maxmemory 0`; a plain
/// create of the same number (200: Redis counts nothing for it, the documented fail-open
/// excess); the client retries the keyed create with the same key and body. Before 2d4465f
/// the replay read "not given back" and answered 200. Observed (3 of 3, 2026-12-04): first
/// 200 (1 fail-open counted), field nil, plain create 200 (n = 1), the retry 429
/// "in_queue_checking reached" naming no callback, key not marked, the first callback still
/// QUEUED (rows [QUEUED, QUEUED]); the next retry 429 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s36d_replay_of_a_fail_open_create_is_answered_429() {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("API_KEY_RATE_PER_SECOND", "0");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("s36d4", "svc", svc).await;
    let act = act_key(&env, "s36d4", "svc");
    let phone = "+15550197401";
    let num = number_key(phone);
    let idem = "order-s36d-4";
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let seeding = engage
        .create(&key)
        .service("svc")
        .phone("+15550197491")
        .send()
        .await;
    assert_eq!(seeding.0, 200, "{}", seeding.1);
    let mut admin = redis.conn().await;
    harness::config_set(&mut admin, "maxmemory-policy", "noeviction").await;
    harness::config_set(&mut admin, "maxmemory", "1").await;
    let first = harness::send(keyed_request(&engage, &key, idem, &body)).await;
    harness::config_set(&mut admin, "maxmemory", "0").await;
    let fail_open = engage.metric_sum("engage_throttle_fail_open_total").await;
    assert_eq!(first.0, 200, "{}", first.1);
    let id = id_of(&first.1).expect("id");
    let field: Option<String> = admin
        .hget(&act, harness::throttle_field(&id.to_string()))
        .await
        .expect("HGET");
    let plain = engage.create(&key).service("svc").phone(phone).send().await;
    let n: Option<String> = admin.hget(&act, format!("n:{num}")).await.expect("HGET");
    let replay = harness::send(keyed_request(&engage, &key, idem, &body)).await;
    let pg = env.pg().await;
    let rows = all_rows(&pg, phone).await;
    let active: i64 = pg
        .query_one(
            "SELECT count(*) FROM callbacks WHERE id = $1 AND state <> 'COMPLETED'",
            &[&id],
        )
        .await
        .expect("state")
        .get(0);
    let marked = key_marked(&pg, idem).await;
    // The key's next retry, a moment later: the same answer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let replay2 = harness::send(keyed_request(&engage, &key, idem, &body)).await;
    println!(
        "FIGURE s36d_fail_open_replay fail_opens={fail_open} first={} field={field:?} \
         plain={} n={n:?} replay={} ({:?}) rows={rows:?} first_active={active} \
         marked={marked:?} replay_again={}",
        first.0, plain.0, replay.0, replay.1["status"]["message"], replay2.0
    );
    assert_eq!(active, 1, "the first callback stays: {rows:?}");
    assert_eq!(
        replay.0, 200,
        "the retry of a create that stays (and will be called) was refused: {}",
        replay.1
    );
    assert_eq!(id_of(&replay.1), Some(id));
}

/// What a gap scene with a plain create of the number left.
#[derive(Debug)]
struct Gap {
    /// `(n:<number>, answer)` of each step in the gap, in order.
    steps: Vec<(&'static str, i64, u16)>,
    retry: (u16, Value),
    first: Uuid,
    rows: Vec<(String, Option<String>)>,
    active: i64,
    counted: i64,
    field: Option<String>,
}

impl Gap {
    fn figure(&self) -> String {
        format!(
            "gap(step, n, code)={:?} retry={} names_first={} rows={:?} active={} n={} \
             field={:?}",
            self.steps,
            self.retry.0,
            id_of(&self.retry.1) == Some(self.first),
            self.rows,
            self.active,
            self.counted,
            self.field
        )
    }
}

/// A step of the give-back gap.
#[derive(Clone, Copy)]
enum Step {
    /// A create of another number with `~seed` expired (re-seeds from PostgreSQL).
    Reseed(&'static str),
    /// A plain create of the scene's number.
    Create,
    /// The throttle hash is lost (as on a Redis flush or a failover that lost it).
    Lose,
}

/// attack_s35c's lost-withdrawal scene (strict) with `steps` run in the gap between the
/// withdrawal's give-back and its lost `COMMIT`; the retry (same key and body) then replays.
async fn gap(scene: &Scene<'_>, idem: &str, body: &Value, steps: &[Step]) -> Gap {
    let (env, engage, key, act, phone) =
        (scene.env, scene.engage, scene.key, scene.act, scene.phone);
    let num = number_key(phone);
    let seen = std::sync::Mutex::new(Vec::new());
    let between = async {
        for s in steps {
            let (name, code) = match *s {
                Step::Reseed(other) => ("reseed", force_reseed(env, engage, key, act, other).await),
                Step::Create => (
                    "create",
                    engage
                        .create(key)
                        .service("svc")
                        .phone(phone)
                        .send()
                        .await
                        .0,
                ),
                Step::Lose => {
                    let mut conn = env.redis().await;
                    let _: () = conn.del(act).await.expect("DEL");
                    ("lose", 0)
                }
            };
            let n = redis_count(env, act, &num).await;
            seen.lock().unwrap().push((name, n, code));
        }
    };
    let (h, retry) = hold_withdrawal(scene, idem, body, between).await;
    h.lose_withdrawal().await;
    let retry = retry.await.expect("retry");
    h.release().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let first = first_id(&h.pg, phone).await;
    let steps = seen.lock().unwrap().clone();
    Gap {
        steps,
        retry,
        first,
        rows: all_rows(&h.pg, phone).await,
        active: active_rows(&h.pg, phone).await,
        counted: redis_count(env, act, &num).await,
        field: hget(env, act, &harness::throttle_field(&first.to_string())).await,
    }
}

/// Attack on 2d4465f (`readmit`: "counted -> nothing"; `Verdict::Counted`). FINDING, fixed in stop
/// 37 (V20 `given_back`).
///
/// Promise (docs/throttling.md, `in_queue_checking: "strict"`; docs/bounded-answers.md "A
/// replay admits a given-back callback again, checked"): a number holds at most one active
/// callback. Two re-seeds in the give-back gap count the callback again from PostgreSQL (the
/// first drops the empty field, the second finds the row active, not withdrawn, not ended)
/// beside a create of the number admitted in between; `readmit` then reads the field as
/// counted and checks nothing, the replay marks the key and the withdrawal's next attempt
/// spares the callback. Sequence: the lost-withdrawal scene under strict; in the gap a forced
/// re-seed, a plain create of the number (n = 0: admitted), a second forced re-seed (n = 2);
/// the retry replays. Expected: the retry 429 (nothing marked, the withdrawal goes ahead), one
/// active callback. Observed (3 of 3, 2026-12-04): gap n 0, create 200 (n 1), re-seed n 2;
/// retry 200 naming the first callback; rows [QUEUED, QUEUED], active 2, n = 2 (the first's
/// field `<number>|<created ms>` from the re-seed). Not new in 2d4465f (770f02e read the same
/// field as "not given back"), but the class it set out to close.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s36d_two_reseeds_around_a_gap_create_keep_two() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("s36d5", "svc", svc).await;
    let act = act_key(&env, "s36d5", "svc");
    let phone = "+15550197501";
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let scene = Scene {
        env: &env,
        engage: &engage,
        key: &key,
        act: &act,
        phone,
    };
    let steps = [
        Step::Reseed("+15550197591"),
        Step::Create,
        Step::Reseed("+15550197592"),
    ];
    let seen = gap(&scene, "order-s36d-5", &body, &steps).await;
    println!("FIGURE s36d_two_reseeds_gap_create {}", seen.figure());
    assert_eq!(seen.steps[1].2, 200, "the gap's create: {seen:?}");
    assert!(
        seen.active <= 1,
        "the number holds {} active callbacks under in_queue_checking strict (retry {}, \
         n = {}): {seen:?}",
        seen.active,
        seen.retry.0,
        seen.counted
    );
    assert_eq!((seen.active, seen.counted), (1, 1), "{seen:?}");
}

/// Attack on 2d4465f (`readmit_active`: "`Ok(false)`: ... or the state is gone (the next seed
/// counts it)"). FINDING, fixed in stop 37 (V20 `given_back`).
///
/// Promise: as above (strict: at most one active callback per number); docs/throttling.md: a
/// flushed Redis "rebuilds itself on first use". When the throttle hash is lost in the gap
/// (after a create of the number was admitted beside the given-back callback), `readmit`
/// reads no field (Uncounted), `readmit_active` answers "gone" and admits nothing and refuses
/// nothing, the replay marks the key, the withdrawal spares the callback and its `restore`
/// is a no-op on the missing hash; the next create's re-seed counts both. Sequence: the
/// lost-withdrawal scene under strict; in the gap a plain create of the number (200, n = 1),
/// then the service's hash is deleted; the retry replays. Expected: 429 and one active
/// callback. Observed (3 of 3, 2026-12-04): create 200 (n 1), hash lost (n 0); retry 200
/// naming the first callback; rows [QUEUED, QUEUED], active 2; after the next create's
/// re-seed n = 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s36d_lost_hash_in_the_gap_keeps_two() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("s36d6", "svc", svc).await;
    let act = act_key(&env, "s36d6", "svc");
    let phone = "+15550197601";
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let scene = Scene {
        env: &env,
        engage: &engage,
        key: &key,
        act: &act,
        phone,
    };
    let seen = gap(&scene, "order-s36d-6", &body, &[Step::Create, Step::Lose]).await;
    // The next create of another number re-seeds the lost hash from PostgreSQL.
    let reseed = engage
        .create(&key)
        .service("svc")
        .phone("+15550197691")
        .send()
        .await;
    let counted_reseeded = redis_count(&env, &act, &number_key(phone)).await;
    println!(
        "FIGURE s36d_lost_hash_gap {} reseed_create={} n_after_reseed={counted_reseeded}",
        seen.figure(),
        reseed.0
    );
    assert_eq!(seen.steps[0].2, 200, "the gap's create: {seen:?}");
    assert!(
        seen.active <= 1,
        "the number holds {} active callbacks under in_queue_checking strict (retry {}): \
         {seen:?}",
        seen.active,
        seen.retry.0
    );
}
