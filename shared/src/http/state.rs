//! `AppState`: the one cloneable bundle of shared resources handlers receive.

use std::sync::Arc;

use deadpool_postgres::Pool;

use super::errors::ErrorSink;
use crate::{
    cache::Caches,
    config::Config,
    db::{self, batch::InsertBatcher},
    redis::{self, Keys, RedisHandle},
};

/// Built once in `main` before serving; on Lambda, warm invocations reuse it. One `Arc`:
/// axum clones the state for every extractor and middleware of every request, and cloning
/// (and dropping) each resource separately showed in profiles.
#[derive(Clone)]
pub struct AppState(Arc<Resources>);

impl std::ops::Deref for AppState {
    type Target = Resources;

    fn deref(&self) -> &Resources {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Resources {
    /// Validated configuration.
    pub cfg: Arc<Config>,
    /// PostgreSQL pool (connections opened lazily).
    pub db: Pool,
    /// Service Redis (lazy, reconnecting).
    pub redis: RedisHandle,
    /// Voice platform Redis (control stream writes).
    pub voice: RedisHandle,
    /// Key layout.
    pub keys: Keys,
    /// API-error log writer (Developer tab).
    pub errors: ErrorSink,
    /// Group-commit writer of new callbacks.
    pub inserts: InsertBatcher,
    /// API-key and service-settings caches.
    pub cache: Caches,
}

impl AppState {
    /// Builds pools and clients without connecting.
    pub fn new(cfg: Config) -> anyhow::Result<Self> {
        let db = db::pool(&cfg.db)?;
        let redis = redis::service(&cfg.redis)?;
        let voice = redis::voice(&cfg)?;
        let keys = Keys::new(&cfg.redis.redis_prefix, cfg.redis.redis_schedule_shards);
        let errors = ErrorSink::spawn(db.clone());
        let inserts = InsertBatcher::spawn(
            db.clone(),
            cfg.db.db_batch_in_flight,
            redis.clone(),
            keys.clone(),
        );
        let cache = Caches::new(std::time::Duration::from_millis(cfg.db.cache_ttl_ms));
        Ok(Self(Arc::new(Resources {
            cfg: Arc::new(cfg),
            db,
            redis,
            voice,
            keys,
            errors,
            inserts,
            cache,
        })))
    }
}
