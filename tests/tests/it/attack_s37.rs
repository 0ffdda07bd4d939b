//! Attacks on stop 37: V20 `idempotency_keys.given_back_at` (a keyed create's withdrawal commits
//! the mark before its first throttle give-back; re-seeds leave a callback with a mark younger
//! than the seed grace (120 s) out; a replay of a marked key admits the callback again, checked,
//! and clears the mark: `limits::readmit`, `db::throttle::not_given_back`) and ec455b9 (the
//! Redis Cluster client connects within a quarter of `REDIS_TIMEOUT_MS`).
//!
//! Promises attacked (docs/bounded-answers.md#a-replay-of-a-create-answered-503,
//! docs/throttling.md, docs/derived-state.md#a-failing-shard): a 503 names nothing that stays
//! unless a later answer named it; under `in_queue_checking: "strict"` a number holds at most
//! one active callback; a replay of a marked key that is refused marks nothing "and the
//! withdrawal goes ahead"; a create waits only for the node of its own shard; a worker's
//! healthy shards do not wait for a frozen node's.
//!
//! PostgreSQL is slowed in the test's own schema only (the deferred triggers of attack_s34 and
//! attack_s35c waiting on advisory locks the test holds); the faults injected are a lost
//! connection of the test's own Engage process (`pg_terminate_backend`), a SIGTERM of the
//! test's own Engage process, and SIGSTOP of a node of a private cluster.
//!
//! Findings (open, ignored): a withdrawal pending when its process stops is never done (the
//! 503'd callback stays, two active under strict beside a gap create, the key's retry 429);
//! a mark older than the seed grace lets a re-seed count the callback and the replay's
//! readmission answers `counted` without a check (two active under strict); concurrent creates
//! of healthy shards wait for a frozen shard in their group-commit batch and some are never
//! indexed, and the sweep, stopping at the frozen shard too, does not rescue them until the
//! thaw. Guards: a replay behind the mark statement; a worker, and an API sending one create
//! at a time, started while a node of a 30-shard cluster is frozen.

use std::time::{Duration, Instant};

use harness::{Engage, Fixture, PrivateCluster, TestEnv, WorkerProc, open_service};
use serde_json::json;
use shared::redis::Keys;
use uuid::Uuid;

use crate::attack_s34_client_gone::{
    act_key, active_rows, all_rows, hget, number_key, rand_u16, redis_count, slow_commits_of,
};
use crate::attack_s35b::{held_commits, id_of, keyed_request, until};
use crate::attack_s35c::{Scene, force_reseed, hold_withdrawal, slow_withdrawals_of};
use crate::failing_shard::{partial_cluster, wait_submitted};

/// The id of the oldest callback of `phone` (the keyed create).
async fn first_id(pg: &tokio_postgres::Client, phone: &str) -> Uuid {
    pg.query_one(
        "SELECT id FROM callbacks WHERE phone_number = $1 ORDER BY created_at LIMIT 1",
        &[&phone],
    )
    .await
    .expect("first id")
    .get(0)
}

/// The key row of `idem`: (`replayed`, age of `given_back_at` in ms, `None` when unmarked).
async fn key_row(pg: &tokio_postgres::Client, idem: &str) -> Option<(bool, Option<i64>)> {
    pg.query_opt(
        "SELECT replayed,
                (extract(epoch FROM now() - given_back_at) * 1000)::int8
         FROM idempotency_keys WHERE key = $1",
        &[&idem],
    )
    .await
    .expect("key row")
    .map(|r| (r.get(0), r.get(1)))
}

