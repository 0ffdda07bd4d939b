//! Attack: a client that goes away in the middle of a create (its own timeout, a phone losing
//! its network, Knative's queue-proxy giving up). The server drops the request; whatever the
//! create had reserved must not outlive it. Before 2026-12-04 a plain create dropped while its
//! insert waited gave nothing back: the row was left out or deleted again (docs/
//! bounded-answers.md), but the create-time limits still counted it until the next re-seed,
//! so the customer's retry for the same number was refused as "already queued".

use std::time::Duration;

use harness::{CREATE, Engage, TestEnv, open_service};
use serde_json::json;

/// The create is dropped while PostgreSQL holds its insert (the table locked by another
/// transaction); then the lock goes, and the same number asks again under
/// `in_queue_checking: "strict"` (one active callback per number).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_insert_leaves_no_reservation_behind() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let svc = open_service(json!({"in_queue_checking": "strict"}));
    let key = engage.provision("gone", "svc", svc).await;
    let phone = "+15550142424";
    let mut pg = env.pg().await;
    let lock = pg.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE callbacks IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .expect("client");
    let gave_up = impatient
        .post(format!("{}{CREATE}", engage.external))
        .header("x-api-key", &key)
        .json(&json!({"serviceName": "svc", "phoneNumber": phone}))
        .send()
        .await;
    assert!(
        gave_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the create answered while its insert was held: {gave_up:?}"
    );
    // The server notices the closed connection and drops the request meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.rollback().await.expect("unlock");
    // The insert of the dropped request is left out or deleted again, and its reservation
    // given back in the background.
    let mut retry = (0, json!(null));
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        retry = engage.create(&key).service("svc").phone(phone).send().await;
        if retry.0 == 200 {
            break;
        }
    }
    assert_eq!(
        retry.0, 200,
        "the retry was refused: the dropped create still counts: {}",
        retry.1
    );
    let rows: i64 = pg
        .query_one(
            "SELECT count(*) FROM callbacks WHERE phone_number = $1 AND state <> 'COMPLETED'",
            &[&phone],
        )
        .await
        .expect("count")
        .get(0);
    // The dropped create's row, had it been committed, is withdrawn (COMPLETED).
    assert_eq!(rows, 1, "the dropped create left an active row behind");
}
