//! Queue views: per service, a ZSET of the callbacks the voice platform holds in QUEUED or
//! ROUTING (score = time queued, ms) for `positionInQueue`, and a capped list of recent dequeue
//! times (ms) for wait-time estimates. Both are derived: the reconciler rebuilds the ZSET from
//! PostgreSQL, and a lost history only makes estimates unknown for a while.
//!
//! Memory stays small: one ZSET member per queued callback and at most [`HISTORY`] numbers
//! per service.

use std::sync::LazyLock;

use redis::Script;
use uuid::Uuid;

use super::{Keys, RedisConn};

/// Dequeue times kept per service (the EWT window of DESIGN §7).
pub const HISTORY: isize = 32;

/// Removes a callback from its queue view; when it was there, records the dequeue time.
/// KEYS: view, history. ARGV: member, now ms, history length.
static DEQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
  return 1
end
return 0",
    )
});

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
    if served {
        DEQUEUE
            .key(keys.queue(tenant, service))
            .key(keys.queue_history(tenant, service))
            .arg(id.to_string())
            .arg(jiff::Timestamp::now().as_millisecond())
            .arg(HISTORY)
            .invoke_async::<i64>(conn)
            .await
            .map(drop)
    } else {
        redis::cmd("ZREM")
            .arg(keys.queue(tenant, service))
            .arg(id.to_string())
            .query_async::<i64>(conn)
            .await
            .map(drop)
    }
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
