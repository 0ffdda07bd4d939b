//! Attack on commit 2690130 (voice writes acknowledged by `WAIT` in one pipeline with the
//! write). Library-level: the real `shared::redis::voice` calls over the binaries' handle and
//! configuration, against private servers with replicas.

use std::time::{Duration, Instant};

use harness::{PrivateCluster, PrivateRedis, TestEnv};
use redis::AsyncCommands;
use shared::redis::voice::{self, Acks, Entry, OwedCancel, Written};
use uuid::Uuid;

fn entry(id: Uuid) -> Entry {
    Entry {
        id,
        attempt: 1,
        epoch: 0,
        fields: vec![("callback_id", id.to_string())],
    }
}

fn cfg(env: &TestEnv) -> shared::Config {
    shared::Config::from_vars(env.vars.clone()).expect("config")
}

/// A standalone primary with one replica attached and in sync.
async fn primary_with_replica() -> (PrivateRedis, PrivateRedis) {
    let p = PrivateRedis::new(false);
    let r = PrivateRedis::new(false);
    let mut rc = r.conn().await;
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(p.port)
        .query_async(&mut rc)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut rc)
            .await
            .unwrap();
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "replica sync");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (p, r)
}

/// A private 3 + 3 cluster (`node_timeout_ms`) as the voice Redis, acks 1 within `ack_ms`:
/// the cluster, the configuration and its voice handle.
fn acked_cluster(
    node_timeout_ms: u32,
    ack_ms: &str,
) -> (PrivateCluster, shared::Config, shared::redis::RedisHandle) {
    let cluster = PrivateCluster::with_replicas(node_timeout_ms);
    let env = TestEnv::new()
        .with("VOICE_REDIS_URL", &cluster.urls())
        .with("VOICE_REDIS_CLUSTER", "true")
        .with("VOICE_REDIS_REPLICA_ACKS", "1")
        .with("VOICE_REDIS_ACK_TIMEOUT_MS", ack_ms);
    let cfg = cfg(&env);
    let h = shared::redis::voice(&cfg).unwrap();
    (cluster, cfg, h)
}

async fn flush_scripts(c: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(c)
        .await
        .unwrap();
}

/// NOSCRIPT (SCRIPT FLUSH between calls) with acks 0 and 1, standalone; a frozen replica
/// makes the write unheld (never a counted acknowledgement).
#[tokio::test]
async fn attack_s27_standalone_noscript_and_frozen_replica() {
    let (p, r) = primary_with_replica().await;
    let env = TestEnv::new().with("VOICE_REDIS_URL", &p.url());
    let cfg = cfg(&env);
    let h = shared::redis::voice(&cfg).unwrap();
    let mut conn = h.conn().await.unwrap();
    let mut pc = p.conn().await;
    let stream = cfg.voice.stream.clone();
    let one = Acks {
        replicas: 1,
        timeout_ms: 250,
    };
    for acks in [Acks::NONE, one] {
        // Warm, then flushed.
        for flush in [false, true, true] {
            if flush {
                flush_scripts(&mut pc).await;
            }
            let id = Uuid::new_v4();
            let s = voice::submit(&mut conn, &stream, "sub", &[entry(id)], 0, acks)
                .await
                .unwrap_or_else(|e| panic!("acks {acks:?} flush {flush}: {e}"));
            assert_eq!(s.written, vec![Written::Added]);
            assert!(s.held, "acks {acks:?} flush {flush}");
            // Retry: Already, held.
            let s = voice::submit(&mut conn, &stream, "sub", &[entry(id)], 0, acks)
                .await
                .unwrap();
            assert_eq!(s.written, vec![Written::Already]);
        }
    }
    // Cancel settle after a flush, acks 1.
    flush_scripts(&mut pc).await;
    let mut v = cfg.voice.clone();
    v.replica_acks = 1;
    let owed = OwedCancel {
        id: Uuid::new_v4(),
        attempt: 1,
        epoch: 0,
        submitted: false,
    };
    assert_eq!(
        voice::settle_cancels(&mut conn, &v, &[owed]).await.unwrap(),
        0
    );
    // Frozen replica: held false, with and without NOSCRIPT; the call takes ~timeout.
    r.freeze();
    for flush in [false, true] {
        if flush {
            flush_scripts(&mut pc).await;
        }
        let t = Instant::now();
        let s = voice::submit(&mut conn, &stream, "sub", &[entry(Uuid::new_v4())], 0, one).await;
        eprintln!("frozen replica, flush {flush}: {s:?} in {:?}", t.elapsed());
        assert!(!s.is_ok_and(|s| s.held), "no replica acknowledged");
    }
    r.thaw();
}

