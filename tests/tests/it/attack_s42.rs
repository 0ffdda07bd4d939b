//! Attacks of stop 42: a PostgreSQL server out of connection slots (SQLSTATE 53300,
//! `too_many_connections`) is busy, not broken. A request whose pool cannot open a connection
//! for that reason answers 503 with a retry hint and changes nothing; before 2026-12-05 it
//! answered 500 (docs/bounded-answers.md).

use harness::{Engage, PrivatePostgres, TestEnv, deps, open_service};
use serde_json::json;

/// Connection slots of the private server (superusers may use all of them).
const SLOTS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s42_postgres_out_of_connection_slots_answers_503_and_keeps_nothing() {
    let pg = PrivatePostgres::new();
    let env = TestEnv::on(&pg.url(), &deps().redis_url, &deps().voice_redis_url)
        .with("DB_POOL_SIZE", "4")
        .with("DB_POOL_TIMEOUT_MS", "1000")
        .with("CACHE_TTL_MS", "600000");
    let engage = Engage::start(&env, &[]).await;
    let key = engage
        .provision("slots", "svc", open_service(json!({})))
        .await;
    let phone = "+12125550901";
    // A restart with fewer slots drops the replica's pooled connections; every slot is then
    // taken before the replica reconnects.
    pg.stop_server().expect("stop");
    pg.set_conf("max_connections", &SLOTS.to_string());
    pg.start_server().expect("start");
    let mut held = Vec::new();
    while let Ok((client, conn)) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        held.push(client);
        assert!(held.len() <= SLOTS, "more connections than slots");
    }
    assert!(held.len() >= SLOTS - 1, "only {} connections", held.len());
    let mut answers = Vec::new();
    for _ in 0..6 {
        let (code, body) = engage.create(&key).service("svc").phone(phone).send().await;
        answers.push((code, body));
    }
    for (code, body) in &answers {
        assert_eq!(
            *code, 503,
            "out of slots must be busy, not broken: {answers:?}"
        );
        assert!(
            !body.to_string().contains("too many"),
            "server text leaked: {body}"
        );
    }
    drop(held);
    let id = engage.create(&key).service("svc").phone(phone).id().await;
    let pg_client = env.pg().await;
    let rows: i64 = pg_client
        .query_one(
            "SELECT count(*) FROM callbacks WHERE phone_number = $1",
            &[&phone],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1, "the refused creates left rows (kept {id})");
}
