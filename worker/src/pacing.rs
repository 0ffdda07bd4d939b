//! Submission pacing that holds for the whole worker fleet: at most `dispatch_rate_per_second`
//! per service and `WORKER_TENANT_RATE` per tenant, whatever the number of workers
//! (docs/pacing.md).
//!
//! The limits live on the service Redis ([`shared::redis::pace`]: one GCRA per service and
//! one per tenant, a tenant's in one hash, one script per tenant per pass). Far below a limit
//! a worker asks nothing: it spends a local free allowance (`governor`, 1/16 of the rate, one
//! at a time) and reports those permits as debt with its next take. When Redis refuses the
//! take, each worker falls back to pacing alone at the full rate (`governor`), as before.
//!
//! A callback that may not go now is not waited for in line (that would hold up other
//! services): the dispatcher hands it back to the schedule at the slot the script gave it, so
//! a burst of thousands falling due together is spread out in the index itself.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    time::{Duration, Instant},
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::{InMemoryState, NotKeyed},
};
use shared::redis::{
    Keys, RedisConn,
    pace::{self, Limit, Want},
};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// The free allowance is this fraction of a rate (none below it).
const FREE_SHARE: u32 = 16;
/// Debts older than this are dropped: with bursts of one second's rate, a permit used this
/// long ago no longer bears on what may go now.
const DEBT_HORIZON: Duration = Duration::from_secs(1);

/// One limit as seen by one worker: free allowance, unreported debt, local fallback.
struct Local {
    rate: u32,
    free: Option<Limiter>,
    debt: u32,
    since: Instant,
    fallback: Limiter,
}

impl Local {
    fn new(rate: u32) -> Self {
        let free = NonZeroU32::new(rate / FREE_SHARE)
            .map(|r| RateLimiter::direct(Quota::per_second(r).allow_burst(NonZeroU32::MIN)));
        Self {
            rate,
            free,
            debt: 0,
            since: Instant::now(),
            fallback: limiter(rate),
        }
    }

    fn free_ok(&self) -> bool {
        self.free.as_ref().is_some_and(|f| f.check().is_ok())
    }

    fn owe(&mut self, n: u32) {
        self.debt = self.debt_now() + n;
        if self.debt == n {
            self.since = Instant::now();
        }
    }

    fn debt_now(&self) -> u32 {
        if self.since.elapsed() > DEBT_HORIZON {
            0
        } else {
            self.debt
        }
    }

    fn limit(&self) -> Limit {
        Limit {
            rate: self.rate,
            burst: self.rate.max(1),
        }
    }
}

/// What a pass asks for one service: `n` callbacks of it are ready to go.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Service name.
    pub service: &'a str,
    /// Its `dispatch_rate_per_second`.
    pub rate: u32,
    /// How many want to go now.
    pub n: u32,
}

/// What one ask got: the first `granted` may go now; the others are not-now.
#[derive(Debug, Clone, Copy)]
pub struct Paced {
    /// How many may go now.
    pub granted: u32,
    /// When to hand back the rest (ms, Redis clock) and how far apart.
    pub not_now: NotNow,
}

/// Where refused callbacks go: the first slot and the spacing of the next ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotNow {
    /// First slot (ms, Redis clock; or local fallback: now + wait).
    pub at_ms: i64,
    /// Interval between further slots.
    pub spacing: Duration,
}

impl NotNow {
    /// Slot of the `k`-th refused callback (ms).
    pub fn slot(&self, k: u32) -> i64 {
        let offset = self.spacing.as_micros() * u128::from(k) / 1_000;
        self.at_ms + i64::try_from(offset).unwrap_or(i64::MAX / 4)
    }
}

/// Per-service and per-tenant limits of one worker.
pub struct Pacer {
    clock: DefaultClock,
    tenant_rate: u32,
    services: HashMap<(String, String), Local>,
    tenants: HashMap<String, Local>,
    /// Until when Redis is skipped after a failed take (local fallback only).
    redis_down_until: Option<Instant>,
}

fn limiter(rate: u32) -> Limiter {
    let rate = NonZeroU32::new(rate.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rate))
}

