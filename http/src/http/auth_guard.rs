//! `x-api-key` → tenant, without letting unknown keys cost PostgreSQL (docs/abuse.md).
//!
//! A key is looked up in the key cache first (known keys for `CACHE_TTL_MS`, unknown ones for
//! `AUTH_NEGATIVE_TTL_MS`); a cached known key is the hot path and touches nothing else. On the
//! public port every failed attempt is counted per client address (`AUTH_FAILURE_LIMIT` per
//! minute, in-process, governor); a client over it is answered 429 with `Retry-After`
//! **before** any lookup, and has at most a few lookups in flight, so a stream of random keys
//! costs about the limit in lookups per client and minute, however concurrent. A key found
//! live in the last 10 minutes is reloaded uncharged, so a limited shared address keeps its
//! working keys. The internal port (no [`ClientAddr`] on its requests) is not limited.

use std::{
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::http::HeaderMap;
use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use moka::future::Cache;
use tokio::sync::{Semaphore, SemaphorePermit};

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
    /// This replica's lookup budget for keys it has not seen live is spent: 429 after this
    /// many seconds.
    Busy(u64),
}

impl KeyOutcome {
    /// The tenant, or the refusal in the envelope.
    pub fn tenant(self) -> Result<Arc<str>, ApiError> {
        match self {
            Self::Tenant(t) => Ok(t),
            Self::Unknown => Err(ApiError::unauthorized("invalid API key")),
            Self::Limited(retry_after_s) => Err(limited(retry_after_s)),
            Self::Busy(retry_after_s) => Err(ApiError::TooManyRequests {
                message: format!(
                    "too many API key lookups on this server; retry after {retry_after_s} s"
                ),
                data: None,
                retry_after_s: Some(retry_after_s),
            }),
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
    let hash = (key.len() <= MAX_KEY_LEN).then(|| auth::hash_key(key));
    let cached = match &hash {
        Some(hash) => state.cache.cached_tenant(hash).await,
        None => Some(None),
    };
    if let Some(Some(tenant)) = cached {
        // The hot path: a known key costs nothing more.
        return Ok(Some(KeyOutcome::Tenant(tenant)));
    }
    // A key found live lately is someone's real key: its expired entry is reloaded without
    // charging the client, so a limited address (NAT, shared proxy) keeps its working keys.
    let real = match (&hash, &cached) {
        (Some(hash), None) => state.cache.recently_known(hash).await,
        _ => false,
    };
    let guard = Guard::new(state, client, real).await;
    let charged = match guard.charge_if_failed() {
        Ok(charged) => charged,
        Err(wait) => return Ok(Some(guard.refused(Some(wait)))),
    };
    let (Some(hash), None) = (hash, cached) else {
        // Known to be unknown (negative cache) or malformed: no lookup.
        return Ok(Some(guard.failed(charged)));
    };
    let (_slot, charged) = match guard.lookup_slot(charged).await {
        Ok(admitted) => admitted,
        Err(wait) => return Ok(Some(guard.refused(Some(wait)))),
    };
    // Concurrent requests with one key share one load (the cache coalesces them), and only
    // the load spends the replica's budget: a real key's first burst is one lookup, not a
    // budget's worth of refusals.
    let tenant = state
        .cache
        .tenant(hash, async {
            guard.spend_budget().map_err(busy)?;
            ::metrics::counter!(metrics::API_KEY_LOOKUPS).increment(1);
            let client = state.db.get().await?;
            db::api_keys::resolve_hash(&client, &hash).await
        })
        .await;
    Ok(Some(match tenant {
        Ok(Some(t)) => KeyOutcome::Tenant(t),
        Ok(None) => guard.failed(charged),
        Err(crate::Error::LimitReached { retry_after_s, .. }) => {
            ::metrics::counter!(metrics::AUTH_LOOKUP_BUDGET_SPENT).increment(1);
            KeyOutcome::Busy(retry_after_s.unwrap_or(1))
        }
        Err(e) => return Err(e.into()),
    }))
}

/// The budget's refusal, carried out of the shared load to every request waiting on it.
fn busy(retry_after_s: u64) -> crate::Error {
    crate::Error::LimitReached {
        message: "lookup budget spent".into(),
        data: None,
        retry_after_s: Some(retry_after_s),
        limit: None,
    }
}

/// The limits as they apply to one request: the client's state and the replica's lookup
/// budget; neither on the internal port or for a recently known key.
struct Guard<'a> {
    client: Option<Arc<ClientState>>,
    budget: Option<&'a LookupBudget>,
}

/// What the limiter keeps per client address.
struct ClientState {
    limiter: DefaultDirectRateLimiter,
    /// Set by the client's first failure: from then on every attempt is charged up front.
    failed: AtomicBool,
    /// Lookups of this client in flight, so a first wave of concurrent random keys is looked up
    /// a few at a time and is charged once the first of them failed.
    lookups: Semaphore,
}

impl<'a> Guard<'a> {
    async fn new(state: &'a AppState, client: Option<&ClientAddr>, real: bool) -> Self {
        let Some(client) = client.filter(|_| !real) else {
            return Self {
                client: None,
                budget: None,
            };
        };
        Self {
            client: match &state.auth_failures {
                Some(l) => Some(l.client(client.0).await),
                None => None,
            },
            budget: state.auth_lookups.as_ref(),
        }
    }

