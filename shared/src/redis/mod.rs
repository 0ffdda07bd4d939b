//! Redis clients (standalone or cluster) and the key layout of the derived state.
//!
//! Redis holds only what can be rebuilt from PostgreSQL (invariant 2), so every caller treats a
//! Redis failure as "log, count, carry on" unless the operation is Redis-only. Connections are
//! lazy: a process starts and serves while Redis is down, and reconnects by itself.

pub mod admission;
pub mod clock;
pub mod keys;
pub mod pace;
pub mod queue;
pub mod schedule;
pub mod script;
pub mod statistics;
pub mod throttle;
pub mod tls;
pub mod voice;

use std::{sync::Arc, time::Duration};

use redis::{
    Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;

pub use keys::Keys;
pub use tls::RedisTls;

/// A cheap-to-clone handle on one Redis deployment.
#[derive(Clone)]
pub struct RedisHandle {
    inner: Arc<Inner>,
    /// The TLS settings it was built with, for hints on a refused handshake.
    tls: Arc<RedisTls>,
    /// Whether its URL is `rediss://`.
    tls_url: bool,
}

enum Inner {
    /// A multiplexed connection that reconnects in the background after a failure; `apart`
    /// is a second one, connected on first use (see [`RedisHandle::conn_apart`]).
    Single {
        shared: ConnectionManager,
        apart: ConnectionManager,
    },
    /// Cluster: connected on first use (and retried on the next use if that failed).
    Cluster {
        client: ClusterClient,
        conn: OnceCell<ClusterConnection>,
        apart: OnceCell<ClusterConnection>,
    },
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match *self.inner {
            Inner::Single { .. } => "RedisHandle(single)",
            Inner::Cluster { .. } => "RedisHandle(cluster)",
        })
    }
}

/// How long a cluster client waits to connect to a node: a quarter of `REDIS_TIMEOUT_MS`, at
/// least 100 ms and at most the whole. The client refreshes its slot map holding its topology
/// lock, trying every node that has no connection, and every request of the process waits for
/// that; with a node frozen, each refresh took a whole `REDIS_TIMEOUT_MS`, so requests to
/// healthy nodes timed out behind it (docs/derived-state.md#a-failing-shard).
fn cluster_connect_timeout(timeout: Duration) -> Duration {
    (timeout / 4).max(Duration::from_millis(100)).min(timeout)
}

impl RedisHandle {
    /// Builds a handle without connecting. `urls` is one URL, or a comma-separated node list
    /// in cluster mode; `password` overrides one in the URL; `rediss://` URLs use `tls`.
    pub fn new(
        urls: &str,
        cluster: bool,
        password: Option<&SecretString>,
        timeout: Duration,
        tls: &RedisTls,
    ) -> anyhow::Result<Self> {
        tls::install_crypto_provider();
        let inner = if cluster {
            Self::cluster(urls, password, timeout, tls)?
        } else {
            let mut info = urls.trim().into_connection_info()?;
            warn_if_unverified(&info, tls);
            if let Some(p) = password {
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_password(p.expose_secret());
                info = info.set_redis_settings(settings);
            }
            let client = tls::client(info, tls)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(2));
            Inner::Single {
                shared: ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?,
                apart: ConnectionManager::new_lazy_with_config(client, config)?,
            }
        };
        Ok(Self {
            inner: Arc::new(inner),
            tls: Arc::new(tls.clone()),
            tls_url: urls.split(',').any(tls::is_tls_url),
        })
    }

    fn cluster(
        urls: &str,
        password: Option<&SecretString>,
        timeout: Duration,
        tls: &RedisTls,
    ) -> anyhow::Result<Inner> {
        let nodes: Vec<_> = urls.split(',').map(|u| u.trim().to_string()).collect();
        let first = nodes.first().map(String::as_str).unwrap_or_default();
        let first = first.into_connection_info()?;
        warn_if_unverified(&first, tls);
        let mut b = ClusterClient::builder(nodes.clone())
            .connection_timeout(cluster_connect_timeout(timeout))
            .response_timeout(timeout)
            .retries(2);
        if nodes.iter().any(|u| tls::is_tls_url(u)) {
            b = tls::cluster(b, tls, tls::url_is_insecure(&first));
        }
        if let Some(p) = password {
            b = b.password(p.expose_secret());
        }
        Ok(Inner::Cluster {
            client: b.build()?,
            conn: OnceCell::new(),
            apart: OnceCell::new(),
        })
    }

    /// A connection for commands and scripts.
    pub async fn conn(&self) -> RedisResult<RedisConn> {
        match &*self.inner {
            Inner::Single { shared, .. } => Ok(RedisConn::Single(shared.clone())),
            Inner::Cluster { client, conn, .. } => Self::cluster_conn(client, conn).await,
        }
    }

    /// A second connection (per node), for commands that hold their connection on the server
    /// (Redis `WAIT` blocks the client until its replicas answer or it times out): what
    /// [`conn`](Self::conn)'s users send never queues behind them. Connected on first use.
    pub async fn conn_apart(&self) -> RedisResult<RedisConn> {
        match &*self.inner {
            Inner::Single { apart, .. } => Ok(RedisConn::Single(apart.clone())),
            Inner::Cluster { client, apart, .. } => Self::cluster_conn(client, apart).await,
        }
    }

    async fn cluster_conn(
        client: &ClusterClient,
        cell: &OnceCell<ClusterConnection>,
    ) -> RedisResult<RedisConn> {
        let c = cell
            .get_or_try_init(|| client.get_async_connection())
            .await?;
        Ok(RedisConn::Cluster(c.clone()))
    }

    /// A dedicated (non-multiplexed) client for blocking reads and pub/sub: the URL of the
    /// first node. Blocking commands on the shared connection would stall every other caller.
    pub fn is_cluster(&self) -> bool {
        matches!(*self.inner, Inner::Cluster { .. })
    }

    /// `INFO <sections>` of every node that holds data: the one server, or every primary of a
    /// cluster (one command per node). Returns `(node address, info text)` pairs, sorted by
    /// address. The reconciler fingerprints them to notice a node that restarted, evicted
    /// keys or was flushed (`worker/src/reconcile.rs`).
    pub async fn node_infos(&self, sections: &[&str]) -> RedisResult<Vec<(String, String)>> {
        let mut cmd = redis::cmd("INFO");
        for s in sections {
            cmd.arg(*s);
        }
        let mut out = match self.conn().await? {
            RedisConn::Single(mut c) => {
                let text: String = cmd.query_async(&mut c).await?;
                vec![("standalone".to_string(), text)]
            }
            RedisConn::Cluster(mut c) => {
                let routing = redis::cluster_routing::RoutingInfo::MultiNode((
                    redis::cluster_routing::MultipleNodeRoutingInfo::AllMasters,
                    None,
                ));
                let value = c.route_command(cmd, routing).await?;
                let by_node: std::collections::BTreeMap<String, String> =
                    redis::from_redis_value(value)?;
                by_node.into_iter().collect()
            }
        };
        out.sort();
        Ok(out)
    }

    /// Round-trip check used by health probes.
    /// On a cluster it asks one primary (a `PING` without routing goes to every node, and the
    /// idle budget counts commands); the reconciler's per-node check notices a lost node.
    pub async fn ping(&self) -> RedisResult<()> {
        match self.conn().await? {
            RedisConn::Single(mut c) => redis::cmd("PING").query_async::<()>(&mut c).await,
            RedisConn::Cluster(mut c) => {
                let one = redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::RandomPrimary,
                );
                c.route_command(redis::cmd("PING"), one).await.map(drop)
            }
        }
    }

    /// [`Self::ping`] for health checks and start-up logs: a refused TLS handshake says what
    /// to fix (the CA or URL variable: docs/tls.md#redis).
    pub async fn check(&self) -> Result<(), String> {
        self.ping().await.map_err(|e| match self.tls_url {
            true => tls::explain(&e, &self.tls),
            false => e.to_string(),
        })
    }

    /// Whether this handle connects with TLS (`rediss://`).
    pub fn uses_tls(&self) -> bool {
        self.tls_url
    }
}