fn spacing(rate: u32) -> Duration {
    Duration::from_secs_f64(1.0 / f64::from(rate.max(1)))
}

impl Pacer {
    /// A pacer with a fleet-wide tenant cap (0 = none).
    pub fn new(tenant_rate: u32) -> Self {
        Self {
            clock: DefaultClock::default(),
            tenant_rate,
            services: HashMap::new(),
            tenants: HashMap::new(),
            redis_down_until: None,
        }
    }

    /// Decides how many of each ask may go now (`now_ms`: the claim's Redis time). One Redis
    /// script per tenant whose asks the free allowance does not cover; none otherwise.
    pub async fn admit(
        &mut self,
        conn: &mut RedisConn,
        keys: &Keys,
        now_ms: i64,
        asks: &[Ask<'_>],
    ) -> Vec<Paced> {
        let mut out = vec![
            Paced {
                granted: 0,
                not_now: NotNow::default(),
            };
            asks.len()
        ];
        let mut tenants: Vec<&str> = asks.iter().map(|a| a.tenant).collect();
        tenants.dedup();
        tenants.sort_unstable();
        tenants.dedup();
        for tenant in tenants {
            let idx: Vec<usize> = (0..asks.len())
                .filter(|i| asks[*i].tenant == tenant)
                .collect();
            self.admit_tenant(conn, keys, now_ms, asks, &idx, &mut out)
                .await;
        }
        out
    }

    async fn admit_tenant(
        &mut self,
        conn: &mut RedisConn,
        keys: &Keys,
        now_ms: i64,
        asks: &[Ask<'_>],
        idx: &[usize],
        out: &mut [Paced],
    ) {
        let free: Vec<u32> = idx.iter().map(|i| self.take_free(&asks[*i])).collect();
        if idx.iter().zip(&free).all(|(i, f)| *f == asks[*i].n) {
            for (i, f) in idx.iter().zip(&free) {
                out[*i].granted = *f;
            }
            return;
        }
        if self.redis_down_until.is_none_or(|t| t <= Instant::now()) {
            match self.take_redis(conn, keys, asks, idx, &free).await {
                Ok(paced) => {
                    for ((i, f), p) in idx.iter().zip(&free).zip(paced) {
                        out[*i] = Paced {
                            granted: p.granted + f,
                            ..p
                        };
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fleet pacing unavailable: pacing this worker alone");
                    self.redis_down_until = Some(Instant::now() + Duration::from_secs(1));
                }
            }
        }
        for (i, f) in idx.iter().zip(&free) {
            out[*i] = self.fallback(&asks[*i], *f, now_ms);
        }
    }

    fn service(&mut self, a: &Ask<'_>) -> &mut Local {
        let key = (a.tenant.to_string(), a.service.to_string());
        let local = self
            .services
            .entry(key)
            .or_insert_with(|| Local::new(a.rate));
        if local.rate != a.rate {
            // The service's rate was changed: start over with the new one.
            *local = Local::new(a.rate);
        }
        local
    }

    fn tenant(&mut self, tenant: &str) -> Option<&mut Local> {
        let rate = self.tenant_rate;
        (rate > 0).then(|| {
            self.tenants
                .entry(tenant.to_string())
                .or_insert_with(|| Local::new(rate))
        })
    }

    /// Takes free permits for up to `a.n` callbacks; returns how many it got (owed as debt).
    fn take_free(&mut self, a: &Ask<'_>) -> u32 {
        let mut n = 0;
        while n < a.n && self.service(a).free_ok() {
            // A service permit taken and then refused by the tenant is owed all the same.
            self.service(a).owe(1);
            match self.tenant(a.tenant) {
                Some(t) if !t.free_ok() => break,
                Some(t) => t.owe(1),
                None => {}
            }
            n += 1;
        }
        n
    }

    /// One script for the tenant's asks (minus what went free), reporting the debts.
    async fn take_redis(
        &mut self,
        conn: &mut RedisConn,
        keys: &Keys,
        asks: &[Ask<'_>],
        idx: &[usize],
        free: &[u32],
    ) -> redis::RedisResult<Vec<Paced>> {
        let Some(tenant) = idx.first().map(|i| asks[*i].tenant) else {
            return Ok(Vec::new());
        };
        let wants: Vec<Want> = idx
            .iter()
            .zip(free)
            .map(|(i, f)| {
                let a = &asks[*i];
                let local = self.service(a);
                Want {
                    field: format!("s:{}", a.service),
                    limit: local.limit(),
                    debt: local.debt_now(),
                    want: a.n - f,
                }
            })
            .collect();
        let outer = self
            .tenant(tenant)
            .map_or((Limit::NONE, 0), |t| (t.limit(), t.debt_now()));
        let taken = pace::take(conn, &keys.pace(tenant), outer, true, &wants).await?;
        for i in idx {
            self.service(&asks[*i]).debt = 0;
        }
        if let Some(t) = self.tenant(tenant) {
            t.debt = 0;
        }
        Ok(taken
            .grants
            .iter()
            .map(|g| Paced {
                granted: g.granted,
                not_now: NotNow {
                    at_ms: g.next_at_ms,
                    spacing: Duration::from_micros(g.spacing_us),
                },
            })
            .collect())
    }

    /// Paces the rest of `a` (after `free`) with this worker's own limiters at the full rates.
    fn fallback(&mut self, a: &Ask<'_>, free: u32, now_ms: i64) -> Paced {
        let mut granted = free;
        while granted < a.n {
            let refused = self.service(a).fallback.check().err().map(|n| (n, a.rate));
            let refused = refused.or_else(|| {
                let t = self.tenant(a.tenant)?;
                t.fallback.check().err().map(|n| (n, t.rate))
            });
            if let Some((n, rate)) = refused {
                let wait = n.wait_time_from(self.clock.now());
                let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 4);
                return Paced {
                    granted,
                    not_now: NotNow {
                        at_ms: now_ms + wait_ms.max(1),
                        spacing: spacing(rate),
                    },
                };
            }
            granted += 1;
        }
        Paced {
            granted,
            not_now: NotNow::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(service: &str, rate: u32, n: u32) -> Ask<'_> {
        Ask {
            tenant: "t",
            service,
            rate,
            n,
        }
    }

    #[test]
    fn the_free_allowance_is_one_at_a_time_and_owed() {
        let mut p = Pacer::new(0);
        assert_eq!(p.take_free(&ask("a", 32, 5)), 1, "bursts of one");
        assert_eq!(p.take_free(&ask("a", 32, 5)), 0);
        assert_eq!(p.service(&ask("a", 32, 0)).debt_now(), 1);
        assert_eq!(p.take_free(&ask("slow", 15, 1)), 0, "below 16/s: none");
    }

    #[test]
    fn a_tenant_without_free_permits_stops_the_free_path() {
        let mut p = Pacer::new(10);
        assert_eq!(p.take_free(&ask("a", 1_000, 3)), 0);
        // The service permit taken is owed all the same.
        assert_eq!(p.service(&ask("a", 1_000, 0)).debt_now(), 1);
    }

    #[test]
    fn the_fallback_paces_one_worker_at_the_full_rates() {
        let mut p = Pacer::new(0);
        let got = p.fallback(&ask("a", 10, 100), 0, 5_000);
        assert_eq!(got.granted, 10, "one second's burst");
        assert!((5_001..=5_100).contains(&got.not_now.at_ms));
        assert_eq!(got.not_now.spacing, Duration::from_millis(100));
        let mut capped = Pacer::new(5);
        let n: u32 = (0..4)
            .map(|i| {
                capped
                    .fallback(&ask(["s0", "s1", "s2", "s3"][i], 100, 5), 0, 0)
                    .granted
            })
            .sum();
        assert_eq!(n, 5, "the tenant cap spans services");
    }

    #[test]
    fn slots_follow_the_spacing_without_drift() {
        let n = NotNow {
            at_ms: 1_000,
            spacing: Duration::from_micros(33_334),
        };
        assert_eq!(n.slot(0), 1_000);
        assert_eq!(n.slot(3), 1_100);
        assert_eq!(n.slot(300), 11_000);
    }
}
