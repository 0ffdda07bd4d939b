//! Issue 12's attack review, kept as regression tests: an event without `attempt` racing a
//! retry, the events route's token and inputs, an API host partitioned from PostgreSQL while
//! its create commits (503 to the client, yet a worker may hand the callback off: it must be
//! withdrawn and settled, never dialled without a record and a cancel), and a partitioned cancel
//! whose open transaction holds a row lock (the worker must not stall for long).

use std::time::{Duration, Instant};

use harness::{Engage, TestEnv, open_service};
use serde_json::json;

/// An attempt-less event confirmed against the voice Redis for attempt 1 is applied to
/// attempt 2 when a retry lands between the check and the second apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_attack_attemptless_event_lands_on_a_retry_never_handed_off() {
    let voice = harness::PrivateRedis::new(false);
    let env = TestEnv::new()
        .with("VOICE_REDIS_URL", &voice.url())
        .with("REDIS_TIMEOUT_MS", "8000");
    // No worker: the hand-off is played by hand.
    let engage = Engage::start(&env, &[]).await;
    let key = engage
        .provision(
            "race",
            "svc",
            open_service(json!({"max_attempts": 3, "retry_delay_seconds": 7200})),
        )
        .await;
    let (code, resp) = engage
        .create(&key)
        .service("svc")
        .phone("+15550109901")
        .send()
        .await;
    assert_eq!(code, 200, "{resp}");
    let id = resp["data"]["id"].as_str().unwrap().to_string();
    // The worker's script wrote attempt 1 (dedupe key `1`) and has not recorded it yet.
    let mut v = redis::Client::open(voice.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let dk = format!("{{{}}}:sub:{id}:1", env.voice_stream());
    let _: () = redis::cmd("SET")
        .arg(&dk)
        .arg("1")
        .query_async(&mut v)
        .await
        .unwrap();
    // The voice Redis is slow for a moment (private instance).
    voice.freeze();
    let a = {
        let engage_url = engage.internal.clone();
        let http = engage.http.clone();
        let id = id.clone();
        tokio::spawn(async move {
            harness::send(
                http.post(format!("{engage_url}/ges/v1/ors/callbacks/{id}/events"))
                    .bearer_auth(harness::ORS_EVENTS_TOKEN)
                    .json(&json!({"state": "ROUTING"})),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Meanwhile the worker records attempt 1 (what mark_submitted writes) and the voice
    // platform reports attempt 1's failure: attempt 2 is scheduled two hours out.
    env.pg()
        .await
        .execute(
            "UPDATE callbacks SET submitted_at = now(), expires_at = now() + interval '1 day'
               WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    let (code, b) = engage
        .event(
            &id,
            json!({"state": "COMPLETED", "reason": "FAIL_CALL_TO_CUSTOMER", "attempt": 1}),
        )
        .await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["data"]["attempt"], 2, "{b}");
    voice.thaw();
    let (code, a) = a.await.unwrap();
    eprintln!("event A: {code} {a}");
    let (state, attempt, submitted) = env.row(&id).await;
    eprintln!("row: {state} attempt {attempt} submitted {submitted}");
    let sub2: Option<String> = redis::cmd("GET")
        .arg(format!("{{{}}}:sub:{id}:2", env.voice_stream()))
        .query_async(&mut v)
        .await
        .unwrap();
    assert!(
        !(attempt == 2 && submitted && sub2.is_none()),
        "attempt 2 was never handed off but is recorded as submitted ({state}): the worker \
         will never dial it"
    );
}

/// Token and input edge cases on the events route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_attack_event_token_and_inputs() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let id = uuid::Uuid::now_v7().to_string();
    let body = json!({"state": "QUEUED"});
    let tok = harness::ORS_EVENTS_TOKEN;
    // The events request of `id` with the body, without or with an `authorization` header.
    let req = || engage.http.post(engage.event_url(&id)).json(&body);
    let auth = |value: String| req().header("authorization", value);
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("none", req()),
        ("empty bearer", auth("Bearer ".into())),
        ("lowercase", auth(format!("bearer {tok}"))),
        ("double space", auth(format!("Bearer  {tok}"))),
        ("trailing ws", auth(format!("Bearer {tok}\t"))),
        ("x-api-key", req().header("x-api-key", tok)),
        ("basic", req().basic_auth(tok, Some(tok))),
        ("prefix", auth(format!("Bearer {}", &tok[..tok.len() - 1]))),
        (
            "two headers",
            auth("Bearer x".into()).header("authorization", format!("Bearer {tok}")),
        ),
        (
            "query",
            engage
                .http
                .post(format!("{}?token={tok}", engage.event_url(&id)))
                .json(&body),
        ),
    ];
    for (name, req) in cases {
        let (code, r) = harness::send(req).await;
        eprintln!("auth {name}: {code} {r}");
    }
    let bodies = [
        json!({"state": "QUEUED", "attempt": 0}),
        json!({"state": "QUEUED", "attempt": -1}),
        json!({"state": "QUEUED", "attempt": 40000}),
        json!({"state": "QUEUED", "attempt": "1"}),
        json!({"state": "QUEUED", "at": "not a time"}),
        json!({"state": "QUEUED", "at": "9999-12-31T23:59:59Z"}),
        json!({"state": "QUEUED", "at": "-009999-01-01T00:00:00Z"}),
        json!({"state": "QUEUED", "at": "2026-01-01T00:00:00+99:00"}),
        json!({"state": "COMPLETED", "reason": "RETRY"}),
        json!({"state": "queued"}),
        json!({"state": "QUEUED\u{0}"}),
        json!({"state": "QUEUED", "session_id": "\u{0}"}),
        json!({}),
        json!([]),
        json!({"state": "QUEUED", "position_in_queue": 1e300}),
    ];
    for b in bodies {
        let (code, r) = engage.event(&id, b.clone()).await;
        eprintln!("body {b}: {code} {r}");
        assert!(code < 500, "{b}: {code} {r}");
    }
    for path in [
        "%00",
        "..",
        "00000000-0000-0000-0000-000000000000",
        " ",
        "a%20b",
    ] {
        let (code, r) = engage.event(path, json!({"state": "QUEUED"})).await;
        eprintln!("path {path}: {code} {r}");
        assert!(code < 500);
    }
}

mod partition {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };
    use std::time::Duration;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
        sync::watch,
    };

    /// A TCP proxy in front of PostgreSQL. Once armed, the first client message containing
    /// `COMMIT` (simple query) or starting with `Bind` is forwarded, then the link goes dark:
    /// nothing flows back, new connections hang, until `heal`, which closes every old link.
    pub(super) struct Partition {
        pub port: u16,
        armed: Arc<Mutex<Option<u8>>>,
        dark: Arc<AtomicBool>,
        epoch: watch::Sender<u64>,
    }

    impl Partition {
        pub(super) async fn start(upstream: u16) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let armed: Arc<Mutex<Option<u8>>> = Arc::default();
            let dark = Arc::new(AtomicBool::new(false));
            let (epoch, _) = watch::channel(0u64);
            let (a, d, ep) = (armed.clone(), dark.clone(), epoch.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (a, d, ep) = (a.clone(), d.clone(), ep.clone());
                    tokio::spawn(async move {
                        // New connections wait while dark.
                        while d.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        let server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
                        pump(client, server, a, d, ep.subscribe()).await;
                    });
                }
            });
            Self {
                port,
                armed,
                dark,
                epoch,
            }
        }
        pub(super) fn url(&self) -> String {
            format!("postgres://postgres@127.0.0.1:{}/engage", self.port)
        }
        /// `b'C'`: on the next COMMIT; `b'B'`: on the next Bind.
        pub(super) fn arm(&self, on: u8) {
            *self.armed.lock().unwrap() = Some(on);
        }
        pub(super) fn is_dark(&self) -> bool {
            self.dark.load(Ordering::SeqCst)
        }
        pub(super) fn heal(&self) {
            self.dark.store(false, Ordering::SeqCst);
            self.epoch.send_modify(|e| *e += 1);
        }
    }

    fn triggers(on: u8, msg: &[u8]) -> bool {
        match on {
            b'C' => msg.first() == Some(&b'Q') && msg.windows(6).any(|w| w == b"COMMIT"),
            _ => msg.first() == Some(&b'B'),
        }
    }

    async fn pump(
        client: TcpStream,
        server: TcpStream,
        armed: Arc<Mutex<Option<u8>>>,
        dark: Arc<AtomicBool>,
        mut epoch: watch::Receiver<u64>,
    ) {
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let d2 = dark.clone();
        let mut ep2 = epoch.clone();
        let back = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                tokio::select! {
                    n = sr.read(&mut buf) => match n {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            // Dark: swallow (the answer is lost in the network).
                            if d2.load(Ordering::SeqCst) { continue; }
                            if cw.write_all(&buf[..n]).await.is_err() { return }
                        }
                    },
                    _ = ep2.changed() => return,
                }
            }
        });
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::select! {
                n = cr.read(&mut buf) => match n { Ok(0) | Err(_) => break, Ok(n) => n },
                _ = epoch.changed() => break,
            };
            if dark.load(Ordering::SeqCst) {
                continue; // lost on the way
            }
            let fire = {
                let mut a = armed.lock().unwrap();
                match *a {
                    Some(on) if triggers(on, &buf[..n]) => {
                        *a = None;
                        true
                    }
                    _ => false,
                }
            };
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            if fire {
                // Let PostgreSQL run it, then the network goes dark.
                dark.store(true, Ordering::SeqCst);
            }
        }
        back.abort();
    }
}

