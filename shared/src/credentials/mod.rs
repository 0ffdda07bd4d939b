//! Per-tenant credentials of the third parties Engage calls (FCM service account, reCAPTCHA
//! secret, GWS OAuth client), stored encrypted at rest (docs/credentials.md).
//!
//! The [`Vault`] is built once from `CREDENTIALS_KEY` / `CREDENTIALS_KEYS_RETIRED` and held in
//! [`crate::Resources`], so the API and the worker read records the same way: `vault.fcm(..)`,
//! `vault.captcha(..)`, `vault.gws(..)` (or `vault.load::<T>(..)`). Without `CREDENTIALS_KEY`
//! the vault is "not configured": readers see no credentials and writes are refused (503).
//! Each row is AES-256-GCM sealed ([`seal`]) with its tenant and kind as additional data.
//! Decrypted records are cached for at most `CACHE_TTL_MS` per replica; a write or delete
//! forgets the entry on the replica that served it.

pub mod records;
pub mod seal;

use std::{sync::Arc, time::Duration};

use deadpool_postgres::{GenericClient, Pool};
use moka::future::Cache;
use secrecy::{ExposeSecret, SecretSlice};

pub use self::{
    records::{CaptchaCredentials, Credential, FcmCredentials, GwsCredentials},
    seal::{Keys, OpenError, Sealed},
};
use crate::{config::CredentialsConfig, db, error::Error};

/// The kinds of credentials a tenant may have, one row each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Firebase Cloud Messaging service account (push).
    Fcm,
    /// reCAPTCHA-compatible secret (create).
    Captcha,
    /// GWS OAuth client (statistics).
    Gws,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Fcm, Kind::Captcha, Kind::Gws];

    /// The name in paths and rows: `fcm`, `captcha`, `gws`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fcm => "fcm",
            Kind::Captcha => "captcha",
            Kind::Gws => "gws",
        }
    }

    /// The kind of a path segment or row.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The additional authenticated data of a row: a record opens only for its tenant and kind.
fn aad(tenant: &str, kind: Kind) -> Vec<u8> {
    format!("engage-credentials/v1\0{tenant}\0{kind}").into_bytes()
}

/// Cache key: (tenant, kind).
type Entry = (Arc<str>, Kind);
/// A decrypted record's JSON (or `None`: the tenant has none of this kind).
type Opened = Option<Arc<SecretSlice<u8>>>;

/// The credentials store of a process (cheap to clone).
#[derive(Clone)]
pub struct Vault(Option<Arc<Inner>>);

struct Inner {
    keys: Keys,
    /// Decrypted records, kept at most `CACHE_TTL_MS` (`None`: TTL 0, no caching).
    cache: Option<Cache<Entry, Opened>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

/// What a write stored (no secret).
#[derive(Debug, Clone)]
pub struct Stored {
    /// Id of the key it was sealed under.
    pub key_id: String,
    /// When it was stored.
    pub updated_at: jiff::Timestamp,
}

/// The message of every write refused for want of a key.
pub const NOT_CONFIGURED: &str = "credentials storage is not configured: CREDENTIALS_KEY is \
     missing (docs/credentials.md#configuration)";

impl Vault {
    /// The vault of the configuration: "not configured" without `CREDENTIALS_KEY`. Decrypted
    /// records are cached for `cache_ttl` (zero: not cached).
    pub fn new(cfg: &CredentialsConfig, cache_ttl: Duration) -> anyhow::Result<Self> {
        let Some(key) = &cfg.key else {
            return Ok(Self(None));
        };
        let keys = Keys::parse(key, cfg.keys_retired.as_ref()).map_err(anyhow::Error::msg)?;
        let cache = (!cache_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(10_000)
                .time_to_live(cache_ttl)
                .build()
        });
        Ok(Self(Some(Arc::new(Inner { keys, cache }))))
    }

    /// A vault without keys (readers see no credentials; writes answer 503).
    pub fn disabled() -> Self {
        Self(None)
    }

    /// Whether `CREDENTIALS_KEY` is configured.
    pub fn is_configured(&self) -> bool {
        self.0.is_some()
    }

    /// Id of the current key, when configured.
    pub fn key_id(&self) -> Option<&str> {
        self.0.as_deref().map(|i| i.keys.current_id())
    }

    fn inner(&self) -> Result<&Inner, Error> {
        self.0
            .as_deref()
            .ok_or_else(|| Error::unavailable(NOT_CONFIGURED))
    }

    /// The tenant's FCM service account, if any.
    pub async fn fcm(&self, db: &Pool, tenant: &str) -> Result<Option<FcmCredentials>, Error> {
        self.load(db, tenant).await
    }

    /// The tenant's CAPTCHA secret, if any.
    pub async fn captcha(
        &self,
        db: &Pool,
        tenant: &str,
    ) -> Result<Option<CaptchaCredentials>, Error> {
        self.load(db, tenant).await
    }

    /// The tenant's GWS client, if any.
    pub async fn gws(&self, db: &Pool, tenant: &str) -> Result<Option<GwsCredentials>, Error> {
        self.load(db, tenant).await
    }

