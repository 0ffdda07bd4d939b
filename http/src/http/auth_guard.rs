//! `x-api-key` → tenant, without letting unknown keys cost PostgreSQL (docs/abuse.md).
//!
//! A key is looked up in the key cache first (known keys for `CACHE_TTL_MS`, unknown ones for
//! `AUTH_NEGATIVE_TTL_MS`); a cached known key is the hot path and touches nothing else. On the
//! public port every failed attempt is counted per client address (`AUTH_FAILURE_LIMIT` per
//! minute, in-process, governor); a client over it is answered 429 with `Retry-After`
//! **before** any lookup, so a stream of random keys costs at most the limit in lookups per
//! client and minute. The internal port (no [`ClientAddr`] on its requests) is not limited.

use std::{
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::http::HeaderMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::Clock};
use moka::future::Cache;

use super::{ApiError, client_addr::ClientAddr, state::AppState};
use crate::{auth, db, metrics};

/// Longest key read; longer values are refused without hashing further.
pub const MAX_KEY_LEN: usize = 256;

/// What a presented key turned out to be (kept in the request's extensions once known, so a
/// request resolves its key once).
#[derive(Debug, Clone)]
pub enum KeyOutcome {
    /// A live key of this tenant.
    Tenant(Arc<str>),
    /// Unknown, revoked or malformed: 401.
    Unknown,
    /// The client is over its failure limit: 429 after this many seconds.
    Limited(u64),
}

impl KeyOutcome {
    /// The tenant, or the refusal in the envelope.
    pub fn tenant(self) -> Result<Arc<str>, ApiError> {
        match self {
            Self::Tenant(t) => Ok(t),
            Self::Unknown => Err(ApiError::unauthorized("invalid API key")),
            Self::Limited(retry_after_s) => Err(limited(retry_after_s)),
        }
    }
}

fn limited(retry_after_s: u64) -> ApiError {
    ApiError::TooManyRequests {
        message: format!(
            "too many failed API key attempts from this client; retry after {retry_after_s} s"
        ),
        data: None,
        retry_after_s: Some(retry_after_s),
    }
}

/// Resolves the request's `x-api-key`: `None` when the header is absent or blank; an error
/// only when the key store is unreachable (503, generic message).
pub async fn resolve(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<&ClientAddr>,
) -> Result<Option<KeyOutcome>, ApiError> {
    let Some(key) = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return Ok(None);
    };
    let limiter = client.and_then(|c| state.auth_failures.as_ref().map(|l| (l, c.0)));
    if key.len() > MAX_KEY_LEN {
        return Ok(Some(failed(limiter).await));
    }
    let hash = auth::hash_key(key);
    match state.cache.cached_tenant(&hash).await {
        Some(Some(tenant)) => return Ok(Some(KeyOutcome::Tenant(tenant))),
        Some(None) => return Ok(Some(failed(limiter).await)),
        None => {}
    }
    if let Some((limiter, client)) = limiter
        && let Some(wait) = limiter.blocked(client).await
    {
        return Ok(Some(KeyOutcome::Limited(wait)));
    }
    let tenant = state
        .cache
        .tenant(hash, async {
            ::metrics::counter!(metrics::API_KEY_LOOKUPS).increment(1);
            let client = state.db.get().await?;
            db::api_keys::resolve_hash(&client, &hash).await
        })
        .await?;
    Ok(Some(match tenant {
        Some(t) => KeyOutcome::Tenant(t),
        None => failed(limiter).await,
    }))
}

/// Counts a failure of the client (when limited) and answers 401, or 429 once over.
async fn failed(limiter: Option<(&AuthFailures, Option<IpAddr>)>) -> KeyOutcome {
    ::metrics::counter!(metrics::API_KEY_REFUSED).increment(1);
    match limiter {
        Some((l, client)) => match l.fail(client).await {
            Some(wait) => KeyOutcome::Limited(wait),
            None => KeyOutcome::Unknown,
        },
        None => KeyOutcome::Unknown,
    }
}

/// Per-client failed-attempt limiter of the public port: `AUTH_FAILURE_LIMIT` per minute per
/// client address (IPv6 by /64), in-process (each replica counts its own), bounded to
/// [`CLIENTS`] addresses.
pub struct AuthFailures {
    per_minute: NonZeroU32,
    clients: Cache<IpAddr, Arc<ClientFailures>>,
}

struct ClientFailures {
    limiter: DefaultDirectRateLimiter,
    blocked_until: Mutex<Option<Instant>>,
}

/// Most client addresses tracked; idle ones leave after [`IDLE`].
const CLIENTS: u64 = 50_000;
/// A client without failures for this long is forgotten (its allowance is whole again).
const IDLE: Duration = Duration::from_secs(120);

impl std::fmt::Debug for AuthFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthFailures")
            .field("per_minute", &self.per_minute)
            .finish_non_exhaustive()
    }
}

impl AuthFailures {
    /// The limiter of `per_minute` failures (`None` when 0: off).
    pub fn new(per_minute: u32) -> Option<Self> {
        Some(Self {
            per_minute: NonZeroU32::new(per_minute)?,
            clients: Cache::builder()
                .max_capacity(CLIENTS)
                .time_to_idle(IDLE)
                .build(),
        })
    }

    /// Seconds the client must still wait, when it is over its limit.
    async fn blocked(&self, client: Option<IpAddr>) -> Option<u64> {
        let entry = self.clients.get(&bucket(client)).await?;
        let until = (*entry.blocked_until.lock().ok()?)?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(left.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Counts one failure; the seconds to wait when it went over the limit.
    async fn fail(&self, client: Option<IpAddr>) -> Option<u64> {
        if let Some(wait) = self.blocked(client).await {
            return Some(wait);
        }
        let quota = Quota::per_minute(self.per_minute);
        let entry = self
            .clients
            .get_with(bucket(client), async {
                Arc::new(ClientFailures {
                    limiter: RateLimiter::direct(quota),
                    blocked_until: Mutex::new(None),
                })
            })
            .await;
        let not_until = entry.limiter.check().err()?;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        if let Ok(mut until) = entry.blocked_until.lock() {
            *until = Some(Instant::now() + wait);
        }
        ::metrics::counter!(metrics::AUTH_FAILURE_LIMITED).increment(1);
        Some(wait.as_secs_f64().ceil().max(1.0) as u64)
    }
}

/// The limiter's key of an address: IPv6 clients by their /64 (one host usually holds a whole
/// /64), unknown addresses together.
fn bucket(client: Option<IpAddr>) -> IpAddr {
    match client.map(|c| c.to_canonical()) {
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        Some(v4) => v4,
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_over_its_failures_waits_and_others_do_not() {
        let l = AuthFailures::new(3).unwrap();
        let a = Some("1.2.3.4".parse().unwrap());
        let b = Some("1.2.3.5".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(l.fail(a).await, None);
        }
        let wait = l.fail(a).await.expect("over the limit");
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(l.blocked(a).await.is_some());
        assert_eq!(l.fail(b).await, None);
        assert!(l.blocked(b).await.is_none());
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a = bucket(Some("2001:db8:1:2:aaaa::1".parse().unwrap()));
        let b = bucket(Some("2001:db8:1:2:bbbb::2".parse().unwrap()));
        let c = bucket(Some("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            bucket(Some("::ffff:1.2.3.4".parse().unwrap())),
            bucket(Some("1.2.3.4".parse().unwrap()))
        );
    }
}
