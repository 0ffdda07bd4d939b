//! The wake channels (docs/derived-state.md#wake-ups): a worker hears an announcement on the
//! channel of each shard it claims and on the former single channel, which API replicas of an
//! earlier release still publish on during a rolling upgrade; without one it sleeps on.

use std::time::{Duration, Instant};

use harness::{Fixture, TestEnv, WorkerProc};
use serde_json::json;
use shared::redis::Keys;
use uuid::Uuid;

/// Whether `member` left `key` (claimed by the worker) within `limit`.
async fn claimed_within(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    member: &str,
    limit: Duration,
) -> bool {
    let until = Instant::now() + limit;
    loop {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(key)
            .arg(member)
            .query_async(conn)
            .await
            .expect("ZSCORE");
        if score.is_none() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_channel_former_and_per_shard_both_wake_a_worker() {
    let env = TestEnv::new().with("REDIS_SCHEDULE_SHARDS", "2");
    let keys = Keys::new(&env.id, 2);
    let w = WorkerProc::start(&env, &[]).await;
    let mut conn = env.redis().await;
    // Past the start-up rebuild and the first look at every shard.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (shard, channel) in [
        (1u16, keys.wake_channel(1)),
        (0, keys.former_wake_channel()),
    ] {
        // An entry due now that nobody announced: the idle worker does not see it (its next
        // look is the safety poll, 120 s away).
        let member = Uuid::now_v7().to_string();
        let now: i64 = jiff::Timestamp::now().as_millisecond();
        let _: i64 = redis::cmd("ZADD")
            .arg(keys.sched(shard))
            .arg(now)
            .arg(&member)
            .query_async(&mut conn)
            .await
            .expect("ZADD");
        assert!(
            !claimed_within(
                &mut conn,
                &keys.sched(shard),
                &member,
                Duration::from_secs(1)
            )
            .await,
            "the worker claimed an entry nobody announced: the test proves nothing"
        );
        let heard: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(format!("{now}:{shard}"))
            .query_async(&mut conn)
            .await
            .expect("PUBLISH");
        assert_eq!(heard, 1, "the worker does not subscribe to {channel}");
        assert!(
            claimed_within(
                &mut conn,
                &keys.sched(shard),
                &member,
                Duration::from_secs(2)
            )
            .await,
            "an announcement on {channel} did not wake the worker; its log:\n{}",
            w.proc.output()
        );
    }
}

/// Attack: committed, overdue callbacks that no worker was told about. One is indexed but its
/// announcement was lost (a `PUBLISH` that failed after its `ZADD`, a message a worker never
/// got without a re-subscription); one is in flight under a lease that ran out, its claimer
/// frozen before anyone heard its lease message. An idle worker knows of neither, and before
/// 2026-12-04 the sweep skipped both (it adds only what is missing): they waited for the
/// safety poll (120 s). The sweep now announces them (docs/derived-state.md#wake-ups).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_channel_the_sweep_announces_overdue_callbacks_nobody_was_told_of() {
    let env = TestEnv::new().with("REDIS_SCHEDULE_SHARDS", "2");
    let (env, _api, _key) = Fixture::dispatch(env, "swp", "svc", json!({}))
        .await
        .parts();
    let keys = Keys::new(&env.id, 2);
    let sweep = [
        ("WORKER_SWEEP_S", "2".to_string()),
        ("WORKER_SWEEP_GRACE_S", "1".to_string()),
    ];
    let w = WorkerProc::start(&env, &sweep).await;
    // Past the start-up rebuild and the first look at every shard.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (indexed, leased) = (Uuid::now_v7(), Uuid::now_v7());
    let pg = env.pg().await;
    for id in [indexed, leased] {
        pg.execute(
            "INSERT INTO callbacks (id, tenant_id, service, state, phone_number, desired_time,
                                    dispatch_at, scheduled)
             VALUES ($1, 'swp', 'svc', 'SCHEDULED', '+15550100077', now() - interval '5 s',
                     now() - interval '5 s', true)",
            &[&id],
        )
        .await
        .expect("insert");
    }
    let now: i64 = jiff::Timestamp::now().as_millisecond();
    let mut conn = env.redis().await;
    for (key, id, score) in [
        (keys.sched(keys.shard_of(&indexed)), indexed, now - 5_000),
        (keys.inflight(keys.shard_of(&leased)), leased, now - 3_000),
    ] {
        let _: i64 = redis::cmd("ZADD")
            .arg(key)
            .arg(score)
            .arg(id.to_string())
            .query_async(&mut conn)
            .await
            .expect("ZADD");
    }
    let started = Instant::now();
    let mut waiting = vec![indexed.to_string(), leased.to_string()];
    while !waiting.is_empty() && started.elapsed() < Duration::from_secs(8) {
        let mut still = Vec::new();
        for id in waiting {
            if !env.row(&id).await.2 {
                still.push(id);
            }
        }
        waiting = still;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "FIGURE sweep_announces handed_off_ms={} left={}",
        started.elapsed().as_millis(),
        waiting.len()
    );
    assert!(
        waiting.is_empty(),
        "{waiting:?} waited past two sweeps (nobody told the worker); its log:\n{}",
        w.proc.output()
    );
    let (total, distinct, _) = env.census().await;
    assert_eq!((total, distinct), (2, 2), "each once");
}
