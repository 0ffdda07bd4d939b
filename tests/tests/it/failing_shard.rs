//! Attack: one schedule shard whose pass keeps failing must not hold up the other shards
//! (docs/derived-state.md#a-failing-shard). The service Redis is a cluster; the primary that
//! holds some of the shards is frozen (`SIGSTOP`) after callbacks were booked in every shard.
//! Before the fix the dispatcher re-passed only the failing shard until it recovered, and no
//! other shard's due time was ever taken in: one frozen node stopped dispatch for all.

use std::time::{Duration, Instant};

use harness::{Engage, Fixture, PrivateCluster, TestEnv, WorkerProc, wire};
use serde_json::json;
use shared::redis::Keys;
use uuid::Uuid;

/// A shard count whose shards are not all on one node, with the node to freeze: the one
/// holding the most shards but not all of them. Many shards, so that several fail at once.
fn split(cluster: &PrivateCluster, prefix: &str) -> (u16, usize) {
    for shards in 24..=30u16 {
        let keys = Keys::new(prefix, shards);
        let mut per = [0u16; 3];
        for s in 0..shards {
            per[cluster.node_of(&keys.sched(s))] += 1;
        }
        if let Some(node) = (0..3).filter(|n| per[*n] < shards).max_by_key(|n| per[*n]) {
            return (shards, node);
        }
    }
    panic!("every shard count put all shards on one node");
}

/// A tenant name whose pacing and queue-view keys are not on the frozen node (the pass of a
/// healthy shard touches them).
fn tenant_off(cluster: &PrivateCluster, keys: &Keys, frozen: usize) -> String {
    (0..64)
        .map(|i| format!("fsh{i}"))
        .find(|t| {
            cluster.node_of(&keys.pace(t)) != frozen
                && cluster.node_of(&keys.queue(t, "fs")) != frozen
        })
        .expect("a tenant whose keys avoid the frozen node")
}

/// Books callbacks due at `at` (numbers from `+1555` `base`) until `want` distinct shards for
/// which `pick` holds have one; returns every id booked with whether it is in such a shard.
async fn book(
    (api, key, keys): (&Engage, &str, &Keys),
    at: jiff::Timestamp,
    base: usize,
    want: usize,
    pick: impl Fn(u16) -> bool,
) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    let mut picked = std::collections::BTreeSet::new();
    while picked.len() < want {
        assert!(out.len() < 400, "shards never picked");
        let phone = format!("+1555{:07}", base + out.len());
        let id = api
            .create(key)
            .service("fs")
            .phone(&phone)
            .at(&wire(at))
            .id()
            .await;
        let shard = keys.shard_of(&Uuid::parse_str(&id).expect("uuid"));
        if pick(shard) {
            picked.insert(shard);
        }
        out.push((id, pick(shard)));
    }
    out
}

/// Waits until every id is submitted or `deadline` passes; returns those still waiting.
pub(crate) async fn wait_submitted(
    env: &TestEnv,
    ids: &[String],
    deadline: Instant,
) -> Vec<String> {
    let mut waiting: Vec<String> = ids.to_vec();
    while !waiting.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in waiting {
            if !env.row(&id).await.2 {
                still.push(id);
            }
        }
        waiting = still;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    waiting
}

/// The latest `submitted_at` of `ids` (ms since the epoch; 0 when none is submitted).
async fn last_submitted_ms(env: &TestEnv, ids: &[String]) -> i64 {
    let row = env
        .pg()
        .await
        .query_one(
            "SELECT coalesce((extract(epoch FROM max(submitted_at)) * 1000)::bigint, 0)
             FROM callbacks WHERE id::text = ANY($1)",
            &[&ids],
        )
        .await
        .expect("submitted_at");
    row.get(0)
}

/// The ids of `booked` in picked shards.
fn picked(booked: &[(String, bool)]) -> Vec<String> {
    booked
        .iter()
        .filter(|(_, p)| *p)
        .map(|(i, _)| i.clone())
        .collect()
}