/// One connection, standalone or cluster; implements [`ConnectionLike`] so the whole
/// `redis` command API and [`script::Script`] work on both.
#[derive(Clone)]
pub enum RedisConn {
    /// A standalone server (`REDIS_CLUSTER` / `VOICE_REDIS_CLUSTER` false), reconnecting.
    Single(ConnectionManager),
    /// A Redis cluster (`REDIS_CLUSTER` / `VOICE_REDIS_CLUSTER` true), routed by key slot.
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Whether it is a cluster's (each primary then has its own clock: [`clock::tag`]).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Logs once, as the handle is built at start, that a role's server goes unverified.
fn warn_if_unverified(info: &redis::ConnectionInfo, tls: &RedisTls) {
    if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. })
        && (tls.insecure || tls::url_is_insecure(info))
    {
        tracing::warn!(
            url_var = tls.url_var,
            "Redis TLS certificate verification is OFF for {} (rejectUnauthorized=false or \
             #insecure): any server can pose as this Redis (docs/tls.md#redis)",
            tls.url_var
        );
    }
}

/// Builds the service Redis handle from config.
pub fn service(cfg: &crate::config::RedisConfig) -> anyhow::Result<RedisHandle> {
    RedisHandle::new(
        &cfg.url,
        cfg.cluster,
        cfg.password.as_ref(),
        Duration::from_millis(cfg.timeout_ms),
        &cfg.tls,
    )
}

/// Builds the voice Redis handle from config.
pub fn voice(cfg: &crate::config::Config) -> anyhow::Result<RedisHandle> {
    let url = cfg.voice.url(&cfg.redis);
    let (cluster, password, tls) =
        if cfg.voice.redis_url.is_some() || cfg.voice.redis_servername.is_some() {
            let v = &cfg.voice;
            (v.redis_cluster, v.redis_password.as_ref(), &v.tls)
        } else {
            (
                cfg.redis.cluster,
                cfg.redis.password.as_ref(),
                &cfg.redis.tls,
            )
        };
    RedisHandle::new(
        &url,
        cluster,
        password,
        Duration::from_millis(cfg.redis.timeout_ms),
        tls,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_connect_waits_a_quarter_of_the_timeout_within_bounds() {
        let ms = |m| Duration::from_millis(m);
        assert_eq!(cluster_connect_timeout(ms(500)), ms(125));
        assert_eq!(cluster_connect_timeout(ms(200)), ms(100));
        assert_eq!(cluster_connect_timeout(ms(5)), ms(5));
        assert_eq!(cluster_connect_timeout(ms(8_000)), ms(2_000));
    }
}
