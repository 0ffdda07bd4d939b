//! `AppState`: the one cloneable bundle of shared resources handlers receive, and the one
//! cached service lookup of the handlers ([`AppState::service`]).

use std::sync::Arc;

use super::errors::ErrorSink;
use crate::{
    cache::Caches,
    config::Config,
    db::{self, batch::InsertBatcher, services::Service},
    error::Error,
    redis::admission::Admissions,
    resources::Resources,
};

/// Built once in `main` before serving; on Lambda, warm invocations reuse it. One `Arc`:
/// axum clones the state for every extractor and middleware of every request, and cloning
/// (and dropping) each resource separately showed in profiles.
#[derive(Clone)]
pub struct AppState(Arc<ApiResources>);

impl std::ops::Deref for AppState {
    type Target = ApiResources;

    fn deref(&self) -> &ApiResources {
        &self.0
    }
}

/// What [`AppState`] shares: the process [`Resources`] (reached through `Deref`:
/// `state.db`, `state.redis`, `state.cfg`, …) plus what only the API needs.
pub struct ApiResources {
    /// Configuration, pools and clients (shared with an in-process dispatcher).
    pub resources: Resources,
    /// API-error log writer (Developer tab).
    pub errors: ErrorSink,
    /// Group-commit writer of new callbacks.
    pub inserts: InsertBatcher,
    /// Group admission: the create-time limits asked for concurrent creates at once.
    pub admissions: Admissions,
    /// API-key and service-settings caches.
    pub cache: Caches,
    /// Failed API-key attempts per client of the public port (`None`: `AUTH_FAILURE_LIMIT=0`).
    pub auth_failures: Option<super::auth_guard::AuthFailures>,
    /// Lookups of keys not seen live, per second (`None`: `AUTH_LOOKUP_BUDGET=0`).
    pub auth_lookups: Option<super::auth_guard::LookupBudget>,
}

impl std::ops::Deref for ApiResources {
    type Target = Resources;

    fn deref(&self) -> &Resources {
        &self.resources
    }
}

impl AppState {
    /// Builds pools and clients ([`Resources::connect`]) and the API's writers, without
    /// connecting.
    pub fn new(cfg: Config) -> anyhow::Result<Self> {
        let resources = Resources::connect(cfg)?;
        let cfg = &resources.cfg;
        let errors = ErrorSink::spawn(resources.db.clone());
        let inserts = InsertBatcher::spawn(
            resources.db.clone(),
            cfg.db.batch_in_flight,
            resources.redis.clone(),
            resources.keys.clone(),
        );
        let admissions = Admissions::spawn(resources.redis.clone());
        let cache = Caches::new(
            std::time::Duration::from_millis(cfg.http.cache_ttl_ms),
            std::time::Duration::from_millis(cfg.http.auth_negative_ttl_ms),
        );
        let auth_failures = super::auth_guard::AuthFailures::new(cfg.http.auth_failure_limit);
        let auth_lookups = super::auth_guard::LookupBudget::new(cfg.http.auth_lookup_budget);
        Ok(Self(Arc::new(ApiResources {
            resources,
            errors,
            inserts,
            admissions,
            cache,
            auth_failures,
            auth_lookups,
        })))
    }

    /// A live (not deleted) service of the tenant, `None` when unknown. Cached for
    /// `CACHE_TTL_MS`: the admin API forgets the entries it changes on the replica that served
    /// it, other replicas see a change within the TTL.
    pub async fn service(&self, tenant: &str, name: &str) -> Result<Option<Arc<Service>>, Error> {
        self.cache
            .service(tenant, name, async {
                let client = self.db.get().await?;
                db::services::find(&client, tenant, name).await
            })
            .await
    }
}