    /// The tenant's record of kind `T` (`None` when it has none, or without
    /// `CREDENTIALS_KEY`). A connection is taken from `db` only on a cache miss. A record that
    /// does not decrypt under the configured keys is a 503 (logged with the reason).
    pub async fn load<T: Credential>(&self, db: &Pool, tenant: &str) -> Result<Option<T>, Error> {
        let Some(inner) = self.0.as_deref() else {
            return Ok(None);
        };
        let fetch = async {
            let client = db.get().await?;
            inner.open(&client, tenant, T::KIND).await
        };
        let opened = match &inner.cache {
            Some(cache) => cache
                .try_get_with((Arc::from(tenant), T::KIND), fetch)
                .await
                .map_err(|e| crate::cache::clone_error(&e))?,
            None => fetch.await?,
        };
        let Some(plain) = opened else {
            return Ok(None);
        };
        serde_json::from_slice(plain.expose_secret())
            .map(Some)
            .map_err(|_| unreadable(tenant, T::KIND, "its decrypted record does not parse"))
    }

    /// Seals and stores `record` for `tenant` (replacing any record of its kind); 404 for an
    /// unknown tenant, 503 without `CREDENTIALS_KEY`.
    pub async fn store<T: Credential>(
        &self,
        db: &impl GenericClient,
        tenant: &str,
        record: &T,
    ) -> Result<Stored, Error> {
        let inner = self.inner()?;
        let plain =
            SecretSlice::from(serde_json::to_vec(&record.sealed()).map_err(Error::internal)?);
        let sealed = inner
            .keys
            .seal(&aad(tenant, T::KIND), plain.expose_secret())
            .map_err(Error::internal)?;
        let updated_at =
            db::credentials::put(db, tenant, T::KIND, &sealed, &record.public()).await?;
        self.forget(tenant, T::KIND).await;
        Ok(Stored {
            key_id: sealed.key_id,
            updated_at,
        })
    }

    /// Deletes the tenant's record of `kind`; whether there was one (404 for an unknown tenant).
    pub async fn remove(
        &self,
        db: &impl GenericClient,
        tenant: &str,
        kind: Kind,
    ) -> Result<bool, Error> {
        let removed = db::credentials::delete(db, tenant, kind).await?;
        self.forget(tenant, kind).await;
        Ok(removed)
    }

    /// Forgets a cached record on this replica (others see changes within `CACHE_TTL_MS`).
    pub async fn forget(&self, tenant: &str, kind: Kind) {
        if let Some(cache) = self.0.as_deref().and_then(|i| i.cache.as_ref()) {
            cache.invalidate(&(Arc::from(tenant), kind)).await;
        }
    }

    /// Re-seals every record not under the current key (`engage credentials rotate`):
    /// idempotent, and a record changed meanwhile is left as its writer sealed it.
    pub async fn rotate(&self, db: &impl GenericClient) -> Result<Rotation, Error> {
        let inner = self.inner()?;
        let current = inner.keys.current_id().to_string();
        let mut report = Rotation {
            key_id: current.clone(),
            ..Rotation::default()
        };
        for (tenant, kind, old) in db::credentials::not_under(db, &current).await? {
            let aad = aad(&tenant, kind);
            let plain = match inner.keys.open(&old, &aad) {
                Ok(plain) => SecretSlice::from(plain),
                Err(e) => {
                    tracing::error!(tenant, kind = %kind, error = %e, "credentials record not rotated");
                    report.failed.push(format!("{tenant}/{kind}: {e}"));
                    continue;
                }
            };
            let new = inner
                .keys
                .seal(&aad, plain.expose_secret())
                .map_err(Error::internal)?;
            if db::credentials::replace(db, &tenant, kind, &old, &new).await? {
                report.rotated += 1;
                self.forget(&tenant, kind).await;
            }
        }
        Ok(report)
    }
}

impl Inner {
    /// Reads and decrypts one row.
    async fn open(
        &self,
        db: &impl GenericClient,
        tenant: &str,
        kind: Kind,
    ) -> Result<Opened, Error> {
        let Some(sealed) = db::credentials::sealed(db, tenant, kind).await? else {
            return Ok(None);
        };
        match self.keys.open(&sealed, &aad(tenant, kind)) {
            Ok(plain) => Ok(Some(Arc::new(SecretSlice::from(plain)))),
            Err(e) => Err(unreadable(tenant, kind, &e.to_string())),
        }
    }
}

/// A stored record that cannot be used: 503 to callers, the reason in the log only.
fn unreadable(tenant: &str, kind: Kind, why: &str) -> Error {
    Error::Unavailable {
        message: format!("{kind} credentials are unavailable"),
        cause: Some(format!(
            "the {kind} credentials of tenant {tenant} cannot be read: {why} \
             (docs/credentials.md#rotation)"
        )),
    }
}

/// What a rotation did.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// The current key's id: every record rotated is now under it.
    pub key_id: String,
    /// Records re-sealed by this run.
    pub rotated: u64,
    /// Records no configured key opens (`tenant/kind: reason`), left as they are.
    pub failed: Vec<String>,
}
