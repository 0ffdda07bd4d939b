//! The wake channels (docs/derived-state.md#wake-ups): a worker hears an announcement on the
//! channel of each shard it claims and on the former single channel, which API replicas of an
//! earlier release still publish on during a rolling upgrade; without one it sleeps on.

use std::time::{Duration, Instant};

use harness::{TestEnv, WorkerProc};
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
