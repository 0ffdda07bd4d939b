//! [`Resources`]: the handles every long-running Engage process shares (configuration,
//! PostgreSQL pool, service Redis, voice Redis, key layout), built in one place for the API
//! state (`shared::http::AppState`) and the dispatcher (`worker::Worker`), so the two build
//! them alike and `engage serve --with-worker` can hand the API's own handles to the worker.

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::{
    config::Config,
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
}

impl Resources {
    /// Builds the pool and the clients from the configuration, without connecting: a process
    /// starts while PostgreSQL or Redis is still coming up.
    pub fn connect(cfg: impl Into<Arc<Config>>) -> anyhow::Result<Self> {
        let cfg = cfg.into();
        let db = db::pool(&cfg.db)?;
        let redis = redis::service(&cfg.redis)?;
        let voice = redis::voice(&cfg)?;
        let keys = Keys::new(&cfg.redis.prefix, cfg.redis.schedule_shards);
        Ok(Self {
            cfg,
            db,
            redis,
            voice,
            keys,
        })
    }
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}
