//! Attacks on the replay mark (docs/bounded-answers.md#a-replay-of-a-create-answered-503): an
//! Idempotency-Key replay commits `idempotency_keys.replayed` before it answers, and the
//! compensation of a create answered 503 locks the key first and keeps a marked callback.
//!
//! Promise attacked: every 200 names a callback that stays active (never withdrawn), a number
//! keeps exactly one callback however the retries interleave with the withdrawal, and the
//! create-time count in Redis matches what stays. PostgreSQL is slowed only in the test's own
//! schema (a deferred constraint trigger waiting on an advisory lock the test holds).

use std::time::Duration;

use futures::future::join_all;
use harness::{Engage, TestEnv, open_service};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::attack_s34_client_gone::{
    act_key, active_rows, all_rows, number_key, rand_u16, redis_count, slow_commits_of,
};

/// The state of each callback a 200 named (`None`: no such row).
async fn named_states(
    pg: &tokio_postgres::Client,
    answers: &[(u16, Value)],
) -> Vec<(Uuid, Option<String>)> {
    let mut out = Vec::new();
    for (_, body) in answers.iter().filter(|(c, _)| *c == 200) {
        let id: Uuid = body["data"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid");
        let state = pg
            .query_opt("SELECT state FROM callbacks WHERE id = $1", &[&id])
            .await
            .expect("state")
            .map(|r| r.get(0));
        out.push((id, state));
    }
    out
}

/// `n` retries of a keyed create, sent together.
async fn retries(
    engage: &Engage,
    key: &str,
    phone: &str,
    idem: &str,
    n: usize,
) -> Vec<(u16, Value)> {
    join_all((0..n).map(|_| {
        engage
            .create(key)
            .service("svc")
            .phone(phone)
            .idempotency_key(idem)
            .send()
    }))
    .await
}

/// A keyed create answered 503 while its `COMMIT` is held, then retries with the same key sent
/// `delay_ms` after the `COMMIT` is let go (negative: before, so that they wait on its key),
/// i.e. racing the first request's withdrawal. Checks
/// the promise; returns (codes of the retries, whether the first callback was kept).
async fn race(
    env: &TestEnv,
    engage: &Engage,
    key: &str,
    (phone, lock): (&str, i64),
    delay_ms: i64,
    n: usize,
) -> (Vec<u16>, bool) {
    let pg = env.pg().await;
    pg.execute("SELECT pg_advisory_lock($1)", &[&lock])
        .await
        .expect("hold");
    let idem = format!("order-s35-{phone}");
    let first = engage
        .create(key)
        .service("svc")
        .phone(phone)
        .idempotency_key(&idem)
        .send()
        .await;
    assert_eq!(first.0, 503, "the held create answered: {}", first.1);
    let sent = async {
        tokio::time::sleep(Duration::from_millis(delay_ms.max(0).unsigned_abs())).await;
        retries(engage, key, phone, &idem, n).await
    };
    let unlock = async {
        tokio::time::sleep(Duration::from_millis(delay_ms.min(0).unsigned_abs())).await;
        pg.execute("SELECT pg_advisory_unlock($1)", &[&lock]).await
    };
    let (_, answers) = tokio::join!(unlock, sent);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let rows = all_rows(&pg, phone).await;
    let named = named_states(&pg, &answers).await;
    let codes: Vec<u16> = answers.iter().map(|(c, _)| *c).collect();
    let counted = redis_count(env, &act_key(env, "replay", "svc"), &number_key(phone)).await;
    println!(
        "FIGURE s35_replay delay_ms={delay_ms} codes={codes:?} rows={rows:?} counted={counted}"
    );
    assert!(
        answers.iter().all(|(c, _)| *c == 200),
        "a retry was not answered 200 (delay {delay_ms} ms): {answers:?}; rows {rows:?}"
    );
    assert!(
        named
            .iter()
            .all(|(_, s)| s.as_deref().is_some_and(|s| s != "COMPLETED")),
        "a 200 named a callback that did not stay (delay {delay_ms} ms): {named:?}; rows {rows:?}"
    );
    let ids: std::collections::BTreeSet<_> = named.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids.len(),
        1,
        "the retries named different callbacks: {named:?}"
    );
    let indexed = env.indexed(4).await;
    assert!(
        ids.iter().all(|id| indexed.contains(&id.to_string())),
        "the named callback is not indexed for dispatch (delay {delay_ms} ms): {named:?}"
    );
    assert_eq!(
        (active_rows(&pg, phone).await, counted),
        (1, 1),
        "the number must keep exactly one callback, counted once (delay {delay_ms} ms): rows \
         {rows:?}, Redis n: {counted}"
    );
    (codes, rows.len() == 1)
}

/// Retries sent together, at several delays after the held `COMMIT` is let go: some replay the
/// first callback before its withdrawal (kept), others come after it (a new callback). Either
/// way each 200 names a callback that stays and the number keeps one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s35_keyed_retries_racing_the_withdrawal_name_a_callback_that_stays() {
    let env = TestEnv::new().with("REQUEST_TIMEOUT_MS", "1000");
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("replay", "svc", svc).await;
    let pg = env.pg().await;
    let lock: i64 = 0x5a36_0000 + i64::from(rand_u16());
    slow_commits_of(&pg, "+1555017920%", lock).await;
    let mut kept = Vec::new();
    for (i, delay_ms) in [-300i64, -20, 0, 2, 5, 10, 20, 40].into_iter().enumerate() {
        let phone = format!("+1555017920{i}");
        let (_, first_kept) = race(&env, &engage, &key, (&phone, lock), delay_ms, 4).await;
        kept.push((delay_ms, first_kept));
    }
    println!("FIGURE s35_replay first_callback_kept_by_delay={kept:?}");
    assert!(
        kept.iter().any(|k| k.1) && kept.iter().any(|k| !k.1),
        "both outcomes of the race must be seen (kept by a replay, withdrawn then claimed anew): \
         {kept:?}"
    );
}
