//! Attacks on create's lazy connection, second round (3f2a8f1, `create::Conn`): a plain create
//! holds no PostgreSQL connection; its row goes to the group-commit batcher (`db::batch`),
//! which draws its own from the same pool. Promises attacked (docs/bounded-answers.md,
//! docs/throttling.md, knative/README.md "a request holds at most one pooled connection"):
//! a 503 from a create means nothing stays active, and a retry without a key meets the limits
//! as if it had never been sent; the pool is never held for good.
//!
//! PostgreSQL is slowed by this test's own schema only (`LOCK TABLE callbacks IN EXCLUSIVE
//! MODE`: holds a plain create's `INSERT`, sent after `begin_commit`), or by a private server
//! that is SIGSTOPped.

use std::time::{Duration, Instant};

use futures::future::join_all;
use harness::{Engage, PrivatePostgres, RETRIEVE, TestEnv, open_service};
use serde_json::json;

use crate::{
    attack_s34_client_gone::{act_key, number_key, redis_count},
    attack_s41_lazy_conn::reseed_burst_with_a_pool_of_one,
};

/// REQUEST_TIMEOUT_MS of these tests (commit deadline: + 1 s).
const TIMEOUT_MS: u64 = 1_500;

async fn states(pg: &tokio_postgres::Client, phone: &str) -> Vec<String> {
    pg.query(
        "SELECT state FROM callbacks WHERE phone_number = $1 ORDER BY created_at",
        &[&phone],
    )
    .await
    .expect("rows")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Sends a create on `svc` for each of `phones`, the i-th `stagger` × i after the first, and
/// answers each with its status, body and time taken.
async fn staggered_creates(
    engage: &Engage,
    key: &str,
    phones: &[String],
    stagger: Duration,
) -> Vec<(u16, serde_json::Value, Duration)> {
    let sends = phones.iter().enumerate().map(|(i, phone)| async move {
        tokio::time::sleep(stagger * i as u32).await;
        let sent = Instant::now();
        let (code, body) = engage.create(key).service("svc").phone(phone).send().await;
        (code, body, sent.elapsed())
    });
    join_all(sends).await
}

/// `pool` plain creates, each in a batch of its own (sent 300 ms apart), whose `INSERT` is held
/// by a table lock past its request's commit deadline (503), then lets them commit. Found on
/// 2026-12-05: each batch task, still holding its pooled connection, asked the pool for one
/// more to withdraw its row (`outcome::compensate` in `batch::committed`), so with
/// `DB_POOL_SIZE` <= `DB_BATCH_IN_FLIGHT` (4) every connection was held by a task waiting for
/// another, for good. The batch now gives its connection back first; these are guards.
async fn late_commits_with_a_pool_of(pool: usize, creates: usize) {
    let env = TestEnv::new()
        .with("DB_POOL_SIZE", &pool.to_string())
        .with("CACHE_TTL_MS", "600000")
        .with("REQUEST_TIMEOUT_MS", &TIMEOUT_MS.to_string());
    let engage = Engage::start(&env, &[]).await;
    let tenant = format!("wedge{pool}");
    let settings = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision(&tenant, "svc", settings).await;
    let first = engage
        .create(&key)
        .service("svc")
        .phone("+12125550500")
        .id()
        .await;
    // Another replica on the same schema and Redis prefix, with the default pool.
    let other = Engage::start(&env.clone().with("DB_POOL_SIZE", "8"), &[]).await;
    let phones: Vec<String> = (0..creates)
        .map(|i| format!("+1212555{:04}", 510 + i))
        .collect();

    let mut pg = env.pg().await;
    let lock = pg.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE callbacks IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let answers = staggered_creates(&engage, &key, &phones, Duration::from_millis(300)).await;
    // The INSERTs commit now (each waited < lock_timeout 5 s), after their requests gave up.
    lock.rollback().await.expect("unlock");
    for (code, body, took) in &answers {
        assert_eq!(*code, 503, "the held create answers 503: {body}");
        assert!(*took < Duration::from_secs(5), "503 after {took:?}");
    }

    // Compensation runs once PostgreSQL answers: 8 s is ample (it takes milliseconds).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut rows = Vec::new();
    for phone in &phones {
        rows.push(states(&pg, phone).await);
    }
    let sent = Instant::now();
    let (retrieve, body) = engage.post(&key, RETRIEVE, json!({"id": first})).await;
    let retrieve_ms = sent.elapsed().as_millis();
    let (retry, retry_body) = other
        .create(&key)
        .service("svc")
        .phone(&phones[0])
        .send()
        .await;
    let after_retry = states(&pg, &phones[0]).await;
    let compensated = engage.metric_sum("engage_creates_compensated_total").await;
    let not_done = engage
        .proc
        .output()
        .lines()
        .filter(|l| l.contains("compensation not done yet"))
        .count();
    println!(
        "FIGURE s41b_wedge pool={pool} rows_after_8s={rows:?} retrieve={retrieve} \
         retrieve_ms={retrieve_ms} retry_on_other_replica={retry} rows_after_retry={after_retry:?} \
         compensated={compensated} compensation_not_done_logs={not_done}"
    );
    assert!(
        rows.iter().all(|r| r.iter().all(|s| s == "COMPLETED")),
        "creates answered 503 are still active 8 s after PostgreSQL answered (pool {pool}): \
         {rows:?}; retrieve on that replica {retrieve} in {retrieve_ms} ms ({body}); a retry \
         on another replica answered {retry} ({retry_body}) and left {after_retry:?}"
    );
    assert_eq!(retrieve, 200, "retrieve after the late commits: {body}");
    assert_eq!(
        after_retry.iter().filter(|s| *s != "COMPLETED").count(),
        1,
        "one active callback for the number after a retry of a 503: {after_retry:?}"
    );
}

/// Attack. `DB_POOL_SIZE=1` (the configuration of `attack_s41_reseed_burst_with_a_pool_of_one`):
/// one plain create whose `INSERT` commits after its 503. Promised: the row is withdrawn,
/// the replica keeps answering, a retry books once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s41b_pool_of_one_late_commit_is_withdrawn() {
    late_commits_with_a_pool_of(1, 1).await;
}

