//! The steady mixed load and what the client saw: creates at a fixed rate spread over the API
//! processes (most immediate, some scheduled a few seconds ahead), some of them cancelled a
//! little later. A create that fails without an answer or with a 5xx is retried with the same
//! `Idempotency-Key` (on the next API process) until a deadline; every answer is recorded for
//! the audit.

use std::{
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use jiff::{SignedDuration, Timestamp};
use rand::Rng;
use serde_json::{Value, json};

use crate::stack::SERVICE;

/// How long a client keeps retrying one request.
const RETRY_FOR: Duration = Duration::from_secs(40);
/// Per-try timeout of the client (above the service's `REQUEST_TIMEOUT_MS` + margin).
const TRY_TIMEOUT: Duration = Duration::from_secs(25);
/// An answer slower than this is counted as unbounded (REQUEST_TIMEOUT_MS 15 s + 5 s margin).
const BOUND: Duration = Duration::from_secs(20);

/// An acknowledged create.
#[derive(Debug, Clone)]
pub(crate) struct Acked {
    /// Callback id from the answer.
    pub(crate) id: String,
    /// When the client expects it in the voice stream (ms): the answer time for an immediate
    /// callback, the desired time for a scheduled one.
    pub(crate) due_ms: i64,
}

/// An accepted cancel.
#[derive(Debug, Clone)]
pub(crate) struct Cancelled {
    /// The cancelled callback's id.
    pub(crate) id: String,
    /// When the acceptance reached the client (ms).
    pub(crate) answered_ms: i64,
}

/// Everything the client saw during a row.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Creates answered 200 with an id.
    pub(crate) acked: Vec<Acked>,
    /// Cancels answered 200 (or "already cancelled" after a try without an answer).
    pub(crate) cancelled: Vec<Cancelled>,
    /// Creates given up on (4xx, or no success before the retry deadline).
    pub(crate) create_failed: u64,
    /// Cancels refused or given up on.
    pub(crate) cancel_failed: u64,
    /// Tries answered later than the bound, or not at all within the client timeout.
    pub(crate) unbounded: u64,
    /// Status codes of failed tries, for the notes.
    pub(crate) codes: std::collections::BTreeMap<String, u64>,
}

/// The load generator of one row.
#[derive(Clone)]
pub(crate) struct Load {
    http: reqwest::Client,
    targets: Arc<RwLock<Vec<String>>>,
    key: String,
    /// Unique per row: the Idempotency-Key prefix.
    run: String,
    /// What the client saw.
    pub(crate) ledger: Arc<Mutex<Ledger>>,
}

