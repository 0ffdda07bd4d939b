//! Issue 12's promises about the derived Redis state, each attacked: a committed callback whose
//! index write failed is still dispatched (Redis refusing writes); the loss of one cluster
//! node or of evicted keys is noticed and repaired; queue views lose their strays; retention
//! deletes only finished callbacks.

use std::time::{Duration, Instant};

use harness::{Engage, Fixture, PrivateCluster, PrivateRedis, TestEnv, WorkerProc, open_service};
use serde_json::json;

/// [`Fixture::dispatch`] with the default open settings: (workers' env, server, key).
async fn open(env: TestEnv, tenant: &str, service: &str) -> (TestEnv, Engage, String) {
    Fixture::dispatch(env, tenant, service, json!({}))
        .await
        .parts()
}

/// Members of a service's queue view.
async fn view(
    conn: &mut redis::aio::MultiplexedConnection,
    env: &TestEnv,
    svc: &str,
    tenant: &str,
) -> Vec<String> {
    // The waiting region (docs/derived-state.md#queue-views).
    redis::cmd("ZRANGEBYSCORE")
        .arg(format!("{{{}:q:{tenant}:{svc}}}", env.id))
        .arg("-inf")
        .arg(format!("({}", shared::redis::queue::DONE_BASE))
        .query_async(conn)
        .await
        .expect("zrangebyscore")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_committed_callbacks_are_dispatched_when_redis_refused_the_index_write() {
    let redis = PrivateRedis::new(false);
    let (env, engage, key) = open(
        TestEnv::new().with("REDIS_URL", &redis.url()),
        "tr1",
        "refuse",
    )
    .await;
    let sweep = [
        ("WORKER_SWEEP_S", "2".to_string()),
        ("WORKER_SWEEP_GRACE_S", "2".to_string()),
    ];
    let w = WorkerProc::start(&env, &sweep).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Redis refuses every write: the creates commit, their index writes fail.
    let mut conn = redis.conn().await;
    harness::config_set(&mut conn, "maxmemory-policy", "noeviction").await;
    harness::config_set(&mut conn, "maxmemory", "1").await;
    let ids = engage.create_immediate(&key, "refuse", 30, 0).await;
    let due = Instant::now();
    let failed = engage.metric_sum("engage_redis_write_failed_total").await;
    assert!(
        failed >= 1.0,
        "the index writes did not fail (test is void)"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    harness::config_set(&mut conn, "maxmemory", "0").await;

    // Nothing tells the worker: no flush, no restart, the marker is still there.
    let n = env.wait_submitted(30, Duration::from_secs(60)).await;
    println!(
        "FIGURE refused_index_writes_dispatched_after_ms={}",
        due.elapsed().as_millis()
    );
    assert_eq!(n, 30, "worker log:\n{}", w.proc.output());
    assert!(due.elapsed() < Duration::from_secs(60));
    let (total, distinct, _) = env.census().await;
    assert_eq!(
        (total, distinct),
        (ids.len(), ids.len()),
        "each exactly once"
    );
    assert!(w.metric("engage_index_repaired_total").await >= 30.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_a_cluster_node_restarted_empty_is_noticed_and_repaired() {
    let mut cluster = PrivateCluster::new();
    let (env, engage, key) = open(
        TestEnv::new()
            .with("REDIS_URL", &cluster.urls())
            .with("REDIS_CLUSTER", "true"),
        "tr2",
        "node",
    )
    .await;
    let w = WorkerProc::start(&env, &[("WORKER_RECONCILE_CHECK_S", "3".to_string())]).await;

    // Scheduled callbacks 40 s ahead: only the reconciler can bring them back in time.
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(40);
    for i in 0..40 {
        let (code, body) = engage
            .create(&key)
            .service("node")
            .phone(&format!("+1555300{i:04}"))
            .field("desiredTime", json!(harness::wire(at)))
            .send()
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let sched = |s: u16| format!("{{{}:sched:{s}}}", env.id);
    let indexed = |c: &PrivateCluster| -> u64 {
        (0..4)
            .map(|s| {
                let node = c.node_of(&sched(s));
                c.cli(node, &["ZCARD", &sched(s)])
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0)
            })
            .sum()
    };
    assert_eq!(indexed(&cluster), 40);
    // A node holding a shard but not the marker key (when the layout allows): the marker
    // alone would not notice.
    let marker = cluster.node_of(&format!("{}:marker", env.id));
    let shard_nodes: Vec<usize> = (0..4).map(|s| cluster.node_of(&sched(s))).collect();
    let victim = *shard_nodes
        .iter()
        .find(|n| **n != marker)
        .unwrap_or(&shard_nodes[0]);
    let held: u64 = (0..4)
        .filter(|s| shard_nodes[usize::from(*s)] == victim)
        .map(|s| {
            cluster
                .cli(victim, &["ZCARD", &sched(s)])
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum();
    println!("FIGURE cluster_node_restart_lost_entries={held}");
    assert!(held > 0, "the node to restart holds nothing (test is void)");
    let rebuilds = w.metric("engage_reconcile_rebuilds_total").await;
    cluster.restart_empty(victim);

    // Repaired by a rebuild the loss itself caused (the count of rebuilds grows), before
    // any of these callbacks falls due.
    let restarted = Instant::now();
    while indexed(&cluster) < 40 || w.metric("engage_reconcile_rebuilds_total").await <= rebuilds {
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "index not repaired; worker log:\n{}",
            w.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "FIGURE cluster_node_restart_repaired_ms={}",
        restarted.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_evicted_shard_keys_are_noticed_and_repaired() {
    let redis = PrivateRedis::new(false);
    let (env, engage, key) = open(
        TestEnv::new().with("REDIS_URL", &redis.url()),
        "tr3",
        "evict",
    )
    .await;
    let w = WorkerProc::start(&env, &[("WORKER_RECONCILE_CHECK_S", "3".to_string())]).await;
    // Within the schedule horizon (600 s by default): indexed at create.
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(400);
    for i in 0..20 {
        let (code, body) = engage
            .create(&key)
            .service("evict")
            .phone(&format!("+1555400{i:04}"))
            .field("desiredTime", json!(harness::wire(at)))
            .send()
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let mut conn = redis.conn().await;
    let shard_keys: Vec<String> = (0..4)
        .map(|s| format!("{{{}:sched:{s}}}", env.id))
        .collect();
    let zcard = |conn: &mut redis::aio::MultiplexedConnection| {
        let keys = shard_keys.clone();
        let mut conn = conn.clone();
        async move {
            let mut n = 0u64;
            for k in keys {
                n += redis::cmd("ZCARD")
                    .arg(k)
                    .query_async::<u64>(&mut conn)
                    .await
                    .unwrap_or(0);
            }
            n
        }
    };
    assert_eq!(zcard(&mut conn).await, 20);
    // An `allkeys-random` policy under memory pressure drops keys, ours among them.
    harness::config_set(&mut conn, "maxmemory-policy", "allkeys-random").await;
    let started = Instant::now();
    let mut filler = 0u64;
    while zcard(&mut conn).await == 20 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no shard key was evicted"
        );
        let used: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .expect("info");
        let used: u64 = used
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        harness::config_set(&mut conn, "maxmemory", &(used + 64 * 1024).to_string()).await;
        for _ in 0..200 {
            filler += 1;
            let _ = redis::cmd("SET")
                .arg(format!("filler:{filler}"))
                .arg(vec![b'x'; 1024])
                .query_async::<()>(&mut conn)
                .await;
        }
    }
    harness::config_set(&mut conn, "maxmemory", "0").await;
    harness::config_set(&mut conn, "maxmemory-policy", "noeviction").await;
    let evicted = Instant::now();
    while zcard(&mut conn).await < 20 {
        assert!(
            evicted.elapsed() < Duration::from_secs(30),
            "evicted entries not repaired; worker log:\n{}",
            w.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "FIGURE eviction_repaired_ms={}",
        evicted.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_queue_views_converge_to_the_waiting_callbacks() {
    let (env, engage, key) = open(TestEnv::new(), "tr4", "views").await;
    let sweep = [("WORKER_SWEEP_S", "2".to_string())];
    let mut w = WorkerProc::start(&env, &sweep).await;
    let ids = engage.create_immediate(&key, "views", 5, 0).await;
    assert_eq!(env.wait_submitted(5, Duration::from_secs(10)).await, 5);
    let mut conn = redis::Client::open(env.vars["REDIS_URL"].as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    assert_eq!(view(&mut conn, &env, "views", "tr4").await.len(), 5);

    // Two complete; one of them comes back into the view as if the worker's enqueue had raced
    // the voice platform's COMPLETED (or the dequeue had failed).
    for id in &ids[..2] {
        let (code, body) = engage
            .event(
                id,
                json!({"state": "COMPLETED", "reason": "AGENT_CONNECTED", "attempt": 1}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let view_key = format!("{{{}:q:tr4:views}}", env.id);
    redis::cmd("ZADD")
        .arg(&view_key)
        .arg(1)
        .arg(&ids[0])
        .query_async::<()>(&mut conn)
        .await
        .expect("zadd");
    let started = Instant::now();
    while view(&mut conn, &env, "views", "tr4").await.len() != 3 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "stray kept; log:\n{}",
            w.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "FIGURE queue_view_stray_removed_ms={}",
        started.elapsed().as_millis()
    );
    // The three waiting ones hold positions 1, 2, 3: the stray counts for nobody.
    let mut positions = Vec::new();
    for id in &ids[2..] {
        let (code, body) = engage
            .post(&key, "/engagement/v3/callbacks/retrieve", json!({"id": id}))
            .await;
        assert_eq!(code, 200, "{body}");
        positions.push(body["data"]["positionInQueue"].as_i64().unwrap_or(-1));
    }
    positions.sort_unstable();
    assert_eq!(positions, [1, 2, 3]);

    // A rebuild (worker start) removes strays too, also ones that are not callback ids.
    w.proc.kill();
    redis::cmd("ZADD")
        .arg(&view_key)
        .arg(0)
        .arg(&ids[1])
        .arg(0)
        .arg("junk")
        .query_async::<()>(&mut conn)
        .await
        .expect("zadd");
    let w = WorkerProc::start(&env, &sweep).await;
    let started = Instant::now();
    loop {
        let mut members = view(&mut conn, &env, "views", "tr4").await;
        members.sort();
        let mut want = ids[2..].to_vec();
        want.sort();
        if members == want {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "rebuild kept strays {members:?}; log:\n{}",
            w.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_retention_deletes_only_finished_callbacks() {
    let (env, engage, key) = open(TestEnv::new(), "tr5", "keep").await;
    let w = WorkerProc::start(&env, &[]).await;
    let ids = engage.create_immediate(&key, "keep", 3, 0).await;
    assert_eq!(env.wait_submitted(3, Duration::from_secs(10)).await, 3);
    w.proc.terminate();
    let (code, _) = engage
        .event(
            &ids[0],
            json!({"state": "COMPLETED", "reason": "AGENT_CONNECTED", "attempt": 1}),
        )
        .await;
    assert_eq!(code, 200);
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    let (code, body) = engage
        .create(&key)
        .service("keep")
        .phone("+15554000100")
        .field("desiredTime", json!(harness::wire(at)))
        .send()
        .await;
    assert_eq!(code, 200, "{body}");
    let scheduled = body["data"]["id"].as_str().unwrap().to_string();

    // All four lie past a 1-day window; one finished, two QUEUED with the voice platform
    // (ttl far away), one SCHEDULED (a later retry, say).
    let pg = env.pg().await;
    pg.execute(
        "UPDATE callbacks SET desired_time = now() - interval '3 days'",
        &[],
    )
    .await
    .unwrap();
    let w = WorkerProc::start(
        &env,
        &[
            ("WORKER_RETENTION_DAYS", "1".to_string()),
            ("WORKER_RETENTION_INTERVAL_S", "1".to_string()),
            ("WORKER_MAINTENANCE_S", "1".to_string()),
        ],
    )
    .await;
    let started = Instant::now();
    loop {
        let left = env.count("SELECT count(*) FROM callbacks").await;
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not purged: {}",
            w.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The three unfinished ones were ended first (FAIL_TIMEOUT_TTL, a cancel to the voice
    // platform); the finished one was simply deleted.
    assert_eq!(w.metric("engage_callbacks_expired_total").await, 3.0);
    let mut voice = redis::Client::open(env.vars["VOICE_REDIS_URL"].as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let control = harness::stream_entries(&mut voice, &env.vars["CONTROL_STREAM"]).await;
    let cancelled: std::collections::BTreeSet<String> = control
        .iter()
        .filter_map(|(_, f)| f.get("callback_id").cloned())
        .collect();
    for id in [&ids[1], &ids[2]] {
        assert!(
            cancelled.contains(id),
            "no control entry for the queued {id}"
        );
    }
    // Never handed off: its hand-off is fenced instead, so no worker can dial it later.
    let fence: Option<String> = redis::cmd("GET")
        .arg(format!("{{{}}}:sub:{scheduled}:1", env.voice_stream()))
        .query_async(&mut voice)
        .await
        .unwrap();
    assert_eq!(fence.as_deref(), Some("cancelled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_a_redis_user_without_info_still_rebuilds_through_the_marker() {
    let redis = PrivateRedis::new(false);
    let mut admin = redis.conn().await;
    redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "engage",
                "on",
                ">pw-0123456789",
                "~*",
                "&*",
                "+@all",
                "-@dangerous",
            ][..],
        )
        .query_async::<()>(&mut admin)
        .await
        .expect("acl");
    let url = format!("redis://engage:pw-0123456789@127.0.0.1:{}", redis.port);
    let (env, engage, key) = open(TestEnv::new().with("REDIS_URL", &url), "tr6", "acl").await;
    let w = WorkerProc::start(&env, &[("WORKER_RECONCILE_CHECK_S", "2".to_string())]).await;
    // Within the schedule horizon (600 s by default): indexed at create and by the rebuild.
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(400);
    for i in 0..10 {
        let (code, body) = engage
            .create(&key)
            .service("acl")
            .phone(&format!("+1555500{i:04}"))
            .field("desiredTime", json!(harness::wire(at)))
            .send()
            .await;
        assert_eq!(code, 200, "{body}");
    }
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut admin)
        .await
        .expect("flushall");
    let flushed = Instant::now();
    loop {
        let mut n = 0u64;
        for s in 0..4 {
            n += redis::cmd("ZCARD")
                .arg(format!("{{{}:sched:{s}}}", env.id))
                .query_async::<u64>(&mut admin)
                .await
                .unwrap_or(0);
        }
        if n == 10 {
            break;
        }
        assert!(
            flushed.elapsed() < Duration::from_secs(20),
            "not rebuilt without INFO; log:\n{}",
            w.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = w.proc.output();
    assert_eq!(log.matches("refuses INFO").count(), 1, "{log}");
}

#[tokio::test]
async fn trust_nul_characters_are_a_400_never_a_500() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let key = engage
        .provision("tr7", "svc", open_service(json!({})))
        .await;
    let create = "/engagement/v3/callbacks/create";
    for body in [
        json!({"serviceName": "svc", "phoneNumber": "+15551230000", "userData": {"a": "x\u{0}y"}}),
        json!({"serviceName": "svc", "phoneNumber": "+15551230001", "userData": {"a": ["\u{0}"]}}),
        json!({"serviceName": "svc", "phoneNumber": "+15551230002", "userData": {"b": {"k\u{0}": 1}}}),
    ] {
        let (code, answer) = engage.post(&key, create, body).await;
        assert_eq!(code, 400, "{answer}");
        assert!(answer.to_string().contains("NUL"), "{answer}");
    }
    for path in [
        "/engagement/v3/callbacks/queue-status/a%00b",
        "/engagement/v3/callbacks/open-for/a%00b",
        "/engagement/v3/callbacks/availability/a%00b",
    ] {
        let (code, answer) = engage.get(&key, path).await;
        assert!((400..500).contains(&code), "{path}: {code} {answer}");
    }
    let (code, answer) = engage.admin_get("/ges/v1/tenants/a%00b").await;
    assert!((400..500).contains(&code), "{code} {answer}");
    let (code, answer) = engage
        .admin_put(
            "/ges/v1/tenants/tr7/services/svc2",
            json!({"custom_note": "a\u{0}b"}),
        )
        .await;
    assert!((400..500).contains(&code), "{code} {answer}");
}
