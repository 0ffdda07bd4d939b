//! One row's stack: a fresh schema on the private PostgreSQL, a fresh service Redis (standalone
//! or the private cluster), a fresh persistent voice Redis, two `engage serve` API processes
//! (the second optionally under libfaketime), one `engage-worker` and `ors-sim`, all with
//! `ORS_EVENTS_TOKEN` set.

use std::sync::{Arc, RwLock};

use harness::{Engage, PrivateRedis, Proc, TestEnv, WorkerProc};
use serde_json::json;

/// Tenant and service of the load.
pub(crate) const TENANT: &str = "chaos";
/// Service of the load.
pub(crate) const SERVICE: &str = "chaos";
/// Bearer token of the voice-platform events route.
const EVENTS_TOKEN: &str = "chaos-ors-events-token-0123456789";
/// libfaketime's preload library (Debian package `faketime`).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The service Redis of a row.
pub(crate) enum ServiceRedis {
    /// A private standalone server.
    Single(PrivateRedis),
    /// The private 3-node cluster.
    Cluster(harness::PrivateCluster),
}

impl ServiceRedis {
    /// The waiting region of a queue view (docs/derived-state.md#queue-views): its members
    /// below the dequeued region.
    pub(crate) async fn view_waiting(&self, key: &str) -> anyhow::Result<Vec<String>> {
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(key)
            .arg("-inf")
            .arg(format!("({}", shared::redis::queue::DONE_BASE));
        self.query(&cmd).await
    }

    /// The score of `member` in a sorted set (schedule index, in-flight set).
    pub(crate) async fn zscore(&self, key: &str, member: &str) -> anyhow::Result<Option<f64>> {
        let mut cmd = redis::cmd("ZSCORE");
        cmd.arg(key).arg(member);
        self.query(&cmd).await
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        Ok(match self {
            Self::Single(r) => cmd.query_async(&mut r.conn().await).await?,
            Self::Cluster(c) => {
                let urls: Vec<String> = c.urls().split(',').map(str::to_string).collect();
                let client = redis::cluster::ClusterClient::new(urls)?;
                cmd.query_async(&mut client.get_async_connection().await?)
                    .await?
            }
        })
    }

    /// Keeps the server's folder when the row is dropped (evidence of a failing row); returns
    /// it (`None` for the cluster, whose nodes' folders go).
    pub(crate) fn keep(&self) -> Option<std::path::PathBuf> {
        match self {
            Self::Single(r) => Some(r.keep()),
            Self::Cluster(_) => None,
        }
    }

    /// The standalone server (faults that act on one server).
    pub(crate) fn single(&self) -> anyhow::Result<&PrivateRedis> {
        match self {
            Self::Single(r) => Ok(r),
            Self::Cluster(_) => anyhow::bail!("this fault needs a standalone service Redis"),
        }
    }
}

/// Options of a row's stack.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StackOptions {
    /// The service Redis is the private cluster.
    pub(crate) cluster: bool,
    /// The second API process runs with its clock this far ahead (libfaketime `FAKETIME`).
    pub(crate) skew: Option<&'static str>,
}

/// Everything one row runs against.
pub(crate) struct Stack {
    /// Processes' environment (schema, prefix, streams, URLs).
    pub(crate) env: TestEnv,
    /// The service Redis (private; standalone or cluster per row), which the faults target.
    pub(crate) redis: ServiceRedis,
    /// The voice Redis (append-only, fsync always: it keeps its streams across a restart).
    pub(crate) voice: PrivateRedis,
    /// API processes; the first receives the voice platform's events.
    pub(crate) apis: Vec<Option<Engage>>,
    /// External base URLs the load generator spreads requests over.
    pub(crate) targets: Arc<RwLock<Vec<String>>>,
    /// The dispatcher process (`None` only for the moment a restart replaces it).
    pub(crate) worker: Option<WorkerProc>,
    /// The voice-platform simulator (`ors-sim`) consuming the voice stream and posting events.
    pub(crate) sim: Proc,
    /// API key of the tenant.
    pub(crate) key: String,
}