/// A worker whose sweep runs every second with a grace of one second.
fn quick_sweep() -> [(&'static str, String); 2] {
    [
        ("WORKER_SWEEP_S", "1".to_string()),
        ("WORKER_SWEEP_GRACE_S", "1".to_string()),
    ]
}

/// Waits until callback `id` is COMPLETED, at most `limit`, and checks that it was never
/// handed off meanwhile: the sweep's re-index leaves a callback being withdrawn out of the
/// schedule index (helper-64: with a one-second grace it was re-indexed, and dialled, before
/// the sweep withdrew it).
async fn withdrawn_within(pg: &tokio_postgres::Client, id: Uuid, limit: Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        let row = pg
            .query_one(
                "SELECT state, submitted_at IS NOT NULL FROM callbacks WHERE id = $1",
                &[&id],
            )
            .await
            .expect("row");
        let (state, handed_off): (String, bool) = (row.get(0), row.get(1));
        assert!(
            !handed_off,
            "the callback answered 503 was handed off ({state})"
        );
        if state == "COMPLETED" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Attack on V20 ("a process that dies before its withdrawal commits leaves a mark that then
/// ages out, and its callback is counted again"; "refused, [the replay] answers 429 and the
/// withdrawal goes ahead"). FINDING, fixed in stop 37: the worker's sweep finishes a withdrawal
/// whose key is marked and whose process went away (`sweep::abandoned`); with it running the
/// first callback is COMPLETED within a second or two, the retry 429 and one active callback.
///
/// Promises: a 503 names nothing that stays unless a later answer named it; under strict a
/// number holds at most one active callback; a replay of a callback that stays is not refused.
/// Nothing withdraws a callback whose withdrawal's process went away: the mark records that a
/// withdrawal is pending, but only the process's own task acts on it, and `serve` drains only
/// HTTP requests on SIGTERM (the write tasks of `create::commit` are not waited for).
/// Sequence (`REQUEST_TIMEOUT_MS` 1 000, strict): a keyed create's `COMMIT` is held past its
/// deadline (503); it lands; the withdrawal marks the key, gives the reservation back (n 1 ->
/// 0) and sends its `COMMIT`, held by a deferred trigger. The process is stopped with SIGTERM
/// (as in a rolling deploy; it exits at once, no request being in flight) and the withdrawal's
/// `COMMIT` is lost (its backend terminated, as on a PostgreSQL restart): the state of a
/// process stopped between a lost `COMMIT` and its next attempt. A new process starts. A plain
/// create of the number (the client retrying without its key) is admitted (n = 0); then the
/// client's retry with the key finds the mark, is readmitted, checked, and refused 429
/// `in_queue_checking`, while its callback stays: nobody withdraws it.
/// Observed (3 of 3, 2026-12-04): exit 0 at once; n = 0 after the give-back, key marked
/// (replayed false, mark 55-57 ms old); after the restart the field "" (given back), the gap
/// create 200, the retry 429 "in_queue_checking reached", rows [QUEUED, QUEUED], active 2 (the
/// callback answered 503 QUEUED and due), n = 1 for two active callbacks, the mark still set
/// 3.7 s later. The customer is called twice although the first create was answered 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s37_stopped_process_abandons_a_given_back_withdrawal() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let mut engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("s37a", "svc", svc).await;
    let act = act_key(&env, "s37a", "svc");
    let phone = "+15550370101";
    let num = number_key(phone);
    let idem = "order-s37-1";
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let pg = env.pg().await;
    let (insert_lock, withdraw_lock) = {
        let r = i64::from(rand_u16());
        (0x5c37_1000_0000 + r, 0x5c37_2000_0000 + r)
    };
    slow_commits_of(&pg, phone, insert_lock).await;
    slow_withdrawals_of(&pg, phone, withdraw_lock).await;
    for l in [insert_lock, withdraw_lock] {
        pg.execute("SELECT pg_advisory_lock($1)", &[&l])
            .await
            .expect("hold");
    }
    let first = harness::send(keyed_request(&engage, &key, idem, &body)).await;
    assert_eq!(first.0, 503, "the held create answered: {}", first.1);
    pg.execute("SELECT pg_advisory_unlock($1)", &[&insert_lock])
        .await
        .expect("release insert");
    let held = until(3_000, || async {
        !held_commits(&pg, withdraw_lock).await.is_empty()
    })
    .await;
    assert!(held, "the withdrawal's COMMIT is not held");
    let pids = held_commits(&pg, withdraw_lock).await;
    let id = first_id(&pg, phone).await;
    let n_given_back = redis_count(&env, &act, &num).await;
    let mark = key_row(&pg, idem).await;
    engage.proc.terminate();
    let exit = engage.proc.wait_exit(Duration::from_secs(15)).await;
    for pid in &pids {
        pg.execute("SELECT pg_terminate_backend($1)", &[pid])
            .await
            .expect("terminate");
    }
    pg.execute("SELECT pg_advisory_unlock($1)", &[&withdraw_lock])
        .await
        .expect("release withdrawal");
    let engage = Engage::start(&env, &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let field = hget(&env, &act, &harness::throttle_field(&id.to_string())).await;
    let gap = engage.create(&key).service("svc").phone(phone).send().await;
    let retry = harness::send(keyed_request(&engage, &key, idem, &body)).await;
    let _worker = WorkerProc::start(&env, &quick_sweep()).await;
    withdrawn_within(&pg, id, Duration::from_secs(8)).await;
    let rows = all_rows(&pg, phone).await;
    let active = active_rows(&pg, phone).await;
    let first_state: String = pg
        .query_one("SELECT state FROM callbacks WHERE id = $1", &[&id])
        .await
        .expect("first row")
        .get(0);
    let counted = redis_count(&env, &act, &num).await;
    let mark_after = key_row(&pg, idem).await;
    println!(
        "FIGURE s37_stopped_withdrawal exit={exit:?} n_given_back={n_given_back} \
         mark(replayed, age_ms)={mark:?} field_after_restart={field:?} gap_create={} \
         retry={} ({:?}) names_first={} rows={rows:?} active={active} first={first_state} \
         n={counted} mark_after={mark_after:?}",
        gap.0,
        retry.0,
        retry.1["status"]["message"],
        id_of(&retry.1) == Some(id)
    );
    assert!(
        active <= 1,
        "the number holds {active} active callbacks under strict (the first, answered 503, is \
         {first_state}; retry {} {}): {rows:?}",
        retry.0,
        retry.1
    );
    assert!(
        first_state == "COMPLETED" || (retry.0 == 200 && id_of(&retry.1) == Some(id)),
        "the callback answered 503 stays {first_state} and no answer named it (retry {})",
        retry.0
    );
}

/// Attack on docs/bounded-answers.md ("A 503 means \"nothing will be dispatched\": the
/// callback is either never committed or withdrawn"). FINDING, fixed in stop 37 as above
/// (`sweep::abandoned`): rows [COMPLETED/CANCELLED], active 0, the key gone.
///
/// The same root as the test above without a lost `COMMIT`: a withdrawal still before its
/// `COMMIT` when its process is stopped is rolled back and never tried again. Here the
/// withdrawal's `UPDATE` waits (a row trigger on an advisory lock the test holds, as behind a
/// slow statement or a lock) when Engage gets SIGTERM; it exits at once (no request in
/// flight), its transaction is rolled back, and the callback answered 503 stays active, counted
/// and due: the key's mark says a withdrawal is pending, nobody does it. Sequence
/// (`REQUEST_TIMEOUT_MS` 1 000, no limits): a keyed create's `COMMIT` held past its deadline
/// (503); it lands; the withdrawal marks the key and waits in its `UPDATE`; SIGTERM; the lock
/// is released; a new Engage starts. Expected: the callback COMPLETED (withdrawn). Observed
/// (3 of 3, 2026-12-04): the withdrawal waited in its UPDATE, key marked (53-55 ms old),
/// exit 0, rows [QUEUED], active 1, the key's mark still set 3.1 s later (nothing acts on
/// it). Fix idea: the mark is now a durable record of a pending withdrawal; a sweep (worker)
/// could withdraw callbacks whose key is marked, not replayed, and older than a withdrawal
/// takes, or `serve` could wait for its write tasks at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s37_stopped_process_leaves_a_503_callback_active() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let mut engage = Engage::start(&env, &[]).await;
    let key = engage
        .provision("s37f", "svc", open_service(json!({})))
        .await;
    let phone = "+15550370601";
    let idem = "order-s37-6";
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let pg = env.pg().await;
    let (insert_lock, withdraw_lock) = {
        let r = i64::from(rand_u16());
        (0x5c37_3000_0000 + r, 0x5c37_4000_0000 + r)
    };
    slow_commits_of(&pg, phone, insert_lock).await;
    pg.batch_execute(&format!(
        "CREATE FUNCTION attack_s37_slow_withdraw() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.phone_number = '{phone}' AND NEW.withdrawn THEN
             PERFORM pg_advisory_xact_lock_shared({withdraw_lock});
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER attack_s37_slow_withdraw BEFORE UPDATE ON callbacks
           FOR EACH ROW EXECUTE FUNCTION attack_s37_slow_withdraw();"
    ))
    .await
    .expect("trigger");
    for l in [insert_lock, withdraw_lock] {
        pg.execute("SELECT pg_advisory_lock($1)", &[&l])
            .await
            .expect("hold");
    }
    let first = harness::send(keyed_request(&engage, &key, idem, &body)).await;
    assert_eq!(first.0, 503, "the held create answered: {}", first.1);
    pg.execute("SELECT pg_advisory_unlock($1)", &[&insert_lock])
        .await
        .expect("release insert");
    let waits = until(3_000, || async {
        pg.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND wait_event_type = 'Lock' AND query LIKE '%withdrawn = true%'",
            &[],
        )
        .await
        .expect("activity")
        .get::<_, i64>(0)
            >= 1
    })
    .await;
    let mark = key_row(&pg, idem).await;
    engage.proc.terminate();
    let exit = engage.proc.wait_exit(Duration::from_secs(15)).await;
    pg.execute("SELECT pg_advisory_unlock($1)", &[&withdraw_lock])
        .await
        .expect("release withdrawal");
    let _engage = Engage::start(&env, &[]).await;
    let _worker = WorkerProc::start(&env, &quick_sweep()).await;
    let id = first_id(&pg, phone).await;
    withdrawn_within(&pg, id, Duration::from_secs(8)).await;
    let rows = all_rows(&pg, phone).await;
    let active = active_rows(&pg, phone).await;
    println!(
        "FIGURE s37_stopped_before_commit withdrawal_waited={waits} mark={mark:?} exit={exit:?} \
         rows={rows:?} active={active} key_after={:?}",
        key_row(&pg, idem).await
    );
    assert!(waits, "the withdrawal never waited in its UPDATE");
    assert_eq!(
        active, 0,
        "the callback answered 503 stays active after its process stopped: {rows:?}"
    );
}

/// Attack on V20 (`db::throttle::not_given_back`: "A mark older than the seed grace (120 s)
/// is not heeded: a withdrawal finishes within seconds"; `limits::readmit`: a marked callback is
/// "admitted like a create, checked ... whatever Redis shows"). FINDING (fails; ignored).
///
/// Promise: under strict a number holds at most one active callback; a replay of a marked key
/// whose number is taken meanwhile answers 429 and the withdrawal goes ahead. The re-seed
/// heeds the mark for 120 s only, but `readmit`'s check of a marked callback is the admission
/// script, which answers `counted` (nothing checked) whenever the callback's field is live: a
/// re-seed after the mark aged wrote it so. Sequence (`REQUEST_TIMEOUT_MS` 1 000,
/// `DB_LOCK_TIMEOUT_MS` 300 000 so that the held withdrawal `COMMIT` is one attempt, as a
/// `COMMIT` waiting on a synchronous standby or a host cut off from PostgreSQL after its
/// give-back would be): the lost-withdrawal scene of attack_s35c under strict; in the give-back
/// gap a plain create of the number (n 0 -> 1, 200), a forced re-seed (drops the empty field;
/// mark fresh: the callback left out, n = 1), a wait until the mark is 121 s old, a second
/// forced re-seed (the mark is no longer heeded: the callback counted from PostgreSQL, n = 2);
/// then the client's retry with the key replays, the withdrawal's `COMMIT` is lost and its
/// next attempt spares the callback. Expected: retry 429 and one active callback.
/// Observed (2 of 2, 2026-12-04): gap create 200 (n 1), re-seed with a fresh mark (78-79 ms)
/// n = 1, re-seed with the mark 121.1 s old n = 2; retry 200 naming the first callback; rows
/// [QUEUED, QUEUED], active 2, n = 2, the first's field `<number>|<created ms>` (from the
/// re-seed), key replayed with its mark cleared. Within the grace the same retry is 429
/// (attack_s36d_two_reseeds_around_a_gap_create_keep_two). Fix idea: `readmit` of a marked
/// callback must check the number whatever the field says (e.g. give the field back first,
/// or let the admission script check a marked id instead of answering `counted`), or the
/// re-seed must heed a mark whatever its age while the key is not replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s37_aged_mark_lets_the_replay_keep_two() {
    let env = TestEnv::new()
        .with("REQUEST_TIMEOUT_MS", "1000")
        .with("DB_LOCK_TIMEOUT_MS", "300000");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("s37b", "svc", svc).await;
    let act = act_key(&env, "s37b", "svc");
    let phone = "+15550370201";
    let num = number_key(phone);
    let idem = "order-s37-2";
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let scene = Scene {
        env: &env,
        engage: &engage,
        key: &key,
        act: &act,
        phone,
    };
    let seen = std::sync::Mutex::new(Vec::new());
    let between = async {
        let pg = env.pg().await;
        let gap = engage.create(&key).service("svc").phone(phone).send().await;
        let n = redis_count(&env, &act, &num).await;
        seen.lock().unwrap().push(("gap_create", n, gap.0, 0));
        let code = force_reseed(&env, &engage, &key, &act, "+15550370291").await;
        let n = redis_count(&env, &act, &num).await;
        let age = key_row(&pg, idem).await.and_then(|k| k.1).unwrap_or(-1);
        seen.lock()
            .unwrap()
            .push(("reseed_fresh_mark", n, code, age));
        let started = Instant::now();
        while key_row(&pg, idem).await.and_then(|k| k.1).unwrap_or(0) < 121_000 {
            assert!(
                started.elapsed() < Duration::from_secs(150),
                "the mark never aged: {:?}",
                key_row(&pg, idem).await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let code = force_reseed(&env, &engage, &key, &act, "+15550370292").await;
        let n = redis_count(&env, &act, &num).await;
        let age = key_row(&pg, idem).await.and_then(|k| k.1).unwrap_or(-1);
        seen.lock()
            .unwrap()
            .push(("reseed_aged_mark", n, code, age));
    };
    let (h, retry) = hold_withdrawal(&scene, idem, &body, between).await;
    h.lose_withdrawal().await;
    let (code, resp) = retry.await.expect("retry");
    h.release().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let first = first_id(&h.pg, phone).await;
    let rows = all_rows(&h.pg, phone).await;
    let active = active_rows(&h.pg, phone).await;
    let counted = redis_count(&env, &act, &num).await;
    let field = hget(&env, &act, &harness::throttle_field(&first.to_string())).await;
    let steps = seen.lock().unwrap().clone();
    println!(
        "FIGURE s37_aged_mark counted_during={} steps(name, n, code, mark_age_ms)={steps:?} \
         retry={code} ({:?}) names_first={} rows={rows:?} active={active} n={counted} \
         field={field:?} key={:?}",
        h.counted_during,
        resp["status"]["message"],
        id_of(&resp) == Some(first),
        key_row(&h.pg, idem).await
    );
    assert_eq!(steps[0].2, 200, "the gap's create: {steps:?}");
    assert!(
        active <= 1,
        "the number holds {active} active callbacks under strict (retry {code} {resp}; \
         n = {counted}): {rows:?}"
    );
}

/// Attack on V20 ("`mark_given_back` ... unless a replay marked it first"; "a replay admits a
/// marked callback again like a create, checked, whatever Redis shows"): a replay racing the
/// mark statement. Guard.
///
/// Promise: a 200 names a callback that stays; under strict one active callback, counted
/// once. Sequence (`REQUEST_TIMEOUT_MS` 1 000, strict): a keyed create's `COMMIT` held past
/// its deadline (503); it lands; the withdrawal's mark `UPDATE` waits (a row trigger on an
/// advisory lock the test holds, as on a slow disk), holding the key row; the client's retry
/// (same key and body) queues on the key row behind it; the mark commits. The retry then runs
/// before the withdrawal's transaction: it reads the mark, readmits the callback (its
/// reservation is still counted: `counted`), clears the mark and commits `replayed`; the
/// withdrawal spares the callback and keeps its reservation. Expected: retry 200 naming it,
/// active 1, n = 1, key replayed and unmarked. Observed (3 of 3, 2026-12-04): n = 1 before,
/// retry queued and 200 naming the first callback, rows [QUEUED], active 1, n = 1 (field
/// `<number>|<ms>|d`: the original reservation), key (replayed, unmarked), the number's next
/// create 429. Holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s37_replay_behind_the_mark_statement_keeps_one_counted_once() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("s37g", "svc", svc).await;
    let act = act_key(&env, "s37g", "svc");
    let phone = "+15550370701";
    let num = number_key(phone);
    let idem = "order-s37-7";
    let body = json!({"serviceName": "svc", "phoneNumber": phone});
    let pg = env.pg().await;
    let (insert_lock, mark_lock) = {
        let r = i64::from(rand_u16());
        (0x5c37_5000_0000 + r, 0x5c37_6000_0000 + r)
    };
    slow_commits_of(&pg, phone, insert_lock).await;
    pg.batch_execute(&format!(
        "CREATE FUNCTION attack_s37_slow_mark() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.given_back_at IS NOT NULL AND OLD.given_back_at IS NULL THEN
             PERFORM pg_advisory_xact_lock_shared({mark_lock});
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER attack_s37_slow_mark BEFORE UPDATE ON idempotency_keys
           FOR EACH ROW EXECUTE FUNCTION attack_s37_slow_mark();"
    ))
    .await
    .expect("trigger");
    for l in [insert_lock, mark_lock] {
        pg.execute("SELECT pg_advisory_lock($1)", &[&l])
            .await
            .expect("hold");
    }
    let first = harness::send(keyed_request(&engage, &key, idem, &body)).await;
    assert_eq!(first.0, 503, "the held create answered: {}", first.1);
    pg.execute("SELECT pg_advisory_unlock($1)", &[&insert_lock])
        .await
        .expect("release insert");
    let marking = || async {
        pg.query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
               AND wait_event_type = 'Lock' AND query LIKE '%SET given_back_at = now()%'",
            &[],
        )
        .await
        .expect("activity")
        .iter()
        .map(|r| r.get::<_, i32>(0))
        .collect::<Vec<_>>()
    };
    let held = until(3_000, || async { !marking().await.is_empty() }).await;
    assert!(held, "the mark statement is not held");
    let pids = marking().await;
    let n_before = redis_count(&env, &act, &num).await;
    let retry = tokio::spawn(harness::send(keyed_request(&engage, &key, idem, &body)));
    let queued = until(2_000, || async {
        crate::attack_s35b::lock_waiters(&pg, &pids).await >= 1
    })
    .await;
    pg.execute("SELECT pg_advisory_unlock($1)", &[&mark_lock])
        .await
        .expect("release mark");
    let (code, resp) = retry.await.expect("retry");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let id = first_id(&pg, phone).await;
    let rows = all_rows(&pg, phone).await;
    let active = active_rows(&pg, phone).await;
    let counted = redis_count(&env, &act, &num).await;
    let field = hget(&env, &act, &harness::throttle_field(&id.to_string())).await;
    let key_after = key_row(&pg, idem).await;
    let other = engage.create(&key).service("svc").phone(phone).send().await;
    println!(
        "FIGURE s37_replay_behind_mark n_before={n_before} retry_queued={queued} retry={code} \
         names_first={} rows={rows:?} active={active} n={counted} field={field:?} \
         key(replayed, mark_age)={key_after:?} next_create={}",
        id_of(&resp) == Some(id),
        other.0
    );
    assert!(queued, "the retry did not queue behind the mark");
    assert_eq!(code, 200, "{resp}");
    // When the mark commits, the retry and the withdrawal's transaction race for the key's row
    // (PostgreSQL wakes every waiter; the first to lock it wins). The retry first: it names the
    // first callback, which stays, and the key is replayed and unmarked. The withdrawal first
    // (seen once in CI): the first callback is withdrawn with its key, and the retry claims the
    // key anew and names the new callback. Either way the 200 names the one active callback.
    let named = id_of(&resp).expect("the retry's id");
    let named_state: String = pg
        .query_one("SELECT state FROM callbacks WHERE id = $1", &[&named])
        .await
        .expect("named row")
        .get(0);
    assert_ne!(
        named_state, "COMPLETED",
        "the 200 names a withdrawn callback: {rows:?}"
    );
    assert_eq!((active, counted), (1, 1), "{rows:?} field {field:?}");
    if named == id {
        assert_eq!(key_after, Some((true, None)));
    }
    assert_eq!(other.0, 429, "strict: {}", other.1);
}

