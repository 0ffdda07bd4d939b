//! Start-up migrations wait for a peer's migration whatever `DB_LOCK_TIMEOUT_MS` says: a
//! process with a short lock timeout must not exit at start (and crash-loop on Kubernetes)
//! because another process holds the migration lock (`shared::db::migrate`).

use std::time::{Duration, Instant};

use harness::TestEnv;

/// The advisory lock every Engage process takes around its migrations.
const MIGRATION_LOCK: i64 = 0x656e_6761_6765;

#[tokio::test]
async fn migrate_waits_for_a_peer_whatever_the_lock_timeout() {
    let env = TestEnv::new().with("DB_LOCK_TIMEOUT_MS", "100");
    let peer = env.pg().await;
    peer.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .unwrap();
    let hold = Duration::from_millis(700);
    let release = tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        peer.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .unwrap();
    });
    let started = Instant::now();
    // Panics (test fails) if `engage migrate` exits non-zero on the lock timeout.
    tokio::task::spawn_blocking(move || env.engage_cli(&["migrate"]))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= hold - Duration::from_millis(100),
        "migrate returned before the peer released the lock"
    );
    release.await.unwrap();
}
