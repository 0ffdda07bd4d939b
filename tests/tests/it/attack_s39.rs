//! Attacks on the queue view's two score regions (commit 5357802,
//! docs/derived-state.md#queue-views): waiting callbacks below `DONE_BASE`, recent dequeues
//! from `DONE_BASE` + the dequeue time. Guards; the tests that were findings say so, with
//! their reproduction and the fix.

use std::time::{Duration, Instant};

use harness::{Engage, PrivateRedis, TestEnv, open_service};
use serde_json::{Value, json};
use shared::redis::{Keys, queue};
use uuid::Uuid;

const TENANT: &str = "s39";

fn view(env: &TestEnv, service: &str) -> String {
    Keys::new(&env.id, 1).queue(TENANT, service)
}

/// (waiting, dequeued) member counts of a view (also queue_regions.rs's).
pub(crate) async fn regions(conn: &mut impl redis::aio::ConnectionLike, view: &str) -> (i64, i64) {
    redis::pipe()
        .cmd("ZCOUNT")
        .arg(view)
        .arg("-inf")
        .arg(format!("({}", queue::DONE_BASE))
        .cmd("ZCOUNT")
        .arg(view)
        .arg(queue::DONE_BASE)
        .arg("+inf")
        .query_async(conn)
        .await
        .expect("zcount")
}

/// The dequeued region, newest first: (member, dequeue time ms).
async fn dequeues(conn: &mut impl redis::aio::ConnectionLike, view: &str) -> Vec<(String, i64)> {
    let done: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
        .arg(view)
        .arg("+inf")
        .arg(queue::DONE_BASE)
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .expect("zrevrangebyscore");
    done.into_iter()
        .map(|(m, s)| (m, s as i64 - queue::DONE_BASE))
        .collect()
}

/// What the estimate should be for `ahead` callbacks from the newest `HISTORY` dequeues.
fn expected_wait(history: &[(String, i64)], ahead: i64) -> Option<i64> {
    let times: Vec<i64> = history
        .iter()
        .take(queue::HISTORY as usize)
        .map(|(_, t)| *t)
        .collect();
    queue::mean_interval_ms(&times).map(|ms| queue::wait_secs(ahead, ms))
}

