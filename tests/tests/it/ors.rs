//! End to end with the voice-platform simulator (`ors-sim`) and `engage serve --with-worker`:
//! completion, positionInQueue while QUEUED, cancel through the control stream, duplicate and
//! out-of-order events, retries, TTL expiry and retention.

use std::time::{Duration, Instant};

use harness::{Engage, Proc, TestEnv, in_secs, open_service, stream_entries};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ors_end_to_end_with_simulator() {
    let env = TestEnv::new().with("WORKER_MAINTENANCE_S", "1");
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(
            "e2e",
            "care",
            open_service(json!({"max_attempts": 2, "retry_delay_seconds": 1})),
        )
        .await;
    let _sim = Proc::spawn(
        &env,
        "ors-sim",
        &[
            "--agents",
            "1",
            "--queue-ms",
            "2000",
            "--handle-ms",
            "300",
            "--dist",
            "fixed",
            "--group",
            &format!("{}-sim", env.id),
        ],
        &[],
    );

    // An immediate callback: positionInQueue while QUEUED, then COMPLETED/AGENT_CONNECTED.
    let a = engage
        .create(&key)
        .service("care")
        .phone("+15550100001")
        .id()
        .await;
    let queued = engage
        .wait_for(&key, &a, 10, |cb| {
            cb["callbackState"] == "QUEUED" && cb.get("positionInQueue").is_some()
        })
        .await;
    assert_eq!(queued["positionInQueue"], 1, "{queued}");
    let done = engage
        .wait_for(&key, &a, 15, |cb| cb["callbackState"] == "COMPLETED")
        .await;
    assert_eq!(done["callbackReason"], "AGENT_CONNECTED", "{done}");
    assert!(done.get("positionInQueue").is_none());

    // Cancel while QUEUED: a control entry, COMPLETED/CANCELLED, and the simulator stops.
    let b = engage
        .create(&key)
        .service("care")
        .phone("+15550100002")
        .id()
        .await;
    engage
        .wait_for(&key, &b, 10, |cb| cb.get("positionInQueue").is_some())
        .await;
    let (code, body) = engage.cancel(&key, &b).await;
    assert_eq!(code, 200, "{body}");
    let mut voice = env.voice().await;
    let control = stream_entries(&mut voice, &env.vars["CONTROL_STREAM"]).await;
    let mine: Vec<_> = control
        .iter()
        .filter(|(_, f)| f["callback_id"] == b)
        .collect();
    assert_eq!(mine.len(), 1, "{control:?}");
    assert_eq!(mine[0].1["action"], "cancel");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let cb = engage.retrieve(&key, &b).await;
    assert_eq!(cb["callbackState"], "COMPLETED");
    assert_eq!(cb["callbackReason"], "CANCELLED");
    let pg = env.pg().await;
    let routed: i64 = pg
        .query_one(
            "SELECT count(*) FROM callback_events WHERE callback_id = $1::text::uuid
             AND state IN ('ROUTING', 'PROCESSING')",
            &[&b],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(routed, 0, "the simulator routed a cancelled callback");

    // Events twice and out of order, on a callback the simulator never sees (due in an hour).
    let c = engage
        .create(&key)
        .service("care")
        .phone("+15550100003")
        .at(&in_secs(3600))
        .id()
        .await;
    // Never handed to the voice platform: refused until its submission is in the voice stream
    // (the worker's dedupe key, as if the worker wrote it and has not recorded it yet).
    let (code, resp) = engage.event(&c, json!({"state": "QUEUED"})).await;
    assert_eq!(code, 409, "{resp}");
    let mut voice = env.voice().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{{{}}}:sub:{c}:1", env.voice_stream()))
        .arg("1")
        .query_async(&mut voice)
        .await
        .unwrap();
    let steps = [
        ("QUEUED", None, true, "QUEUED"),
        ("ROUTING", None, true, "ROUTING"),
        ("ROUTING", None, false, "ROUTING"),
        ("QUEUED", None, false, "ROUTING"),
        ("PROCESSING", None, true, "PROCESSING"),
        ("PROCESSING", None, false, "PROCESSING"),
        ("COMPLETED", Some("AGENT_CONNECTED"), true, "COMPLETED"),
        ("PROCESSING", None, false, "COMPLETED"),
        ("COMPLETED", Some("FAIL_ERROR"), false, "COMPLETED"),
    ];
    for (state, reason, applied, after) in steps {
        let mut body = json!({"state": state, "at": in_secs(0)});
        if let Some(r) = reason {
            body["reason"] = json!(r);
        }
        let (code, resp) = engage.event(&c, body).await;
        assert_eq!(code, 200, "{state}: {resp}");
        assert_eq!(resp["data"]["applied"], applied, "{state}: {resp}");
        assert_eq!(resp["data"]["callbackState"], after, "{state}: {resp}");
    }
    let cb = engage.retrieve(&key, &c).await;
    assert_eq!(cb["callbackReason"], "AGENT_CONNECTED");
    let (code, _) = engage
        .event(
            &uuid::Uuid::new_v4().to_string(),
            json!({"state": "QUEUED"}),
        )
        .await;
    assert_eq!(code, 404);
    let (code, _) = engage.event(&c, json!({"state": "DIALING"})).await;
    assert_eq!(code, 400);
    let (code, _) = engage
        .event(&c, json!({"state": "COMPLETED", "reason": "BORED"}))
        .await;
    assert_eq!(code, 400);
    // Not on the public port.
    let (code, _) = harness::send(
        engage
            .http
            .post(format!(
                "{}/ges/v1/ors/callbacks/{c}/events",
                engage.external
            ))
            .json(&json!({"state": "QUEUED"})),
    )
    .await;
    assert_eq!(code, 404);

    // FAIL_CALL_TO_CUSTOMER with an attempt left: re-scheduled, dispatched again as attempt 2,
    // and a late event of attempt 1 changes nothing.
    let d = engage
        .create(&key)
        .service("care")
        .phone("+15550100004")
        .at(&in_secs(3600))
        .id()
        .await;
    // Handed off (the worker's dedupe key), not yet recorded.
    let _: () = redis::cmd("SET")
        .arg(format!("{{{}}}:sub:{d}:1", env.voice_stream()))
        .arg("1")
        .query_async(&mut voice)
        .await
        .unwrap();
    let (_, resp) = engage
        .event(&d, json!({"state": "QUEUED", "attempt": 1}))
        .await;
    assert_eq!(resp["data"]["applied"], true);
    let (_, resp) = engage
        .event(
            &d,
            json!({"state": "COMPLETED", "reason": "FAIL_CALL_TO_CUSTOMER", "attempt": 1}),
        )
        .await;
    assert_eq!(resp["data"]["callbackState"], "SCHEDULED", "{resp}");
    assert_eq!(resp["data"]["attempt"], 2, "{resp}");
    let (_, resp) = engage
        .event(&d, json!({"state": "ROUTING", "attempt": 1}))
        .await;
    assert_eq!(resp["data"]["applied"], false, "{resp}");
    let done = engage
        .wait_for(&key, &d, 20, |cb| cb["callbackState"] == "COMPLETED")
        .await;
    assert_eq!(done["callbackReason"], "AGENT_CONNECTED", "{done}");
    assert_eq!(done["attempt"], 2);
    let entries = stream_entries(&mut voice, env.voice_stream()).await;
    let attempts: Vec<&str> = entries
        .iter()
        .filter(|(_, f)| f["callback_id"] == d)
        .map(|(_, f)| f["attempt"].as_str())
        .collect();
    assert_eq!(attempts, ["2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ors_ttl_expiry_and_retention() {
    let env = TestEnv::new()
        .with("WORKER_MAINTENANCE_S", "1")
        .with("WORKER_RETENTION_INTERVAL_S", "1");
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision("ttl", "short", open_service(json!({"ttl_seconds": 1})))
        .await;

    // Submitted, never served: COMPLETED/FAIL_TIMEOUT_TTL after ttl_seconds, and the voice
    // platform is told to drop it.
    let id = engage
        .create(&key)
        .service("short")
        .phone("+15550100009")
        .id()
        .await;
    let cb = engage
        .wait_for(&key, &id, 10, |cb| cb["callbackState"] == "COMPLETED")
        .await;
    assert_eq!(cb["callbackReason"], "FAIL_TIMEOUT_TTL", "{cb}");
    let mut voice = env.voice().await;
    let started = Instant::now();
    loop {
        let control = stream_entries(&mut voice, &env.vars["CONTROL_STREAM"]).await;
        if control.iter().any(|(_, f)| f["callback_id"] == id) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no control entry after expiry"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Retention: a callback 15 days past its desired time goes, with its events.
    let pg = env.pg().await;
    let old = uuid::Uuid::new_v4();
    // One statement: the worker's retention runs every second and must never see the
    // callback without its event (the event insert would then break its foreign key).
    pg.execute(
        "WITH c AS (
             INSERT INTO callbacks (id, tenant_id, service, state, reason, phone_number,
                                    desired_time, dispatch_at, scheduled)
             VALUES ($1, 'ttl', 'short', 'COMPLETED', 'AGENT_CONNECTED', '+15550100010',
                     now() - interval '15 days', now() - interval '15 days', true)
             RETURNING id)
         INSERT INTO callback_events (callback_id, state, source)
         SELECT id, 'COMPLETED', 'test' FROM c",
        &[&old],
    )
    .await
    .expect("insert callback and event");
    let started = Instant::now();
    loop {
        let left: i64 = pg
            .query_one(
                "SELECT (SELECT count(*) FROM callbacks WHERE id = $1)
                      + (SELECT count(*) FROM callback_events WHERE callback_id = $1)",
                &[&old],
            )
            .await
            .expect("count")
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "retention did not purge"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The recent one stays.
    assert_eq!(
        engage.retrieve(&key, &id).await["callbackState"],
        "COMPLETED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ors_events_token_when_configured() {
    const TOKEN: &str = "ors-token-0123456789";
    let env = TestEnv::new().with("ORS_EVENTS_TOKEN", TOKEN);
    let engage = Engage::start(&env, &[]).await;
    let key = engage
        .provision("tok", "svc", open_service(json!({})))
        .await;
    let id = engage
        .create(&key)
        .service("svc")
        .phone("+15550100011")
        .at(&in_secs(3600))
        .id()
        .await;
    let queued = || json!({"state": "QUEUED"});
    let (code, _) = engage.event_as(None, &id, queued()).await;
    assert_eq!(code, 401);
    let wrong = Some("wrong-token-0123456789");
    let (code, _) = engage.event_as(wrong, &id, queued()).await;
    assert_eq!(code, 401);
    let (code, body) = engage.event_as(Some(TOKEN), &id, queued()).await;
    // Authenticated; refused only because the callback was never handed off.
    harness::assert_refused((code, &body), 409, "never handed to the voice platform");
}

/// For counting Redis commands: a private service Redis, `engage --with-worker`, `tenant` with
/// service `svc`, and an ors-sim with `agents` agents answering at once (10 ms calls).
async fn counted_service(
    tenant: &str,
    agents: &str,
) -> (harness::PrivateRedis, TestEnv, Engage, String, Proc) {
    counted_service_with(tenant, agents, &[]).await
}

/// [`counted_service`] with more settings for the API and its worker.
async fn counted_service_with(
    tenant: &str,
    agents: &str,
    vars: &[(&str, &str)],
) -> (harness::PrivateRedis, TestEnv, Engage, String, Proc) {
    let redis = harness::PrivateRedis::new(false);
    let mut env = TestEnv::new().with("REDIS_URL", &redis.url());
    for (k, v) in vars {
        env = env.with(k, v);
    }
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(tenant, "svc", open_service(json!({})))
        .await;
    let group = format!("{}-sim", env.id);
    let args = [
        "--agents",
        agents,
        "--routing-ms",
        "0",
        "--handle-ms",
        "10",
        "--dist",
        "fixed",
        "--group",
        &group,
    ];
    let sim = Proc::spawn(&env, "ors-sim", &args, &[]);
    (redis, env, engage, key, sim)
}

/// A LONE immediate callback (created alone, COMPLETED before the next is created, so nothing
/// is shared by group commit or batched claims): service-Redis commands from create to
/// COMPLETED, commands inside scripts included. Issue 18's budget is 15: 14.2 measured with one
/// worker (18.1 before the time from the caller, the popping claim and the lone worker's
/// unannounced leases; 25.1 at first: docs/costs.md has the breakdown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ors_service_redis_commands_per_lone_immediate_callback() {
    let (redis, env, engage, key, _sim) = counted_service("lone", "4").await;
    // One warm-up callback (seeds the throttle state, a once-per-period cost).
    let pg = env.pg().await;
    let warm = engage.create_immediate(&key, "svc", 1, 0).await;
    wait_completed(&pg, &warm[0]).await;
    // The worker counts itself alone (its claims then announce no lease) once its hello came
    // back and a grace passed: 1 s here (docs/derived-state.md#a-lone-worker).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut conn = redis.conn().await;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await
        .expect("resetstat");
    const N: usize = 40;
    for i in 0..N {
        let id = engage.create_immediate(&key, "svc", 1, 1 + i).await;
        wait_completed(&pg, &id[0]).await;
        // Alone also for dispatch pacing: hand-offs further apart than the worker's free
        // allowance (WORKER_TENANT_RATE / 16 a second, one at a time) take no pacing bucket
        // (docs/pacing.md); closer ones add a pacing script now and then.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (total, by) = harness::command_total(&mut conn, &["info", "config", "ping"]).await;
    let per = total as f64 / N as f64;
    println!("FIGURE service_redis_commands_per_lone_immediate_callback={per:.1} {by:?}");
    // Breakdown (docs/costs.md): admission 3, index 2, claim 3, queue view 1, settle 1,
    // PROCESSING dequeue 1, release 3 = 14, plus a share of periodic trims, re-seeds and clock
    // readings. A guard with room for a loaded machine (a re-subscription on a slow PING looks
    // at every shard, and announces until the worker's hello comes back): 15.3 measured once
    // in a full run; the budget's figure comes from the bench.
    assert!(per <= 16.0, "{per} commands per lone callback: {by:?}");
}

/// LONE callbacks spaced further apart than the lease (a quiet service): the claim announces
/// its lease deadline so that another worker takes over should this one die, and until
/// 2026-12-04 the claiming worker heard its own announcement and woke at that deadline for an
/// empty claim (`EVALSHA`, `TIME`, two `ZRANGE`) although its pass had left nothing in flight:
/// 24.0 commands per callback instead of 20. Now it drops its own announcement when its pass
/// released everything it claimed (docs/derived-state.md#wake-ups).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ors_service_redis_commands_per_lone_callback_spaced_past_the_lease() {
    let (redis, env, engage, key, _sim) =
        counted_service_with("spaced", "4", &[("WORKER_LEASE_MS", "1000")]).await;
    let pg = env.pg().await;
    let warm = engage.create_immediate(&key, "svc", 1, 0).await;
    wait_completed(&pg, &warm[0]).await;
    // Past the warm-up's lease deadline.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let mut conn = redis.conn().await;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await
        .expect("resetstat");
    const N: usize = 8;
    let mut trims = 0;
    for i in 0..N {
        let id = engage.create_immediate(&key, "svc", 1, 1 + i).await;
        wait_completed(&pg, &id[0]).await;
        // One callback in 32 trims its service's dequeued region (a script of its own,
        // docs/derived-state.md#queue-views).
        let id = uuid::Uuid::parse_str(&id[0]).expect("id");
        trims += usize::from(id.as_u128().is_multiple_of(32));
        tokio::time::sleep(Duration::from_millis(1_300)).await;
    }
    // The wake subscription's liveness PING is the worker's, not the callbacks'.
    let (total, by) = harness::command_total(&mut conn, &["info", "config", "ping"]).await;
    let per = total as f64 / N as f64;
    println!(
        "FIGURE service_redis_commands_per_lone_callback_spaced_past_the_lease={per:.1} {by:?}"
    );
    let count = |name: &str| {
        by.iter()
            .find_map(|b| b.strip_prefix(name))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    // Admission, claim, release: three scripts each, no empty claim at a lease deadline; a
    // script run for the first time by a process is an `EVALSHA` refused (NOSCRIPT) before its
    // `SCRIPT LOAD`.
    let scripts = count("evalsha=") - count("script|load=");
    assert_eq!(scripts, 3 * N + trims, "{by:?}");
    // 14 when a claim skips the in-flight read; claims further apart than the time a read
    // bounds the leases (4 leases, 4 s here) read it (docs/derived-state.md).
    assert!(
        per <= 16.0,
        "{per} commands per spaced lone callback: {by:?}"
    );
}

/// The release on COMPLETED reads its counts with the number key derived from the stored row
/// (`release_number`, docs/costs.md): for a number in E.164, a national one and one that does
/// not normalise, the derived key is the one the admission counted (no fall-back read: no
/// `HGET` at all), and the place is freed (`in_queue_checking: "strict"` admits the same
/// number again, in another format too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ors_release_on_completion_frees_the_admitted_number_key() {
    let redis = harness::PrivateRedis::new(false);
    let env = TestEnv::new().with("REDIS_URL", &redis.url());
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(
            "hint",
            "svc",
            open_service(json!({"in_queue_checking": "strict"})),
        )
        .await;
    let _sim = Proc::spawn(
        &env,
        "ors-sim",
        &[
            "--agents",
            "2",
            "--routing-ms",
            "0",
            "--handle-ms",
            "10",
            "--dist",
            "fixed",
            "--group",
            &format!("{}-sim", env.id),
        ],
        &[],
    );
    let pg = env.pg().await;
    let mut conn = redis.conn().await;
    let formats = [
        ("+12025550142", "(202) 555-0142"),
        ("(202) 555-0143", "+1 202 555 0143"),
        ("555 12345", "555-12345"),
    ];
    for (first, again) in formats {
        let id = engage.create(&key).service("svc").phone(first).id().await;
        wait_completed(&pg, &id).await;
        // The release follows the commit PostgreSQL shows: wait for it (before the reset, so
        // this read is not counted).
        let act = format!("{{{}:thr:hint:svc}}:act", env.id);
        for _ in 0..200 {
            let held: Option<i64> = redis::cmd("HGET")
                .arg(&act)
                .arg("~count")
                .query_async(&mut conn)
                .await
                .expect("hget");
            if held == Some(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut conn)
            .await
            .expect("resetstat");
        let id = engage.create(&key).service("svc").phone(again).id().await;
        wait_completed(&pg, &id).await;
        let (_, by) = harness::command_total(&mut conn, &["info", "config", "ping"]).await;
        assert!(
            !by.iter().any(|c| c.starts_with("hget=")),
            "{again}: the release fell back to reading the stored number: {by:?}"
        );
    }
}

/// Polls PostgreSQL (no Redis command) until callback `id` is COMPLETED/AGENT_CONNECTED.
async fn wait_completed(pg: &tokio_postgres::Client, id: &str) {
    let started = Instant::now();
    loop {
        let done: i64 = pg
            .query_one(
                "SELECT count(*) FROM callbacks WHERE id::text = $1 AND state = 'COMPLETED' AND reason = 'AGENT_CONNECTED'",
                &[&id],
            )
            .await
            .expect("state")
            .get(0);
        if done == 1 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{id} not completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ors_service_redis_commands_per_immediate_callback() {
    let (redis, env, engage, key, _sim) = counted_service("cmds", "50").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut conn = redis.conn().await;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await
        .expect("resetstat");
    const N: i64 = 300;
    engage.create_immediate(&key, "svc", N as usize, 0).await;
    let pg = env.pg().await;
    let started = Instant::now();
    loop {
        let done: i64 = pg
            .query_one(
                "SELECT count(*) FROM callbacks WHERE state = 'COMPLETED' AND reason = 'AGENT_CONNECTED'",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        if done == N {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{done} of {N} completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (total, by) = harness::command_total(&mut conn, &["info", "config", "ping"]).await;
    // Measured 14.1 (26 before the create-time throttles were trimmed): throttle script 5
    // (EVALSHA, TIME, HMGET, ZADD, HSET), schedule index 2 (ZADD + ZRANGE pipeline, PUBLISH
    // when head), claim/submit/queue-view enqueue about 1 (batched), PROCESSING dequeue 2
    // (ZREM + LPUSH, LTRIM 1 in 33), release on COMPLETED 4 (EVALSHA, HGET, HMGET, HSET).
    let per = total as f64 / N as f64;
    println!("FIGURE service_redis_commands_per_immediate_callback={per:.1} {by:?}");
    assert!(per <= 15.0, "{per} commands per callback: {by:?}");
}