/// Latencies of `waves` waves of 8 concurrent creates through `e` (numbers from `base`):
/// (codes, healthy-shard latencies, frozen-shard latencies), each sorted.
async fn waves(
    e: &Engage,
    key: &str,
    (keys, on_frozen): (&Keys, &[bool]),
    base: usize,
    waves: usize,
) -> Waves {
    let create = |i: usize| async move {
        let t = Instant::now();
        let (code, body) = e
            .create(key)
            .service("fs")
            .phone(&format!("+1555{:07}", base + i))
            .send()
            .await;
        let took = t.elapsed();
        let id = id_of(&body);
        (code, took, id.map(|id| (id, keys.shard_of(&id))))
    };
    let mut w = Waves::default();
    for wave in 0..waves {
        let outs = futures::future::join_all((0..8).map(|j| create(wave * 8 + j))).await;
        for (code, took, placed) in outs {
            *w.codes.entry(code).or_insert(0) += 1;
            match placed {
                Some((_, s)) if on_frozen[usize::from(s)] => w.stalled.push(took),
                Some((id, s)) => {
                    w.healthy.push(took);
                    w.healthy_ids.push((id, s));
                }
                None => {}
            }
        }
    }
    w.healthy.sort();
    w.stalled.sort();
    w
}

/// What [`waves`] saw: codes, latencies of creates in healthy and frozen shards (sorted), and
/// the healthy ones' ids with their shards.
#[derive(Default)]
struct Waves {
    codes: std::collections::BTreeMap<u16, usize>,
    healthy: Vec<Duration>,
    stalled: Vec<Duration>,
    healthy_ids: Vec<(Uuid, u16)>,
}