/// A private PostgreSQL, a partition proxy in front of it, and two environments on it:
/// `direct` (workers, a healthy API host) and through the proxy. `sweep`: the worker's sweep
/// every second with a one-second grace.
async fn partitioned(
    sweep: bool,
) -> (
    harness::PrivatePostgres,
    partition::Partition,
    TestEnv,
    TestEnv,
) {
    let pg = harness::PrivatePostgres::new();
    let proxy = partition::Partition::start(pg.port).await;
    let mut direct = TestEnv::new()
        .with("DATABASE_URL", &pg.url())
        .with("CACHE_TTL_MS", "600000")
        .with("REQUEST_TIMEOUT_MS", "2000");
    if sweep {
        direct = direct
            .with("WORKER_SWEEP_S", "1")
            .with("WORKER_SWEEP_GRACE_S", "1");
    }
    let via_proxy = direct.clone().with("DATABASE_URL", &proxy.url());
    (pg, proxy, direct, via_proxy)
}

/// A keyed create whose COMMIT ran while the API host lost PostgreSQL: 503 to the client,
/// while the worker (other host) sees the row; a retry on another API instance gets 200.
/// Then the API host reconnects and compensates: it withdraws the callback (with a cancel to
/// the voice platform if it was handed off) unless the retry was answered 200 with it, in
/// which case it stays (docs/bounded-answers.md#a-replay-of-a-create-answered-503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_attack_partitioned_api_503_create_is_withdrawn_if_dispatched() {
    let (_pg, proxy, direct, via_proxy) = partitioned(true).await;
    let api1 = Engage::start(&via_proxy, &[]).await;
    let api2 = Engage::start(&direct, &[]).await;
    let _worker = harness::WorkerProc::start(&direct, &[]).await;
    let key = api1.provision("acme", "s", open_service(json!({}))).await;
    let keyed = |e: &Engage, idem: &str, phone: &str| {
        e.http
            .post(format!("{}/engagement/v3/callbacks/create", e.external))
            .header("x-api-key", &key)
            .header("Idempotency-Key", idem)
            .json(&json!({"serviceName": "s", "phoneNumber": phone}))
    };
    // Warm api1 (caches, pool, throttle seed).
    for i in 0..3 {
        let (code, b) = harness::send(keyed(
            &api1,
            &format!("warm{i}"),
            &format!("+1202555010{i}"),
        ))
        .await;
        assert_eq!(code, 200, "{b}");
    }
    proxy.arm(b'C');
    let started = Instant::now();
    let phone = "+12025550199";
    let (code1, b1) = harness::send(keyed(&api1, "k-1", phone)).await;
    eprintln!(
        "api1 (partitioned): {code1} after {:?} {b1}",
        started.elapsed()
    );
    assert!(
        proxy.is_dark(),
        "the COMMIT went out and the link went dark"
    );
    // The client retries with the same key on another API instance.
    let (code2, b2) = harness::send(keyed(&api2, "k-1", phone)).await;
    eprintln!("api2 retry: {code2} {b2}");
    let id = b2["data"]["id"].as_str().map(str::to_string);
    // The worker dispatches it meanwhile (sweep grace 1 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pgc = direct.pg().await;
    let stored_before: i64 = pgc
        .query_one(
            "SELECT count(*) FROM callbacks WHERE phone_number = $1",
            &[&phone],
        )
        .await
        .unwrap()
        .get(0);
    let mut voice = direct.voice().await;
    let in_stream = |entries: &Vec<(String, std::collections::BTreeMap<String, String>)>| {
        entries
            .iter()
            .filter(|(_, f)| Some(&f["callback_id"]) == id.as_ref())
            .count()
    };
    let dialed = in_stream(&harness::stream_entries(&mut voice, direct.voice_stream()).await);
    eprintln!("while partitioned: stored {stored_before}, in the voice stream {dialed}");
    proxy.heal();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stored_after: i64 = pgc
        .query_one(
            "SELECT count(*) FROM callbacks WHERE phone_number = $1",
            &[&phone],
        )
        .await
        .unwrap()
        .get(0);
    let control = harness::stream_entries(&mut voice, &direct.vars["CONTROL_STREAM"]).await;
    let ctl = in_stream(&control);
    eprintln!("after heal: stored {stored_after}, control entries {ctl}");
    let mut state = None;
    if let Some(id) = &id {
        let (code, r) = api2
            .post(&key, "/engagement/v3/callbacks/retrieve", json!({"id": id}))
            .await;
        eprintln!("retrieve of the id api2 answered 200 for: {code} {r}");
        state = r["data"]["callbackState"].as_str().map(str::to_string);
    }
    if code2 == 200 {
        // The retry's 200 named the callback: it stays, and no cancel follows its hand-off.
        assert_eq!(ctl, 0, "the callback a 200 named was cancelled");
        assert_ne!(
            state.as_deref(),
            Some("COMPLETED"),
            "the callback a 200 named ended"
        );
    } else if code1 == 503 && dialed > 0 {
        // A 503 whose callback was handed off meanwhile is withdrawn with a cancel to the
        // voice platform, and its record kept.
        assert!(ctl > 0, "a 503 create was dialled and never cancelled");
    }
    assert!(stored_after >= stored_before.min(1), "the record went away");
}

