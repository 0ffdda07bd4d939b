//! Bounded answers and one clock (issue 12, promises 8 and 9; docs/bounded-answers.md).
//!
//! Each test runs its own PostgreSQL (initdb in a temp folder, free port), never the shared
//! one: it is frozen with SIGSTOP, or reached through a proxy that cuts a connection right
//! after a given statement went through (the statement runs, the answer is lost: the in-doubt
//! commit). The API host's clock is skewed with libfaketime (`apt-get install faketime`).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use harness::{
    CANCEL, CREATE, Engage, PrivatePostgres, RETRIEVE, TestEnv, WorkerProc, stream_entries,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// REQUEST_TIMEOUT_MS of these tests.
const TIMEOUT_MS: u64 = 2_000;
/// The documented margin (COMMIT_GRACE + LATE_VALUE_GRACE) plus scheduling slack on a busy
/// 2-core machine.
const BOUND: Duration = Duration::from_millis(TIMEOUT_MS + 2_000 + 1_000);

/// When the proxy cuts a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// After the first extended-protocol execution (a `Bind` message) sent once armed.
    NextBind,
    /// After the first simple-query `COMMIT` sent once armed.
    NextCommit,
}

/// A TCP proxy in front of PostgreSQL that, once armed, forwards the triggering message,
/// gives PostgreSQL time to run it, then closes both sides: the statement ran, its answer
/// never arrives.
struct CutProxy {
    port: u16,
    armed: Arc<Mutex<Option<Cut>>>,
    cuts: Arc<AtomicUsize>,
}

impl CutProxy {
    async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let armed: Arc<Mutex<Option<Cut>>> = Arc::default();
        let cuts = Arc::new(AtomicUsize::new(0));
        let (a, c) = (armed.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(("127.0.0.1", upstream))
                    .await
                    .expect("upstream");
                tokio::spawn(pump(client, server, a.clone(), c.clone()));
            }
        });
        Self { port, armed, cuts }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/engage", self.port)
    }

    fn arm(&self, cut: Cut) {
        *self.armed.lock().unwrap() = Some(cut);
    }

    fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

fn triggers(cut: Cut, msg: &[u8]) -> bool {
    match cut {
        Cut::NextBind => msg.first() == Some(&b'B'),
        Cut::NextCommit => msg.first() == Some(&b'Q') && msg.windows(6).any(|w| w == b"COMMIT"),
    }
}

async fn pump(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<Mutex<Option<Cut>>>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let cut = Arc::new(Notify::new());
    let done = Arc::new(AtomicBool::new(false));
    let (cut2, done2) = (cut.clone(), done.clone());
    let back = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                n = sr.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => if done2.load(Ordering::SeqCst) || cw.write_all(&buf[..n]).await.is_err() { return },
                },
                () = cut2.notified() => return,
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let fire = {
            let mut a = armed.lock().unwrap();
            match *a {
                Some(c) if triggers(c, &buf[..n]) => {
                    *a = None;
                    true
                }
                _ => false,
            }
        };
        if fire {
            // Drop the answer: PostgreSQL runs the statement, the client never hears.
            done.store(true, Ordering::SeqCst);
            cuts.fetch_add(1, Ordering::SeqCst);
        }
        if sw.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if fire {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cut.notify_one();
            break;
        }
    }
    let _ = back.await;
}

async fn count_phone(pg: &tokio_postgres::Client, phone: &str) -> i64 {
    pg.query_one(
        "SELECT count(*) FROM callbacks WHERE phone_number = $1
             AND NOT (state = 'COMPLETED' AND reason = 'CANCELLED')",
        &[&phone],
    )
    .await
    .unwrap()
    .get(0)
}

async fn setup_through_proxy() -> (PrivatePostgres, CutProxy, TestEnv, Engage, String) {
    let pg = PrivatePostgres::new();
    let proxy = CutProxy::start(pg.port).await;
    let (env, e, key) = harness::serve_tenant(
        TestEnv::new()
            .with("DATABASE_URL", &proxy.url())
            .with("CACHE_TTL_MS", "600000")
            .with("REQUEST_TIMEOUT_MS", &TIMEOUT_MS.to_string()),
        "acme",
    )
    .await;
    e.service("acme", "s", json!({"in_queue_checking": false}))
        .await;
    e.service(
        "acme",
        "slots",
        json!({"slot_minutes": 15, "slot_capacity": 100, "in_queue_checking": false}),
    )
    .await;
    // Warm the caches, the throttle seed and the pool, so that once armed the next statement
    // is the one under test.
    for (i, svc) in ["s", "s", "slots", "slots"].iter().enumerate() {
        let mut body = json!({"serviceName": svc, "phoneNumber": format!("+1202555{i:04}")});
        if *svc == "slots" {
            body["desiredTime"] = json!(in_a_day());
        }
        let (code, b) = e.create(&key).fields(body).send().await;
        assert_eq!(code, 200, "{b}");
    }
    (pg, proxy, env, e, key)
}

