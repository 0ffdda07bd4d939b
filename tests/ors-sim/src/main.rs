//! `ors-sim`: a voice-platform (ORS) simulator for tests and demos.
//!
//! Consumes the new-callback stream with a consumer group (so several simulators share the
//! work), plays each callback through QUEUED → ROUTING → PROCESSING → COMPLETED/AGENT_CONNECTED
//! with `--agents` simulated agents (served first come, first served) and a handling-time
//! distribution, posting each state to the entry's `events_url`; a `--fail-share` of calls
//! ends COMPLETED/FAIL_CALL_TO_CUSTOMER instead.
//! Cancels read from the control stream stop a callback's session at its next step.
//!
//! Every entry is first checked against the stream-entry contract (`contract.rs`,
//! docs/voice-platform.md#stream-entries): one that breaks it is *rejected*: acknowledged,
//! never played (no event is posted), counted, and logged on stderr as
//! `ors-sim: REJECTED entry <id> (<n> rejected so far): <reason>`, which tests read.
//!
//! ```text
//! ors-sim --redis redis://127.0.0.1:6391 --stream NewCallbackStream --agents 5 \
//!         --handle-ms 3000 --dist exp --fail-share 0.1
//! ```

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use clap::{Parser, ValueEnum};
use rand::Rng;
use redis::{AsyncConnectionConfig, Value, aio::MultiplexedConnection};
use serde_json::json;
use tokio::sync::Semaphore;

mod contract;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Dist {
    /// Always `--handle-ms`.
    Fixed,
    /// Uniform between 0.5× and 1.5× `--handle-ms`.
    Uniform,
    /// Exponential with mean `--handle-ms`.
    Exp,
}

#[derive(Debug, Parser)]
#[command(name = "ors-sim", about = "Voice-platform simulator for Engage")]
struct Args {
    /// The voice Redis to read the streams from.
    #[arg(
        long,
        env = "VOICE_REDIS_URL",
        default_value = "redis://127.0.0.1:6391"
    )]
    redis: String,
    /// PEM file of the CA that signs the voice Redis's certificate (`rediss://`; default: the
    /// system roots).
    #[arg(long, env = "VOICE_REDIS_TLS_CA_FILE")]
    redis_ca_file: Option<std::path::PathBuf>,
    /// Stream of submissions to consume (Engage's `VOICE_STREAM`).
    #[arg(long, env = "VOICE_STREAM", default_value = "NewCallbackStream")]
    stream: String,
    /// Stream of cancels to honour (Engage's control stream).
    #[arg(long, env = "CONTROL_STREAM", default_value = "CallbackControlStream")]
    control: String,
    /// Consumer group on the submission stream (simulators in one group share the work).
    #[arg(long, default_value = "ors-sim")]
    group: String,
    /// Consumer name (default: `ors-sim-<pid>`).
    #[arg(long)]
    consumer: Option<String>,
    /// Simulated agents (concurrent calls).
    #[arg(long, default_value_t = 5)]
    agents: usize,
    /// Minimum time a callback stays QUEUED, ms.
    #[arg(long, default_value_t = 0)]
    queue_ms: u64,
    /// Time in ROUTING, ms.
    #[arg(long, default_value_t = 50)]
    routing_ms: u64,
    /// Mean handling time, ms.
    #[arg(long, default_value_t = 2_000)]
    handle_ms: u64,
    /// How handling times are drawn around `--handle-ms`.
    #[arg(long, value_enum, default_value_t = Dist::Exp)]
    dist: Dist,
    /// Share of calls that fail (FAIL_CALL_TO_CUSTOMER), 0..1.
    #[arg(long, default_value_t = 0.0)]
    fail_share: f64,
    /// Bearer token for the events API (`ORS_EVENTS_TOKEN`; required: the route fails closed).
    #[arg(long, env = "ORS_EVENTS_TOKEN", hide_env_values = true)]
    token: String,
}