/// A phone number valid for libphonenumber (NANP, New York exchange), distinct per i.
fn phone(i: u64) -> String {
    format!("+1212{:07}", 2_000_000 + i % 7_000_000)
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

enum Try {
    Answered(u16, Value),
    NoAnswer,
}

impl Load {
    /// A generator sending to `targets` with API key `key`.
    pub(crate) fn new(targets: Arc<RwLock<Vec<String>>>, key: &str, run: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(TRY_TIMEOUT)
                .build()
                .expect("http client"),
            targets,
            key: key.to_string(),
            run: run.to_string(),
            ledger: Arc::default(),
        }
    }

    /// Runs `rate` creates per second until `stop` is set; waits for every request it started
    /// (and its cancel) to finish.
    pub(crate) async fn run(&self, rate: u32, stop: Arc<std::sync::atomic::AtomicBool>) {
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
            let me = self.clone();
            tasks.push(tokio::spawn(async move { me.one(i).await }));
            i += 1;
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// One create (20 % scheduled 3–8 s ahead) and, for 20 % of the acknowledged, a cancel
    /// 0–4 s later.
    async fn one(&self, i: u64) {
        let (scheduled, cancel, cancel_after) = {
            let mut rng = rand::rng();
            (
                rng.random_bool(0.2),
                rng.random_bool(0.2),
                rng.random_range(0..4_000u64),
            )
        };
        let mut body = json!({"serviceName": SERVICE, "phoneNumber": phone(i)});
        let desired = Timestamp::now() + SignedDuration::from_millis(3_000 + (i % 5_000) as i64);
        if scheduled {
            body["desiredTime"] = json!(harness::wire(desired));
        }
        let key = format!("{}-{i}", self.run);
        let Some(id) = self.create(i, &body, &key).await else {
            return;
        };
        let due_ms = if scheduled {
            desired.as_millisecond()
        } else {
            now_ms()
        };
        self.lock().acked.push(Acked {
            id: id.clone(),
            due_ms,
        });
        if cancel {
            tokio::time::sleep(Duration::from_millis(cancel_after)).await;
            self.cancel(i, &id).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().expect("ledger lock")
    }

    /// One try on target `n` (round robin over the live API processes).
    async fn try_once(&self, n: u64, path: &str, body: &Value, idem: Option<&str>) -> Try {
        let base = {
            let t = self.targets.read().expect("targets lock");
            t[(n % t.len() as u64) as usize].clone()
        };
        let mut req = self
            .http
            .post(format!("{base}{path}"))
            .header("x-api-key", &self.key)
            .json(body);
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        let started = Instant::now();
        let answer = match req.send().await {
            Ok(r) => {
                let code = r.status().as_u16();
                let v = r.json::<Value>().await.unwrap_or(Value::Null);
                Try::Answered(code, v)
            }
            Err(_) => Try::NoAnswer,
        };
        if started.elapsed() > BOUND {
            self.lock().unbounded += 1;
        }
        answer
    }

    fn count(&self, what: String) {
        *self.lock().codes.entry(what).or_default() += 1;
    }

    /// Creates until acknowledged or refused; `None` when not acknowledged.
    async fn create(&self, i: u64, body: &Value, key: &str) -> Option<String> {
        let started = Instant::now();
        let mut n = i;
        while started.elapsed() < RETRY_FOR {
            match self
                .try_once(n, "/engagement/v3/callbacks/create", body, Some(key))
                .await
            {
                Try::Answered(200, v) => {
                    if let Some(id) = v["data"]["id"].as_str() {
                        return Some(id.to_string());
                    }
                    self.count("create 200 without id".into());
                    break;
                }
                Try::Answered(code, _) if code < 500 && code != 429 => {
                    self.count(format!("create {code}"));
                    break;
                }
                Try::Answered(code, _) => self.count(format!("create {code} (retried)")),
                Try::NoAnswer => self.count("create no answer (retried)".into()),
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.lock().create_failed += 1;
        None
    }

    /// Cancels until answered; records an accepted cancel.
    async fn cancel(&self, i: u64, id: &str) {
        let started = Instant::now();
        let body = json!({"id": id});
        let mut unknown = false;
        let mut n = i;
        while started.elapsed() < RETRY_FOR {
            match self
                .try_once(n, "/engagement/v3/callbacks/cancel", &body, None)
                .await
            {
                Try::Answered(200, _) => return self.accepted(id),
                // A try without an answer may have cancelled it: then the retry says so.
                Try::Answered(_, v)
                    if unknown && v.to_string().contains("already completed (CANCELLED)") =>
                {
                    return self.accepted(id);
                }
                Try::Answered(code, _) if code < 500 && code != 429 => {
                    self.count(format!("cancel {code}"));
                    break;
                }
                Try::Answered(code, _) => {
                    unknown = true;
                    self.count(format!("cancel {code} (retried)"));
                }
                Try::NoAnswer => {
                    unknown = true;
                    self.count("cancel no answer (retried)".into());
                }
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.lock().cancel_failed += 1;
    }

    fn accepted(&self, id: &str) {
        self.lock().cancelled.push(Cancelled {
            id: id.to_string(),
            answered_ms: now_ms(),
        });
    }
}