fn in_a_day() -> String {
    harness::wire(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(26))
}

async fn keyed_create(e: &Engage, key: &str, idem: &str, body: Value) -> (u16, Value) {
    harness::send(
        e.http
            .post(format!("{}{CREATE}", e.external))
            .header("x-api-key", key)
            .header("Idempotency-Key", idem)
            .json(&body),
    )
    .await
}

/// The batcher's insert runs but its connection breaks before the answer: the create is
/// resolved on a fresh connection and answered 200 (before: 503 for a stored callback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_create_whose_connection_breaks_after_the_insert_is_resolved_as_stored() {
    let (_pg, proxy, env, e, key) = setup_through_proxy().await;
    proxy.arm(Cut::NextBind);
    let phone = "+12025550900";
    let (code, body) = e.create(&key).service("s").phone(phone).send().await;
    assert_eq!(proxy.cuts(), 1, "the insert's connection was cut");
    let pg = env.pg().await;
    let stored = count_phone(&pg, phone).await;
    assert_eq!(code, 200, "stored {stored}: {body}");
    assert_eq!(stored, 1);
    let id: uuid::Uuid = body["data"]["id"].as_str().unwrap().parse().unwrap();
    let found: i64 = pg
        .query_one("SELECT count(*) FROM callbacks WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, 1, "the answered id is the stored one");
}

/// An Idempotency-Key create whose COMMIT ran but whose answer was lost: 200 (before: 503
/// for a committed callback), and the retry gets the same callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_create_whose_commit_answer_is_lost_is_resolved_as_stored() {
    let (_pg, proxy, env, e, key) = setup_through_proxy().await;
    let pg = env.pg().await;
    for (svc, phone) in [("s", "+12025550901"), ("slots", "+12025550902")] {
        proxy.arm(Cut::NextCommit);
        let cuts = proxy.cuts();
        let mut body = json!({"serviceName": svc, "phoneNumber": phone});
        if svc == "slots" {
            body["desiredTime"] = json!(in_a_day());
        }
        let idem = format!("k-{phone}");
        let (code, first) = keyed_create(&e, &key, &idem, body.clone()).await;
        assert_eq!(
            proxy.cuts(),
            cuts + 1,
            "{svc}: the COMMIT's connection was cut"
        );
        let stored = count_phone(&pg, phone).await;
        assert_eq!(code, 200, "{svc}: stored {stored}: {first}");
        assert_eq!(stored, 1, "{svc}");
        let (code, again) = keyed_create(&e, &key, &idem, body).await;
        assert_eq!(code, 200, "{again}");
        assert_eq!(again["data"]["id"], first["data"]["id"]);
        assert_eq!(count_phone(&pg, phone).await, 1, "{svc}: booked once");
    }
}

/// A scheduled create with a slot place whose COMMIT answer is lost is resolved as stored,
/// and a cancel whose COMMIT answer is lost is resolved by re-reading the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_creates_and_cancels_whose_commit_answer_is_lost_are_resolved() {
    let (_pg, proxy, env, e, key) = setup_through_proxy().await;
    let pg = env.pg().await;
    proxy.arm(Cut::NextCommit);
    let phone = "+12025550903";
    let (code, body) = e
        .create(&key)
        .service("slots")
        .phone(phone)
        .at(&in_a_day())
        .send()
        .await;
    assert_eq!(proxy.cuts(), 1);
    assert_eq!(code, 200, "{body}");
    assert_eq!(count_phone(&pg, phone).await, 1);
    let id = body["data"]["id"].as_str().unwrap().to_string();
    let booked = env
        .count("SELECT coalesce(sum(booked), 0)::bigint FROM slot_bookings")
        .await;
    assert_eq!(booked, 3, "two warm-up bookings and this one");

    proxy.arm(Cut::NextCommit);
    let (code, body) = e.cancel(&key, &id).await;
    assert_eq!(proxy.cuts(), 2, "the cancel's COMMIT was cut");
    assert_eq!(code, 200, "{body}");
    let row = pg
        .query_one(
            "SELECT state, reason FROM callbacks WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "COMPLETED");
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("CANCELLED")
    );
}