/// One phase's figures: codes, healthy count, median, max, how many >= 400 ms, frozen count,
/// frozen median.
fn phase(name: &str, w: &Waves) -> String {
    let ms = |v: &Vec<Duration>, i: usize| v.get(i).map_or(0, Duration::as_millis);
    format!(
        "{name}: codes={:?} healthy={} median_ms={} max_ms={} slow={} frozen_shard={} \
         frozen_median_ms={}",
        w.codes,
        w.healthy.len(),
        ms(&w.healthy, w.healthy.len() / 2),
        w.healthy.last().map_or(0, Duration::as_millis),
        w.healthy
            .iter()
            .filter(|t| **t >= Duration::from_millis(400))
            .count(),
        w.stalled.len(),
        ms(&w.stalled, w.stalled.len() / 2)
    )
}

/// How many of `w`'s healthy-shard callbacks are missing from their shard's schedule index
/// (`nodes[shard]`: the node holding the shard).
fn unindexed(cluster: &PrivateCluster, keys: &Keys, nodes: &[usize], w: &Waves) -> usize {
    w.healthy_ids
        .iter()
        .filter(|(id, s)| {
            let out = cluster.cli(
                nodes[usize::from(*s)],
                &["ZSCORE", &keys.sched(*s), &id.to_string()],
            );
            out.trim().is_empty()
        })
        .count()
}

