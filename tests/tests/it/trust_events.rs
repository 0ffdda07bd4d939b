//! Issue 12, promises 3 and 4 (docs/voice-platform.md): a cancel answered 200 reaches the
//! voice platform whenever it may hold the callback (worker killed between `XADD` and marking,
//! cancel racing a hand-off, voice Redis down during the cancel), and voice-platform events
//! apply at most once per (callback, attempt, state), only for handed-off attempts, only with
//! the events token.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use futures::StreamExt;
use harness::{Engage, PrivateRedis, Proc, TestEnv, open_service, stream_entries};
use serde_json::json;

/// Waits until PostgreSQL records `attempt` of `id` as submitted.
async fn wait_submitted(env: &TestEnv, id: &str, attempt: i16) {
    let started = Instant::now();
    loop {
        let (_, a, submitted) = env.row(id).await;
        if a == attempt && submitted {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "attempt {attempt} of {id} not submitted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dedupe_key(env: &TestEnv, id: &str, attempt: i16) -> String {
    format!("{{{}}}:sub:{id}:{attempt}", env.voice_stream())
}

/// Writes what the worker's submission script writes (dedupe key, then the stream entry),
/// without recording anything in PostgreSQL: a worker killed between `XADD` and marking.
async fn xadd_as_worker(env: &TestEnv, id: &str) {
    let mut voice = env.voice().await;
    let _: () = redis::cmd("SET")
        .arg(dedupe_key(env, id, 1))
        .arg("1")
        .query_async(&mut voice)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(env.voice_stream())
        .arg("*")
        .arg("callback_id")
        .arg(id)
        .arg("attempt")
        .arg("1")
        .query_async(&mut voice)
        .await
        .unwrap();
}

async fn control_pending(env: &TestEnv, id: &str) -> bool {
    env.pg()
        .await
        .query_one(
            "SELECT control_pending FROM callbacks WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_cancel_after_worker_died_between_xadd_and_mark() {
    // No worker: the hand-off state is written by hand, as a killed worker leaves it.
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let key = engage
        .provision("kill", "svc", open_service(json!({})))
        .await;
    let id = engage
        .create(&key)
        .service("svc")
        .phone("+15550107001")
        .id()
        .await;
    xadd_as_worker(&env, &id).await;
    assert!(!env.row(&id).await.2, "not recorded as submitted");
    let (code, body) = engage.cancel(&key, &id).await;
    assert_eq!(code, 200, "{body}");
    let control = env.ids_in(env.control_stream()).await;
    assert_eq!(
        control.iter().filter(|c| **c == id).count(),
        1,
        "the voice platform holds it: a cancel must follow ({control:?})"
    );
    assert!(!control_pending(&env, &id).await, "settled by the API");

    // Not handed off: the cancel fences the submission instead (no control entry), and a
    // worker arriving afterwards cannot write it.
    let fenced = engage
        .create(&key)
        .service("svc")
        .phone("+15550107002")
        .id()
        .await;
    let (code, body) = engage.cancel(&key, &fenced).await;
    assert_eq!(code, 200, "{body}");
    let mut voice = env.voice().await;
    let fence: Option<String> = redis::cmd("GET")
        .arg(dedupe_key(&env, &fenced, 1))
        .query_async(&mut voice)
        .await
        .unwrap();
    assert_eq!(fence.as_deref(), Some("cancelled"));
    let added: i64 = redis::cmd("SET")
        .arg(dedupe_key(&env, &fenced, 1))
        .arg("1")
        .arg("NX")
        .query_async::<Option<String>>(&mut voice)
        .await
        .unwrap()
        .map_or(0, |_| 1);
    assert_eq!(added, 0, "the worker's SET NX must fail on the fence");
    let control = env.ids_in(env.control_stream()).await;
    assert!(!control.contains(&fenced), "{control:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_cancel_after_worker_sigkilled_between_xadd_and_mark() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let key = engage
        .provision("sigkill", "svc", open_service(json!({})))
        .await;
    let id = engage
        .create(&key)
        .service("svc")
        .phone("+15550107501")
        .id()
        .await;
    // Hold the row: the real worker loads it, writes the voice stream, then blocks recording
    // the submission; it is SIGKILLed right there.
    let mut pg = env.pg().await;
    let tx = pg.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM callbacks WHERE id = $1::text::uuid FOR UPDATE",
        &[&id],
    )
    .await
    .unwrap();
    let mut worker = harness::WorkerProc::start(&env, &[]).await;
    let started = Instant::now();
    while !env.ids_in(env.voice_stream()).await.contains(&id) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "worker did not submit: {}",
            worker.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    worker.proc.kill();
    // A backend does not notice its client died while it waits for a lock: end the worker's
    // blocked statement (exactly the backends waiting on this transaction), as a kill before
    // the statement reached PostgreSQL would have.
    // Two statements on purpose: the pids first, then exactly those (never a filter and the
    // terminate in one WHERE, whose evaluation order is not guaranteed).
    let blocked: Vec<i32> = tx
        .query(
            "SELECT pid FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        blocked.len(),
        1,
        "the worker was blocked recording the submission"
    );
    tx.execute("SELECT pg_terminate_backend($1)", &[&blocked[0]])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(!env.row(&id).await.2, "the kill came before the record");
    let (code, body) = engage.cancel(&key, &id).await;
    assert_eq!(code, 200, "{body}");
    let control = env.ids_in(env.control_stream()).await;
    assert!(
        control.contains(&id),
        "in the voice stream and cancelled, but no control entry: {control:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_cancel_racing_hand_off() {
    let env = TestEnv::new().with("WORKER_MAINTENANCE_S", "1");
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision("race", "svc", open_service(json!({})))
        .await;
    let engage = &engage;
    let key = key.as_str();
    // Create, then cancel after 0..12 ms: many cancels land while the worker hands off.
    let cancelled: Vec<String> = futures::stream::iter(0..240u64)
        .map(|i| async move {
            let id = engage
                .create(key)
                .service("svc")
                .phone(&format!("+1555020{i:04}"))
                .id()
                .await;
            tokio::time::sleep(Duration::from_millis(i % 13)).await;
            let (code, body) = engage.cancel(key, &id).await;
            assert!(code == 200 || code == 400, "{code} {body}");
            (code == 200).then_some(id)
        })
        .buffer_unordered(8)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    // Let the outbox settle anything the API could not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let handed: HashSet<String> = env.ids_in(env.voice_stream()).await.into_iter().collect();
    let control: HashSet<String> = env
        .ids_in(&env.vars["CONTROL_STREAM"])
        .await
        .into_iter()
        .collect();
    let missing: Vec<&String> = cancelled
        .iter()
        .filter(|id| handed.contains(*id) && !control.contains(*id))
        .collect();
    let reached = cancelled.iter().filter(|id| handed.contains(*id)).count();
    eprintln!(
        "cancelled {} (200), {reached} of them in the voice stream",
        cancelled.len()
    );
    assert!(
        missing.is_empty(),
        "cancelled (200) and handed off, but no control entry: {missing:?}"
    );
    let owed = env
        .count("SELECT count(*) FROM callbacks WHERE control_pending")
        .await;
    assert_eq!(owed, 0, "every owed cancel is settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_cancel_with_voice_redis_down_is_settled_by_the_outbox() {
    let mut voice = PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("VOICE_REDIS_URL", &voice.url())
        .with("WORKER_MAINTENANCE_S", "1");
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision("vdown", "svc", open_service(json!({})))
        .await;
    // One handed off by the worker (submitted), one due in 30 minutes (fenced).
    let queued = engage
        .create(&key)
        .service("svc")
        .phone("+15550107101")
        .id()
        .await;
    wait_submitted(&env, &queued, 1).await;
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(30))
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let scheduled = engage
        .create(&key)
        .service("svc")
        .phone("+15550107102")
        .at(&soon)
        .id()
        .await;
    voice.stop();
    // An event the voice Redis must confirm cannot be checked: 503 (retry), never a guess.
    let (code, r) = engage
        .event(&scheduled, json!({"state": "QUEUED", "attempt": 1}))
        .await;
    assert_eq!(code, 503, "{r}");
    for id in [&queued, &scheduled] {
        let (code, body) = engage.cancel(&key, id).await;
        assert_eq!(code, 200, "{body}");
        assert!(control_pending(&env, id).await, "owed durably");
    }
    voice.start();
    let started = Instant::now();
    while control_pending(&env, &queued).await || control_pending(&env, &scheduled).await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the outbox did not settle"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut conn = voice.conn().await;
    let control: Vec<String> = stream_entries(&mut conn, &env.vars["CONTROL_STREAM"])
        .await
        .into_iter()
        .map(|(_, f)| f["callback_id"].clone())
        .collect();
    assert_eq!(control, vec![queued.clone()], "only the handed-off one");
    let fence: Option<String> = redis::cmd("GET")
        .arg(dedupe_key(&env, &scheduled, 1))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fence.as_deref(), Some("cancelled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_events_duplicate_fail_without_attempt_uses_one_attempt() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(
            "dup",
            "svc",
            open_service(json!({"max_attempts": 3, "retry_delay_seconds": 1})),
        )
        .await;
    let id = engage
        .create(&key)
        .service("svc")
        .phone("+15550107201")
        .id()
        .await;
    wait_submitted(&env, &id, 1).await;
    // One failure, delivered three times without `attempt`: before the retry is handed off,
    // and after.
    let fail = json!({"state": "COMPLETED", "reason": "FAIL_CALL_TO_CUSTOMER",
                      "at": "2026-01-01T00:00:00.000Z"});
    let (code, first) = engage.event(&id, fail.clone()).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["data"]["attempt"], 2, "{first}");
    let (code, second) = engage.event(&id, fail.clone()).await;
    assert_eq!(code, 200, "{second}");
    assert_eq!(second["data"]["applied"], false, "{second}");
    wait_submitted(&env, &id, 2).await;
    let (code, third) = engage.event(&id, fail).await;
    assert_eq!(code, 200, "{third}");
    assert_eq!(third["data"]["applied"], false, "{third}");
    let (state, attempt, _) = env.row(&id).await;
    assert_eq!((state.as_str(), attempt), ("QUEUED", 2), "one attempt used");
    let fails: i64 = env
        .pg()
        .await
        .query_one(
            "SELECT count(*) FROM callback_events WHERE callback_id = $1::text::uuid
               AND reason = 'FAIL_CALL_TO_CUSTOMER'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fails, 1);
    // With `attempt`, a redelivery of attempt 1's failure is ignored too; attempt 2's own
    // failure applies once.
    let (code, stale) = engage
        .event(
            &id,
            json!({"state": "COMPLETED", "reason": "FAIL_CALL_TO_CUSTOMER", "attempt": 1}),
        )
        .await;
    assert_eq!(
        (code, stale["data"]["applied"].clone()),
        (200, json!(false))
    );
    for expect in [true, false] {
        let (code, r) = engage
            .event(
                &id,
                json!({"state": "COMPLETED", "reason": "FAIL_CALL_TO_CUSTOMER", "attempt": 2}),
            )
            .await;
        assert_eq!(code, 200, "{r}");
        assert_eq!(r["data"]["applied"], expect, "{r}");
    }
    assert_eq!(env.row(&id).await.1, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_events_for_attempts_not_handed_off_are_refused() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision("nho", "svc", open_service(json!({})))
        .await;
    // Never submitted (due in an hour): refused with or without `attempt`.
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1))
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let never = engage
        .create(&key)
        .service("svc")
        .phone("+15550107301")
        .at(&later)
        .id()
        .await;
    for body in [
        json!({"state": "QUEUED"}),
        json!({"state": "COMPLETED", "reason": "FAIL_CALL_TO_CUSTOMER", "attempt": 1}),
    ] {
        let (code, r) = engage.event(&never, body).await;
        assert_eq!(code, 409, "{r}");
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains("attempt 1") && msg.contains("SCHEDULED"),
            "{msg}"
        );
    }
    assert_eq!(env.row(&never).await, ("SCHEDULED".into(), 1, false));
    // Attempt 1 handed off: an event for attempt 2 is refused and changes nothing.
    let current = engage
        .create(&key)
        .service("svc")
        .phone("+15550107302")
        .id()
        .await;
    wait_submitted(&env, &current, 1).await;
    let (code, r) = engage
        .event(&current, json!({"state": "PROCESSING", "attempt": 2}))
        .await;
    assert_eq!(code, 409, "{r}");
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("attempt 2"),
        "{r}"
    );
    assert_eq!(env.row(&current).await, ("QUEUED".into(), 1, true));
    let (code, r) = engage
        .event(&current, json!({"state": "PROCESSING", "attempt": 1}))
        .await;
    assert_eq!((code, r["data"]["applied"].clone()), (200, json!(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_events_route_fails_closed() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let id = uuid::Uuid::new_v4().to_string();
    let queued = || json!({"state": "QUEUED"});
    let (code, _) = engage.event_as(None, &id, queued()).await;
    assert_eq!(code, 401);
    let wrong = Some("not-the-token-0123456789");
    let (code, _) = engage.event_as(wrong, &id, queued()).await;
    assert_eq!(code, 401);

    // Without a token, the binaries serving the route refuse to start and say why.
    let mut bare = env.clone();
    bare.vars.remove("ORS_EVENTS_TOKEN");
    for (bin, args) in [("engage", &["serve"][..]), ("ors-events", &[][..])] {
        let port = harness::free_port().to_string();
        let mut p = Proc::spawn(
            &bare,
            bin,
            args,
            &[
                ("PORT", port.clone()),
                ("INTERNAL_PORT", harness::free_port().to_string()),
                ("EXTERNAL_PORT", harness::free_port().to_string()),
                ("METRICS_PORT", "0".into()),
            ],
        );
        let started = Instant::now();
        while p.child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(10) {
                p.kill();
                panic!("{bin} started without ORS_EVENTS_TOKEN: {}", p.output());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = p.output();
        assert!(out.contains("ORS_EVENTS_TOKEN is required"), "{bin}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_events_retry_time_from_postgres_clock() {
    // The API host's clock runs two hours ahead (libfaketime); PostgreSQL's does not.
    let env = TestEnv::new()
        .with(
            "LD_PRELOAD",
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        )
        .with("FAKETIME", "+2h")
        .with("DONT_FAKE_MONOTONIC", "1");
    let engage = Engage::start(&env, &[]).await;
    let key = engage
        .provision(
            "clock",
            "svc",
            open_service(json!({"max_attempts": 2, "retry_delay_seconds": 60})),
        )
        .await;
    let id = engage
        .create(&key)
        .service("svc")
        .phone("+15550107401")
        .id()
        .await;
    let mut voice = env.voice().await;
    let _: () = redis::cmd("SET")
        .arg(dedupe_key(&env, &id, 1))
        .arg("1")
        .query_async(&mut voice)
        .await
        .unwrap();
    let (code, r) = engage
        .event(
            &id,
            json!({"state": "COMPLETED", "reason": "FAIL_CALL_TO_CUSTOMER", "attempt": 1}),
        )
        .await;
    assert_eq!((code, r["data"]["attempt"].clone()), (200, json!(2)), "{r}");
    let ahead: f64 = env
        .pg()
        .await
        .query_one(
            "SELECT extract(epoch FROM dispatch_at - now())::float8 FROM callbacks
             WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (50.0..=65.0).contains(&ahead),
        "retry due {ahead} s from PostgreSQL's now, want the 60 s delay"
    );
}