fn base_env(pg_url: &str, redis_url: &str, cluster: bool, voice_url: &str) -> TestEnv {
    TestEnv::on(pg_url, redis_url, voice_url)
        .with_default_wake_ping()
        .with("REDIS_CLUSTER", if cluster { "true" } else { "false" })
        .with("ORS_EVENTS_TOKEN", EVENTS_TOKEN)
        .with("LOG_LEVEL", "WARN")
        .with("WORKER_TENANT_RATE", "0")
        // Keep every stream entry: the audit counts them all.
        .with("WORKER_STREAM_HORIZON_S", "0")
}

/// Settings of the load's service: limits out of the way, a second attempt after a failed
/// call (so attempts > 1 are audited too), retries soon.
fn service_settings() -> serde_json::Value {
    json!({
        "throttle_per_service_1": 100_000_000, "throttle_ttl_1": 300,
        "throttle_per_service_2": 100_000_000, "throttle_ttl_2": 3600,
        "throttle_per_number_24h": 100_000_000, "in_queue_checking": false,
        "max_queued": 100_000_000, "slot_capacity": 100_000, "reject_out_of_hours": false,
        "max_days_ahead": 14, "max_attempts": 2, "retry_delay_seconds": 5,
        "dispatch_rate_per_second": 1_000_000
    })
}

impl Stack {
    /// Starts a row's stack on the private PostgreSQL at `pg_url`.
    pub(crate) async fn start(pg_url: &str, opts: StackOptions) -> anyhow::Result<Self> {
        let redis = if opts.cluster {
            ServiceRedis::Cluster(harness::PrivateCluster::new())
        } else {
            ServiceRedis::Single(PrivateRedis::new(false))
        };
        let redis_url = match &redis {
            ServiceRedis::Single(r) => r.url(),
            ServiceRedis::Cluster(c) => c.urls(),
        };
        let voice = PrivateRedis::new(true);
        let env = base_env(pg_url, &redis_url, opts.cluster, &voice.url());
        let first = Engage::start(&env, &[]).await;
        let env = env.with("GES_URL", &first.internal);
        let key = first.tenant(TENANT).await;
        first.service(TENANT, SERVICE, service_settings()).await;
        let second_env = match opts.skew {
            Some(_) if !std::path::Path::new(FAKETIME_LIB).exists() => {
                anyhow::bail!("{FAKETIME_LIB} is missing: apt-get install faketime")
            }
            Some(skew) => env
                .clone()
                .with("LD_PRELOAD", FAKETIME_LIB)
                .with("FAKETIME", skew)
                .with("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            None => env.clone(),
        };
        let second = Engage::start(&second_env, &[]).await;
        let targets = Arc::new(RwLock::new(vec![
            first.external.clone(),
            second.external.clone(),
        ]));
        let worker = WorkerProc::start(&env, &[]).await;
        let sim = start_sim(&env);
        Ok(Self {
            env,
            redis,
            voice,
            apis: vec![Some(first), Some(second)],
            targets,
            worker: Some(worker),
            sim,
            key,
        })
    }

    /// SIGKILLs the worker and starts a new one.
    pub(crate) async fn restart_worker(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.proc.kill();
        }
        self.worker = Some(WorkerProc::start(&self.env, &[]).await);
    }

    /// Replaces the simulator (after its Redis went away, its connections are dead).
    pub(crate) fn restart_sim(&mut self) {
        self.sim.kill();
        self.sim = start_sim(&self.env);
    }
}

fn start_sim(env: &TestEnv) -> Proc {
    Proc::spawn(
        env,
        "ors-sim",
        &[
            "--group",
            "chaos",
            "--agents",
            "64",
            // Callbacks wait 2 s in QUEUED, so most cancels reach handed-off callbacks.
            "--queue-ms",
            "2000",
            "--handle-ms",
            "300",
            "--routing-ms",
            "20",
            "--fail-share",
            "0.1",
        ],
        &[],
    )
}