/// Attack on ec455b9 (a cluster client connects within a quarter of `REDIS_TIMEOUT_MS`) and
/// invariant 9 ("a create waits only for the node of its own shard"). FINDING, fixed in stop 37
/// for a running process (a batch answers each create after its own shard's index write, and
/// every shard's write is tried: started_before 0 slow of 48, max 8 ms, 0 unindexed); open for
/// a process started while the node is frozen (its figures are printed, not asserted).
///
/// failing_shard's create test sends one create at a time. Here creates are sent 8 at a time
/// (a normal API load), so that the group-commit batcher (`db::batch`) puts creates of healthy
/// shards and of the frozen node's shards in one batch, and the batch indexes its rows
/// (`schedule::index_committed`) before it answers any of them. Sequence: 12 shards, the
/// tenant's throttle hash, queue view and pacing keys off node 0; phase `baseline`: 4 waves
/// of 8 creates, nothing frozen; node 0 frozen; phase `started_before`: 8 waves through the
/// same Engage; phase `started_while_frozen`: a new Engage started while node 0 is frozen (it
/// never gets a connection to it: each request for it makes the client refresh its slot map
/// under its topology lock), 8 waves. Promised: creates whose shard is on a healthy node answer
/// at their usual speed (under 400 ms, failing_shard's bound), and are indexed. Observed
/// (6 of 6 runs, 2026-12-04; the last 4 with the index check): baseline 0 slow of 15-28
/// (max 124-151 ms), 0 unindexed; `started_before` 9-14 of 29-54 healthy creates >= 400 ms
/// (max 508-1 009 ms, median 5-7 ms), 4-7 not indexed; `started_while_frozen` 5-26 slow,
/// median 10 / 244 / 260 / 262 / 511 / 513 ms, max 761-1 254 ms, 4-7 not indexed. Two causes:
/// `schedule::index_many` writes a batch's shards one after another and stops at the first
/// error (`?`): healthy rows after a frozen shard wait for its timeout and are then never
/// indexed (pre-existing); and in a process started while the node is frozen the median
/// healthy create still waits 250-500 ms in 4 of 5 runs (the topology-lock refreshes that
/// ec455b9 shortened, not gone for the API).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s37_concurrent_creates_of_healthy_shards_wait_for_a_frozen_node() {
    let (cluster, env) = partial_cluster();
    let frozen = 0;
    let shards = 12u16;
    let keys = Keys::new(&env.id, shards);
    let tenant = tenant_off(&cluster, &keys, frozen, "s37c");
    let env = env.with("REDIS_SCHEDULE_SHARDS", &shards.to_string());
    let nodes: Vec<usize> = (0..shards)
        .map(|s| cluster.node_of(&keys.sched(s)))
        .collect();
    let on_frozen: Vec<bool> = nodes.iter().map(|n| *n == frozen).collect();
    assert!(on_frozen.iter().any(|f| *f) && !on_frozen.iter().all(|f| *f));
    let first = Engage::start(&env, &[]).await;
    let key = first.provision(&tenant, "fs", json!({})).await;
    let shape = (&keys, on_frozen.as_slice());
    let baseline = waves(&first, &key, shape, 3_700_000, 4).await;
    cluster.pause(frozen);
    let before = waves(&first, &key, shape, 3_701_000, 8).await;
    let started = Instant::now();
    let second = Engage::start(&env, &[]).await;
    let start_ms = started.elapsed().as_millis();
    let during = waves(&second, &key, shape, 3_702_000, 8).await;
    cluster.resume(frozen);
    let lost = [&baseline, &before, &during].map(|w| unindexed(&cluster, &keys, &nodes, w));
    println!(
        "FIGURE s37_concurrent_creates_frozen shards={shards} {} | {} | start_ms={start_ms} {} \
         | healthy_unindexed(baseline, before, during)={lost:?}",
        phase("baseline", &baseline),
        phase("started_before", &before),
        phase("started_while_frozen", &during)
    );
    assert_eq!(
        lost,
        [0, 0, 0],
        "callbacks of healthy shards answered 200 but missing from their shard's index"
    );
    // Latency is printed, not asserted (docs/derived-state.md#a-failing-shard, open): once a
    // request to the frozen node has timed out, each request for its slots makes the cluster
    // client refresh its slot map under its topology lock, and a healthy create can wait
    // behind a few such refreshes. Measured on 2026-12-04 after the per-shard answers,
    // started_before: median 5-7 ms, 0 of 45-50 over 400 ms in 2 runs, 4 of 33 (max 608 ms) in
    // a third (before: 9-14 of 29-54, max 1 s, 4-7 unindexed); started_while_frozen: median
    // 248-510 ms, max 763-894 ms.
}

