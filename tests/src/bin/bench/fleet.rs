//! Worker fleets on a Redis Cluster: dispatch throughput of 1, 2 and 4 workers draining one
//! burst, with the schedule index on a private cluster of 3 primaries and 3 replicas.

use std::time::{Duration, Instant};

use harness::{Engage, PrivateCluster, PrivateRedis, TestEnv, WorkerProc};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::{
    dispatch::{create_all, lateness_of, pct, stream_len},
    scenarios::{Options, Results, bench_service, fig, phone},
};

/// Shards of the schedule index: more than the primaries, so each holds some.
const SHARDS: &str = "8";

/// One burst due at one instant, drained by 1, 2 and 4 workers in turn (a voice stream each).
pub(crate) async fn cluster_dispatch(opts: &Options, r: &mut Results) -> anyhow::Result<()> {
    println!("dispatch throughput on a Redis cluster, 1/2/4 workers");
    let cluster = PrivateCluster::with_replicas(2_000);
    let voice = PrivateRedis::new(false);
    let env = crate::deployed_env()
        .with("REDIS_URL", &cluster.urls())
        .with("REDIS_CLUSTER", "true")
        .with("REDIS_SCHEDULE_SHARDS", SHARDS)
        .with("VOICE_REDIS_URL", &voice.url())
        .with("LOG_LEVEL", "WARN")
        .with("WORKER_TENANT_RATE", "0");
    let engage = Engage::start(&env, &[]).await;
    let key = engage.tenant("bench").await;
    let mut settings = bench_service();
    settings["dispatch_rate_per_second"] = json!(1_000_000);
    engage.service("bench", "sales", settings).await;
    // The booking rate, to book each burst before it falls due.
    let far = (Timestamp::now() + SignedDuration::from_hours(6)).to_string();
    let calib: Vec<Value> = (0..500u64)
        .map(|i| json!({"serviceName": "sales", "phoneNumber": phone(700_000 + i), "desiredTime": far}))
        .collect();
    let t = Instant::now();
    let per_sec = create_all(&engage, &key, calib).await.max(1) as f64 / t.elapsed().as_secs_f64();
    let burst: u64 = if opts.repeats == 1 { 2_000 } else { 10_000 };
    let mut points = Vec::new();
    for workers in [1usize, 2, 4] {
        let (n, booked, drain_ms) = drain(&env, &voice, &key, workers, burst, per_sec).await?;
        let throughput = n as f64 / (drain_ms.max(1.0) / 1000.0);
        points.push((workers as f64, throughput));
        r.add(fig(
            &format!("Redis Cluster (3 primaries + 3 replicas, {SHARDS} shards), burst of {booked}, {workers} worker(s): {n} of {booked} in the stream after {drain_ms:.0} ms; dispatch throughput"),
            throughput,
            "callbacks/s",
        ));
    }
    r.notes.push(format!(
        "cluster dispatch: every process (engage, workers, PostgreSQL, 6 Redis nodes) on the same cores; load average before the run {}",
        load_average()
    ));
    crate::chart::lines(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/cluster-throughput.svg"),
        &format!("Dispatch throughput vs workers on a Redis Cluster (burst of {burst})"),
        "workers",
        "callbacks per second",
        &[("throughput".into(), points)],
    )?;
    r.charts.push("cluster-throughput.svg".into());
    Ok(())
}

/// Books `burst` callbacks due at one instant on a stream of their own, starts `workers`
/// workers, waits until the stream holds them; (entries, booked, max lateness in ms).
async fn drain(
    env: &TestEnv,
    voice: &PrivateRedis,
    key: &str,
    workers: usize,
    burst: u64,
    per_sec: f64,
) -> anyhow::Result<(usize, usize, f64)> {
    let env2 = env
        .clone()
        .with("VOICE_STREAM", &format!("{}:cburst{workers}", env.id));
    let engage = Engage::start(&env2, &[]).await;
    let mut procs = Vec::new();
    for _ in 0..workers {
        procs.push(WorkerProc::start(&env2, &[]).await);
    }
    let due = Timestamp::now() + SignedDuration::from_secs_f64(10.0 + 1.5 * burst as f64 / per_sec);
    let bodies: Vec<Value> = (0..burst)
        .map(|i| json!({"serviceName": "sales", "phoneNumber": phone(i), "desiredTime": due.to_string()}))
        .collect();
    let booked = create_all(&engage, key, bodies).await;
    anyhow::ensure!(
        Timestamp::now() < due,
        "burst booking took longer than its lead"
    );
    let stream = env2.voice_stream().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while stream_len(&voice.url(), &stream).await < booked as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut late = lateness_of(&voice.url(), &stream).await;
    Ok((late.len(), booked, pct(&mut late, 1.0)))
}

/// The 1-minute load average (`/proc/loadavg`), for the report's notes.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}
