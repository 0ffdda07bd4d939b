//! Load generation: closed loop (N connections as fast as they go, for saturation) and open
//! loop (requests started on a fixed schedule; latency counted from the scheduled start, so a
//! stalled server cannot hide its queueing: no coordinated omission).
//!
//! The generator shares the machine's cores with what it measures, so it is kept cheap, as
//! pgbench is for the insert ceiling, and as wrk is:
//! - each run has a thread of its own with a single-threaded runtime, so its responses do not
//!   wake threads of the bench's multi-threaded runtime (A/B on 2026-12-04, `bench --only
//!   create`: 67 → 52 µs of generator CPU per create);
//! - requests are written as HTTP/1.1 bytes, whole (head and body serialised up front by the
//!   scenario), on one keep-alive connection per closed-loop task, one request in flight per
//!   connection (no pipelining: the server sees what a client sends); answers are read with
//!   `httparse` and their `Content-Length` (hyper's client, its connection task and channels
//!   were about half of the generator's 31 µs per create, docs/costs.md). The bench reports the
//!   generator's share every run.

use std::{
    io,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use http::Uri;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// What a load run sends: the server's address and the i-th request, as the bytes of an
/// HTTP/1.1 request (cheap to clone).
#[derive(Clone)]
pub(crate) struct MakeRequest {
    /// `host:port` the connections go to.
    addr: Arc<str>,
    make: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
}

impl MakeRequest {
    /// `GET url`, with `x-api-key: key` when given.
    pub(crate) fn get(url: &str, key: Option<&str>) -> Self {
        let (addr, path) = split(url);
        let mut head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n");
        if let Some(k) = key {
            head.push_str(&format!("x-api-key: {k}\r\n"));
        }
        head.push_str("\r\n");
        let bytes = Bytes::from(head);
        Self::new(addr, move |_| bytes.clone())
    }

    /// `POST url` of the JSON `body(i)` with `x-api-key: key`.
    pub(crate) fn post_json(
        url: &str,
        key: &str,
        body: impl Fn(u64) -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        let (addr, path) = split(url);
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             x-api-key: {key}\r\ncontent-length: "
        );
        Self::new(addr, move |i| {
            let json = serde_json::to_vec(&body(i)).expect("JSON");
            let mut req = Vec::with_capacity(head.len() + json.len() + 8);
            req.extend_from_slice(head.as_bytes());
            req.extend_from_slice(format!("{}\r\n\r\n", json.len()).as_bytes());
            req.extend_from_slice(&json);
            Bytes::from(req)
        })
    }

    fn new(addr: String, make: impl Fn(u64) -> Bytes + Send + Sync + 'static) -> Self {
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

/// A keep-alive HTTP/1.1 connection and its read buffer.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// A connection to `addr`, or `None` when it cannot be opened.
async fn connect(addr: &str) -> Option<Conn> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    Some(Conn {
        stream,
        buf: BytesMut::with_capacity(4096),
    })
}

/// Sends `req` on `conn` (opening one when there is none or it broke) and reads the whole
/// answer; whether it was a 2xx. A failed request, or an answer that closes the connection,
/// drops it.
async fn one(conn: &mut Option<Conn>, addr: &str, req: Bytes) -> bool {
    if conn.is_none() {
        *conn = connect(addr).await;
    }
    let Some(c) = conn.as_mut() else {
        return false;
    };
    match exchange(c, &req).await {
        Ok(Answer { ok, keep }) => {
            if !keep {
                *conn = None;
            }
            ok
        }
        Err(_) => {
            *conn = None;
            false
        }
    }
}

/// What an answer said: a 2xx or not, and whether the connection stays open.
struct Answer {
    ok: bool,
    keep: bool,
}

/// Writes `req` and reads its answer: the head, then `Content-Length` bytes of body.
async fn exchange(c: &mut Conn, req: &[u8]) -> io::Result<Answer> {
    c.stream.write_all(req).await?;
    c.buf.clear();
    let (head_len, answer, body_len) = loop {
        if let Some(head) = parse_head(&c.buf)? {
            break head;
        }
        read_more(c).await?;
    };
    while c.buf.len() < head_len + body_len {
        read_more(c).await?;
    }
    if c.buf.len() > head_len + body_len {
        return Err(invalid("bytes after the answer (none was asked for)"));
    }
    Ok(answer)
}

async fn read_more(c: &mut Conn) -> io::Result<()> {
    if c.stream.read_buf(&mut c.buf).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The answer's head, once complete in `buf`: its length, what it says and its body's length.
/// Bodies must have a `Content-Length` (every answer of Engage and of the empty route has
/// one); a chunked or unbounded body is an error, counted as such.
fn parse_head(buf: &[u8]) -> io::Result<Option<(usize, Answer, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf).map_err(|e| invalid(&e.to_string()))? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let code = resp.code.unwrap_or(0);
    let mut body_len = None;
    let mut keep = resp.version == Some(1);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| invalid("content-length"))?;
            body_len = Some(text.trim().parse().map_err(|_| invalid("content-length"))?);
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep = !h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let body_len = match (code, body_len) {
        (100..=199 | 204 | 304, _) => 0,
        (_, Some(n)) => n,
        (_, None) => return Err(invalid("an answer without content-length")),
    };
    let answer = Answer {
        ok: (200..300).contains(&code),
        keep,
    };
    Ok(Some((head_len, answer, body_len)))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
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
    let idle: Arc<Mutex<Vec<Conn>>> = Arc::default();
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