/// A tenant (named `prefix<n>`) whose pacing key, queue view of service `fs` and throttle hash
/// all live off node `frozen`, so that only schedule shards touch it.
fn tenant_off(cluster: &PrivateCluster, keys: &Keys, frozen: usize, prefix: &str) -> String {
    (0..200)
        .map(|i| format!("{prefix}{i}"))
        .find(|t| {
            [
                keys.pace(t),
                keys.queue(t, "fs"),
                format!("{{{}:thr:{t}:fs}}:act", keys.prefix()),
            ]
            .iter()
            .all(|k| cluster.node_of(k) != frozen)
        })
        .expect("a tenant whose keys avoid the frozen node")
}

/// Attack on ec455b9 ("the same worker sends its healthy callbacks within 0.13 to 1.2 s (8 of 8
/// runs)", measured with 8 shards). Guard.
///
/// With many shards a round claims many shards of the frozen node at once, each a request for
/// a node the client has no connection to (the worker was started while it was frozen), so
/// refreshes may follow one another. Sequence: 30 shards (about a third on the frozen first
/// node); tenant keys off it; a worker started while node 0 is frozen; 8 immediate callbacks in
/// healthy shards. Promised: handed off within 8 s (failing_shard's bound for a worker started
/// while frozen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "open: under CI load a worker started while a node holding 10 of 30 shards is \
            frozen timed out on its healthy shards too (8 of 8 late in 1 CI run; on time \
            alone, 3 of 3): the cluster client's slot refreshes (docs/derived-state.md)"]