/// Waits for `ids`, due at `due`, until 3 s after it; returns how long after `due` the last
/// of them was handed off, panicking with the worker's log if any is still waiting.
async fn on_time(env: &TestEnv, w: &WorkerProc, ids: &[String], due: jiff::Timestamp) -> i64 {
    let to_due = due.duration_since(jiff::Timestamp::now()).unsigned_abs();
    // A round: every claim at once, then the healthy passes; a frozen node's claims time out
    // (REDIS_TIMEOUT_MS, 500 ms) alongside.
    let late = wait_submitted(env, ids, Instant::now() + to_due + Duration::from_secs(3)).await;
    assert!(
        late.is_empty(),
        "{} of {} callbacks in healthy shards were held up by the frozen node's shards; \
         worker log:\n{}",
        late.len(),
        ids.len(),
        w.proc.output()
    );
    last_submitted_ms(env, ids).await - due.as_millisecond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_shard_a_frozen_cluster_primary_holds_up_only_its_own_shards() {
    let cluster = PrivateCluster::new();
    // Without full coverage the healthy nodes keep serving once they flag the frozen one.
    for i in 0..3 {
        cluster.cli(i, &["CONFIG", "SET", "cluster-require-full-coverage", "no"]);
    }
    let env = TestEnv::new()
        .with("REDIS_URL", &cluster.urls())
        .with("REDIS_CLUSTER", "true");
    let (shards, frozen) = split(&cluster, &env.id);
    let keys = Keys::new(&env.id, shards);
    let on_frozen = |s: u16| cluster.node_of(&keys.sched(s)) == frozen;
    let env = env.with("REDIS_SCHEDULE_SHARDS", &shards.to_string());
    let tenant = tenant_off(&cluster, &keys, frozen);
    let (env, api, key) = Fixture::dispatch(env, &tenant, "fs", json!({}))
        .await
        .parts();
    let w = WorkerProc::start(&env, &[]).await;

    // Wave 1: callbacks in six frozen shards, not yet known to fail (passed one after another
    // they would cost 500 ms each). Wave 2, due 200 ms later, and wave 3, due 6 s later while
    // the frozen shards retry: callbacks in eight healthy shards each.
    let due1 = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(20);
    let due2 = due1 + jiff::SignedDuration::from_millis(200);
    let due3 = due1 + jiff::SignedDuration::from_secs(6);
    let frozen_shards = (0..shards).filter(|s| on_frozen(*s)).count();
    let healthy = |s: u16| !on_frozen(s);
    let parts = (&api, key.as_str(), &keys);
    let wave1 = book(parts, due1, 4_000_000, frozen_shards.min(6), on_frozen).await;
    let wave2 = book(parts, due2, 4_001_000, 8, healthy).await;
    let wave3 = book(parts, due3, 4_002_000, 8, healthy).await;
    let lead = due1.duration_since(jiff::Timestamp::now()).as_secs_f64();
    assert!(
        lead > 2.0,
        "booking overran the first due time ({lead:.1} s left)"
    );
    cluster.pause(frozen);
    let late2 = on_time(&env, &w, &picked(&wave2), due2).await;
    let late3 = on_time(&env, &w, &picked(&wave3), due3).await;
    cluster.resume(frozen);

    // Thawed: the frozen shards' callbacks follow, and each callback is in the stream once.
    let all: Vec<String> = wave1
        .iter()
        .chain(&wave2)
        .chain(&wave3)
        .map(|(i, _)| i.clone())
        .collect();
    let thawed = Instant::now();
    let left = wait_submitted(&env, &all, thawed + Duration::from_secs(20)).await;
    assert!(
        left.is_empty(),
        "{} never submitted; worker log:\n{}",
        left.len(),
        w.proc.output()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (total, distinct, _) = env.census().await;
    println!(
        "FIGURE failing_shard shards={shards} frozen_node_shards={frozen_shards} \
         healthy_last_handed_off_after_due_ms: with_the_first_failures={late2} \
         while_retrying={late3}; frozen_done_after_thaw_ms={} stream_total={total} \
         stream_distinct={distinct}",
        thawed.elapsed().as_millis()
    );
    assert_eq!(
        (total, distinct),
        (all.len(), all.len()),
        "each callback exactly once"
    );
}

/// A worker stopped in the middle of a backlog gives back the claims of its round that it had
/// not worked through (a round claims every shard at once): a worker started right after it
/// takes them at once, not after their lease (15 s), and each callback goes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_shard_a_stopped_worker_gives_back_the_claims_of_its_round() {
    const N: i64 = 3_000;
    let env = TestEnv::new().with("REDIS_SCHEDULE_SHARDS", "16");
    let (env, api, key) = Fixture::dispatch(env, "fsg", "fs", json!({})).await.parts();
    api.create_immediate(&key, "fs", N as usize, 0).await;
    let mut a = WorkerProc::start(&env, &[]).await;
    assert!(env.wait_submitted(300, Duration::from_secs(30)).await >= 300);
    a.proc.terminate();
    let status = a.proc.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    let at_stop = env.submitted_count().await;
    let b = WorkerProc::start(&env, &[]).await;
    let started = Instant::now();
    let n = env.wait_submitted(N, Duration::from_secs(12)).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (total, distinct, _) = env.census().await;
    println!(
        "FIGURE stopped_worker submitted_at_stop={at_stop} rest_after_restart_ms={} \
         stream_total={total} stream_distinct={distinct}",
        took.as_millis()
    );
    assert!(at_stop < N, "the stop came after the backlog was done");
    assert_eq!(
        n,
        N,
        "callbacks claimed by the stopped worker waited for their lease; its log:\n{}\n\
         the next worker's log:\n{}",
        a.proc.output(),
        b.proc.output()
    );
    assert_eq!(
        (total, distinct),
        (N as usize, N as usize),
        "each callback exactly once"
    );
}

/// A private cluster whose healthy nodes keep serving while one is frozen, and a test
/// environment on it without the per-key request limit (its key could be on the frozen node).
pub(crate) fn partial_cluster() -> (PrivateCluster, TestEnv) {
    let cluster = PrivateCluster::new();
    for i in 0..3 {
        cluster.cli(i, &["CONFIG", "SET", "cluster-require-full-coverage", "no"]);
    }
    let env = TestEnv::new()
        .with("REDIS_URL", &cluster.urls())
        .with("REDIS_CLUSTER", "true")
        .with("API_KEY_RATE_PER_SECOND", "0");
    (cluster, env)
}

/// Attack on the wake channel (docs/derived-state.md#wake-ups): every create announces its
/// callback on a channel after the index `ZADD`. With one channel for all shards, its slot
/// lived on one cluster node, and a stall of that node held up every create by the publish's
/// timeout (`REDIS_TIMEOUT_MS`), whatever shard the callback went to. Here the node frozen is
/// the one holding the former channel's slot, and the creates whose shard lives elsewhere must
/// answer at their usual speed; those in the frozen node's shards answer after the index
/// write's timeout (committed, left to the reconciler).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_shard_a_stalled_primary_delays_only_the_creates_of_its_shards() {
    let (cluster, env) = partial_cluster();
    let frozen = cluster.node_of(&Keys::new(&env.id, 1).former_wake_channel());
    let shards = (4..=30u16)
        .find(|n| {
            let on = (0..*n)
                .filter(|s| cluster.node_of(&Keys::new(&env.id, *n).sched(*s)) == frozen)
                .count();
            on > 0 && on < usize::from(*n) - 3
        })
        .expect("a shard count with shards on and off the frozen node");
    let keys = Keys::new(&env.id, shards);
    let service = (0..500)
        .map(|i| format!("ws{i}"))
        .find(|s| cluster.node_of(&format!("{{{}:thr:wsh:{s}}}:act", env.id)) != frozen)
        .expect("a service whose throttle hash avoids the frozen node");
    let env = env.with("REDIS_SCHEDULE_SHARDS", &shards.to_string());
    let e = Engage::start(&env, &[]).await;
    let key = e.provision("wsh", &service, json!({})).await;
    // Asked before the freeze: `node_of` asks a node, which may be the frozen one.
    let on_frozen: Vec<bool> = (0..shards)
        .map(|s| cluster.node_of(&keys.sched(s)) == frozen)
        .collect();
    let (keys, on_frozen) = (&keys, &on_frozen);
    let create = |i: usize| {
        let (e, key, service) = (&e, key.clone(), service.clone());
        async move {
            let t = Instant::now();
            let id = e
                .create(&key)
                .service(&service)
                .phone(&format!("+1555{:07}", 5_000_000 + i))
                .id()
                .await;
            let shard = keys.shard_of(&Uuid::parse_str(&id).expect("uuid"));
            (t.elapsed(), on_frozen[usize::from(shard)])
        }
    };
    for i in 0..4 {
        create(i).await;
    }
    cluster.pause(frozen);
    let mut healthy = Vec::new();
    let mut stalled = Vec::new();
    for i in 10..40 {
        let (took, on_frozen) = create(i).await;
        if on_frozen {
            stalled.push(took);
        } else {
            healthy.push(took);
        }
    }
    cluster.resume(frozen);
    healthy.sort();
    stalled.sort();
    println!(
        "FIGURE stalled_wake shards={shards} healthy_creates={} healthy_ms_median={} \
         healthy_ms_max={} stalled_creates={} stalled_ms_median={}",
        healthy.len(),
        healthy[healthy.len() / 2].as_millis(),
        healthy.last().expect("some").as_millis(),
        stalled.len(),
        stalled
            .get(stalled.len() / 2)
            .map_or(0, Duration::as_millis),
    );
    assert!(healthy.len() >= 10, "too few creates in healthy shards");
    let slow = healthy
        .iter()
        .filter(|t| **t >= Duration::from_millis(400))
        .count();
    assert_eq!(
        slow,
        0,
        "{slow} of {} creates in healthy shards waited for the frozen node (max {:?})",
        healthy.len(),
        healthy.last()
    );
}

