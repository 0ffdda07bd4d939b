//! The per-API-key request rate across replicas (`API_KEY_RATE_PER_SECOND`, `API_KEY_BURST`):
//! the fleet-wide part of the public port's key limit (docs/throttling.md#request-rate-per-api-key).
//!
//! Each replica first applies the limit on its own (`governor`, in
//! [`super::middleware`]). Then, far below the limit, a key spends a local free allowance
//! (half the rate per replica, `governor`) and nothing is asked of Redis; the free requests
//! are owed as debt. Beyond it, each request takes a permit from the key's GCRA on the service
//! Redis ([`shared::redis::pace`]), reporting the debt; a refusal is remembered locally until
//! the next permit, so a flood of refused requests costs Redis nothing. Redis down or slow
//! (250 ms): the replica's own limit only, for one second, then Redis is tried again.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, Instant},
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use shared::redis::{
    Keys, RedisHandle,
    pace::{self, Limit, Want},
};

/// How long a replica waits for Redis before it answers on its own limit.
const REDIS_WAIT: Duration = Duration::from_millis(250);
/// After a Redis failure, how long the replica uses its own limit only.
const REDIS_PAUSE: Duration = Duration::from_secs(1);
/// Free requests older than this are no longer owed (see docs/throttling.md for the bound).
const DEBT_HORIZON: Duration = Duration::from_secs(1);

/// The key's state on one replica.
#[derive(Default)]
struct Entry {
    /// Free requests not yet reported, since when.
    debt: u32,
    since: Option<Instant>,
    /// Refused by the fleet limit until then.
    denied_until: Option<Instant>,
}

/// Fleet-wide part of the key limit.
pub struct FleetRate {
    redis: RedisHandle,
    keys: Keys,
    limit: Limit,
    free: Option<DefaultKeyedRateLimiter<u64>>,
    entries: Mutex<HashMap<u64, Entry>>,
    paused_until: Mutex<Option<Instant>>,
}

/// The fleet's answer for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit (or Redis unavailable: the replica's own limit applied).
    Pass,
    /// Over the fleet limit: wait this long.
    Wait(Duration),
}

impl FleetRate {
    /// The fleet limit `rate`/s with bursts of `burst`, on the service Redis.
    pub fn new(redis: RedisHandle, keys: Keys, rate: NonZeroU32, burst: NonZeroU32) -> Self {
        let free =
            NonZeroU32::new(rate.get() / 2).map(|f| RateLimiter::keyed(Quota::per_second(f)));
        Self {
            redis,
            keys,
            limit: Limit {
                rate: rate.get(),
                burst: burst.get(),
            },
            free,
            entries: Mutex::new(HashMap::new()),
            paused_until: Mutex::new(None),
        }
    }

    /// Decides one request of the key whose local hash is `hashed` (`key`: the raw key, only
    /// digested when Redis is asked).
    pub async fn check(&self, hashed: u64, key: &[u8]) -> Verdict {
        let now = Instant::now();
        if self
            .free
            .as_ref()
            .is_some_and(|f| f.check_key(&hashed).is_ok())
        {
            self.owe(hashed, now);
            return Verdict::Pass;
        }
        let (debt, denied) = self.state(hashed, now);
        if let Some(until) = denied {
            return Verdict::Wait(until - now);
        }
        if self.paused(now) {
            return Verdict::Pass;
        }
        match tokio::time::timeout(REDIS_WAIT, self.take(key, debt)).await {
            Ok(Ok((granted, wait))) => self.settle(hashed, debt, granted, wait),
            Ok(Err(e)) => self.pause(now, &e),
            Err(_) => self.pause(now, "timed out"),
        }
    }

    /// Drops entries with nothing owed and no refusal running; called now and then.
    pub fn sweep(&self) {
        if let Some(f) = &self.free {
            f.retain_recent();
        }
        let now = Instant::now();
        if let Ok(mut m) = self.entries.lock() {
            m.retain(|_, e| {
                e.denied_until.is_some_and(|t| t > now)
                    || e.since.is_some_and(|s| now - s <= DEBT_HORIZON)
            });
        }
    }

    fn owe(&self, hashed: u64, now: Instant) {
        if let Ok(mut m) = self.entries.lock() {
            let e = m.entry(hashed).or_default();
            if e.since.is_none_or(|s| now - s > DEBT_HORIZON) {
                (e.debt, e.since) = (0, Some(now));
            }
            e.debt += 1;
        }
    }

    /// (debt still owed, refusal running until).
    fn state(&self, hashed: u64, now: Instant) -> (u32, Option<Instant>) {
        let Ok(m) = self.entries.lock() else {
            return (0, None);
        };
        m.get(&hashed).map_or((0, None), |e| {
            let debt = match e.since {
                Some(s) if now - s <= DEBT_HORIZON => e.debt,
                _ => 0,
            };
            (debt, e.denied_until.filter(|t| *t > now))
        })
    }

    /// One permit from the key's bucket, reporting `debt`: (granted, wait for the next one).
    async fn take(&self, key: &[u8], debt: u32) -> Result<(bool, Duration), String> {
        let digest = shared::auth::hash_key(&String::from_utf8_lossy(key));
        let id: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let mut conn = self.redis.conn().await.map_err(|e| e.to_string())?;
        let want = Want {
            field: "k".to_string(),
            limit: self.limit,
            debt,
            want: 1,
        };
        let taken = pace::take(
            &mut conn,
            &self.keys.key_rate(&id),
            (Limit::NONE, 0),
            false,
            &[want],
        )
        .await
        .map_err(|e| e.to_string())?;
        let g = taken.grants.first().copied().unwrap_or_default();
        let wait = u64::try_from(g.next_at_ms - taken.now_ms)
            .unwrap_or(0)
            .max(1);
        Ok((g.granted > 0, Duration::from_millis(wait)))
    }

    fn settle(&self, hashed: u64, reported: u32, granted: bool, wait: Duration) -> Verdict {
        let now = Instant::now();
        if let Ok(mut m) = self.entries.lock() {
            let e = m.entry(hashed).or_default();
            e.debt = e.debt.saturating_sub(reported);
            if !granted {
                e.denied_until = Some(now + wait);
            }
        }
        if granted {
            Verdict::Pass
        } else {
            Verdict::Wait(wait)
        }
    }

    fn paused(&self, now: Instant) -> bool {
        self.paused_until
            .lock()
            .map(|p| p.is_some_and(|t| t > now))
            .unwrap_or(false)
    }

    fn pause(&self, now: Instant, why: &str) -> Verdict {
        ::metrics::counter!(shared::metrics::API_KEY_RATE_LOCAL_ONLY).increment(1);
        tracing::warn!(
            error = why,
            "API key rate: Redis unavailable, this replica's own limit only for 1 s"
        );
        if let Ok(mut p) = self.paused_until.lock() {
            *p = Some(now + REDIS_PAUSE);
        }
        Verdict::Pass
    }
}
