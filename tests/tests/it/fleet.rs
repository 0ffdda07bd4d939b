//! Worker fleets on a Redis Cluster with replicas: a primary of the service Redis or of the
//! voice Redis killed during dispatch (with its replica lagging, so acknowledged writes are
//! lost), four workers sharing the shards with one killed, and a change of the shard count.
//! Each callback must reach the voice stream exactly once (the stream and PostgreSQL agree).
//! Figures are printed as `FIGURE name=value` lines.

use std::time::{Duration, Instant};

use harness::{Engage, Fixture, PrivateCluster, TestEnv, WorkerProc, stream_census};
use serde_json::json;

/// [`Fixture::dispatch`] paced at `rate` callbacks per second: (workers' env, server, key).
async fn paced(env: TestEnv, tenant: &str, service: &str, rate: u32) -> (TestEnv, Engage, String) {
    let pace = json!({ "dispatch_rate_per_second": rate });
    Fixture::dispatch(env, tenant, service, pace).await.parts()
}

/// Which Redis of the deployment the cluster plays.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Service,
    Voice,
}

/// (total entries, distinct callback ids) of the environment's voice stream, read from the
/// primary that now serves it when the voice Redis is `cluster`.
async fn census(env: &TestEnv, role: Role, cluster: &PrivateCluster) -> (usize, usize) {
    let (total, distinct, _) = match role {
        Role::Service => env.census().await,
        Role::Voice => {
            let node = cluster.node_of(env.voice_stream());
            let url = format!("redis://127.0.0.1:{}", cluster.ports[node]);
            stream_census(&url, env.voice_stream()).await
        }
    };
    (total, distinct)
}

/// The primary to kill: the one serving the voice stream, or the one serving the most
/// schedule shards of the service Redis.
fn victim(env: &TestEnv, role: Role, cluster: &PrivateCluster) -> usize {
    if role == Role::Voice {
        return cluster.node_of(env.voice_stream());
    }
    let mut per = [0usize; 3];
    for s in 0..4 {
        per[cluster.node_of(&format!("{{{}:sched:{s}}}", env.id))] += 1;
    }
    (0..3).max_by_key(|i| per[*i]).unwrap_or(0)
}

/// 600 due callbacks paced at 100/s; after ~150 are handed off, the replica of one primary is
/// paused and cut off, the primary takes writes for 800 ms, is SIGKILLed, and the replica (without those
/// writes) is promoted. The killed node then comes back empty and rejoins as a replica of it
/// (as a restarted pod would).
async fn failover_during_dispatch(role: Role, tenant: &str) {
    const N: i64 = 600;
    let mut cluster = PrivateCluster::with_replicas(1_000);
    let env = match role {
        Role::Service => TestEnv::new()
            .with("REDIS_URL", &cluster.urls())
            .with("REDIS_CLUSTER", "true"),
        Role::Voice => TestEnv::new()
            .with("VOICE_REDIS_URL", &cluster.urls())
            .with("VOICE_REDIS_CLUSTER", "true")
            .with("VOICE_REDIS_REPLICA_ACKS", "1"),
    };
    let (env, engage, key) = paced(env, tenant, "fo", 100).await;
    engage.create_immediate(&key, "fo", N as usize, 0).await;
    let extra = [
        ("WORKER_RECONCILE_CHECK_S", "1".to_string()),
        ("WORKER_LEASE_MS", "3000".to_string()),
    ];
    let w = WorkerProc::start(&env, &extra).await;
    let started = Instant::now();
    assert!(env.wait_submitted(150, Duration::from_secs(30)).await >= 150);
    let primary = victim(&env, role, &cluster);
    let replica = cluster.replica_of(primary);
    // The replica stops reading, and its link is cut: what the primary takes from now on is
    // acknowledged to clients but reaches no replica (data already sent sits in the replica's
    // socket and is still applied).
    cluster.pause(replica);
    cluster.cli(primary, &["CLIENT", "KILL", "TYPE", "replica"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let at_kill = env.submitted_count().await;
    cluster.kill(primary);
    let killed = Instant::now();
    cluster.resume(replica);
    let promoted = cluster.wait_promoted(replica);
    cluster.restart_empty(primary);
    let n = env.wait_submitted(N, Duration::from_secs(60)).await;
    let recovered = killed.elapsed();
    assert_eq!(n, N, "worker log:\n{}", w.proc.output());
    // Let any late duplicate show before counting.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (total, distinct) = census(&env, role, &cluster).await;
    let name = if role == Role::Service { "service" } else { "voice" };
    println!(
        "FIGURE failover_{name} promoted_after_ms={} submitted_at_kill={at_kill} \
         all_{N}_submitted_after_kill_ms={} total_s={:.1} stream_total={total} \
         stream_distinct={distinct} rebuilds={} submit_failed={}",
        promoted.as_millis(),
        recovered.as_millis(),
        started.elapsed().as_secs_f64(),
        w.metric("engage_reconcile_rebuilds_total").await,
        w.metric("CB_SUBMIT_FAILED").await,
    );
    assert_eq!(
        (total, distinct),
        (N as usize, N as usize),
        "each callback exactly once in the stream; worker log:\n{}",
        w.proc.output()
    );
    assert!(at_kill < N, "the kill came after the dispatch ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_service_redis_primary_killed_during_dispatch() {
    failover_during_dispatch(Role::Service, "fl1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_voice_redis_primary_killed_during_dispatch() {
    failover_during_dispatch(Role::Voice, "fl2").await;
}