async fn wait_regions(
    conn: &mut impl redis::aio::ConnectionLike,
    view: &str,
    want: (i64, i64),
    secs: u64,
) {
    let started = Instant::now();
    loop {
        let got = regions(conn, view).await;
        if got == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "regions {got:?}, want {want:?} within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_waiting(conn: &mut impl redis::aio::ConnectionLike, view: &str, n: i64, secs: u64) {
    let started = Instant::now();
    while regions(conn, view).await.0 < n {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "fewer than {n} waiting within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends an event; asserts 200 and whether it was applied.
async fn event(engage: &Engage, id: &str, body: Value, applied: bool) -> Value {
    let (code, resp) = engage.event(id, body).await;
    assert_eq!(code, 200, "{resp}");
    assert_eq!(resp["data"]["applied"], applied, "{resp}");
    resp
}

fn served() -> Value {
    json!({"state": "COMPLETED", "reason": "AGENT_CONNECTED"})
}

async fn ewt(engage: &Engage, key: &str, service: &str, mode: &str) -> Value {
    let (code, body) = engage
        .get(
            key,
            &format!("/engagement/v3/estimated-wait-time?virtual-queues={service}&mode={mode}"),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    body["data"][0].clone()
}

async fn queue_status_ewt(engage: &Engage, key: &str, service: &str) -> i64 {
    let (code, body) = engage
        .get(
            key,
            &format!("/engagement/v3/callbacks/queue-status/{service}"),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    body["data"]["ewt"].as_i64().expect("ewt")
}

static PHONE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(9_000_000);

fn phone() -> String {
    let n = PHONE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("+1555{n:07}")
}

async fn create(engage: &Engage, key: &str, service: &str) -> String {
    engage
        .create(key)
        .service(service)
        .phone(&phone())
        .id()
        .await
}

async fn create_with_priority(engage: &Engage, key: &str, service: &str, p: i64) -> String {
    engage
        .create(key)
        .service(service)
        .phone(&phone())
        .field("priority", json!(p))
        .id()
        .await
}

fn trims(id: &str) -> bool {
    Uuid::parse_str(id)
        .expect("uuid")
        .as_u128()
        .is_multiple_of(queue::HISTORY as u128)
}

/// Extreme priorities (i32 limits and ±2000: the lowest waiting score sits right under
/// `DONE_BASE`), on a plain service (`ZRANK` filtered by the waiting `ZCOUNT`) and an
/// escalating one (the position script): duplicated and out-of-order events (a served
/// COMPLETED before PROCESSING, PROCESSING twice, ROUTING and QUEUED after PROCESSING) move
/// each member once; positions, the retrieve estimates, GET /estimated-wait-time and
/// queue-status all read their own region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s39_extreme_priorities_and_disordered_events_keep_both_regions_exact() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(TENANT, "plain", open_service(json!({})))
        .await;
    engage
        .service(
            TENANT,
            "esc",
            open_service(json!({
                "priority_increment": 1,
                "priority_interval_seconds": 3600,
                "priority_limit": 0
            })),
        )
        .await;
    let mut conn = env.redis().await;
    for service in ["plain", "esc"] {
        let v = view(&env, service);
        // Created one after the other: ties of clamped priorities order by time.
        let mut ids = Vec::new();
        for p in [i64::from(i32::MAX), 2000, 0, -2000, i64::from(i32::MIN)] {
            ids.push(create_with_priority(&engage, &key, service, p).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        wait_waiting(&mut conn, &v, 5, 15).await;
        for (n, id) in ids.iter().enumerate() {
            let cb = engage.retrieve(&key, id).await;
            assert_eq!(cb["positionInQueue"], n + 1, "{service} {n}: {cb}");
        }
        let [a, b, e, c, d] = ids.as_slice() else {
            unreachable!()
        };
        // b served straight from QUEUED, then its late PROCESSING and a duplicate.
        event(&engage, b, served(), true).await;
        event(&engage, b, json!({"state": "PROCESSING"}), false).await;
        event(&engage, b, served(), false).await;
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        // a: PROCESSING twice, then steps behind it.
        event(&engage, a, json!({"state": "PROCESSING"}), true).await;
        event(&engage, a, json!({"state": "PROCESSING"}), false).await;
        event(&engage, a, json!({"state": "ROUTING"}), false).await;
        event(&engage, a, json!({"state": "QUEUED"}), false).await;
        assert_eq!(regions(&mut conn, &v).await, (3, 2), "{service}");
        let history = dequeues(&mut conn, &v).await;
        assert_eq!(
            history.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
            [a.as_str(), b.as_str()],
            "{service}"
        );
        for (n, id) in [e, c, d].into_iter().enumerate() {
            let cb = engage.retrieve(&key, id).await;
            assert_eq!(cb["positionInQueue"], n + 1, "{service}: {cb}");
            assert_eq!(
                cb["estimatedWaitTime"].as_i64(),
                expected_wait(&history, n as i64),
                "{service}: {cb}"
            );
        }
        let cb = engage.retrieve(&key, a).await;
        assert_eq!(
            (&cb["positionInQueue"], &cb["estimatedWaitTime"]),
            (&json!(0), &json!(0))
        );
        let cb = engage.retrieve(&key, b).await;
        assert!(cb.get("positionInQueue").is_none(), "{cb}");
        let want = expected_wait(&history, 3).expect("two dequeues");
        assert!(want >= 3, "1.1 s apart × 3 waiting: {want}");
        for mode in ["mode1", "mode2"] {
            let item = ewt(&engage, &key, service, mode).await;
            assert_eq!(item["estimatedWaitTime"], want, "{service} {mode}: {item}");
        }
        assert_eq!(queue_status_ewt(&engage, &key, service).await, want);
    }
}

/// Priority escalation at work next to the dequeued region: a callback at the lowest priority
/// (-2000, the waiting level right under `DONE_BASE`) that waited two escalation steps
/// overtakes a newer priority-0 one; the position script counts by level up to
/// `DONE_BASE` − 1 and never the dequeued members, whose times it returns for the estimate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s39_escalation_at_the_lowest_level_counts_no_dequeued_member() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(
            TENANT,
            "esc",
            open_service(json!({
                "priority_increment": 1500,
                "priority_interval_seconds": 1,
                "priority_limit": 0
            })),
        )
        .await;
    let mut conn = env.redis().await;
    let v = view(&env, "esc");
    let d1 = create_with_priority(&engage, &key, "esc", 0).await;
    let d2 = create_with_priority(&engage, &key, "esc", 0).await;
    let low = create_with_priority(&engage, &key, "esc", i64::from(i32::MIN)).await;
    wait_waiting(&mut conn, &v, 3, 15).await;
    event(&engage, &d1, json!({"state": "PROCESSING"}), true).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    event(&engage, &d2, served(), true).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let newer = create_with_priority(&engage, &key, "esc", 0).await;
    wait_waiting(&mut conn, &v, 2, 15).await;
    assert_eq!(regions(&mut conn, &v).await, (2, 2));
    let history = dequeues(&mut conn, &v).await;
    let cb = engage.retrieve(&key, &low).await;
    assert_eq!(cb["positionInQueue"], 1, "escalated past -2000: {cb}");
    assert_eq!(cb["estimatedWaitTime"].as_i64(), expected_wait(&history, 0));
    let cb = engage.retrieve(&key, &newer).await;
    assert_eq!(cb["positionInQueue"], 2, "{cb}");
    assert_eq!(cb["estimatedWaitTime"].as_i64(), expected_wait(&history, 1));
    for id in [&d1, &d2] {
        let cb = engage.retrieve(&key, id).await;
        assert_ne!(cb["positionInQueue"], json!(2), "{cb}");
    }
}

/// A served callback whose call fails is retried (max_attempts 2, retry_delay_seconds 0): its
/// dequeue goes, it waits again; its second attempt is served; a cancel of the PROCESSING
/// callback is refused and leaves its dequeue; a late copy of the first attempt's failure and
/// a cancel of another waiting callback take nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s39_retry_then_cancels_move_only_their_own_member() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(
            TENANT,
            "svc",
            open_service(json!({"max_attempts": 2, "retry_delay_seconds": 0})),
        )
        .await;
    let mut conn = env.redis().await;
    let v = view(&env, "svc");
    let x = create(&engage, &key, "svc").await;
    let y = create(&engage, &key, "svc").await;
    let z = create(&engage, &key, "svc").await;
    wait_waiting(&mut conn, &v, 3, 15).await;
    event(&engage, &z, served(), true).await;
    event(
        &engage,
        &x,
        json!({"state": "PROCESSING", "attempt": 1}),
        true,
    )
    .await;
    assert_eq!(regions(&mut conn, &v).await, (1, 2));
    let fail = json!({"state": "COMPLETED", "reason": "FAIL_CALL_TO_CUSTOMER", "attempt": 1});
    let resp = event(&engage, &x, fail.clone(), true).await;
    assert_eq!(resp["data"]["attempt"], 2, "{resp}");
    wait_regions(&mut conn, &v, (2, 1), 15).await;
    // The late copy of attempt 1's failure changes nothing.
    event(&engage, &x, fail, false).await;
    assert_eq!(regions(&mut conn, &v).await, (2, 1));
    event(
        &engage,
        &x,
        json!({"state": "PROCESSING", "attempt": 2}),
        true,
    )
    .await;
    assert_eq!(regions(&mut conn, &v).await, (1, 2));
    let (code, body) = engage.cancel(&key, &x).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(regions(&mut conn, &v).await, (1, 2));
    let cb = engage.retrieve(&key, &y).await;
    assert_eq!(cb["positionInQueue"], 1, "{cb}");
    let (code, body) = engage.cancel(&key, &y).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(regions(&mut conn, &v).await, (0, 2));
    let members: Vec<String> = dequeues(&mut conn, &v)
        .await
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(members, [x.clone(), z.clone()]);
    // Nothing waits: 0, whatever the interval.
    let item = ewt(&engage, &key, "svc", "mode1").await;
    assert_eq!(item["estimatedWaitTime"], 0, "{item}");
}

/// FLUSHALL under a running worker: the rebuild restores the waiting region from PostgreSQL
/// (positions return) and puts nothing into the dequeued one (estimates unknown until two new
/// dequeues), and the next served dequeues record again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s39_flushall_rebuild_restores_only_the_waiting_region() {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("WORKER_SWEEP_S", "1")
        .with("WORKER_RECONCILE_CHECK_S", "1");
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(TENANT, "svc", open_service(json!({})))
        .await;
    let mut conn = redis.conn().await;
    let v = view(&env, "svc");
    let ids = engage.create_immediate(&key, "svc", 5, 0).await;
    wait_waiting(&mut conn, &v, 5, 15).await;
    event(&engage, &ids[0], json!({"state": "PROCESSING"}), true).await;
    event(&engage, &ids[1], served(), true).await;
    assert_eq!(regions(&mut conn, &v).await, (3, 2));
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .expect("flushall");
    wait_regions(&mut conn, &v, (3, 0), 20).await;
    let mut positions: Vec<i64> = Vec::new();
    for id in &ids[2..] {
        let cb = engage.retrieve(&key, id).await;
        positions.push(cb["positionInQueue"].as_i64().expect("position"));
        assert!(cb.get("estimatedWaitTime").is_none(), "{cb}");
    }
    positions.sort_unstable();
    assert_eq!(positions, [1, 2, 3]);
    let item = ewt(&engage, &key, "svc", "mode1").await;
    assert_eq!(item["estimatedWaitTime"], -1, "{item}");
    event(&engage, &ids[2], json!({"state": "PROCESSING"}), true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    event(&engage, &ids[3], json!({"state": "PROCESSING"}), true).await;
    assert_eq!(regions(&mut conn, &v).await, (1, 2));
    let history = dequeues(&mut conn, &v).await;
    let item = ewt(&engage, &key, "svc", "mode1").await;
    assert_eq!(
        item["estimatedWaitTime"].as_i64(),
        expected_wait(&history, 1)
    );
}

/// On the shared Redis Cluster: served dequeues, the trim script (run by the dequeue of a
/// callback whose id picks it, after more than `HISTORY` dequeues), positions and estimates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s39_cluster_trim_positions_and_estimates() {
    let env = TestEnv::new()
        .with("REDIS_URL", harness::cluster())
        .with("REDIS_CLUSTER", "true")
        .with("REDIS_SCHEDULE_SHARDS", "4");
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(TENANT, "svc", open_service(json!({})))
        .await;
    let client =
        redis::cluster::ClusterClient::new(harness::cluster().split(',').collect::<Vec<_>>())
            .expect("cluster client");
    let mut conn = client.get_async_connection().await.expect("cluster conn");
    let v = view(&env, "svc");
    let mut ids = engage.create_immediate(&key, "svc", 44, 0).await;
    let mut offset = 44;
    while !ids.iter().any(|id| trims(id)) {
        ids.extend(engage.create_immediate(&key, "svc", 16, offset).await);
        offset += 16;
    }
    wait_waiting(&mut conn, &v, ids.len() as i64, 30).await;
    let trimmer = ids.iter().find(|id| trims(id)).expect("trimmer").clone();
    let others: Vec<String> = ids.iter().filter(|id| !trims(id)).cloned().collect();
    // 36 dequeues that do not trim, then the one that does.
    for id in &others[..36] {
        event(&engage, id, json!({"state": "PROCESSING"}), true).await;
    }
    let waiting = ids.len() as i64 - 36;
    assert_eq!(regions(&mut conn, &v).await, (waiting, 36));
    event(&engage, &trimmer, served(), true).await;
    assert_eq!(regions(&mut conn, &v).await, (waiting - 1, 32));
    let history = dequeues(&mut conn, &v).await;
    assert_eq!(history[0].0, trimmer);
    let mut positions = Vec::new();
    for id in &ids {
        if id == &trimmer || others[..36].contains(id) {
            continue;
        }
        let cb = engage.retrieve(&key, id).await;
        let p = cb["positionInQueue"].as_i64().expect("position");
        assert_eq!(
            cb["estimatedWaitTime"].as_i64(),
            expected_wait(&history, p - 1),
            "{cb}"
        );
        positions.push(p);
    }
    positions.sort_unstable();
    assert_eq!(positions, (1..waiting).collect::<Vec<_>>());
    let item = ewt(&engage, &key, "svc", "mode1").await;
    assert_eq!(
        item["estimatedWaitTime"].as_i64(),
        expected_wait(&history, waiting - 1),
        "{item}"
    );
}

/// The service Redis spoken in RESP3 (`?protocol=resp3`): scores come back as doubles and
/// `WITHSCORES` replies as pairs; positions, retrieve estimates and GET
/// /estimated-wait-time read them as in RESP2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s39_resp3_replies_read_the_same() {
    let url = format!("{}?protocol=resp3", harness::deps().redis_url);
    let env = TestEnv::new().with("REDIS_URL", &url);
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(TENANT, "svc", open_service(json!({})))
        .await;
    engage
        .service(
            TENANT,
            "esc",
            open_service(json!({"priority_increment": 1, "priority_interval_seconds": 3600})),
        )
        .await;
    let mut conn = env.redis().await;
    for service in ["svc", "esc"] {
        let v = view(&env, service);
        let mut ids = Vec::new();
        for p in [5, 0, -2000, -2000] {
            ids.push(create_with_priority(&engage, &key, service, p).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        wait_waiting(&mut conn, &v, 4, 15).await;
        event(&engage, &ids[0], json!({"state": "PROCESSING"}), true).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        event(&engage, &ids[1], served(), true).await;
        let history = dequeues(&mut conn, &v).await;
        for (n, id) in ids[2..].iter().enumerate() {
            let cb = engage.retrieve(&key, id).await;
            assert_eq!(cb["positionInQueue"], n + 1, "{service}: {cb}");
            assert_eq!(
                cb["estimatedWaitTime"].as_i64(),
                expected_wait(&history, n as i64),
                "{service}: {cb}"
            );
        }
        let item = ewt(&engage, &key, service, "mode2").await;
        assert_eq!(
            item["estimatedWaitTime"].as_i64(),
            expected_wait(&history, 2),
            "{service}: {item}"
        );
    } // The server's own connections speak RESP3 (besides this test's).
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .expect("client list");
    let resp3 = clients.lines().filter(|l| l.contains("resp=3")).count();
    assert!(resp3 >= 2, "{clients}");
}

/// Redis refusing writes (maxmemory reached, `noeviction`): a served dequeue is now one
/// `ZADD`, a command Redis refuses under OOM (`denyoom`), so the PROCESSING callback stays in
/// the waiting region and every callback behind it reads a position one too far back (and
/// the estimates one callback too many) until the sweep's view check removes it as a stray
/// (a `ZREM`, which Redis allows under OOM). Before 5357802 the dequeue was `ZREM` + `LPUSH`:
/// the `ZREM` went through and only the history entry was lost. Fixed: a refused `ZADD`
/// falls back to the `ZREM` (docs/derived-state.md#queue-views). Guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s39_served_dequeue_refused_by_a_full_redis_leaves_it_waiting() {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new().with("REDIS_URL", &redis.url());
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(TENANT, "svc", open_service(json!({})))
        .await;
    let mut conn = redis.conn().await;
    let v = view(&env, "svc");
    let a = create(&engage, &key, "svc").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = create(&engage, &key, "svc").await;
    wait_waiting(&mut conn, &v, 2, 15).await;
    assert_eq!(engage.retrieve(&key, &b).await["positionInQueue"], 2);
    harness::config_set(&mut conn, "maxmemory-policy", "noeviction").await;
    harness::config_set(&mut conn, "maxmemory", "1").await;
    event(&engage, &a, json!({"state": "PROCESSING"}), true).await;
    let cb = engage.retrieve(&key, &b).await;
    let still = regions(&mut conn, &v).await;
    harness::config_set(&mut conn, "maxmemory", "0").await;
    assert_eq!(
        cb["positionInQueue"], 1,
        "a is PROCESSING, b is first in line; view regions {still:?}: {cb}"
    );
}

/// The same refusal with a 1 s sweep: the view check removes the stray (`ZREM` is allowed
/// under OOM), so the position converges within a sweep or two, while Redis still refuses
/// writes. (The dequeue itself is not recorded: it was never written.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s39_a_refused_dequeue_converges_at_the_next_view_check() {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("REDIS_URL", &redis.url())
        .with("WORKER_SWEEP_S", "1");
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(TENANT, "svc", open_service(json!({})))
        .await;
    let mut conn = redis.conn().await;
    let v = view(&env, "svc");
    let a = create(&engage, &key, "svc").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = create(&engage, &key, "svc").await;
    wait_waiting(&mut conn, &v, 2, 15).await;
    harness::config_set(&mut conn, "maxmemory-policy", "noeviction").await;
    harness::config_set(&mut conn, "maxmemory", "1").await;
    event(&engage, &a, json!({"state": "PROCESSING"}), true).await;
    let started = Instant::now();
    let converged = loop {
        let cb = engage.retrieve(&key, &b).await;
        if cb["positionInQueue"] == 1 {
            break true;
        }
        if started.elapsed() > Duration::from_secs(6) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let got = regions(&mut conn, &v).await;
    harness::config_set(&mut conn, "maxmemory", "0").await;
    assert!(converged, "regions {got:?}");
    assert_eq!(got, (1, 0));
}

/// Served dequeues streaming in while the worker's view check runs every second: the check
/// reads the waiting region, then PostgreSQL, then removes what PostgreSQL no longer calls
/// waiting. A PROCESSING that commits between its two reads is such a "stray", and its `ZREM`
/// now also deletes the dequeue the event records in the same view (before 5357802 the
/// history was another key). Only ids that never trim are served, so the dequeued region must
/// end with exactly one member per served callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s39_view_checks_during_a_stream_of_dequeues_lose_none() {
    let env = TestEnv::new().with("WORKER_SWEEP_S", "1");
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(TENANT, "svc", open_service(json!({})))
        .await;
    let mut conn = env.redis().await;
    let v = view(&env, "svc");
    let ids = engage.create_immediate(&key, "svc", 160, 0).await;
    wait_waiting(&mut conn, &v, 160, 30).await;
    let serve: Vec<String> = ids.iter().filter(|id| !trims(id)).cloned().collect();
    use futures::StreamExt;
    futures::stream::iter(serve.iter())
        .for_each_concurrent(6, |id| {
            let engage = &engage;
            async move {
                event(engage, id, json!({"state": "PROCESSING"}), true).await;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
        .await;
    // Two more view checks after the last event.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let got = regions(&mut conn, &v).await;
    let repaired: Vec<String> = engage
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("engage_queue_view_repaired_total"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        got,
        ((ids.len() - serve.len()) as i64, serve.len() as i64),
        "dequeues lost by the view check: {repaired:?}"
    );
}

/// An API replica whose clock runs ahead (here 5 minutes, by libfaketime) records one served
/// dequeue: its score is `DONE_BASE` + a future time, the top of the dequeued region. Readers
/// take the newest 32 by *score* and the trim drops the lowest scores, so that one record
/// stays the "newest dequeue" through any number of later dequeues until real time passes it:
/// after 37 later dequeues (trims included) the estimate still spans the 5 minutes, about
/// 300 s / 31 per callback ahead instead of the real few ms, and mode2 cannot see agents stop
/// meanwhile. Before 5357802 the history was a list in arrival order, so such a time fell out
/// after 32 dequeues. Fixed: a dequeue is recorded at PostgreSQL's time of the event, one
/// clock for every replica (docs/derived-state.md#queue-views). Guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s39_a_fast_clock_replicas_dequeue_stays_the_newest() {
    let faketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(std::path::Path::new(faketime).exists(), "libfaketime");
    let env = TestEnv::new().with("EWT_AGENT_ACTIVITY_WINDOW_S", "1");
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(TENANT, "svc", open_service(json!({})))
        .await;
    let ahead_env = env
        .clone()
        .with("LD_PRELOAD", faketime)
        .with("FAKETIME", "+300")
        .with("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let ahead = Engage::start(&ahead_env, &[]).await;
    let mut conn = env.redis().await;
    let v = view(&env, "svc");
    let ids = engage.create_immediate(&key, "svc", 40, 0).await;
    wait_waiting(&mut conn, &v, 40, 20).await;
    event(&ahead, &ids[0], json!({"state": "PROCESSING"}), true).await;
    for id in &ids[1..38] {
        event(&engage, id, json!({"state": "PROCESSING"}), true).await;
    }
    let history = dequeues(&mut conn, &v).await;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let mode1 = ewt(&engage, &key, "svc", "mode1").await;
    // The real dequeues alone: 37 within about a second.
    let real: Vec<i64> = history
        .iter()
        .filter(|(m, _)| m != &ids[0])
        .take(queue::HISTORY as usize)
        .map(|(_, t)| *t)
        .collect();
    let real_wait = queue::wait_secs(2, queue::mean_interval_ms(&real).expect("two"));
    // No agent takes anything for longer than the activity window (1 s): mode2 says so.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mode2 = ewt(&engage, &key, "svc", "mode2").await;
    assert!(
        history[0].0 != ids[0]
            && mode1["estimatedWaitTime"].as_i64() == Some(real_wait)
            && mode2["resultCode"] == -2,
        "37 dequeues after the skewed one, the newest is {} (the skewed one: {}) at {:+} ms \
         from now; mode1 for 2 waiting {mode1} (from the real dequeues: {real_wait}); mode2 \
         1.5 s after the last dequeue (window 1 s): {mode2}",
        history[0].0,
        history[0].0 == ids[0],
        history[0].1 - now_ms
    );
}

/// The same root cause with a small skew and both replicas serving (a load balancer spreads
/// the voice platform's events): replica B's clock runs 5 s ahead, the two take turns over 64
/// dequeues about 40 ms apart (2.6 s in all, less than the skew). Every one of B's dequeues
/// scores above every one of A's, so the newest 32 by score are B's 32 alone: the estimate's
/// mean interval is B's own (about 80 ms), twice the queue's real one, and stays so while
/// both serve. (Before 5357802 the list in arrival order was skew-sensitive too, differently:
/// only its two ends count, so the error was ± the skew / 31 depending on which replica's
/// dequeue ended the window; now it is a factor, 1 / the fast replica's share of dequeues.)
/// Fixed with the one clock above. Guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s39_a_few_seconds_of_skew_hide_the_other_replicas_dequeues() {
    let faketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(std::path::Path::new(faketime).exists(), "libfaketime");
    let env = TestEnv::new();
    let a = Engage::start(&env, &["--with-worker"]).await;
    let key = a.provision(TENANT, "svc", open_service(json!({}))).await;
    let b_env = env
        .clone()
        .with("LD_PRELOAD", faketime)
        .with("FAKETIME", "+5")
        .with("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let b = Engage::start(&b_env, &[]).await;
    let mut conn = env.redis().await;
    let v = view(&env, "svc");
    let ids = a.create_immediate(&key, "svc", 70, 0).await;
    wait_waiting(&mut conn, &v, 70, 20).await;
    let started = Instant::now();
    for (n, id) in ids[..64].iter().enumerate() {
        let via = if n % 2 == 0 { &a } else { &b };
        event(via, id, json!({"state": "PROCESSING"}), true).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let real_ms = started.elapsed().as_millis() as i64 / 64;
    let window: Vec<(String, i64)> = dequeues(&mut conn, &v)
        .await
        .into_iter()
        .take(queue::HISTORY as usize)
        .collect();
    let from_b = window
        .iter()
        .filter(|(m, _)| {
            ids[..64]
                .iter()
                .position(|id| id == m)
                .is_some_and(|i| i % 2 == 1)
        })
        .count();
    let times: Vec<i64> = window.iter().map(|(_, t)| *t).collect();
    let mean = queue::mean_interval_ms(&times).expect("two");
    assert!(
        from_b < window.len() && mean < real_ms * 3 / 2,
        "of the {} dequeues estimates read, {from_b} are replica B's; mean interval {mean} ms \
         against a real {real_ms} ms",
        window.len()
    );
}

/// The dequeued region's size between trims, with ids as the server makes them
/// (`Uuid::now_v7`): a trim comes with the first served dequeue whose id picks it, so the
/// region holds `HISTORY` + a geometric number of dequeues (mean 32, unbounded). Found: the
/// docs said "about 32 to 2 × 32"; one trim cycle in about eight (31/32)^64 ≈ 13 % goes past
/// 64, and over 20 000 dequeues the largest is typically ~300. The docs now say what holds:
/// 64 on average, a few hundred at worst. Guard of that.
#[test]
fn attack_s39_the_dequeued_region_between_trims_is_what_the_docs_say() {
    let history = queue::HISTORY as usize;
    let (mut size, mut largest, mut sum) = (history, history, 0);
    const N: usize = 20_000;
    for _ in 0..N {
        let id = Uuid::now_v7();
        size += 1;
        if id.as_u128().is_multiple_of(history as u128) {
            size = history;
        }
        largest = largest.max(size);
        sum += size;
    }
    let mean = sum / N;
    assert!(
        (48..=80).contains(&mean) && largest <= 700,
        "mean {mean}, largest {largest} members between two trims"
    );
}
