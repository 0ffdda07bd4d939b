//! What a process knows of a Redis node's clock, so that the two scripts every callback runs
//! (the admission and the claim) take the time as an argument instead of calling `TIME`
//! (docs/costs.md#time-from-the-caller).
//!
//! A script called without a time calls `TIME` and returns it; [`observe`] keeps that reading
//! with the monotonic instant its reply arrived. Until the reading is [`MAX_AGE`] old,
//! [`now`] answers it advanced by the monotonic clock since. The reading was taken before the
//! reply arrived, so the estimate is never ahead of the node's clock (save the two clocks'
//! rate difference, microseconds over [`MAX_AGE`]) and behind it by at most the reply's round
//! trip; a reading whose round trip exceeded [`MAX_RTT`] is not kept. The host's wall clock
//! plays no part, so a host clock that jumps moves nothing.
//!
//! A cluster's primaries each have their own clock: readings are kept per hash tag (the slot's
//! node), and a failover to a host with another clock is followed within [`MAX_AGE`]. A
//! standalone server is one clock for every key.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

/// How long a reading stands in for `TIME`.
pub const MAX_AGE: Duration = Duration::from_secs(10);
/// A reading whose reply took longer is not kept (the estimate would lag by up to that much).
pub const MAX_RTT: Duration = Duration::from_millis(20);
/// Most hash tags remembered (a cluster's services); beyond it, the stale ones go first.
const MAX_TAGS: usize = 4096;

/// One reading: the node's clock (ms) and the monotonic instant the reply arrived.
#[derive(Clone, Copy)]
struct Reading {
    redis_ms: i64,
    at: Instant,
}

/// The readings, and when the full map was last pruned of stale ones.
#[derive(Default)]
struct Readings {
    map: HashMap<String, Reading>,
    pruned: Option<Instant>,
}

static READINGS: LazyLock<Mutex<Readings>> = LazyLock::new(|| Mutex::new(Readings::default()));

/// The clock a key's node answers by: the key's hash tag on a cluster, one for a standalone
/// server.
pub fn tag(cluster: bool, key: &str) -> &str {
    if !cluster {
        return "";
    }
    super::voice::hash_tag(key).unwrap_or(key)
}

/// The node's clock now (ms), estimated from a reading younger than [`MAX_AGE`]; `None`
/// without one (the script then calls `TIME`).
pub fn now(tag: &str) -> Option<i64> {
    let r = *READINGS.lock().ok()?.map.get(tag)?;
    let age = r.at.elapsed();
    if age >= MAX_AGE {
        return None;
    }
    i64::try_from(age.as_millis())
        .ok()
        .map(|ms| r.redis_ms.saturating_add(ms))
}

/// Keeps a script's `TIME` reading `redis_ms` of the node behind `tag`, from a call sent at
/// `sent` whose reply arrived at `received`.
pub fn observe(tag: &str, redis_ms: i64, sent: Instant, received: Instant) {
    if received.saturating_duration_since(sent) > MAX_RTT {
        return;
    }
    let Ok(mut r) = READINGS.lock() else { return };
    if r.map.len() >= MAX_TAGS && !r.map.contains_key(tag) {
        // Pruned at most once a second: a map full of live readings is not rescanned on
        // every call (the others read `TIME` meanwhile).
        if r.pruned
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        r.pruned = Some(Instant::now());
        r.map.retain(|_, r| r.at.elapsed() < MAX_AGE);
        if r.map.len() >= MAX_TAGS {
            return;
        }
    }
    r.map.insert(
        tag.to_string(),
        Reading {
            redis_ms,
            at: received,
        },
    );
}

/// Forgets every reading of `tag` (a script refused the time it was given).
pub fn forget(tag: &str) {
    if let Ok(mut r) = READINGS.lock() {
        r.map.remove(tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_the_node_of_a_cluster_key_and_one_clock_standalone() {
        assert_eq!(tag(true, "{e:thr:t:s}:act"), "e:thr:t:s");
        assert_eq!(tag(true, "{e:sched:3}"), "e:sched:3");
        assert_eq!(tag(true, "plain"), "plain");
        assert_eq!(tag(false, "{e:sched:3}"), "");
    }

    #[test]
    fn a_reading_advances_with_the_monotonic_clock_until_it_is_too_old() {
        let t = "test:advance";
        assert_eq!(now(t), None);
        let sent = Instant::now();
        observe(t, 1_000_000, sent, sent + Duration::from_millis(1));
        let first = now(t).expect("fresh");
        assert!(first >= 1_000_000, "{first}");
        std::thread::sleep(Duration::from_millis(30));
        let later = now(t).expect("fresh");
        assert!(later >= first + 29, "{first} {later}");
        // Too old: the script reads TIME again.
        let old = Instant::now().checked_sub(MAX_AGE).expect("uptime");
        observe(t, 1_000_000, old, old);
        assert_eq!(now(t), None);
    }

    #[test]
    fn a_slow_reply_is_not_a_reading() {
        let t = "test:slow";
        let sent = Instant::now();
        observe(t, 5, sent, sent + MAX_RTT + Duration::from_millis(1));
        assert_eq!(now(t), None);
        observe(t, 5, sent, sent);
        assert!(now(t).is_some());
        forget(t);
        assert_eq!(now(t), None);
    }
}