struct Sim {
    args: Args,
    http: reqwest::Client,
    agents: Semaphore,
    cancelled: Mutex<HashSet<String>>,
    waiting: AtomicI64,
    rejected: AtomicI64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.fail_share),
        "--fail-share must be between 0 and 1"
    );
    let client = redis_client(&args)?;
    // Blocking reads: own connections, no response timeout.
    let cfg = AsyncConnectionConfig::new().set_response_timeout(None);
    let reader = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?;
    let control = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?;
    let acks = client.get_multiplexed_async_connection().await?;
    let consumer = args
        .consumer
        .clone()
        .unwrap_or_else(|| format!("ors-sim-{}", std::process::id()));
    let sim = Arc::new(Sim {
        agents: Semaphore::new(args.agents.max(1)),
        args,
        http: reqwest::Client::new(),
        cancelled: Mutex::new(HashSet::new()),
        waiting: AtomicI64::new(0),
        rejected: AtomicI64::new(0),
    });
    eprintln!(
        "ors-sim: consuming {} as {}/{consumer} with {} agents",
        sim.args.stream, sim.args.group, sim.args.agents
    );
    // Runs for the life of the process (the simulator is stopped by a signal).
    tokio::spawn(watch_control(sim.clone(), control));
    consume(sim, reader, acks, consumer).await
}

/// The voice Redis client: `rediss://` with `--redis-ca-file` trusts that CA, else the system
/// roots.
fn redis_client(args: &Args) -> anyhow::Result<redis::Client> {
    // rustls needs one crypto provider chosen when a build enables two.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(path) = &args.redis_ca_file else {
        return Ok(redis::Client::open(args.redis.as_str())?);
    };
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("--redis-ca-file {}: {e}", path.display()))?;
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    Ok(redis::Client::build_with_tls(args.redis.as_str(), certs)?)
}

