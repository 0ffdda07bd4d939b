//! Short-lived read caches in front of PostgreSQL for the request hot path: API key → tenant
//! and (tenant, service) → settings. Entries live `CACHE_TTL_MS` (default 2 s); a key found
//! unknown is remembered as unknown for `AUTH_NEGATIVE_TTL_MS` (default 30 s), so a repeated
//! bad key costs no lookup (docs/abuse.md#negative-cache). The admin API invalidates the
//! entries it changes on the replica that served it; other replicas see the change within the
//! TTL. Bounded in size, so random keys cannot grow memory.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use moka::{Expiry, future::Cache};

use crate::{
    db::{gms::Resolved, services::Service},
    error::Error,
};

/// Cache key of a service: (tenant id, service name).
type ServiceKey = (Arc<str>, Arc<str>);

/// The caches of one process (cheap to clone).
#[derive(Clone)]
pub struct Caches {
    keys: Cache<[u8; 32], Option<Arc<str>>>,
    /// Hashes of keys found live in the last [`RECENTLY_KNOWN`]: looked up again when their
    /// entry above has expired even for a client over its failure limit (docs/abuse.md).
    recently_known: Cache<[u8; 32], ()>,
    services: Cache<ServiceKey, Option<Arc<Service>>>,
    /// `ContactCenterId` value (as sent) → how it resolved, with the tenant's credentials.
    gms_tenants: Cache<Arc<str>, Arc<Resolved>>,
    /// SHA-256 of (tenant, stored password hash, `Authorization` value) → whether it matched:
    /// a Designer burst costs one password check, not one per request.
    gms_logins: Cache<[u8; 32], bool>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

/// Lifetimes of key entries: known keys live the cache TTL, unknown ones the negative TTL.
struct KeyExpiry {
    known: Duration,
    unknown: Duration,
}

impl Expiry<[u8; 32], Option<Arc<str>>> for KeyExpiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        tenant: &Option<Arc<str>>,
        _: Instant,
    ) -> Option<Duration> {
        Some(if tenant.is_some() {
            self.known
        } else {
            self.unknown
        })
    }
}

/// Most API keys (known and unknown) remembered; random keys evict each other, not memory.
const KEY_CAPACITY: u64 = 100_000;
/// How long a key found live stays "recently known" (only live keys enter: bounded by the
/// number of real keys).
const RECENTLY_KNOWN: Duration = Duration::from_secs(600);

impl Caches {
    /// Caches whose entries live `ttl` (a zero TTL disables caching, of unknown keys too);
    /// unknown keys are remembered for `negative_ttl` (zero = `ttl`).
    pub fn new(ttl: Duration, negative_ttl: Duration) -> Self {
        let negative_ttl = if negative_ttl.is_zero() || ttl.is_zero() {
            ttl
        } else {
            negative_ttl
        }
        .max(Duration::from_millis(1));
        let ttl = ttl.max(Duration::from_millis(1));
        Self {
            keys: Cache::builder()
                .max_capacity(KEY_CAPACITY)
                .expire_after(KeyExpiry {
                    known: ttl,
                    unknown: negative_ttl,
                })
                .build(),
            recently_known: Cache::builder()
                .max_capacity(KEY_CAPACITY)
                .time_to_live(RECENTLY_KNOWN)
                .build(),
            services: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            gms_tenants: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            gms_logins: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(negative_ttl.max(ttl))
                .build(),
        }
    }

    /// The tenant of an API key (by its hash), loading on a miss.
    pub async fn tenant<F>(&self, key_hash: [u8; 32], load: F) -> Result<Option<Arc<str>>, Error>
    where
        F: Future<Output = Result<Option<String>, Error>>,
    {
        let tenant = self
            .keys
            .try_get_with(key_hash, async { load.await.map(|t| t.map(Arc::from)) })
            .await
            .map_err(|e| clone_error(&e))?;
        if tenant.is_some() {
            self.recently_known.insert(key_hash, ()).await;
        }
        Ok(tenant)
    }

    /// Whether the key was found live in the last 10 minutes (its lookup is not charged to a
    /// client over its failure limit: it is someone's real key).
    pub async fn recently_known(&self, key_hash: &[u8; 32]) -> bool {
        self.recently_known.contains_key(key_hash)
    }

    /// What the cache knows of a key without loading: `Some(Some(tenant))` known,
    /// `Some(None)` known to be unknown, `None` not cached.
    pub async fn cached_tenant(&self, key_hash: &[u8; 32]) -> Option<Option<Arc<str>>> {
        self.keys.get(key_hash).await
    }

    /// Forgets one key (after it was created or imported: it may be cached as unknown).
    pub async fn forget_key(&self, key_hash: &[u8; 32]) {
        self.keys.invalidate(key_hash).await;
    }

    /// A live service, loading on a miss.
    pub async fn service<F>(
        &self,
        tenant: &str,
        name: &str,
        load: F,
    ) -> Result<Option<Arc<Service>>, Error>
    where
        F: Future<Output = Result<Option<Service>, Error>>,
    {
        self.services
            .try_get_with((Arc::from(tenant), Arc::from(name)), async {
                load.await.map(|s| s.map(Arc::new))
            })
            .await
            .map_err(|e| clone_error(&e))
    }

    /// Forgets a service (after an admin change).
    pub async fn forget_service(&self, tenant: &str, name: &str) {
        self.services
            .invalidate(&(Arc::from(tenant), Arc::from(name)))
            .await;
    }

    /// Forgets every service of every tenant (after a bulk change).
    pub fn forget_services(&self) {
        self.services.invalidate_all();
    }

    /// How a `ContactCenterId` value resolves, loading on a miss (docs/gms.md).
    pub async fn gms_tenant<F>(&self, ccid: &str, load: F) -> Result<Arc<Resolved>, Error>
    where
        F: Future<Output = Result<Resolved, Error>>,
    {
        self.gms_tenants
            .try_get_with(Arc::from(ccid), async { load.await.map(Arc::new) })
            .await
            .map_err(|e| clone_error(&e))
    }

    /// Whether a Basic login was checked before (`Some(matched)`), by its digest.
    pub async fn gms_login(&self, digest: &[u8; 32]) -> Option<bool> {
        self.gms_logins.get(digest).await
    }

    /// Remembers the outcome of a Basic login check.
    pub async fn remember_gms_login(&self, digest: [u8; 32], matched: bool) {
        self.gms_logins.insert(digest, matched).await;
    }

    /// Forgets every resolved `ContactCenterId` (after a credentials change: the header may
    /// have been cached in any spelling).
    pub fn forget_gms(&self) {
        self.gms_tenants.invalidate_all();
    }

    /// Forgets every key (after a revocation: only the key's id is known there).
    pub fn forget_keys(&self) {
        self.keys.invalidate_all();
        self.recently_known.invalidate_all();
    }
}

/// A loader's error, shared by every waiter of the same entry.
pub(crate) fn clone_error(e: &Error) -> Error {
    match e {
        Error::Unavailable { message, cause } => Error::Unavailable {
            message: message.clone(),
            cause: cause.clone(),
        },
        Error::Invalid(m) => Error::Invalid(m.clone()),
        Error::LimitReached {
            message,
            data,
            retry_after_s,
            limit,
        } => Error::LimitReached {
            message: message.clone(),
            data: data.clone(),
            retry_after_s: *retry_after_s,
            limit: *limit,
        },
        other => Error::internal(anyhow::anyhow!("{other}")),
    }
}