/// Attack. `DB_POOL_SIZE=2` with the default `DB_BATCH_IN_FLIGHT` of 4: two batches in flight
/// commit after their 503s. Promised as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s41b_pool_of_two_late_commits_are_withdrawn() {
    late_commits_with_a_pool_of(2, 2).await;
}

/// Control of the two above: the same two late commits with a pool of 3 (one connection left
/// for the withdrawals). Expected to pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s41b_control_pool_of_three_late_commits_are_withdrawn() {
    late_commits_with_a_pool_of(3, 2).await;
}

/// Attack. Admission now comes before any PostgreSQL connection: with PostgreSQL frozen
/// (SIGSTOP, 6 s) and the default pool, 16 plain creates of distinct numbers
/// (`in_queue_checking: "strict"`, a service window of 20) are admitted in Redis and then
/// wait for the batcher. Promised: every answer within REQUEST_TIMEOUT_MS + 2.25 s, only 200
/// or 503; after the thaw no 503 create is active and none is still counted in Redis
/// (`n:<number>`), and a retry of each 503 number books exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s41b_frozen_postgres_leaves_no_reservation_behind() {
    frozen_postgres(false).await;
}

/// Attack. As above, with the service's throttle state deleted just before the freeze: every
/// create's admission asks for a re-seed, which now takes a pooled connection only then (one
/// idle connection answers at once and its query hangs; the others must connect). Promised
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s41b_frozen_postgres_during_a_reseed_leaves_no_reservation_behind() {
    frozen_postgres(true).await;
}

async fn frozen_postgres(lost_state: bool) {
    let pg = PrivatePostgres::new();
    let env = TestEnv::new()
        .with("DATABASE_URL", &pg.url())
        .with("CACHE_TTL_MS", "600000")
        .with("REQUEST_TIMEOUT_MS", &TIMEOUT_MS.to_string());
    let engage = Engage::start(&env, &[]).await;
    let settings = open_service(json!({
        "in_queue_checking": "strict",
        "throttle_per_service_1": 20,
        "throttle_ttl_1": 300
    }));
    let key = engage.provision("frz", "svc", settings).await;
    engage
        .create(&key)
        .service("svc")
        .phone("+12125550600")
        .id()
        .await;
    let phones: Vec<String> = (0..16).map(|i| format!("+1212555{:04}", 610 + i)).collect();
    if lost_state {
        let mut redis = env.redis().await;
        let _: () = redis::cmd("DEL")
            .arg(act_key(&env, "frz", "svc"))
            .query_async(&mut redis)
            .await
            .expect("DEL");
    }
    pg.freeze();
    let frozen = Instant::now();
    let answers = staggered_creates(&engage, &key, &phones, Duration::from_millis(100)).await;
    let wait = Duration::from_secs(6).saturating_sub(frozen.elapsed());
    tokio::time::sleep(wait).await;
    pg.thaw();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let db = env.pg().await;
    let act = act_key(&env, "frz", "svc");
    let mut report = Vec::new();
    for ((code, _, took), phone) in answers.iter().zip(&phones) {
        let rows = states(&db, phone).await;
        let counted = redis_count(&env, &act, &number_key(phone)).await;
        report.push((phone.clone(), *code, took.as_millis(), rows, counted));
    }
    println!("FIGURE s41b_frozen lost_state={lost_state} {report:?}");
    for (phone, code, took, rows, counted) in &report {
        assert!(
            *took <= u128::from(TIMEOUT_MS) + 2_250 + 750,
            "{phone}: answered after {took} ms"
        );
        assert!(matches!(code, 200 | 503), "{phone}: {code}");
        let active = rows.iter().filter(|s| *s != "COMPLETED").count();
        match code {
            200 => assert_eq!(active, 1, "{phone}: 200 but rows {rows:?}"),
            _ => {
                assert_eq!(active, 0, "{phone}: 503 but rows {rows:?}");
                assert_eq!(*counted, 0, "{phone}: 503 but still counted in Redis");
            }
        }
    }
    for (phone, code, ..) in report.iter().filter(|r| r.1 == 503) {
        let (retry, body) = engage.create(&key).service("svc").phone(phone).send().await;
        assert_eq!(retry, 200, "{phone}: retry of a 503 ({code}): {body}");
        let rows = states(&db, phone).await;
        let active = rows.iter().filter(|s| *s != "COMPLETED").count();
        assert_eq!(active, 1, "{phone}: rows after the retry {rows:?}");
    }
}

/// Attack. As `attack_s41_reseed_burst_with_a_pool_of_one`, half of the burst keyed: a keyed
/// create re-seeds inside its transaction (holding the pool's one connection, also through
/// its 1 s of `Busy` waits), while a plain create that holds the seed lease waits for the pool.
/// Promised: exactly 10 answered 200, 20 answered 429, no other status, within 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s41b_mixed_reseed_burst_with_a_pool_of_one() {
    reseed_burst_with_a_pool_of_one("lm", 700, true).await;
}