/// Remembers every cancelled callback id from the control stream.
async fn watch_control(sim: Arc<Sim>, mut conn: MultiplexedConnection) {
    let mut last = "0-0".to_string();
    loop {
        let read: redis::RedisResult<Value> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(1_000)
            .arg("STREAMS")
            .arg(&sim.args.control)
            .arg(&last)
            .query_async(&mut conn)
            .await;
        match read {
            Ok(v) => {
                for (id, fields) in entries(&v) {
                    last = id;
                    if fields.get("action").map(String::as_str) == Some("cancel")
                        && let Some(cb) = fields.get("callback_id")
                        && let Ok(mut set) = sim.cancelled.lock()
                    {
                        set.insert(cb.clone());
                    }
                }
            }
            Err(e) => {
                eprintln!("ors-sim: control read failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn consume(
    sim: Arc<Sim>,
    mut conn: MultiplexedConnection,
    acks: MultiplexedConnection,
    consumer: String,
) -> anyhow::Result<()> {
    ensure_group(&sim, &mut conn).await;
    loop {
        let read: redis::RedisResult<Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&sim.args.group)
            .arg(&consumer)
            .arg("COUNT")
            .arg(50)
            .arg("BLOCK")
            .arg(1_000)
            .arg("STREAMS")
            .arg(&sim.args.stream)
            .arg(">")
            .query_async(&mut conn)
            .await;
        match read {
            Ok(v) => {
                for (entry_id, fields) in entries(&v) {
                    let (sim, acks) = (sim.clone(), acks.clone());
                    // Each call runs until it completes or is cancelled, then acks its entry.
                    tokio::spawn(async move { play(sim, acks, entry_id, fields).await });
                }
            }
            Err(e) => {
                if e.to_string().contains("NOGROUP") {
                    // The stream or group vanished (Redis restarted without persistence).
                    ensure_group(&sim, &mut conn).await;
                } else {
                    eprintln!("ors-sim: read failed: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

async fn ensure_group(sim: &Sim, conn: &mut MultiplexedConnection) {
    let r: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&sim.args.stream)
        .arg(&sim.args.group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    if let Err(e) = r
        && !e.to_string().contains("BUSYGROUP")
    {
        eprintln!("ors-sim: cannot create group: {e}");
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Stream entries of an XREAD/XREADGROUP reply as (id, fields).
fn entries(v: &Value) -> Vec<(String, HashMap<String, String>)> {
    let mut out = Vec::new();
    let streams: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Map(m) => m.iter().map(|(_, v)| v).collect(),
        _ => return out,
    };
    for s in streams {
        let items = match s {
            Value::Array(pair) if pair.len() == 2 && text(&pair[0]).is_some() => &pair[1],
            other => other,
        };
        let Value::Array(items) = items else { continue };
        for item in items {
            let Value::Array(parts) = item else { continue };
            let (Some(id), Some(Value::Array(kv))) = (parts.first().and_then(text), parts.get(1))
            else {
                continue;
            };
            let mut fields = HashMap::new();
            for pair in kv.chunks(2) {
                if let [k, v] = pair
                    && let (Some(k), Some(v)) = (text(k), text(v))
                {
                    fields.insert(k, v);
                }
            }
            out.push((id, fields));
        }
    }
    out
}

impl Sim {
    fn is_cancelled(&self, id: &str) -> bool {
        self.cancelled
            .lock()
            .map(|s| s.contains(id))
            .unwrap_or(false)
    }

    async fn post(&self, url: &str, attempt: &str, state: &str, reason: Option<&str>) {
        let mut body = json!({"state": state, "at": jiff::Timestamp::now().to_string()});
        if let Ok(a) = attempt.parse::<i64>() {
            body["attempt"] = json!(a);
        }
        if let Some(r) = reason {
            body["reason"] = json!(r);
        }
        if state == "QUEUED" {
            body["position_in_queue"] = json!(self.waiting.load(Ordering::Relaxed));
        }
        for _ in 0..5 {
            let req = self
                .http
                .post(url)
                .json(&body)
                .bearer_auth(&self.args.token);
            match req.send().await {
                Ok(r) if r.status().is_success() || r.status().as_u16() == 404 => return,
                Ok(r) => eprintln!("ors-sim: event {state} answered {}", r.status()),
                Err(e) => eprintln!("ors-sim: event {state} failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn handling_time(&self) -> Duration {
        let mean = self.args.handle_ms as f64;
        let mut rng = rand::rng();
        let ms = match self.args.dist {
            Dist::Fixed => mean,
            Dist::Uniform => mean * rng.random_range(0.5..1.5),
            Dist::Exp => -mean * (1.0 - rng.random::<f64>()).ln(),
        };
        Duration::from_millis(ms.max(0.0) as u64)
    }
}

async fn play(
    sim: Arc<Sim>,
    mut acks: MultiplexedConnection,
    entry_id: String,
    fields: HashMap<String, String>,
) {
    if let Err(reason) = contract::check(&fields) {
        let n = sim.rejected.fetch_add(1, Ordering::Relaxed) + 1;
        eprintln!("ors-sim: REJECTED entry {entry_id} ({n} rejected so far): {reason}");
        ack(&sim, &mut acks, &entry_id).await;
        return;
    }
    let (Some(id), Some(url)) = (fields.get("callback_id"), fields.get("events_url")) else {
        ack(&sim, &mut acks, &entry_id).await;
        return;
    };
    let attempt = fields.get("attempt").cloned().unwrap_or_default();
    sim.waiting.fetch_add(1, Ordering::Relaxed);
    sim.post(url, &attempt, "QUEUED", None).await;
    tokio::time::sleep(Duration::from_millis(sim.args.queue_ms)).await;
    // One pending acquire for the whole wait: the semaphore is fair, so callbacks reach agents
    // in the order they were queued (first come, first served).
    let acquire = sim.agents.acquire();
    tokio::pin!(acquire);
    let permit = loop {
        if sim.is_cancelled(id) {
            break None;
        }
        tokio::select! {
            p = &mut acquire => break p.ok(),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    sim.waiting.fetch_sub(1, Ordering::Relaxed);
    if let Some(_permit) = permit {
        sim.post(url, &attempt, "ROUTING", None).await;
        tokio::time::sleep(Duration::from_millis(sim.args.routing_ms)).await;
        if !sim.is_cancelled(id) {
            let fail =
                sim.args.fail_share > 0.0 && rand::rng().random::<f64>() < sim.args.fail_share;
            if fail {
                sim.post(url, &attempt, "COMPLETED", Some("FAIL_CALL_TO_CUSTOMER"))
                    .await;
            } else {
                sim.post(url, &attempt, "PROCESSING", None).await;
                tokio::time::sleep(sim.handling_time()).await;
                sim.post(url, &attempt, "COMPLETED", Some("AGENT_CONNECTED"))
                    .await;
            }
        }
    }
    ack(&sim, &mut acks, &entry_id).await;
}

async fn ack(sim: &Sim, conn: &mut MultiplexedConnection, entry_id: &str) {
    let r: redis::RedisResult<i64> = redis::cmd("XACK")
        .arg(&sim.args.stream)
        .arg(&sim.args.group)
        .arg(entry_id)
        .query_async(conn)
        .await;
    if let Err(e) = r {
        eprintln!("ors-sim: ack failed: {e}");
    }
}
