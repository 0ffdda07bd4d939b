//! Queue views: per service, a ZSET of the callbacks the voice platform holds in QUEUED or
//! ROUTING for `positionInQueue` (score = [`score`]: priority first, then time queued, so
//! `ZRANK` is the position in priority-then-time order), and a capped list of recent dequeue
//! times (ms) for wait-time estimates (`shared::model::ewt`). Both are derived: the reconciler rebuilds the ZSET from
//! PostgreSQL, and a lost history only makes estimates unknown for a while.
//!
//! Memory stays small: one ZSET member per queued callback and at most 2 × [`HISTORY`]
//! numbers per service (trimmed lazily, see [`dequeue`]).

use uuid::Uuid;

use super::{Keys, RedisConn};

/// Dequeue times kept per service (the EWT window, docs/decisions.md#estimated-wait-time).
pub const HISTORY: isize = 32;

/// Priorities beyond this magnitude order as if they were at it (keeps [`score`] exact in the
/// double Redis stores).
pub const PRIORITY_CAP: i32 = 2_000;

/// One priority step in score units: more than any time queued in ms (until year 2109).
const PRIORITY_STEP: i64 = 1 << 42;

/// Queue-view score of a callback: higher `priority` first, then earlier `queued_ms` first.
/// |score| < 2^53, so Redis holds it exactly.
pub fn score(priority: i32, queued_ms: i64) -> i64 {
    -i64::from(priority.clamp(-PRIORITY_CAP, PRIORITY_CAP)) * PRIORITY_STEP
        + queued_ms.clamp(0, PRIORITY_STEP - 1)
}

/// Adds callbacks to a service's queue view (no-op for members already there); scores come
/// from [`score`].
pub async fn enqueue(
    conn: &mut RedisConn,
    keys: &Keys,
    tenant: &str,
    service: &str,
    members: &[(Uuid, i64)],
) -> redis::RedisResult<()> {
    if members.is_empty() {
        return Ok(());
    }
    let mut cmd = redis::cmd("ZADD");
    cmd.arg(keys.queue(tenant, service)).arg("NX");
    for (id, score) in members {
        cmd.arg(*score).arg(id.to_string());
    }
    cmd.query_async::<i64>(conn).await.map(drop)
}

/// Every member of a service's queue view (the reconciler's check).
pub async fn members(
    conn: &mut RedisConn,
    keys: &Keys,
    tenant: &str,
    service: &str,
) -> redis::RedisResult<Vec<String>> {
    redis::cmd("ZRANGE")
        .arg(keys.queue(tenant, service))
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
}

/// Removes members from a service's queue view without recording a dequeue (strays).
pub async fn remove(
    conn: &mut RedisConn,
    keys: &Keys,
    tenant: &str,
    service: &str,
    members: &[String],
) -> redis::RedisResult<()> {
    if members.is_empty() {
        return Ok(());
    }
    redis::cmd("ZREM")
        .arg(keys.queue(tenant, service))
        .arg(members)
        .query_async::<i64>(conn)
        .await
        .map(drop)
}

/// Takes a callback off its queue view; `served` records a dequeue for wait-time estimates.
pub async fn dequeue(
    conn: &mut RedisConn,
    keys: &Keys,
    tenant: &str,
    service: &str,
    id: Uuid,
    served: bool,
) -> redis::RedisResult<()> {
    let view = keys.queue(tenant, service);
    if !served {
        return redis::cmd("ZREM")
            .arg(view)
            .arg(id.to_string())
            .query_async::<i64>(conn)
            .await
            .map(drop);
    }
    // Two commands in one round trip (no script): callers dequeue once per transition, so
    // the time is recorded whether or not the view still held the member (a lost view must
    // not lose the dequeue). The list is trimmed only when it has grown to twice its size,
    // so the trim costs a command once every `HISTORY` dequeues; readers take the newest
    // `HISTORY`.
    let history = keys.queue_history(tenant, service);
    let (_, len): (i64, i64) = redis::pipe()
        .cmd("ZREM")
        .arg(&view)
        .arg(id.to_string())
        .cmd("LPUSH")
        .arg(&history)
        .arg(jiff::Timestamp::now().as_millisecond())
        .query_async(conn)
        .await?;
    if len >= 2 * HISTORY as i64 {
        redis::cmd("LTRIM")
            .arg(&history)
            .arg(0)
            .arg(HISTORY - 1)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(())
}

/// What wait-time estimates need of one service's view: how many callbacks wait, and the
/// recent dequeue times (ms, newest first). Two commands in one pipeline, O(1) each
/// (`ZCARD`, `LRANGE` of at most [`HISTORY`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Callbacks in the view (QUEUED or ROUTING).
    pub pending: i64,
    /// Dequeue times, ms, newest first.
    pub history: Vec<i64>,
}