/// The backend of a create killed while its insert waits on a lock: the session ends (which
/// can also strike just after a commit), the outcome is resolved on a fresh connection: nothing
/// stored, 503; a retry books it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_backend_is_terminated_mid_insert_answers_503_with_nothing_stored() {
    let (_pg, _proxy, env, e, key) = setup_through_proxy().await;
    let mut locker = env.pg().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE callbacks IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let phone = "+12025550904";
    let body = json!({"serviceName": "s", "phoneNumber": phone});
    let call = {
        let req = e
            .http
            .post(format!("{}{CREATE}", e.external))
            .header("x-api-key", &key)
            .json(&body);
        tokio::spawn(harness::send(req))
    };
    let killer = env.pg().await;
    terminate_waiting_insert(&killer).await;
    let (code, answer) = call.await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(code, 503, "{answer}");
    assert_eq!(
        count_phone(&killer, phone).await,
        0,
        "503 means nothing stored"
    );
    let (code, answer) = e.create(&key).fields(body).send().await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(count_phone(&killer, phone).await, 1);
}

/// One request of the frozen-PostgreSQL run.
#[derive(Debug, Clone)]
struct Sent {
    kind: &'static str,
    phone: String,
    idem: Option<String>,
    cancel_of: Option<String>,
    code: u16,
    body: Value,
    took: Duration,
}

/// PostgreSQL SIGSTOPped for 8 s under a mixed load of plain, slot and Idempotency-Key
/// creates, cancels, retrieves, availability and admin reads: every answer comes within REQUEST_TIMEOUT_MS + the margin
/// (before: committing creates hung until PostgreSQL woke up); afterwards every 200 create is
/// stored once, every 503 create is absent and never dispatched, a keyed retry books once, and
/// a cancel answered 200 or "not cancelled" is what the row says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_postgres_bounds_every_answer_and_a_503_means_nothing_stored() {
    let pg = PrivatePostgres::new();
    let env = TestEnv::new()
        .with("DATABASE_URL", &pg.url())
        .with("CACHE_TTL_MS", "600000")
        .with("REQUEST_TIMEOUT_MS", &TIMEOUT_MS.to_string());
    let e = Arc::new(Engage::start(&env, &["--with-worker"]).await);
    let key = e.tenant("acme").await;
    let limits = json!({"in_queue_checking": false, "throttle_per_service_1": 100000,
                        "throttle_per_service_2": 100000});
    e.service("acme", "s", limits.clone()).await;
    let mut slots = limits;
    slots["slot_minutes"] = json!(15);
    slots["slot_capacity"] = json!(100000);
    e.service("acme", "slots", slots).await;
    // Callbacks to cancel (a day ahead: not dispatched meanwhile), one cancel each.
    let mut to_cancel = Vec::new();
    for i in 0..60 {
        let (code, b) = e
            .create(&key)
            .service("slots")
            .phone(&format!("+1303555{i:04}"))
            .at(&in_a_day())
            .send()
            .await;
        assert_eq!(code, 200, "{b}");
        to_cancel.push(b["data"]["id"].as_str().unwrap().to_string());
    }
    let to_cancel = Arc::new(Mutex::new(to_cancel));
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (e, key, sent, stop, seq, to_cancel) = (
            e.clone(),
            key.clone(),
            sent.clone(),
            stop.clone(),
            seq.clone(),
            to_cancel.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let i = seq.fetch_add(1, Ordering::SeqCst);
                let s = one_request(&e, &key, i, &to_cancel).await;
                sent.lock().unwrap().push(s);
                // A steady load, not a flood of the shared machine.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    pg.freeze();
    let frozen_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    pg.thaw();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let sent = sent.lock().unwrap().clone();
    let compensated = e.metric_sum("engage_creates_compensated_total").await;
    println!("frozen run: {compensated} creates compensated so far");
    let slowest = sent.iter().map(|s| s.took).max().unwrap_or_default();
    println!(
        "frozen run: {} requests, {} answered 503, slowest answer {:?} (bound {:?}), frozen {:?}",
        sent.len(),
        sent.iter().filter(|s| s.code == 503).count(),
        slowest,
        BOUND,
        frozen_at.elapsed()
    );
    let mut by_kind: HashMap<&str, (usize, usize, Duration)> = HashMap::new();
    for s in &sent {
        let k = by_kind.entry(s.kind).or_default();
        if s.code == 503 {
            k.1 += 1;
        } else {
            k.0 += 1;
        }
        k.2 = k.2.max(s.took);
    }
    println!("frozen run by kind (ok, 503, slowest): {by_kind:?}");
    for s in &sent {
        assert!(s.took <= BOUND, "answer after {:?}: {s:?}", s.took);
        assert!(
            matches!(s.code, 200 | 503),
            "only 200 or 503 under a frozen database: {s:?}"
        );
    }
    assert!(
        sent.iter()
            .any(|s| s.code == 503 && matches!(s.kind, "plain" | "slot" | "keyed")),
        "the freeze hit some writes"
    );
    check_creates(&env, &e, &key, &sent).await;
    check_cancels(&env, &sent).await;
}