async fn attack_s37_worker_started_while_frozen_with_many_shards() {
    let (cluster, env) = partial_cluster();
    let frozen = 0;
    let shards = 30u16;
    let keys = Keys::new(&env.id, shards);
    let tenant = tenant_off(&cluster, &keys, frozen, "s37d");
    let env = env.with("REDIS_SCHEDULE_SHARDS", &shards.to_string());
    let on_frozen: Vec<bool> = (0..shards)
        .map(|s| cluster.node_of(&keys.sched(s)) == frozen)
        .collect();
    let frozen_shards = on_frozen.iter().filter(|f| **f).count();
    let (env, api, key) = Fixture::dispatch(env, &tenant, "fs", json!({}))
        .await
        .parts();
    // Callbacks in the frozen node's shards too, due now: the worker's rounds claim them.
    let mut phone = 3_800_000;
    let booked_frozen = frozen_shards.min(10);
    for _ in 0..booked_frozen {
        let on = |s: u16| on_frozen[usize::from(s)];
        api.create_in_shard(&key, "fs", &mut phone, &keys, on).await;
    }
    cluster.pause(frozen);
    let w = WorkerProc::start(&env, &[]).await;
    let mut ids = Vec::new();
    while ids.len() < 8 {
        let healthy = |s: u16| !on_frozen[usize::from(s)];
        ids.push(
            api.create_in_shard(&key, "fs", &mut phone, &keys, healthy)
                .await
                .0,
        );
    }
    let started = Instant::now();
    let late = wait_submitted(&env, &ids, started + Duration::from_secs(8)).await;
    let took = started.elapsed().as_millis();
    cluster.resume(frozen);
    println!(
        "FIGURE s37_worker_many_shards shards={shards} frozen_shards={frozen_shards} \
         booked_in_frozen={booked_frozen} healthy={} late={} took_ms={took}",
        ids.len(),
        late.len()
    );
    assert!(
        late.is_empty(),
        "{} of {} callbacks in healthy shards waited more than 8 s; worker log:\n{}",
        late.len(),
        ids.len(),
        w.proc.output()
    );
}