    /// Spends one lookup of the replica's budget; `Err(seconds)` when it is spent.
    fn spend_budget(&self) -> Result<(), u64> {
        self.budget.map_or(Ok(()), |b| check(&b.0))
    }

    /// A client with recent failures pays one attempt now (`Ok(true)`) and waits
    /// (`Err(seconds)`) when it has none left; `Ok(false)`: nothing charged.
    fn charge_if_failed(&self) -> Result<bool, u64> {
        match &self.client {
            Some(c) if c.failed.load(Ordering::Acquire) => check(&c.limiter).map(|()| true),
            _ => Ok(false),
        }
    }

    /// Waits for one of the client's lookup slots; an attempt not yet charged is charged if
    /// the client failed meanwhile.
    async fn lookup_slot(&self, charged: bool) -> Result<(Option<SemaphorePermit<'_>>, bool), u64> {
        let Some(c) = &self.client else {
            return Ok((None, charged));
        };
        let slot = c.lookups.acquire().await.ok();
        let charged = charged || self.charge_if_failed()?;
        Ok((slot, charged))
    }

    /// After a failure: counted unless already paid for; 429 once over the limit, else 401.
    fn failed(&self, charged: bool) -> KeyOutcome {
        let wait = match &self.client {
            Some(c) => {
                c.failed.store(true, Ordering::Release);
                if charged {
                    None
                } else {
                    check(&c.limiter).err()
                }
            }
            None => None,
        };
        self.refused(wait)
    }

    fn refused(&self, wait: Option<u64>) -> KeyOutcome {
        ::metrics::counter!(metrics::API_KEY_REFUSED).increment(1);
        match wait {
            Some(wait) => {
                ::metrics::counter!(metrics::AUTH_FAILURE_LIMITED).increment(1);
                KeyOutcome::Limited(wait)
            }
            None => KeyOutcome::Unknown,
        }
    }
}

/// Per-client failed-attempt limiter of the public port: `AUTH_FAILURE_LIMIT` per minute per
/// client address (IPv6 by /64), in-process (each replica counts its own), bounded to
/// 50,000 addresses. After a client's first failure each of its attempts that is not a cached
/// or recently known key is charged **before** the lookup, and a client has at most
/// [`LOOKUPS_PER_CLIENT`] lookups in flight, so concurrency cannot slip lookups through.
pub struct AuthFailures {
    quota: Quota,
    per_minute: NonZeroU32,
    clients: Cache<IpAddr, Arc<ClientState>>,
}

/// `AUTH_LOOKUP_BUDGET`: lookups per second of keys this replica has not seen live, from
/// public-port callers, whatever their address (docs/abuse.md#lookup-budget).
pub struct LookupBudget(DefaultDirectRateLimiter);

impl std::fmt::Debug for LookupBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupBudget").finish_non_exhaustive()
    }
}

