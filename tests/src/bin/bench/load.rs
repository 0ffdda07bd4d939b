//! Load generation: closed loop (N connections as fast as they go, for saturation) and open
//! loop (requests started on a fixed schedule; latency counted from the scheduled start, so a
//! stalled server cannot hide its queueing: no coordinated omission).
//!
//! The generator shares the machine's cores with what it measures, so it is kept cheap: each
//! run has a thread of its own with a single-threaded runtime and its own HTTP client, so its
//! responses do not wake threads of the bench's multi-threaded runtime (A/B on 2026-12-04,
//! `bench --only create`, same binaries under test: 67 → 52 µs of generator CPU per create;
//! the bench reports its share every run).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// Builds the i-th request on the given client.
pub(crate) type MakeRequest =
    Arc<dyn Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync>;

/// Runs `run` with a fresh HTTP client on a thread of its own, in a single-threaded runtime.
async fn on_own_thread<F, Fut>(run: F) -> Run
where
    F: FnOnce(reqwest::Client) -> Fut + Send + 'static,
    Fut: Future<Output = Run>,
{
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("load runtime");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .expect("load client");
        rt.block_on(run(http))
    })
    .await
    .expect("load thread")
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

async fn one(req: reqwest::RequestBuilder) -> bool {
    match req.send().await {
        Ok(r) => {
            let ok = r.status().is_success();
            let _ = r.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

/// `conns` loops sending back-to-back for `dur`.
pub(crate) async fn closed_loop(make: MakeRequest, conns: usize, dur: Duration) -> Run {
    on_own_thread(move |http| closed(http, make, conns, dur)).await
}

async fn closed(http: reqwest::Client, make: MakeRequest, conns: usize, dur: Duration) -> Run {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (make, http) = (make.clone(), http.clone());
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut h = hist();
                let (mut errors, mut attempted) = (0u64, 0u64);
                while started.elapsed() < dur {
                    let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let t = Instant::now();
                    attempted += 1;
                    if one(make(&http, i)).await {
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

/// `rate` requests per second for `dur`, each started at its scheduled time.
pub(crate) async fn open_loop(make: MakeRequest, rate: u32, dur: Duration) -> Run {
    on_own_thread(move |http| open(http, make, rate, dur)).await
}

async fn open(http: reqwest::Client, make: MakeRequest, rate: u32, dur: Duration) -> Run {
    let total = (f64::from(rate) * dur.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let shared = Arc::new(Mutex::new((hist(), 0u64)));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(at).await;
        let req = make(&http, i);
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let ok = one(req).await;
            let late = at.elapsed().as_micros() as u64;
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
