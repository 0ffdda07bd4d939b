//! Attacks on the back-off of the wake subscription's liveness `PING` (worker/src/wake.rs
//! `Quiet`, docs/derived-state.md#wake-ups): after a message the worker pings after 2 s of
//! silence (`WORKER_WAKE_PING_S`), then waits twice as long after each answered `PING`, up to
//! `WORKER_WAKE_PING_IDLE_S` (30 s), so that an idle deployment stays within its idle budget
//! (0.2 commands per second per node). The price is a longer bound on a frozen listening node
//! once the worker has heard nothing for a while. These tests hold both ends, with the
//! binaries' defaults: the worst case after a long silence, and the reset by a message.

use std::time::{Duration, Instant};

use harness::{Fixture, PrivateCluster, TestEnv, WorkerProc};
use serde_json::json;
use shared::redis::Keys;

use crate::attack_s34_wake::listening;

/// `cmdstat_ping` calls of one cluster node.
fn pings(cluster: &PrivateCluster, node: usize) -> u64 {
    cluster
        .cli(node, &["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits (up to `limit`) until `node` has answered `n` more `PING`s than `from`; the time
/// taken, or `None`.
async fn nth_ping(
    cluster: &PrivateCluster,
    node: usize,
    from: u64,
    n: u64,
    limit: Duration,
) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if pings(cluster, node) >= from + n {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Attack, with the default back-off. (L) After a message, the listening node answers
/// `PING`s at about 2, 6, 14 and 30 s (4 in 30 s; 15 without the back-off); frozen just after
/// the fourth, the worst moment, a callback created in a healthy shard must still go out
/// within the cap (30 s) + `REDIS_TIMEOUT_MS` + a new subscription and claim (bound 33.5 s).
/// (R) On a subscription silent for 31 s (its wait grown to 30 s), a message, then a freeze
/// half a second later: the message brought the wait back to 2 s, so the bound of 2.7 s holds
/// (3.5 s with slack); without the reset it would be the cap. Every callback goes out exactly
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s40_frozen_listening_node_after_a_long_silence_and_after_a_message() {
    let cluster = PrivateCluster::new();
    for i in 0..3 {
        cluster.cli(i, &["CONFIG", "SET", "cluster-require-full-coverage", "no"]);
    }
    let shards = 12u16;
    let env = TestEnv::new()
        .with_default_wake_ping()
        .with("REDIS_URL", &cluster.urls())
        .with("REDIS_CLUSTER", "true")
        .with("REDIS_SCHEDULE_SHARDS", &shards.to_string());
    let keys = Keys::new(&env.id, shards);
    let node_of_shard: Vec<usize> = (0..shards)
        .map(|s| cluster.node_of(&keys.sched(s)))
        .collect();
    let (env, api, key) = Fixture::dispatch(env, "ip", "ip", json!({})).await.parts();
    let _w = WorkerProc::start(&env, &[]).await;
    let phone = std::cell::Cell::new(7_100_000);
    let mut all = Vec::new();
    // One callback in a shard not on `avoid` (usize::MAX: any), created now; its id.
    let create_off = async |avoid: usize, all: &mut Vec<String>| {
        let off = |s: u16| node_of_shard[usize::from(s)] != avoid;
        let mut next = phone.get();
        let (id, made) = api.create_in_shard(&key, "ip", &mut next, &keys, off).await;
        phone.set(next);
        all.extend(made);
        id
    };
    // A callback in any shard, which must go out: the message on the subscription.
    let warm_up = async |all: &mut Vec<String>| {
        let id = create_off(usize::MAX, all).await;
        let sent = env.wait_sent(&[id], Duration::from_secs(10)).await;
        assert!(sent.is_some(), "warm-up never went out");
    };
    // Freezes `node`, creates a callback in a shard off it and waits up to `limit` for it;
    // (time the create took, time from the freeze to the hand-off). Resumes `node`.
    let freeze_and_send = async |node: usize, limit: Duration, all: &mut Vec<String>| {
        cluster.pause(node);
        let t_freeze = Instant::now();
        let id = create_off(node, all).await;
        let created = t_freeze.elapsed();
        let sent = env.wait_sent(&[id], limit).await.map(|d| d + created);
        cluster.resume(node);
        (created, sent)
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    // (L) A message, then four PINGs, then the freeze.
    let node = listening(&cluster, &[0, 1, 2])[0];
    warm_up(&mut all).await;
    let from = pings(&cluster, node);
    let fourth = nth_ping(&cluster, node, from, 4, Duration::from_secs(60)).await;
    let fourth = fourth.expect("four PINGs within 60 s of silence");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (created, sent) = freeze_and_send(node, Duration::from_secs(45), &mut all).await;
    println!(
        "FIGURE idle_ping case=long_silence node={node} fourth_ping_after_ms={} create_done_ms={} \
         handed_off_after_freeze_ms={:?}",
        fourth.as_millis(),
        created.as_millis(),
        sent.map(|d| d.as_millis())
    );
    assert!(
        fourth >= Duration::from_secs(25),
        "four PINGs came {fourth:?} after the message: the wait did not grow (2, 4, 8, 16 s)"
    );
    let sent = sent.expect("long silence: never handed off within 45 s of the freeze");
    // A create slowed by the frozen node cannot go out before it exists.
    let late = sent.saturating_sub(created.saturating_sub(Duration::from_millis(2_700)));
    assert!(
        late <= Duration::from_millis(33_500),
        "long silence: {sent:?} after the freeze"
    );

    // (R) A new subscription (the worker left the frozen node), 31 s of silence, a message,
    // the freeze.
    let t = Instant::now();
    let node = loop {
        let on = listening(&cluster, &[0, 1, 2]);
        if on.len() == 1 && on[0] != node {
            break on[0];
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "subscriptions on {on:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(31)).await;
    warm_up(&mut all).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (created, sent) = freeze_and_send(node, Duration::from_secs(30), &mut all).await;
    println!(
        "FIGURE idle_ping case=after_a_message node={node} create_done_ms={} \
         handed_off_after_freeze_ms={:?}",
        created.as_millis(),
        sent.map(|d| d.as_millis())
    );
    let sent = sent.expect("after a message: never handed off within 30 s of the freeze");
    let late = sent.saturating_sub(created.saturating_sub(Duration::from_millis(2_700)));
    assert!(
        late <= Duration::from_millis(3_500),
        "after a message: {sent:?} after the freeze"
    );

    env.wait_sent(&all, Duration::from_secs(40)).await;
    let (total, distinct, _) = env.census().await;
    assert_eq!(
        (total, distinct),
        (all.len(), all.len()),
        "exactly once each"
    );
}
