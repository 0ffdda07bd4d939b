//! The faults, one per row. Each is injected into a running stack under load and returns when
//! the fault is over (the row measures recovery from that moment).

use std::time::Duration;

use harness::{PrivatePostgres, signal};
use tokio::time::sleep;

use crate::stack::{ServiceRedis, Stack, StackOptions};

/// One row of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// SIGKILL the worker repeatedly (restarted at once each time).
    WorkerKill,
    /// FLUSHALL on the service Redis.
    FlushAll,
    /// One node of the service Redis cluster restarted empty.
    ClusterNodeEmpty,
    /// The service Redis refuses writes (`maxmemory 1`, `noeviction`).
    RedisNoWrites,
    /// PostgreSQL stopped (`pg_ctl stop -m fast`) then started.
    PgStop,
    /// Every PostgreSQL process SIGSTOPped then SIGCONTed.
    PgFreeze,
    /// The voice Redis stopped then started (its data kept).
    VoiceStop,
    /// SIGKILL one of the two API processes under load.
    ApiKill,
    /// One API process runs with its clock 5 minutes ahead (libfaketime).
    ClockSkew,
}

/// Every fault, in run order.
pub(crate) const ALL: [Fault; 9] = [
    Fault::WorkerKill,
    Fault::FlushAll,
    Fault::ClusterNodeEmpty,
    Fault::RedisNoWrites,
    Fault::PgStop,
    Fault::PgFreeze,
    Fault::VoiceStop,
    Fault::ApiKill,
    Fault::ClockSkew,
];

/// Lengths of a run (full or `--quick`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Creates per second the load generator sends during the row.
    pub(crate) rate: u32,
    /// Load before the fault.
    pub(crate) before: Duration,
    /// Load after the fault.
    pub(crate) after: Duration,
    /// Length of the stop/freeze/stall faults (20 s full; the refused-writes fault is half).
    pub(crate) outage: Duration,
    /// Worker kills of the worker row, and its load's length.
    pub(crate) kills: u32,
    /// Load length of the worker row.
    pub(crate) kill_load: Duration,
    /// Bound of the settle wait after the load stops.
    pub(crate) settle: Duration,
}

impl Fault {
    /// Short name (`--only`) of the row.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::WorkerKill => "worker-kill",
            Self::FlushAll => "redis-flushall",
            Self::ClusterNodeEmpty => "cluster-node-empty",
            Self::RedisNoWrites => "redis-no-writes",
            Self::PgStop => "pg-stop",
            Self::PgFreeze => "pg-sigstop",
            Self::VoiceStop => "voice-redis-stop",
            Self::ApiKill => "api-kill",
            Self::ClockSkew => "api-clock-skew",
        }
    }

    /// What the row does, for the report.
    pub(crate) fn describe(self, t: &Timing) -> String {
        let s = t.outage.as_secs();
        match self {
            Self::WorkerKill => format!(
                "SIGKILL the worker {} times over {} s of load",
                t.kills,
                t.kill_load.as_secs()
            ),
            Self::FlushAll => "FLUSHALL the service Redis".into(),
            Self::ClusterNodeEmpty => "one service Redis cluster node restarted empty".into(),
            Self::RedisNoWrites => format!(
                "service Redis refusing writes for {} s (maxmemory 1, noeviction)",
                (s / 2).max(1)
            ),
            Self::PgStop => format!("PostgreSQL stopped {s} s (pg_ctl stop -m fast / start)"),
            Self::PgFreeze => format!("PostgreSQL SIGSTOPped {s} s, then SIGCONT"),
            Self::VoiceStop => format!("voice Redis stopped {s} s"),
            Self::ApiKill => "SIGKILL one of two engage API processes under load".into(),
            Self::ClockSkew => "one engage API process with its clock 5 min ahead".into(),
        }
    }

    /// The stack this row needs.
    pub(crate) fn stack_options(self) -> StackOptions {
        StackOptions {
            cluster: self == Self::ClusterNodeEmpty,
            skew: (self == Self::ClockSkew).then_some("+5m"),
        }
    }

    /// Injects the fault; returns when it is over.
    pub(crate) async fn inject(
        self,
        s: &mut Stack,
        pg: &PrivatePostgres,
        t: &Timing,
    ) -> anyhow::Result<()> {
        match self {
            Self::WorkerKill => {
                let every = t.kill_load.saturating_sub(t.before) / t.kills.max(1);
                for _ in 0..t.kills {
                    s.restart_worker().await;
                    sleep(every).await;
                }
            }
            Self::FlushAll => {
                let mut c = s.redis.single()?.conn().await;
                redis::cmd("FLUSHALL").query_async::<()>(&mut c).await?;
            }
            Self::ClusterNodeEmpty => match &mut s.redis {
                ServiceRedis::Cluster(c) => c.restart_empty(1),
                ServiceRedis::Single(_) => anyhow::bail!("cluster row without a cluster"),
            },
            Self::RedisNoWrites => refuse_writes(s, t.outage / 2).await?,
            Self::PgStop => {
                pg.stop_server()?;
                sleep(t.outage).await;
                pg.start_server()?;
            }
            Self::PgFreeze => {
                let pids = pg.pids()?;
                signal(&pids, "STOP");
                sleep(t.outage).await;
                signal(&pids, "CONT");
            }
            Self::VoiceStop => {
                s.voice.stop();
                sleep(t.outage).await;
                s.voice.start();
                s.restart_sim();
            }
            Self::ApiKill => {
                if let Some(mut api) = s.apis[1].take() {
                    api.proc.kill();
                }
                // The load balancer notices a second later.
                sleep(Duration::from_secs(1)).await;
                s.targets.write().expect("targets lock").truncate(1);
            }
            // The skew is there from the start: the fault is the whole load.
            Self::ClockSkew => {}
        }
        Ok(())
    }
}

async fn refuse_writes(s: &Stack, dur: Duration) -> anyhow::Result<()> {
    let mut c = s.redis.single()?.conn().await;
    let set = |k: &str, v: &str| {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg(k).arg(v);
        cmd
    };
    set("maxmemory-policy", "noeviction")
        .query_async::<()>(&mut c)
        .await?;
    set("maxmemory", "1").query_async::<()>(&mut c).await?;
    sleep(dur).await;
    set("maxmemory", "0").query_async::<()>(&mut c).await?;
    Ok(())
}