async fn one_request(e: &Engage, key: &str, i: usize, to_cancel: &Mutex<Vec<String>>) -> Sent {
    let phone = format!("+1404{i:07}");
    let kind = [
        "plain",
        "slot",
        "keyed",
        "cancel",
        "retrieve",
        "availability",
        "admin",
    ][i % 7];
    if matches!(kind, "availability" | "admin") {
        return read_request(e, key, kind, phone).await;
    }
    let mut idem = None;
    let mut cancel_of = None;
    let started = Instant::now();
    let (path, body) = match kind {
        "plain" => (CREATE, json!({"serviceName": "s", "phoneNumber": phone})),
        "slot" => (
            CREATE,
            json!({"serviceName": "slots", "phoneNumber": phone, "desiredTime": in_a_day()}),
        ),
        "keyed" => {
            idem = Some(format!("k-{i}"));
            (CREATE, json!({"serviceName": "s", "phoneNumber": phone}))
        }
        "cancel" => match to_cancel.lock().unwrap().pop() {
            Some(id) => {
                cancel_of = Some(id.clone());
                (CANCEL, json!({"id": id}))
            }
            None => (RETRIEVE, json!({"id": uuid::Uuid::now_v7().to_string()})),
        },
        _ => (RETRIEVE, json!({"id": uuid::Uuid::now_v7().to_string()})),
    };
    let mut req = e
        .http
        .post(format!("{}{path}", e.external))
        .header("x-api-key", key)
        .json(&body);
    if let Some(k) = &idem {
        req = req.header("Idempotency-Key", k);
    }
    let (mut code, body) = harness::send(req).await;
    // Retrieve of an unknown id is 404 when the database answers.
    if path == RETRIEVE && code == 404 {
        code = 200;
    }
    Sent {
        kind,
        phone,
        idem,
        cancel_of,
        code,
        body,
        took: started.elapsed(),
    }
}

/// A read of the public or the admin API: any answer but a 5xx counts as 200 here.
async fn read_request(e: &Engage, key: &str, kind: &'static str, phone: String) -> Sent {
    let started = Instant::now();
    let req = if kind == "admin" {
        e.http
            .get(format!("{}/ges/v1/tenants/acme/services", e.internal))
            .bearer_auth(harness::ADMIN_TOKEN)
    } else {
        e.http
            .get(format!(
                "{}/engagement/v3/callbacks/availability/slots",
                e.external
            ))
            .header("x-api-key", key)
    };
    let (code, body) = harness::send(req).await;
    Sent {
        kind,
        phone,
        idem: None,
        cancel_of: None,
        code: if code < 500 { 200 } else { code },
        body,
        took: started.elapsed(),
    }
}

