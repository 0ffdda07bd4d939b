//! Submission pacing with `governor`: at most `dispatch_rate_per_second` per service and
//! `WORKER_TENANT_RATE` per tenant (per worker process). A callback that may not go now is
//! not waited for in line (that would hold up other services): the dispatcher hands it back to
//! the schedule at the time it may go, so a burst of thousands falling due together is spread
//! out in the index itself.

use std::{collections::HashMap, num::NonZeroU32, time::Duration};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::{InMemoryState, NotKeyed},
};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// Per-service and per-tenant limiters.
pub struct Pacer {
    clock: DefaultClock,
    tenant_rate: u32,
    services: HashMap<(String, String), (u32, Limiter)>,
    tenants: HashMap<String, Limiter>,
}

/// A refusal: the earliest wait, and the spacing of further permits of the binding limit.
#[derive(Debug, Clone, Copy)]
pub struct NotNow {
    /// Until the next permit of the binding limit (service or tenant).
    pub wait: Duration,
    /// Interval between its further permits (1 / rate): callbacks handed back together are
    /// spread this far apart in the schedule.
    pub spacing: Duration,
}

fn limiter(rate: u32) -> Limiter {
    let rate = NonZeroU32::new(rate.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rate))
}

fn spacing(rate: u32) -> Duration {
    Duration::from_secs_f64(1.0 / f64::from(rate.max(1)))
}

impl Pacer {
    /// A pacer with a tenant-wide cap (0 = none).
    pub fn new(tenant_rate: u32) -> Self {
        Self {
            clock: DefaultClock::default(),
            tenant_rate,
            services: HashMap::new(),
            tenants: HashMap::new(),
        }
    }

    /// Takes a permit for one submission of `service`, or says when to try again.
    pub fn admit(&mut self, tenant: &str, service: &str, rate: u32) -> Result<(), NotNow> {
        let key = (tenant.to_string(), service.to_string());
        let entry = self
            .services
            .entry(key)
            .or_insert_with(|| (rate, limiter(rate)));
        if entry.0 != rate {
            // The service's rate was changed: start a limiter with the new quota.
            *entry = (rate, limiter(rate));
        }
        if let Err(n) = entry.1.check() {
            return Err(NotNow {
                wait: n.wait_time_from(self.clock.now()),
                spacing: spacing(rate),
            });
        }
        if self.tenant_rate > 0 {
            let t = self
                .tenants
                .entry(tenant.to_string())
                .or_insert_with(|| limiter(self.tenant_rate));
            if let Err(n) = t.check() {
                return Err(NotNow {
                    wait: n.wait_time_from(self.clock.now()),
                    spacing: spacing(self.tenant_rate),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_rate_caps_a_burst_and_services_are_independent() {
        let mut p = Pacer::new(0);
        let ok = (0..100).filter(|_| p.admit("t", "a", 10).is_ok()).count();
        assert_eq!(ok, 10, "burst of one second's quota");
        let refusal = p.admit("t", "a", 10).unwrap_err();
        assert!(refusal.wait <= Duration::from_millis(100));
        assert_eq!(refusal.spacing, Duration::from_millis(100));
        assert!(p.admit("t", "b", 10).is_ok());
    }

    #[test]
    fn tenant_cap_spans_services() {
        let mut p = Pacer::new(5);
        let ok = (0..20)
            .filter(|i| p.admit("t", &format!("s{}", i % 4), 100).is_ok())
            .count();
        assert_eq!(ok, 5);
        assert!(p.admit("u", "s0", 100).is_ok());
    }
}
