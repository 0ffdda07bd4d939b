//! The statistics answer cache in the service Redis (docs/statistics.md#cache): one string key
//! per tenant and request hash, holding when GWS answered and what, expiring after
//! `GWS_CACHE_TTL_S`. Shared by every replica; a failed read or write is the caller's cache
//! miss, never its error.

use redis::{AsyncCommands, RedisResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Keys, RedisHandle};

/// One cached GWS answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cached {
    /// When GWS answered, ms since the epoch.
    pub at_ms: i64,
    /// The answer's body, as GWS sent it.
    pub answer: Value,
}

impl Keys {
    /// The cached answer to `hash` (`model::statistics::body_hash`) for `tenant`.
    pub fn statistics(&self, tenant: &str, hash: &str) -> String {
        self.key(&format!("gws:{tenant}:{hash}"))
    }
}

/// The cached answer, `None` when absent or unreadable.
pub async fn get(
    redis: &RedisHandle,
    keys: &Keys,
    tenant: &str,
    hash: &str,
) -> RedisResult<Option<Cached>> {
    let mut conn = redis.conn().await?;
    let raw: Option<String> = conn.get(keys.statistics(tenant, hash)).await?;
    Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
}

/// Stores an answer for `ttl_s` seconds.
pub async fn put(
    redis: &RedisHandle,
    keys: &Keys,
    tenant: &str,
    hash: &str,
    cached: &Cached,
    ttl_s: u64,
) -> RedisResult<()> {
    let mut conn = redis.conn().await?;
    let text = serde_json::to_string(cached).unwrap_or_default();
    conn.set_ex(keys.statistics(tenant, hash), text, ttl_s.max(1))
        .await
}
