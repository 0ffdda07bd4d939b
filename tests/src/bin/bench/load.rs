//! Load generation: closed loop (N connections as fast as they go, for saturation) and open
//! loop (requests started on a fixed schedule; latency counted from the scheduled start, so a
//! stalled server cannot hide its queueing: no coordinated omission).
//!
//! The generator shares the machine's cores with what it measures, so it is kept cheap, as
//! pgbench is for the insert ceiling:
//! - each run has a thread of its own with a single-threaded runtime, so its responses do not
//!   wake threads of the bench's multi-threaded runtime (A/B on 2026-12-04, `bench --only
//!   create`: 67 → 52 µs of generator CPU per create);
//! - requests go over hyper's connection-level HTTP/1.1 client, one keep-alive connection per
//!   closed-loop task (no pool, no client middleware), with bodies serialised up front by the
//!   scenario. The bench reports the generator's share every run.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

type Body = Full<Bytes>;

/// What a load run sends: the server's address and the i-th request (cheap to clone).
#[derive(Clone)]
pub(crate) struct MakeRequest {
    /// `host:port` the connections go to.
    addr: Arc<str>,
    make: Arc<dyn Fn(u64) -> Request<Body> + Send + Sync>,
}

impl MakeRequest {
    /// `GET url`, with `x-api-key: key` when given.
    pub(crate) fn get(url: &str, key: Option<&str>) -> Self {
        let (addr, path) = split(url);
        let (key, host) = (key.map(str::to_string), addr.clone());
        Self::new(addr, move |_| {
            let mut req = Request::get(path.as_str()).header(header::HOST, host.as_str());
            if let Some(k) = &key {
                req = req.header("x-api-key", k);
            }
            req.body(Body::default()).expect("a valid request")
        })
    }

    /// `POST url` of the JSON `body(i)` with `x-api-key: key`.
    pub(crate) fn post_json(
        url: &str,
        key: &str,
        body: impl Fn(u64) -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        let (addr, path) = split(url);
        let (key, host) = (key.to_string(), addr.clone());
        Self::new(addr, move |i| {
            let bytes = serde_json::to_vec(&body(i)).expect("JSON");
            Request::builder()
                .method(Method::POST)
                .uri(path.as_str())
                .header(header::HOST, host.as_str())
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-api-key", &key)
                .body(Body::from(bytes))
                .expect("a valid request")
        })
    }

    fn new(addr: String, make: impl Fn(u64) -> Request<Body> + Send + Sync + 'static) -> Self {
        Self {
            addr: Arc::from(addr),
            make: Arc::new(make),
        }
    }
}

/// (`host:port`, path and query) of an `http://` URL.
fn split(url: &str) -> (String, String) {
    let uri: Uri = url.parse().expect("a URL");
    let addr = uri.authority().expect("a host").to_string();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    (addr, path)
}

/// Runs `run` on a thread of its own, in a single-threaded runtime.
async fn on_own_thread<F, Fut>(run: F) -> Run
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Run>,
{
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("load runtime");
        rt.block_on(run())
    })
    .await
    .expect("load thread")
}

/// A keep-alive HTTP/1.1 connection to `addr`, or `None` when it cannot be opened.
async fn connect(addr: &str) -> Option<SendRequest<Body>> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(send)
}

/// Sends `req` on `conn` (opening one when there is none or it broke) and reads the whole
/// answer; whether it was a 2xx. A failed request drops the connection.
async fn one(conn: &mut Option<SendRequest<Body>>, addr: &str, req: Request<Body>) -> bool {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = connect(addr).await;
    }
    let Some(send) = conn.as_mut() else {
        return false;
    };
    if send.ready().await.is_err() {
        *conn = None;
        return false;
    }
    match send.send_request(req).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            match resp.into_body().collect().await {
                Ok(_) => ok,
                Err(_) => {
                    *conn = None;
                    false
                }
            }
        }
        Err(_) => {
            *conn = None;
            false
        }
    }
}

/// Result of one load run.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// Successful responses per second.
    pub(crate) throughput: f64,
    /// Latencies of successful responses, microseconds.
    pub(crate) latency: Histogram<u64>,
    /// Non-2xx responses and transport errors.
    pub(crate) errors: u64,
    /// Requests sent, whatever their outcome (successes + `errors`).
    pub(crate) attempted: u64,
}

impl Run {
    /// A percentile in milliseconds.
    pub(crate) fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// `conns` connections sending back-to-back for `dur`.
pub(crate) async fn closed_loop(make: MakeRequest, conns: usize, dur: Duration) -> Run {
    on_own_thread(move || closed(make, conns, dur)).await
}

async fn closed(make: MakeRequest, conns: usize, dur: Duration) -> Run {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (make, counter) = (make.clone(), counter.clone());
            tokio::spawn(async move {
                let mut h = hist();
                let (mut errors, mut attempted) = (0u64, 0u64);
                let mut conn = None;
                while started.elapsed() < dur {
                    let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let req = (make.make)(i);
                    let t = Instant::now();
                    attempted += 1;
                    if one(&mut conn, &make.addr, req).await {
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (h, errors, attempted)
            })
        })
        .collect();
    let mut latency = hist();
    let (mut errors, mut attempted) = (0, 0);
    for t in tasks {
        let (h, e, a) = t.await.expect("load task");
        latency.add(h).expect("same bounds");
        errors += e;
        attempted += a;
    }
    let secs = started.elapsed().as_secs_f64();
    Run {
        throughput: latency.len() as f64 / secs,
        latency,
        errors,
        attempted,
    }
}

/// `rate` requests per second for `dur`, each started at its scheduled time (on an idle
/// connection of the run's, or a new one when all are busy).
pub(crate) async fn open_loop(make: MakeRequest, rate: u32, dur: Duration) -> Run {
    on_own_thread(move || open(make, rate, dur)).await
}

async fn open(make: MakeRequest, rate: u32, dur: Duration) -> Run {
    let total = (f64::from(rate) * dur.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let shared = Arc::new(Mutex::new((hist(), 0u64)));
    let idle: Arc<Mutex<Vec<SendRequest<Body>>>> = Arc::default();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(at).await;
        let req = (make.make)(i);
        let (shared, idle, addr) = (shared.clone(), idle.clone(), make.addr.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = idle.lock().expect("no poisoned lock").pop();
            let ok = one(&mut conn, &addr, req).await;
            let late = at.elapsed().as_micros() as u64;
            if let Some(c) = conn {
                idle.lock().expect("no poisoned lock").push(c);
            }
            let mut g = shared.lock().expect("no poisoned lock");
            if ok {
                let _ = g.0.record(late.max(1));
            } else {
                g.1 += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let (latency, errors) = shared.lock().expect("no poisoned lock").clone();
    Run {
        throughput: latency.len() as f64 / secs,
        latency,
        errors,
        attempted: total,
    }
}

/// The middle value of `v` (the upper one of an even count); 0 for an empty list.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}