async fn check_creates(env: &TestEnv, e: &Engage, key: &str, sent: &[Sent]) {
    let pg = env.pg().await;
    let creates: Vec<&Sent> = sent
        .iter()
        .filter(|s| matches!(s.kind, "plain" | "slot" | "keyed"))
        .collect();
    // Compensation runs once PostgreSQL answers again: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stray = Vec::new();
        for s in creates.iter().filter(|s| s.code == 503) {
            if count_phone(&pg, &s.phone).await != 0 {
                stray.push(s.phone.clone());
            }
        }
        if stray.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "503 creates still stored: {stray:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut stored_ids = HashSet::new();
    for s in creates.iter().filter(|s| s.code == 200) {
        assert_eq!(count_phone(&pg, &s.phone).await, 1, "{s:?}");
        stored_ids.insert(s.body["data"]["id"].as_str().unwrap().to_string());
    }
    // A keyed create answered 503 books exactly once on retry.
    for s in creates.iter().filter(|s| s.code == 503 && s.idem.is_some()) {
        let body = json!({"serviceName": "s", "phoneNumber": s.phone});
        let (code, b) = keyed_create(e, key, s.idem.as_deref().unwrap(), body).await;
        assert_eq!(code, 200, "{b}");
        assert_eq!(count_phone(&pg, &s.phone).await, 1, "{s:?}");
        stored_ids.insert(b["data"]["id"].as_str().unwrap().to_string());
    }
    // Nothing answered 503 reached the voice stream; every immediate 200 does, once.
    let immediate: HashSet<String> = creates
        .iter()
        .filter(|s| s.code == 200 && s.kind != "slot")
        .map(|s| s.body["data"]["id"].as_str().unwrap().to_string())
        .collect();
    let mut voice = env.voice().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entries = stream_entries(&mut voice, env.voice_stream()).await;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (_, f) in &entries {
            *seen.entry(f["callback_id"].clone()).or_default() += 1;
        }
        for (id, n) in &seen {
            assert_eq!(*n, 1, "{id} dispatched {n} times");
            let found: i64 = pg
                .query_one(
                    "SELECT count(*) FROM callbacks WHERE id = $1::text::uuid
                         AND NOT (state = 'COMPLETED' AND reason = 'CANCELLED')",
                    &[id],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(found, 1, "dispatched {id} is not a stored callback");
        }
        if immediate.iter().all(|id| seen.contains_key(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "immediate 200 creates not dispatched: {:?}",
            immediate
                .iter()
                .filter(|id| !seen.contains_key(*id))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn check_cancels(env: &TestEnv, sent: &[Sent]) {
    let pg = env.pg().await;
    for s in sent.iter().filter(|s| s.cancel_of.is_some()) {
        let id = s.cancel_of.as_deref().unwrap();
        let state: String = pg
            .query_one(
                "SELECT state FROM callbacks WHERE id = $1::text::uuid",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        let message = s.body["status"]["message"].as_str().unwrap_or_default();
        match s.code {
            200 => assert_eq!(state, "COMPLETED", "{s:?}"),
            _ if message.contains("not cancelled") || message == "request timed out" => {
                assert_ne!(state, "COMPLETED", "a 'not cancelled' answer: {s:?}")
            }
            _ => {} // outcome honestly unknown to the caller
        }
    }
}

/// libfaketime for one process: its clocks run `offset` off (monotonic clocks untouched).
fn skewed(env: &TestEnv, offset: &str) -> TestEnv {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        std::path::Path::new(lib).exists(),
        "libfaketime missing: apt-get install -y faketime"
    );
    env.clone()
        .with("LD_PRELOAD", lib)
        .with("FAKETIME", offset)
        .with("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .with("FAKETIME_NO_CACHE", "1")
}

/// The API host's clock 10 minutes ahead or behind: an immediate callback still reaches the
/// voice stream within a couple of seconds (before: 10 minutes late when ahead), and its
/// desiredTime is the database's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_callbacks_dispatch_promptly_whatever_the_api_host_clock_says() {
    let env = TestEnv::new();
    let mut worker = None;
    for (n, offset) in ["+10m", "-10m"].into_iter().enumerate() {
        let e = Engage::start(&skewed(&env, offset), &[]).await;
        if worker.is_none() {
            worker = Some(WorkerProc::start(&env, &[]).await);
        }
        let key = e.tenant("acme").await;
        e.service("acme", "s", json!({"in_queue_checking": false}))
            .await;
        let started = Instant::now();
        let (code, body) = e
            .create(&key)
            .service("s")
            .phone(&format!("+1202555095{n}"))
            .send()
            .await;
        assert_eq!(code, 200, "{offset}: {body}");
        let id = body["data"]["id"].as_str().unwrap().to_string();
        let mut voice = env.voice().await;
        loop {
            let entries = stream_entries(&mut voice, env.voice_stream()).await;
            if entries.iter().any(|(_, f)| f["callback_id"] == id) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{offset}: immediate callback not dispatched after {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("{offset}: dispatched after {:?}", started.elapsed());
        let pg = env.pg().await;
        let off_by: f64 = pg
            .query_one(
                "SELECT abs(extract(epoch FROM desired_time - created_at))::float8
                 FROM callbacks WHERE id = $1::text::uuid",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            off_by < 5.0,
            "{offset}: desired_time is the database's time ({off_by} s off)"
        );
    }
}

/// Terminates the backend of the `INSERT INTO callbacks` waiting on a lock (within 5 s).
pub(super) async fn terminate_waiting_insert(killer: &tokio_postgres::Client) {
    let started = Instant::now();
    loop {
        let n: i64 = killer
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO callbacks%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "insert never waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