/// Reads a service's [`Snapshot`].
pub async fn snapshot(
    conn: &mut RedisConn,
    keys: &Keys,
    tenant: &str,
    service: &str,
) -> redis::RedisResult<Snapshot> {
    let (pending, history): (i64, Vec<i64>) = redis::pipe()
        .cmd("ZCARD")
        .arg(keys.queue(tenant, service))
        .cmd("LRANGE")
        .arg(keys.queue_history(tenant, service))
        .arg(0)
        .arg(HISTORY - 1)
        .query_async(conn)
        .await?;
    Ok(Snapshot { pending, history })
}

/// Position (1-based, priority-then-time order) of a callback in its queue view and the
/// estimated wait in seconds (callbacks ahead × mean interval between recent dequeues, the
/// same arithmetic as `mode1` for a newcomer), each when known.
pub async fn position(
    conn: &mut RedisConn,
    keys: &Keys,
    tenant: &str,
    service: &str,
    id: Uuid,
) -> redis::RedisResult<(Option<i64>, Option<i64>)> {
    let (rank, history): (Option<i64>, Vec<i64>) = redis::pipe()
        .cmd("ZRANK")
        .arg(keys.queue(tenant, service))
        .arg(id.to_string())
        .cmd("LRANGE")
        .arg(keys.queue_history(tenant, service))
        .arg(0)
        .arg(HISTORY - 1)
        .query_async(conn)
        .await?;
    let ewt = rank.and_then(|ahead| mean_interval_ms(&history).map(|ms| wait_secs(ahead, ms)));
    Ok((rank.map(|r| r + 1), ewt))
}

/// Seconds `ahead` dequeues take at `interval_ms` each, rounded to the nearest second.
pub fn wait_secs(ahead: i64, interval_ms: i64) -> i64 {
    (ahead.max(0).saturating_mul(interval_ms) + 500) / 1000
}

/// Mean interval between the dequeue times of `history` (newest first), when there are two.
pub fn mean_interval_ms(history: &[i64]) -> Option<i64> {
    let (newest, oldest) = (history.first()?, history.last()?);
    let gaps = i64::try_from(history.len()).ok()? - 1;
    (gaps > 0).then(|| (newest - oldest).max(0) / gaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_interval_needs_two_dequeues() {
        assert_eq!(mean_interval_ms(&[]), None);
        assert_eq!(mean_interval_ms(&[5_000]), None);
        assert_eq!(mean_interval_ms(&[9_000, 6_000, 3_000]), Some(3_000));
    }

    #[test]
    fn scores_order_priority_then_time() {
        let t = 1_780_000_000_000;
        // Higher priority first, whatever the time; same priority: earlier first.
        assert!(score(5, t + 60_000) < score(0, t));
        assert!(score(0, t) < score(0, t + 1));
        assert!(score(0, t) < score(-1, t - 60_000));
        // Out-of-range priorities clamp; every score stays exact in a double.
        assert_eq!(score(i32::MAX, t), score(PRIORITY_CAP, t));
        for p in [i32::MIN, -PRIORITY_CAP, 0, PRIORITY_CAP, i32::MAX] {
            let s = score(p, i64::MAX);
            assert!(s.unsigned_abs() < 1 << 53, "{p}: {s}");
        }
    }

    #[test]
    fn waits_round_to_the_nearest_second() {
        assert_eq!(wait_secs(0, 250), 0);
        assert_eq!(wait_secs(10, 249), 2);
        assert_eq!(wait_secs(10, 250), 3);
        assert_eq!(wait_secs(-3, 250), 0);
    }
}
