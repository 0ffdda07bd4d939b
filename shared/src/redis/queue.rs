//! Queue views: per service, a ZSET of the callbacks the voice platform holds in QUEUED or
//! ROUTING (score = time queued, ms) for `positionInQueue`, and a capped list of recent dequeue
//! times (ms) for wait-time estimates. Both are derived: the reconciler rebuilds the ZSET from
//! PostgreSQL, and a lost history only makes estimates unknown for a while.
//!
//! Memory stays small: one ZSET member per queued callback and at most 2 × [`HISTORY`]
//! numbers per service (trimmed lazily, see [`dequeue`]).

use uuid::Uuid;

use super::{Keys, RedisConn};

/// Dequeue times kept per service (the EWT window of DESIGN §7).
pub const HISTORY: isize = 32;

/// Adds callbacks to a service's queue view (no-op for members already there).
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

/// Position (1-based) of a callback in its queue view and the estimated wait in seconds
/// (position × mean interval between recent dequeues), each when known.
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
    let position = rank.map(|r| r + 1);
    let ewt = position.and_then(|p| mean_interval_ms(&history).map(|ms| (p * ms + 999) / 1000));
    Ok((position, ewt))
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
}