/// Attack on invariant 9 ("shards do not wait for each other") and invariant 2 (the sweep as
/// the fallback of a *failed* index write). FINDING, fixed in stop 37 (`index_many` and
/// `index_missing` write every shard at once and each on its own; the sweep's pages go on past
/// a failing one): 0 of 25 late after 8 s.
///
/// Consequence of the previous finding for dispatch: `schedule::index_many` writes a batch's
/// shards one after the other and stops at the first error (`?`), so when a batch holds a
/// create of the frozen node's shards, the creates of healthy shards after it in shard order
/// are answered 200 but never indexed, and wait for the worker's PostgreSQL sweep
/// (`WORKER_SWEEP_GRACE_S` 10 + `WORKER_SWEEP_S` 15) although their node is healthy and a
/// worker is running. Sequence: 12 shards, tenant keys off node 0, a worker running; node 0
/// frozen; 4 waves of 8 concurrent immediate creates; the healthy shards' callbacks are
/// expected in the voice stream within 8 s (failing_shard's bound). Observed (4 of 4,
/// 2026-12-04): 3-5 of 15-28 healthy-shard callbacks not handed off after 8 s, nor after
/// 40 s of freeze (3 runs measured it); after the thaw they went out within 235-507 ms. The sweep does not rescue
/// them: `sweep::reindex` calls `schedule::index_missing` with every overdue unsubmitted
/// callback, the frozen node's included, and it too stops at the first failing shard (`?`),
/// so while the node is frozen healthy shards after it are never re-indexed: a healthy
/// shard's callback waits for the frozen node, however long (invariants 2 and 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s37_healthy_callbacks_batched_with_a_frozen_shard_wait_for_the_sweep() {
    let (cluster, env) = partial_cluster();
    let frozen = 0;
    let shards = 12u16;
    let keys = Keys::new(&env.id, shards);
    let tenant = tenant_off(&cluster, &keys, frozen, "s37e");
    let env = env.with("REDIS_SCHEDULE_SHARDS", &shards.to_string());
    let nodes: Vec<usize> = (0..shards)
        .map(|s| cluster.node_of(&keys.sched(s)))
        .collect();
    let on_frozen: Vec<bool> = nodes.iter().map(|n| *n == frozen).collect();
    let (env, api, key) = Fixture::dispatch(env, &tenant, "fs", json!({}))
        .await
        .parts();
    let w = WorkerProc::start(&env, &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.pause(frozen);
    let shape = (&keys, on_frozen.as_slice());
    let seen = waves(&api, &key, shape, 3_900_000, 4).await;
    let sent = Instant::now();
    let ids: Vec<String> = seen
        .healthy_ids
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    let late = wait_submitted(&env, &ids, sent + Duration::from_secs(8)).await;
    let late_n = late.len();
    let still = wait_submitted(&env, &late, sent + Duration::from_secs(40)).await;
    let waited_ms = sent.elapsed().as_millis();
    cluster.resume(frozen);
    let thawed = Instant::now();
    let after_thaw = wait_submitted(&env, &still, thawed + Duration::from_secs(40)).await;
    println!(
        "FIGURE s37_mixed_batch_dispatch {} | late_after_8s={late_n} of {} \
         still_after_{waited_ms}ms_frozen={} then_after_thaw: left={} within_ms={}",
        phase("frozen", &seen),
        ids.len(),
        still.len(),
        after_thaw.len(),
        thawed.elapsed().as_millis()
    );
    assert_eq!(
        late_n,
        0,
        "{late_n} of {} callbacks in healthy shards waited more than 8 s (the sweep); worker \
         log:\n{}",
        ids.len(),
        w.proc.output()
    );
}

/// Attack on ec455b9 alone (no batching): one create at a time through an API process
/// *started while the first node is frozen*, with many shards (30, about a third on the frozen
/// node), so that each create of a frozen shard makes the client refresh its slot map under its
/// topology lock. Promise (invariant 9): a create of a healthy shard answers at its usual
/// speed (under 400 ms, failing_shard's bound for an API started before the freeze). Guard.
/// Observed (3 of 3, 2026-12-04): healthy creates 11-28 of 40, median 1-3 ms, max 4-244 ms;
/// frozen-shard creates median 504 ms. Holds one at a time; with 8 at a time the same process
/// waits (attack_s37_concurrent_creates_of_healthy_shards_wait_for_a_frozen_node).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_s37_api_started_while_frozen_sequential_creates_with_many_shards() {
    let (cluster, env) = partial_cluster();
    let frozen = 0;
    let shards = 30u16;
    let keys = Keys::new(&env.id, shards);
    let tenant = tenant_off(&cluster, &keys, frozen, "s37h");
    let env = env.with("REDIS_SCHEDULE_SHARDS", &shards.to_string());
    let on_frozen: Vec<bool> = (0..shards)
        .map(|s| cluster.node_of(&keys.sched(s)) == frozen)
        .collect();
    let key = {
        let first = Engage::start(&env, &[]).await;
        first.provision(&tenant, "fs", json!({})).await
    };
    cluster.pause(frozen);
    let e = Engage::start(&env, &[]).await;
    let (mut healthy, mut stalled) = (Vec::new(), Vec::new());
    for i in 0..40 {
        let t = Instant::now();
        let (code, body) = e
            .create(&key)
            .service("fs")
            .phone(&format!("+1555{:07}", 3_950_000 + i))
            .send()
            .await;
        let took = t.elapsed();
        assert_eq!(code, 200, "{body}");
        let shard = keys.shard_of(&id_of(&body).expect("id"));
        if on_frozen[usize::from(shard)] {
            stalled.push(took);
        } else {
            healthy.push(took);
        }
    }
    cluster.resume(frozen);
    healthy.sort();
    stalled.sort();
    let slow = healthy
        .iter()
        .filter(|t| **t >= Duration::from_millis(400))
        .count();
    println!(
        "FIGURE s37_api_started_frozen_sequential shards={shards} healthy={} median_ms={} \
         max_ms={} slow={slow} frozen_shard={} frozen_median_ms={}",
        healthy.len(),
        healthy
            .get(healthy.len() / 2)
            .map_or(0, Duration::as_millis),
        healthy.last().map_or(0, Duration::as_millis),
        stalled.len(),
        stalled
            .get(stalled.len() / 2)
            .map_or(0, Duration::as_millis)
    );
    assert_eq!(
        slow,
        0,
        "{slow} of {} healthy creates waited (max {:?})",
        healthy.len(),
        healthy.last()
    );
}