/// Found: `VOICE_REDIS_ACK_TIMEOUT_MS=1000` with the default `REDIS_TIMEOUT_MS` (500, the
/// voice handle's response timeout) let a lagging replica time the pipeline out on the client
/// before `WAIT` answered; the reschedule answered 503 but its fence stayed for
/// `MOVE_FENCE_TTL_S` (120 s). Now such a configuration is refused at start, and a refused
/// move at the longest accepted wait leaves no fence.
#[tokio::test]
async fn attack_s27_a_refused_move_leaves_no_fence_at_the_longest_accepted_wait() {
    let (p, r) = primary_with_replica().await;
    let too_long = TestEnv::new()
        .with("VOICE_REDIS_URL", &p.url())
        .with("VOICE_REDIS_REPLICA_ACKS", "1")
        .with("VOICE_REDIS_ACK_TIMEOUT_MS", "1000");
    let refused = shared::Config::from_vars(too_long.vars.clone()).unwrap_err();
    assert!(
        refused.to_string().contains("VOICE_REDIS_ACK_TIMEOUT_MS"),
        "a wait longer than the response timeout is refused at start: {refused}"
    );
    // The longest wait the configuration accepts (half of REDIS_TIMEOUT_MS).
    let env = TestEnv::new()
        .with("VOICE_REDIS_URL", &p.url())
        .with("VOICE_REDIS_REPLICA_ACKS", "1")
        .with("VOICE_REDIS_ACK_TIMEOUT_MS", "500")
        .with("REDIS_TIMEOUT_MS", "1000");
    let cfg = cfg(&env);
    let h = shared::redis::voice(&cfg).unwrap();
    let mut conn = voice::writer(&h, &cfg.voice).await.unwrap();
    let mut pc = p.conn().await;
    let id = Uuid::new_v4();
    // Script cache warm (a primary that ran it before).
    voice::fence_for_move(&mut conn, &cfg.voice, Uuid::new_v4(), (1, 0))
        .await
        .unwrap();
    r.freeze();
    let t = Instant::now();
    let out = voice::fence_for_move(&mut conn, &cfg.voice, id, (1, 0)).await;
    eprintln!("fence_for_move: {out:?} in {:?}", t.elapsed());
    let key = voice::dedupe_key(&cfg.voice.stream, "sub", id, 1, 0);
    let now: Option<String> = pc.get(&key).await.unwrap();
    eprintln!("right after: {now:?}");
    assert!(out.is_err(), "no replica holds the fence: {out:?}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut pc)
        .await
        .unwrap();
    eprintln!(
        "{}",
        stats
            .lines()
            .filter(|l| l.contains("eval")
                || l.contains("wait")
                || l.contains("cmdstat_set")
                || l.contains("cmdstat_get")
                || l.contains("cmdstat_del"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let left: Option<String> = pc.get(&key).await.unwrap();
    let ttl: i64 = pc.ttl(&key).await.unwrap();
    r.thaw();
    // The worker's hand-off of that attempt now comes back Fenced (for up to 120 s).
    let s = voice::submit(
        &mut conn,
        &cfg.voice.stream,
        "sub",
        &[entry(id)],
        0,
        Acks::of(&cfg.voice),
    )
    .await;
    eprintln!("fence left after the refused move: {left:?} ttl {ttl}; worker submit: {s:?}");
    assert_eq!(left, None, "a refused move must leave no fence (ttl {ttl})");
}

/// Default timeouts (ack 250 ms, response 500 ms), a lagging replica and 6 concurrent moves
/// on the writer connection: each `WAIT` blocks it on the server, so the later ones time out
/// on the client (found: all 6 fences stayed). Every refused move's fence is lifted.
#[tokio::test]
async fn attack_s27_concurrent_refused_moves_leave_no_fences_with_default_timeouts() {
    const N: usize = 6;
    let (p, r) = primary_with_replica().await;
    let env = TestEnv::new()
        .with("VOICE_REDIS_URL", &p.url())
        .with("VOICE_REDIS_REPLICA_ACKS", "1");
    let cfg = cfg(&env);
    let h = shared::redis::voice(&cfg).unwrap();
    // Warm the script cache.
    let mut conn = voice::writer(&h, &cfg.voice).await.unwrap();
    let _ = voice::fence_for_move(&mut conn, &cfg.voice, Uuid::new_v4(), (1, 0)).await;
    let mut pc = p.conn().await;
    r.freeze();
    let ids: Vec<Uuid> = (0..N).map(|_| Uuid::new_v4()).collect();
    let t = Instant::now();
    let outs = futures::future::join_all(ids.iter().map(|id| {
        let h = h.clone();
        let v = cfg.voice.clone();
        async move {
            let mut c = voice::writer(&h, &v).await.unwrap();
            let t = Instant::now();
            let o = voice::fence_for_move(&mut c, &v, *id, (1, 0)).await;
            (o.map_err(|e| e.to_string()), t.elapsed())
        }
    }))
    .await;
    eprintln!("{N} concurrent moves in {:?}: {outs:?}", t.elapsed());
    // Let the server work through the queued pipelines.
    tokio::time::sleep(Duration::from_millis(250 * N as u64 + 1_000)).await;
    let mut left = Vec::new();
    for id in &ids {
        let key = voice::dedupe_key(&cfg.voice.stream, "sub", *id, 1, 0);
        let v: Option<String> = pc.get(&key).await.unwrap();
        if let Some(v) = v {
            left.push((v, pc.ttl::<_, i64>(&key).await.unwrap()));
        }
    }
    r.thaw();
    assert!(outs.iter().all(|(o, _)| o.is_err()), "{outs:?}");
    assert!(
        left.is_empty(),
        "refused moves left {} fences: {left:?}",
        left.len()
    );
}

/// Cluster: NOSCRIPT with acks, a paused replica (unheld), the primary killed and its replica
/// promoted while calls go on: no call may come back held while the slot's primary has no
/// replica (the promoted node has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s27_cluster_no_false_ack_through_failover() {
    let (mut cluster, cfg, h) = acked_cluster(1_000, "50");
    let mut conn = h.conn().await.unwrap();
    let stream = cfg.voice.stream.clone();
    let acks = Acks::of(&cfg.voice);
    let primary = cluster.node_of(&stream);
    let replica = cluster.replica_of(primary);
    for flush in [false, true] {
        if flush {
            for i in 0..6 {
                cluster.cli(i, &["SCRIPT", "FLUSH"]);
            }
        }
        let s = voice::submit(&mut conn, &stream, "sub", &[entry(Uuid::new_v4())], 0, acks)
            .await
            .unwrap_or_else(|e| panic!("flush {flush}: {e}"));
        assert!(s.held, "flush {flush}");
    }
    cluster.pause(replica);
    let s = voice::submit(&mut conn, &stream, "sub", &[entry(Uuid::new_v4())], 0, acks).await;
    assert!(!s.as_ref().is_ok_and(|s| s.held), "{s:?}");
    // Kill the primary; keep writing until well after the promotion.
    cluster.kill(primary);
    cluster.resume(replica);
    let started = Instant::now();
    let (mut held, mut unheld, mut errs) = (Vec::new(), 0, 0);
    let mut promoted_at = None;
    while started.elapsed() < Duration::from_secs(12) {
        let id = Uuid::new_v4();
        match voice::submit(&mut conn, &stream, "sub", &[entry(id)], 0, acks).await {
            Ok(s) if s.held => held.push((id, started.elapsed())),
            Ok(_) => unheld += 1,
            Err(_) => errs += 1,
        }
        if promoted_at.is_none()
            && cluster
                .cli(replica, &["INFO", "replication"])
                .contains("role:master")
        {
            promoted_at = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "promoted at {promoted_at:?}; held {} unheld {unheld} errors {errs}",
        held.len()
    );
    assert!(held.is_empty(), "acknowledged with no replica: {held:?}");
}

/// End to end, default timeouts (`VOICE_REDIS_ACK_TIMEOUT_MS` 250, `REDIS_TIMEOUT_MS` 500):
/// a replica that lags (SIGSTOP) and 3 concurrent reschedules of callbacks due soon. Each is
/// answered 503 ("nothing changed") and none may leave its old hand-off fenced in the voice
/// Redis (found: 2 of 3 fences stayed for `MOVE_FENCE_TTL_S`, 120 s, before fences of failed
/// calls were lifted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s27_api_refused_reschedules_leave_no_fences() {
    const N: usize = 3;
    let (p, r) = primary_with_replica().await;
    let env = TestEnv::new()
        .with("VOICE_REDIS_URL", &p.url())
        .with("VOICE_REDIS_REPLICA_ACKS", "1");
    let fx = harness::Fixture::with(
        env,
        &[],
        "acme",
        "sales",
        harness::open_service(serde_json::json!({})),
    )
    .await;
    let post = |(id, hour): (String, i8)| {
        let to = harness::wire(harness::day_at(2, hour));
        let body = serde_json::json!({"id": id, "desiredTime": to});
        let (e, k) = (&fx.engage, &fx.key);
        async move { e.post(k, "/engagement/v3/callbacks/reschedule", body).await }
    };
    // Warm: one move while the replica keeps up.
    let warm = fx.create().at(&harness::in_secs(120)).id().await;
    let (code, answer) = post((warm, 8)).await;
    assert_eq!(code, 200, "{answer}");
    let mut ids = Vec::new();
    for k in 0..N {
        let at = harness::in_secs(300 + 900 * k as i64);
        ids.push((fx.create().at(&at).id().await, 9 + k as i8));
    }
    r.freeze();
    let t = Instant::now();
    let answers = futures::future::join_all(ids.iter().map(|id| async {
        let a = post(id.clone()).await;
        (a.0, a.1["status"]["message"].clone(), t.elapsed())
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let mut pc = p.conn().await;
    let mut fences = Vec::new();
    for (id, _) in &ids {
        let key = format!("{{{}}}:sub:{id}:1", fx.env.voice_stream());
        let v: Option<String> = pc.get(&key).await.unwrap();
        let ttl: i64 = pc.ttl(&key).await.unwrap();
        fences.push((v, ttl));
    }
    r.thaw();
    let codes: Vec<u16> = answers.iter().map(|a| a.0).collect();
    eprintln!("codes {codes:?}; fences {fences:?}");
    assert!(codes.iter().all(|c| *c == 503), "{answers:?}");
    eprintln!("{answers:?}");
    assert!(
        fences.iter().all(|(v, _)| v.is_none()),
        "503 answers left fences: {fences:?}"
    );
}

/// Cluster: the stream's primary SIGSTOPped (calls in flight), its replica promoted, then the
/// old primary resumed (a stale primary for a moment, then a replica of the new one). Every
/// submission reported held must be in the stream of the node that serves it at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s27_cluster_paused_primary_every_held_submission_survives() {
    let (cluster, cfg, h) = acked_cluster(1_000, "100");
    let stream = cfg.voice.stream.clone();
    let acks = Acks::of(&cfg.voice);
    let primary = cluster.node_of(&stream);
    let replica = cluster.replica_of(primary);
    let writer = {
        let (h, stream) = (h.clone(), stream.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            let (mut unheld, mut errs) = (0, 0);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(14) {
                let id = Uuid::new_v4();
                let Ok(mut conn) = h.conn().await else {
                    errs += 1;
                    continue;
                };
                match voice::submit(&mut conn, &stream, "sub", &[entry(id)], 0, acks).await {
                    Ok(s) if s.held => held.push(id),
                    Ok(_) => unheld += 1,
                    Err(_) => errs += 1,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (held, unheld, errs)
        })
    };
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    cluster.pause(primary);
    // (Not `wait_promoted`: its `wait_ok` asks the paused node too and blocks.)
    let paused = Instant::now();
    while !cluster
        .cli(replica, &["INFO", "replication"])
        .contains("role:master")
    {
        assert!(paused.elapsed() < Duration::from_secs(20), "no promotion");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("promoted after {:?}", paused.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.resume(primary);
    let (held, unheld, errs) = writer.await.unwrap();
    // Let the old primary rejoin as a replica.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let serving = cluster.node_of(&stream);
    let mut lost = Vec::new();
    for id in &held {
        let key = voice::dedupe_key(&stream, "sub", *id, 1, 0);
        if cluster.cli(serving, &["GET", &key]).trim() != "1" {
            lost.push(*id);
        }
    }
    let xlen = cluster.cli(serving, &["XLEN", &stream]);
    eprintln!(
        "held {} unheld {unheld} errors {errs}; serving node {serving} (was {primary}), XLEN {}; lost {}",
        held.len(),
        xlen.trim(),
        lost.len()
    );
    assert!(lost.is_empty(), "held but lost: {lost:?}");
}

/// Stream and control stream with different hash tags (two primaries): a settle is refused
/// when either primary's replica lags; a stream name whose tag Redis reads differently from
/// `hash_tag` (`x{}y`) on a cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s27_cluster_tags_and_settles() {
    let cluster = PrivateCluster::with_replicas(1_000);
    let base = TestEnv::new()
        .with("VOICE_REDIS_URL", &cluster.urls())
        .with("VOICE_REDIS_CLUSTER", "true")
        .with("VOICE_REDIS_REPLICA_ACKS", "1")
        .with("VOICE_REDIS_ACK_TIMEOUT_MS", "100");
    // Find two tags on different primaries.
    let (a, b) = {
        let mut found = None;
        'outer: for i in 0..50 {
            for j in 0..50 {
                let (x, y) = (format!("{{va{i}}}:S"), format!("{{vb{j}}}:C"));
                if cluster.node_of(&x) != cluster.node_of(&y) {
                    found = Some((x, y));
                    break 'outer;
                }
            }
        }
        found.unwrap()
    };
    let env = base
        .clone()
        .with("VOICE_STREAM", &a)
        .with("CONTROL_STREAM", &b);
    let cfg = cfg(&env);
    let h = shared::redis::voice(&cfg).unwrap();
    let mut conn = h.conn().await.unwrap();
    let owed = |submitted| OwedCancel {
        id: Uuid::new_v4(),
        attempt: 1,
        epoch: 0,
        submitted,
    };
    // A written submission, then its cancel: control entry on the other primary.
    let sub = owed(false);
    voice::submit(
        &mut conn,
        &a,
        "sub",
        &[entry(sub.id)],
        0,
        Acks::of(&cfg.voice),
    )
    .await
    .unwrap();
    assert_eq!(
        voice::settle_cancels(&mut conn, &cfg.voice, &[sub])
            .await
            .unwrap(),
        1
    );
    for (which, stream) in [("stream", &a), ("control", &b)] {
        let rep = cluster.replica_of(cluster.node_of(stream));
        cluster.pause(rep);
        let s = voice::settle_cancels(&mut conn, &cfg.voice, &[owed(false), owed(true)]).await;
        cluster.resume(rep);
        eprintln!("{which} replica paused: {s:?}");
        assert!(s.is_err(), "{which}: settled with a lagging replica: {s:?}");
    }
    // `x{}y`: Redis hashes the whole name for the stream but `x{` for `{x{}y}:sub:…`.
    let odd = base.clone().with("VOICE_STREAM", "x{}y");
    match shared::Config::from_vars(odd.vars.clone()) {
        Err(e) => eprintln!("x{{}}y refused at start: {e}"),
        Ok(cfg) => {
            let h = shared::redis::voice(&cfg).unwrap();
            let mut conn = h.conn().await.unwrap();
            let s = voice::submit(
                &mut conn,
                &cfg.voice.stream,
                "sub",
                &[entry(Uuid::new_v4())],
                0,
                Acks::of(&cfg.voice),
            )
            .await;
            let s0 = voice::submit(
                &mut conn,
                &cfg.voice.stream,
                "sub",
                &[entry(Uuid::new_v4())],
                0,
                Acks::NONE,
            )
            .await;
            eprintln!("x{{}}y accepted; submit acks 1: {s:?}; acks 0: {s0:?}");
        }
    }
}

/// A lagging replica (SIGSTOP), acks 1: a worker's submission lands on the primary (where the
/// voice platform reads it and dials) but is unheld, so PostgreSQL never records it
/// (`submitted = false`). Its cancel's settle fences first and finds it written: the control
/// entry must go at once, though no replica acknowledges (found: `settle_cancels` returned at
/// the unheld fence and wrote no entry while the replica lagged; in an outbox batch one
/// unknown submission held back the entries of handed-off ones). The debt stays owed.
#[tokio::test]
async fn attack_s27_a_lagging_replica_does_not_hold_back_cancels_of_sessions_on_the_primary() {
    let (p, r) = primary_with_replica().await;
    let env = TestEnv::new()
        .with("VOICE_REDIS_URL", &p.url())
        .with("VOICE_REDIS_REPLICA_ACKS", "1")
        // The default: at 100 ms a healthy replica under a full suite's load once acknowledged
        // too late for the first, held, submission (CI of 2026-12-06).
        .with("VOICE_REDIS_ACK_TIMEOUT_MS", "250");
    let cfg = cfg(&env);
    let v = &cfg.voice;
    let h = shared::redis::voice(&cfg).unwrap();
    let mut conn = h.conn().await.unwrap();
    let mut pc = p.conn().await;
    let (x, handed) = (Uuid::new_v4(), Uuid::new_v4());
    // `handed` was handed off and recorded while the replica kept up.
    let s = voice::submit(
        &mut conn,
        &v.stream,
        "sub",
        &[entry(handed)],
        0,
        Acks::of(v),
    )
    .await
    .unwrap();
    assert!(s.held);
    r.freeze();
    let s = voice::submit(&mut conn, &v.stream, "sub", &[entry(x)], 0, Acks::of(v))
        .await
        .unwrap();
    assert!(!s.held, "the replica lags");
    let on_primary: i64 = pc.xlen(&v.stream).await.unwrap();
    // The API's settle of x's cancel (not recorded as submitted).
    let owed_x = OwedCancel {
        id: x,
        attempt: 1,
        epoch: 0,
        submitted: false,
    };
    let owed_handed = OwedCancel {
        id: handed,
        attempt: 1,
        epoch: 0,
        submitted: true,
    };
    let single = voice::settle_cancels(&mut conn, v, &[owed_x]).await;
    let after_single: i64 = pc.xlen(&v.control_stream).await.unwrap();
    // The outbox's batch: both.
    let batch = voice::settle_cancels(&mut conn, v, &[owed_handed, owed_x]).await;
    let after_batch: i64 = pc.xlen(&v.control_stream).await.unwrap();
    // Alone, the handed-off one gets its entry (on the primary, unheld).
    let alone = voice::settle_cancels(&mut conn, v, &[owed_handed]).await;
    let after_alone: i64 = pc.xlen(&v.control_stream).await.unwrap();
    r.thaw();
    eprintln!(
        "voice stream on primary: {on_primary}; settle x: {single:?} -> control XLEN \
         {after_single}; batch: {batch:?} -> {after_batch}; handed alone: {alone:?} -> {after_alone}"
    );
    assert_eq!(
        after_batch, 2,
        "the platform holds both sessions but got {after_batch} cancels"
    );
}

/// Figures: (a) `VOICE_REDIS_ACK_TIMEOUT_MS=10` on a healthy local replica: how many writes
/// come back unheld; (b) with a lagging replica, a plain read (`was_submitted`, the events
/// API's check) on the same process handle while hand-offs and settles go on: `WAIT` blocks
/// its connection on the server, so acknowledged writes use a connection of their own and
/// the read must not wait behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s27_figures_short_timeout_and_reads_behind_wait() {
    let (p, r) = primary_with_replica().await;
    let env = TestEnv::new()
        .with("VOICE_REDIS_URL", &p.url())
        .with("VOICE_REDIS_REPLICA_ACKS", "1")
        .with("VOICE_REDIS_ACK_TIMEOUT_MS", "10");
    let cfg = cfg(&env);
    let h = shared::redis::voice(&cfg).unwrap();
    let mut conn = h.conn().await.unwrap();
    let stream = cfg.voice.stream.clone();
    let (mut held, mut unheld) = (0, 0);
    for _ in 0..200 {
        let s = voice::submit(
            &mut conn,
            &stream,
            "sub",
            &[entry(Uuid::new_v4())],
            0,
            Acks::of(&cfg.voice),
        )
        .await
        .unwrap();
        if s.held { held += 1 } else { unheld += 1 }
    }
    eprintln!("ack timeout 10 ms, healthy replica: held {held} unheld {unheld}");
    // (b) default ack timeout 250.
    let acks = Acks {
        replicas: 1,
        timeout_ms: 250,
    };
    r.freeze();
    let bg = {
        let (h, stream) = (h.clone(), stream.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut n = 0;
            while started.elapsed() < Duration::from_secs(4) {
                let f = (0..3).map(|_| {
                    let (h, stream) = (h.clone(), stream.clone());
                    async move {
                        let mut c = h.conn_apart().await.unwrap();
                        let _ = voice::submit(
                            &mut c,
                            &stream,
                            "sub",
                            &[entry(Uuid::new_v4())],
                            0,
                            acks,
                        )
                        .await;
                    }
                });
                futures::future::join_all(f).await;
                n += 3;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut reads = Vec::new();
    for _ in 0..5 {
        let mut c = h.conn().await.unwrap();
        let t = Instant::now();
        let o = voice::was_submitted(&mut c, &stream, Uuid::new_v4(), (1, 0)).await;
        reads.push((o.map_err(|e| e.to_string()), t.elapsed()));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let n = bg.await.unwrap();
    r.thaw();
    eprintln!("lagging replica, {n} writes in 4 s; reads on the same handle: {reads:?}");
    // Acknowledged writes go over their own connection (`voice::writer`): reads never queue
    // behind their `WAIT`s (before: 4 of 5 reads timed out at 500 ms).
    assert!(
        reads
            .iter()
            .all(|(o, t)| o.is_ok() && *t < Duration::from_millis(200)),
        "{reads:?}"
    );
}

/// Cluster: the stream's slot migrated to another primary (IMPORTING/MIGRATING, keys moved in
/// batches, SETSLOT NODE) while submissions go on. Every held submission is on the new owner,
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s27_cluster_slot_migration_during_submissions() {
    let (cluster, cfg, h) = acked_cluster(2_000, "100");
    let stream = cfg.voice.stream.clone();
    let acks = Acks::of(&cfg.voice);
    let src = cluster.node_of(&stream);
    let dst = (0..3).find(|i| *i != src).unwrap();
    let slot = cluster
        .cli(src, &["CLUSTER", "KEYSLOT", &stream])
        .trim()
        .to_string();
    let id_of = |i: usize| cluster.cli(i, &["CLUSTER", "MYID"]).trim().to_string();
    let (src_id, dst_id) = (id_of(src), id_of(dst));
    let writer = {
        let (h, stream) = (h.clone(), stream.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            let (mut unheld, mut errs, mut err_kinds) = (0, 0, std::collections::BTreeMap::new());
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                let id = Uuid::new_v4();
                let mut conn = h.conn().await.unwrap();
                match voice::submit(&mut conn, &stream, "sub", &[entry(id)], 0, acks).await {
                    Ok(s) if s.held => held.push(id),
                    Ok(_) => unheld += 1,
                    Err(e) => {
                        errs += 1;
                        *err_kinds.entry(format!("{:?}", e.kind())).or_insert(0) += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (held, unheld, errs, err_kinds)
        })
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cluster.cli(dst, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]);
    cluster.cli(src, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]);
    let dst_port = cluster.ports[dst].to_string();
    for _ in 0..6 {
        let keys = cluster.cli(src, &["CLUSTER", "GETKEYSINSLOT", &slot, "50"]);
        let keys: Vec<&str> = keys
            .lines()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        if !keys.is_empty() {
            let mut args = vec!["MIGRATE", "127.0.0.1", &dst_port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().copied());
            let out = cluster.cli(src, &args);
            eprintln!("migrated {} keys: {}", keys.len(), out.trim());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    loop {
        let keys = cluster.cli(src, &["CLUSTER", "GETKEYSINSLOT", &slot, "1000"]);
        let keys: Vec<&str> = keys
            .lines()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        if keys.is_empty() {
            break;
        }
        let mut args = vec!["MIGRATE", "127.0.0.1", &dst_port, "", "0", "5000", "KEYS"];
        args.extend(keys.iter().copied());
        cluster.cli(src, &args);
    }
    for i in [dst, src] {
        cluster.cli(i, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
    }
    for i in 0..3 {
        if i != src && i != dst {
            cluster.cli(i, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
        }
    }
    let (held, unheld, errs, kinds) = writer.await.unwrap();
    let xlen = cluster.cli(dst, &["XLEN", &stream]);
    let src_len = cluster.cli(src, &["XLEN", &stream]);
    let mut missing = 0;
    for id in &held {
        let key = voice::dedupe_key(&stream, "sub", *id, 1, 0);
        if cluster.cli(dst, &["GET", &key]).trim() != "1" {
            missing += 1;
        }
    }
    let dedupe = cluster.cli(
        dst,
        &[
            "EVAL",
            "return #redis.call('KEYS', ARGV[1])",
            "0",
            &format!("{{{stream}}}:sub:*"),
        ],
    );
    eprintln!(
        "held {} unheld {unheld} errors {errs} {kinds:?}; new owner XLEN {} dedupe keys {}; old owner XLEN {}; held missing {missing}",
        held.len(),
        xlen.trim(),
        dedupe.trim(),
        src_len.trim()
    );
    assert_eq!(missing, 0);
    assert_eq!(xlen.trim(), dedupe.trim(), "one entry per dedupe key");
}

/// End to end of the cancel regression: a lagging replica (SIGSTOP), acks 1. The worker's
/// hand-off lands on the primary (the voice platform reads it there) but is unheld, so it is
/// not recorded; the customer cancels (200). Its control entry reaches the primary while the
/// replica lags (found: none did until the replica caught up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s27_api_cancel_of_a_session_on_the_primary_reaches_the_control_stream() {
    let (p, r) = primary_with_replica().await;
    let env = TestEnv::new()
        .with("VOICE_REDIS_URL", &p.url())
        .with("VOICE_REDIS_REPLICA_ACKS", "1")
        .with("VOICE_REDIS_ACK_TIMEOUT_MS", "100");
    let fx = harness::Fixture::dispatch(env, "acme", "sales", serde_json::json!({})).await;
    let w = harness::WorkerProc::start(&fx.env, &[("WORKER_MAINTENANCE_S", "1".to_string())]).await;
    let mut pc = p.conn().await;
    let (stream, control) = (
        fx.env.vars["VOICE_STREAM"].clone(),
        fx.env.vars["CONTROL_STREAM"].clone(),
    );
    r.freeze();
    let id = fx.create().id().await;
    let started = Instant::now();
    while pc.xlen::<_, i64>(&stream).await.unwrap() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            w.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, answer) = fx.cancel(&id).await;
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    let on_primary: i64 = pc.xlen(&stream).await.unwrap();
    let cancels: i64 = pc.xlen(&control).await.unwrap();
    r.thaw();
    let started = Instant::now();
    while pc.xlen::<_, i64>(&control).await.unwrap() < 1
        && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_thaw = started.elapsed();
    eprintln!(
        "cancel {code} {answer}; voice stream on primary {on_primary}; control entries while \
         lagging (4 s) {cancels}; first control entry {after_thaw:?} after the thaw"
    );
    assert_eq!(code, 200);
    assert_eq!(
        cancels, 1,
        "the platform holds the session but got no cancel"
    );
}

/// Cancels racing hand-offs with acks 1 (healthy replica, paced dispatch): after the outbox
/// settled, every attempt written to the voice stream has a cancel entry, each once, and no
/// fenced attempt has a stream entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s27_cancels_racing_handoffs_with_acks() {
    const N: usize = 80;
    let (p, _r) = primary_with_replica().await;
    let env = TestEnv::new()
        .with("VOICE_REDIS_URL", &p.url())
        .with("VOICE_REDIS_REPLICA_ACKS", "1")
        .with("VOICE_REDIS_ACK_TIMEOUT_MS", "100");
    let fx = harness::Fixture::dispatch(
        env,
        "acme",
        "sales",
        serde_json::json!({"dispatch_rate_per_second": 10}),
    )
    .await;
    let ids = fx.engage.create_immediate(&fx.key, "sales", N, 0).await;
    let w = harness::WorkerProc::start(&fx.env, &[("WORKER_MAINTENANCE_S", "1".to_string())]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let codes: Vec<u16> =
        futures::future::join_all(ids.iter().map(|id| async { fx.cancel(id).await.0 })).await;
    let mut pc = p.conn().await;
    let (stream, control) = (
        fx.env.vars["VOICE_STREAM"].clone(),
        fx.env.vars["CONTROL_STREAM"].clone(),
    );
    let pg = fx.env.pg().await;
    let started = Instant::now();
    loop {
        let owed: i64 = pg
            .query_one("SELECT count(*) FROM callbacks WHERE control_pending", &[])
            .await
            .unwrap()
            .get(0);
        if owed == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "owed {owed}\n{}",
            w.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ids_in = |entries: Vec<(String, Vec<(String, String)>)>| -> Vec<String> {
        entries
            .into_iter()
            .filter_map(|(_, f)| {
                f.into_iter()
                    .find(|(k, _)| k == "callback_id")
                    .map(|(_, v)| v)
            })
            .collect()
    };
    let subs: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut pc)
        .await
        .unwrap();
    let ctls: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&control)
        .arg("-")
        .arg("+")
        .query_async(&mut pc)
        .await
        .unwrap();
    let (subs, ctls) = (ids_in(subs), ids_in(ctls));
    let mut uncancelled = Vec::new();
    let mut doubled = Vec::new();
    for id in &subs {
        if !ctls.contains(id) {
            uncancelled.push(id.clone());
        }
        if subs.iter().filter(|s| *s == id).count() > 1 {
            doubled.push(id.clone());
        }
    }
    let ctl_doubles = ctls
        .iter()
        .filter(|c| ctls.iter().filter(|d| d == c).count() > 1)
        .count();
    eprintln!(
        "cancels {:?}; stream entries {} control entries {} uncancelled {} doubled {} control doubles {ctl_doubles}",
        codes.iter().filter(|c| **c == 200).count(),
        subs.len(),
        ctls.len(),
        uncancelled.len(),
        doubled.len()
    );
    assert!(uncancelled.is_empty() && doubled.is_empty() && ctl_doubles == 0);
}