impl LookupBudget {
    /// The budget of `per_second` lookups, in bursts of as many (`None` when 0: off).
    pub fn new(per_second: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        Some(Self(RateLimiter::direct(Quota::per_second(rate))))
    }
}

/// Most lookups one client address has in flight (the others wait their turn).
pub const LOOKUPS_PER_CLIENT: usize = 4;
/// Most client addresses tracked; idle ones leave after [`IDLE`].
const CLIENTS: u64 = 50_000;
/// A client without attempts for this long is forgotten (its allowance is whole again).
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
        Self::bounded(per_minute, CLIENTS)
    }

    fn bounded(per_minute: u32, clients: u64) -> Option<Self> {
        let per_minute = NonZeroU32::new(per_minute)?;
        Some(Self {
            quota: Quota::per_minute(per_minute),
            per_minute,
            clients: Cache::builder()
                .max_capacity(clients)
                .time_to_idle(IDLE)
                .build(),
        })
    }

    /// The state of a client address (created on its first attempt that needs it).
    async fn client(&self, client: Option<IpAddr>) -> Arc<ClientState> {
        let quota = self.quota;
        self.clients
            .get_with(bucket(client), async move {
                Arc::new(ClientState {
                    limiter: RateLimiter::direct(quota),
                    failed: AtomicBool::new(false),
                    lookups: Semaphore::new(LOOKUPS_PER_CLIENT),
                })
            })
            .await
    }
}

fn check(limiter: &DefaultDirectRateLimiter) -> Result<(), u64> {
    limiter.check().map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        wait.as_secs_f64().ceil().max(1.0) as u64
    })
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

    async fn guard(l: &AuthFailures, ip: &str) -> Guard<'static> {
        Guard {
            client: Some(l.client(Some(ip.parse().unwrap())).await),
            budget: None,
        }
    }

    #[tokio::test]
    async fn a_client_over_its_failures_waits_and_others_do_not() {
        let l = AuthFailures::new(3).unwrap();
        let a = guard(&l, "1.2.3.4").await;
        assert_eq!(a.charge_if_failed(), Ok(false), "no failure yet: free");
        assert!(matches!(a.failed(false), KeyOutcome::Unknown));
        assert_eq!(
            a.charge_if_failed(),
            Ok(true),
            "failed before: charged up front"
        );
        assert_eq!(a.charge_if_failed(), Ok(true));
        let wait = a.charge_if_failed().expect_err("over the limit");
        assert!((1..=20).contains(&wait), "{wait}");
        let again = guard(&l, "1.2.3.4").await;
        assert!(
            again.charge_if_failed().is_err(),
            "the same address, a new request"
        );
        let b = guard(&l, "1.2.3.5").await;
        assert_eq!(b.charge_if_failed(), Ok(false));
        assert!(matches!(b.failed(false), KeyOutcome::Unknown));
    }

    #[tokio::test]
    async fn a_client_has_a_few_lookups_in_flight() {
        let l = AuthFailures::new(30).unwrap();
        let g = guard(&l, "1.2.3.4").await;
        let mut held = Vec::new();
        for _ in 0..LOOKUPS_PER_CLIENT {
            held.push(g.lookup_slot(false).await.unwrap());
        }
        let more = tokio::time::timeout(Duration::from_millis(50), g.lookup_slot(false)).await;
        assert!(more.is_err(), "the next lookup waits");
        drop(held);
        assert!(g.lookup_slot(false).await.unwrap().0.is_some());
    }

    #[tokio::test]
    async fn random_addresses_do_not_grow_memory() {
        let l = AuthFailures::bounded(3, 1_000).unwrap();
        for i in 0..5_000 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(!l.client(Some(addr)).await.failed.load(Ordering::Relaxed));
        }
        l.clients.run_pending_tasks().await;
        assert!(
            l.clients.entry_count() <= 1_000,
            "{}",
            l.clients.entry_count()
        );
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
