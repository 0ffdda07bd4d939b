//! [`Resources`]: the handles every long-running Engage process shares (configuration,
//! PostgreSQL pool, service Redis, voice Redis, key layout, credentials vault), built in one place for the API
//! state (`shared::http::AppState`) and the dispatcher (`worker::Worker`), so the two build
//! them alike and `engage serve --with-worker` can hand the API's own handles to the worker.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::Pool;

use crate::{
    config::Config,
    credentials::Vault,
    db,
    redis::{self, Keys, RedisHandle},
};

/// The shared handles (cheap to clone: each is a handle on a pool or a connection).
#[derive(Clone)]
pub struct Resources {
    /// Validated configuration.
    pub cfg: Arc<Config>,
    /// PostgreSQL pool (connections opened lazily).
    pub db: Pool,
    /// Service Redis (lazy, reconnecting): schedule index, queue views, throttles.
    pub redis: RedisHandle,
    /// Voice platform Redis: the voice and control streams.
    pub voice: RedisHandle,
    /// Key layout of the service Redis (`REDIS_PREFIX`, `REDIS_SCHEDULE_SHARDS`).
    pub keys: Keys,
    /// Per-tenant third-party credentials, decrypted on read (`CREDENTIALS_KEY`; cached
    /// `CACHE_TTL_MS`): `vault.fcm(&db, tenant)`, `vault.captcha(..)`, `vault.gws(..)`.
    pub vault: Vault,
}

impl Resources {
    /// Builds the pool and the clients from the configuration, without connecting: a process
    /// starts while PostgreSQL or Redis is still coming up.
    pub fn connect(cfg: impl Into<Arc<Config>>) -> anyhow::Result<Self> {
        let cfg = cfg.into();
        let db = db::pool(&cfg.db)?;
        let redis = redis::service(&cfg.redis)?;
        let voice = redis::voice(&cfg)?;
        let keys = Keys::new(&cfg.redis.prefix, cfg.redis.schedule_shards)
            .draining(cfg.redis.schedule_shards_old)
            .with_horizon(cfg.redis.schedule_horizon_s);
        let vault = Vault::new(
            &cfg.credentials,
            Duration::from_millis(cfg.http.cache_ttl_ms),
        )?;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(check_tls_at_start(redis.clone(), voice.clone()));
        }
        Ok(Self {
            cfg,
            db,
            redis,
            voice,
            keys,
            vault,
        })
    }
}

/// Once at start, for each Redis role on TLS: connects and logs the outcome, so a refused
/// certificate is reported at once with what to fix (connections are otherwise made on first
/// use; docs/tls.md#redis).
async fn check_tls_at_start(service: RedisHandle, voice: RedisHandle) {
    for (role, handle) in [("service Redis", service), ("voice Redis", voice)] {
        if !handle.uses_tls() {
            continue;
        }
        let checked = tokio::time::timeout(Duration::from_secs(10), handle.check()).await;
        match checked {
            Ok(Ok(())) => tracing::info!(role, "Redis TLS connection verified"),
            Ok(Err(error)) => {
                tracing::error!(role, %error, "cannot connect to Redis over TLS")
            }
            Err(_) => tracing::warn!(role, "Redis TLS check timed out after 10 s"),
        }
    }
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}