/// Same as above for a plain (batched) create: 503, dispatched by the worker, then deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_attack_partitioned_api_503_plain_create_is_withdrawn_if_dispatched() {
    let (_pg, proxy, direct, via_proxy) = partitioned(true).await;
    let api1 = Engage::start(&via_proxy, &[]).await;
    let _worker = harness::WorkerProc::start(&direct, &[]).await;
    let key = api1.provision("acme", "s", open_service(json!({}))).await;
    for i in 0..3 {
        let (code, b) = api1
            .create(&key)
            .service("s")
            .phone(&format!("+1202555020{i}"))
            .send()
            .await;
        assert_eq!(code, 200, "{b}");
    }
    proxy.arm(b'B');
    let phone = "+12025550299";
    let (code1, b1) = api1.create(&key).service("s").phone(phone).send().await;
    eprintln!(
        "plain create (partitioned): {code1} {b1} dark={}",
        proxy.is_dark()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pgc = direct.pg().await;
    let ids: Vec<String> = pgc
        .query(
            "SELECT id::text FROM callbacks WHERE phone_number = $1",
            &[&phone],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut voice = direct.voice().await;
    let entries = harness::stream_entries(&mut voice, direct.voice_stream()).await;
    let dialed = entries
        .iter()
        .filter(|(_, f)| ids.contains(&f["callback_id"]))
        .count();
    eprintln!("while partitioned: stored {ids:?}, in the voice stream {dialed}");
    proxy.heal();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let left: i64 = pgc
        .query_one(
            "SELECT count(*) FROM callbacks WHERE phone_number = $1",
            &[&phone],
        )
        .await
        .unwrap()
        .get(0);
    let control = harness::stream_entries(&mut voice, &direct.vars["CONTROL_STREAM"]).await;
    let ctl = control
        .iter()
        .filter(|(_, f)| ids.contains(&f["callback_id"]))
        .count();
    eprintln!("after heal: stored {left}, control entries {ctl}");
    if code1 == 503 && dialed > 0 {
        assert!(ctl > 0, "a 503 create was dialled and never cancelled");
        assert_eq!(left, 1, "its record must stay");
    }
}

/// A cancel whose UPDATE ran on a partitioned API host answers 503 "not cancelled", but its
/// transaction stays open on PostgreSQL holding the row lock. Does the worker stall?
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_attack_partitioned_cancel_leaves_a_row_lock_that_stalls_the_worker() {
    let (_pg, proxy, direct, via_proxy) = partitioned(false).await;
    let api1 = Engage::start(&via_proxy, &[]).await;
    let api2 = Engage::start(&direct, &[]).await;
    let key = api1.provision("acme", "s", open_service(json!({}))).await;
    let create = |e: &Engage, phone: String| {
        let key = key.clone();
        let (http, url) = (
            e.http.clone(),
            format!("{}/engagement/v3/callbacks/create", e.external),
        );
        async move {
            let (code, b) = harness::send(
                http.post(url)
                    .header("x-api-key", key)
                    .json(&json!({"serviceName": "s", "phoneNumber": phone})),
            )
            .await;
            assert_eq!(code, 200, "{b}");
            b["data"]["id"].as_str().unwrap().to_string()
        }
    };
    let victim = create(&api1, "+12025550301".into()).await;
    // warm cancel path on api1
    let other = create(&api1, "+12025550302".into()).await;
    let (code, b) = api1.cancel(&key, &other).await;
    assert_eq!(code, 200, "{b}");
    proxy.arm(b'B');
    let (code, b) = api1.cancel(&key, &victim).await;
    eprintln!("partitioned cancel: {code} {b} dark={}", proxy.is_dark());
    let worker = harness::WorkerProc::start(&direct, &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fresh = create(&api2, "+12025550303".into()).await;
    let started = Instant::now();
    let mut voice = direct.voice().await;
    let mut dispatched = false;
    while started.elapsed() < Duration::from_secs(20) {
        let e = harness::stream_entries(&mut voice, direct.voice_stream()).await;
        if e.iter().any(|(_, f)| f["callback_id"] == fresh) {
            dispatched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let e = harness::stream_entries(&mut voice, direct.voice_stream()).await;
    let victim_dialed = e.iter().any(|(_, f)| f["callback_id"] == victim);
    eprintln!(
        "fresh callback dispatched: {dispatched} after {:?}; victim (503 'not cancelled') dialed: {victim_dialed}",
        started.elapsed()
    );
    let (code, r) = harness::send(
        api2.http
            .post(format!(
                "{}/ges/v1/ors/callbacks/{victim}/events",
                api2.internal
            ))
            .bearer_auth(harness::ORS_EVENTS_TOKEN)
            .json(&json!({"state": "ROUTING", "attempt": 1})),
    )
    .await;
    eprintln!("event for the locked victim: {code} {r}");
    let (code, r) = api2.cancel(&key, &victim).await;
    eprintln!("cancel retry on a healthy host: {code} {r}");
    let out = worker.proc.output();
    eprintln!(
        "worker log tail: {}",
        out.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    proxy.heal();
    assert!(
        dispatched,
        "one partitioned API host stalled the worker's dispatch"
    );
}
