//! A submission that a cancel fenced is not a hand-off (docs/voice-platform.md#cancel).
//!
//! The race behind the chaos row `pg-sigstop`'s one "lost" callback: the worker loads a due
//! callback while it is still pending, a cancel commits and fences the attempt's dedupe key
//! (the hand-off was not written yet, so none may be), then the worker's submission reaches
//! the voice Redis. The script refuses it (the key is taken), and the worker must not record in
//! PostgreSQL a hand-off that never reached the stream: a row with `submitted_at` set and no
//! entry is what the chaos audit counts as lost, and it sends the voice platform a cancel for a
//! session it never had.
//!
//! The test holds the worker's submission in a proxy in front of the voice Redis until the
//! cancel (straight to the voice Redis, not through the proxy) has fenced the attempt: the
//! order that a frozen PostgreSQL, thawed, produced by chance.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use harness::{Fixture, TestEnv, WorkerProc};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// A TCP proxy in front of a Redis that, once armed with a byte pattern, holds the first
/// client message containing it until released (everything else passes).
struct HoldProxy {
    port: u16,
    pattern: Arc<Mutex<Option<Vec<u8>>>>,
    held: Arc<Notify>,
    release: Arc<Notify>,
}

impl HoldProxy {
    async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let proxy = Self {
            port,
            pattern: Arc::default(),
            held: Arc::new(Notify::new()),
            release: Arc::new(Notify::new()),
        };
        let (pattern, held, release) = (
            proxy.pattern.clone(),
            proxy.held.clone(),
            proxy.release.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(("127.0.0.1", upstream))
                    .await
                    .expect("upstream");
                let gate = (pattern.clone(), held.clone(), release.clone());
                tokio::spawn(pump(client, server, gate));
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn arm(&self, pattern: &str) {
        *self.pattern.lock().unwrap() = Some(pattern.as_bytes().to_vec());
    }
}

type Gate = (Arc<Mutex<Option<Vec<u8>>>>, Arc<Notify>, Arc<Notify>);

/// Forwards both ways; a client message with the armed pattern waits for the release.
async fn pump(client: TcpStream, server: TcpStream, (pattern, held, release): Gate) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let hit = {
            let mut p = pattern.lock().unwrap();
            let hit = p
                .as_ref()
                .is_some_and(|p| buf[..n].windows(p.len()).any(|w| w == p.as_slice()));
            if hit {
                *p = None;
            }
            hit
        };
        if hit {
            held.notify_one();
            release.notified().await;
        }
        if sw.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// (state, reason, attempt, submitted, control_pending) of a callback.
async fn row(env: &TestEnv, id: &str) -> (String, Option<String>, i16, bool, bool) {
    let r = env
        .pg()
        .await
        .query_one(
            "SELECT state, reason, attempt, submitted_at IS NOT NULL, control_pending
             FROM callbacks WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("row");
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

/// What the worker logs when the voice Redis refuses a fenced submission.
const FENCED_LOG: &str = "fenced by a cancel";

/// The worker loads a due callback, a cancel commits and fences its attempt, then the
/// worker's submission arrives: the script refuses it (no entry), and the worker must neither
/// record the attempt as submitted (a row claiming a hand-off the stream does not hold) nor
/// owe the voice platform a cancel for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_fence_a_fenced_submission_is_not_recorded_as_handed_off() {
    let env = TestEnv::new();
    let fx = Fixture::dispatch(env, "fence1", "s", json!({})).await;
    let voice_port: u16 = fx.env.vars["VOICE_REDIS_URL"]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("voice Redis port");
    let proxy = HoldProxy::start(voice_port).await;
    let id = fx.create().in_secs(3).id().await;
    proxy.arm(&id);
    // Only the worker talks to the voice Redis through the proxy; a long Redis timeout keeps
    // its held submission from timing out (a timeout would hand the claim back instead).
    let worker = WorkerProc::start(
        &fx.env,
        &[
            ("VOICE_REDIS_URL", proxy.url()),
            ("REDIS_TIMEOUT_MS", "20000".to_string()),
        ],
    )
    .await;
    tokio::time::timeout(Duration::from_secs(20), proxy.held.notified())
        .await
        .unwrap_or_else(|_| panic!("the worker never submitted:\n{}", worker.proc.output()));

    // The worker has loaded the row (pending) and its submission waits: cancel now.
    let (code, body) = fx.cancel(&id).await;
    assert_eq!(code, 200, "{body}");
    let dedupe = shared::redis::voice::dedupe_key(
        fx.env.voice_stream(),
        "sub",
        id.parse().expect("uuid"),
        1,
    );
    let fence: Option<String> = redis::cmd("GET")
        .arg(&dedupe)
        .query_async(&mut fx.env.voice().await)
        .await
        .expect("GET");
    assert_eq!(
        fence.as_deref(),
        Some(shared::redis::voice::FENCE),
        "the cancel fenced the attempt"
    );
    proxy.release.notify_one();

    // The pass ends: it records the hand-off (the bug) or logs the fence (a cancel's unindex
    // already took the claim out of the in-flight set, so that cannot tell).
    let started = Instant::now();
    while !row(&fx.env, &id).await.3 && !worker.proc.output().contains(FENCED_LOG) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the pass never ended:\n{}",
            worker.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, per) = fx.env.census().await;
    assert!(!per.contains_key(&id), "the fence let an entry through");
    let (state, reason, attempt, submitted, owes) = row(&fx.env, &id).await;
    assert_eq!(
        (state.as_str(), reason.as_deref(), attempt),
        ("COMPLETED", Some("CANCELLED"), 1)
    );
    assert!(
        !submitted,
        "attempt 1 is recorded as submitted, but the voice stream has no entry for it \
         (what the chaos audit counts as lost)"
    );
    assert!(!owes, "nothing was handed off: no cancel is owed");
    let events: i64 = fx
        .env
        .pg()
        .await
        .query_one(
            "SELECT count(*) FROM callback_events WHERE callback_id = $1::text::uuid
               AND reason = 'SUBMITTED'",
            &[&id],
        )
        .await
        .expect("events")
        .get(0);
    assert_eq!(events, 0, "no SUBMITTED event for a fenced attempt");
}