/// Attack on the wake subscription (docs/derived-state.md#wake-ups): a worker listens on one
/// node of `REDIS_URL`, the first while it answers. A frozen node keeps the connection open and
/// says nothing, so before the liveness `PING` a worker whose node froze heard no wake-up and a
/// callback created meanwhile in a healthy shard waited for the safety poll (120 s; 6 of 6
/// waited more than 5 s). Here the first node is frozen, and the callbacks, in shards and
/// services whose keys live on the other nodes, must go out within seconds: first with a
/// worker that was listening on it (5 s), then with a new worker started while it is frozen
/// (8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_shard_a_frozen_first_node_leaves_the_worker_listening() {
    let (cluster, env) = partial_cluster();
    let frozen = 0;
    let shards = 8u16;
    let keys = Keys::new(&env.id, shards);
    let tenant = (0..200)
        .map(|i| format!("ffn{i}"))
        .find(|t| {
            [
                keys.pace(t),
                keys.queue(t, "fs"),
                format!("{{{}:thr:{t}:fs}}:act", env.id),
            ]
            .iter()
            .all(|k| cluster.node_of(k) != frozen)
        })
        .expect("a tenant whose keys avoid the frozen node");
    let env = env.with("REDIS_SCHEDULE_SHARDS", &shards.to_string());
    let (env, api, key) = Fixture::dispatch(env, &tenant, "fs", json!({}))
        .await
        .parts();
    let mut w = WorkerProc::start(&env, &[]).await;
    let on_frozen: Vec<bool> = (0..shards)
        .map(|s| cluster.node_of(&keys.sched(s)) == frozen)
        .collect();
    // Past the start-up rebuild and the first look at every shard.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.pause(frozen);
    let mut phone = 6_000_000;
    let mut healthy = async || {
        let mut ids = Vec::new();
        while ids.len() < 6 {
            let off = |s: u16| !on_frozen[usize::from(s)];
            ids.push(
                api.create_in_shard(&key, "fs", &mut phone, &keys, off)
                    .await
                    .0,
            );
        }
        ids
    };
    let mut outcomes = Vec::new();
    // A listening worker notices within WORKER_WAKE_PING_S (2 s) and REDIS_TIMEOUT_MS; a new
    // one gives up on its first subscription after 4 × REDIS_TIMEOUT_MS, while its start-up
    // rebuild retries against the frozen node beside it.
    for (phase, within_s) in [("listening_when_it_froze", 5), ("started_while_frozen", 8)] {
        if phase == "started_while_frozen" {
            w.proc.kill();
            w = WorkerProc::start(&env, &[]).await;
        }
        let ids = healthy().await;
        let started = Instant::now();
        let late = wait_submitted(&env, &ids, started + Duration::from_secs(within_s)).await;
        println!(
            "FIGURE frozen_first_node worker={phase} healthy_callbacks={} late={} took_ms={}",
            ids.len(),
            late.len(),
            started.elapsed().as_millis()
        );
        outcomes.push((phase, late.len(), ids.len()));
    }
    cluster.resume(frozen);
    assert!(
        outcomes.iter().all(|(_, late, _)| *late == 0),
        "callbacks in healthy shards waited (phase, late, of): {outcomes:?}; the worker heard no \
         wake-up; its log:\n{}",
        w.proc.output()
    );
}
