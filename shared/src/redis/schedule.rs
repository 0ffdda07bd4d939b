//! The schedule index: what is due when. Writers (create, cancel) use the scripts here; the
//! worker claims from the same keys. Index entries hold only the callback id; the worker loads
//! the rest from PostgreSQL, which keeps Redis memory per waiting callback small.

use std::sync::LazyLock;

use redis::Script;
use uuid::Uuid;

use super::{Keys, RedisConn};

/// Removes a callback from its shard and from in-flight. KEYS: sched, inflight. ARGV: member.
static UNINDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('ZREM', KEYS[1], ARGV[1])
return n + redis.call('ZREM', KEYS[2], ARGV[1])",
    )
});

/// Indexes a callback to be dispatched at `dispatch_at_ms`, and wakes sleeping workers when
/// it became its shard's earliest entry (message `<score>:<shard>`, so a worker claims from
/// that shard only).
///
/// Two commands in one round trip (`ZADD`, then `ZRANGE 0 0`), no script; `PUBLISH` only when
/// the callback is the head. Reading the head *after* the add is what makes this safe without
/// atomicity: a claim that ran after the `ZADD` saw the callback (claimed it or reported it as
/// the next due); one that ran before left a head that was either known to the workers or
/// announced by whoever added it, and that head is `<=` this callback unless this callback is
/// the head itself, which is then announced.
pub async fn index(
    conn: &mut RedisConn,
    keys: &Keys,
    id: Uuid,
    dispatch_at_ms: i64,
) -> redis::RedisResult<()> {
    let shard = keys.shard_of(&id);
    let member = id.to_string();
    let (_, head): (i64, Vec<String>) = redis::pipe()
        .cmd("ZADD")
        .arg(keys.sched(shard))
        .arg(dispatch_at_ms)
        .arg(&member)
        .cmd("ZRANGE")
        .arg(keys.sched(shard))
        .arg(0)
        .arg(0)
        .query_async(conn)
        .await?;
    if head.first() == Some(&member) {
        redis::cmd("PUBLISH")
            .arg(keys.wake_channel())
            .arg(format!("{dispatch_at_ms}:{shard}"))
            .query_async::<i64>(conn)
            .await?;
    }
    Ok(())
}

/// Removes a callback from the index; returns whether it was there.
pub async fn unindex(conn: &mut RedisConn, keys: &Keys, id: Uuid) -> redis::RedisResult<bool> {
    let shard = keys.shard_of(&id);
    let n: i64 = UNINDEX
        .key(keys.sched(shard))
        .key(keys.inflight(shard))
        .arg(id.to_string())
        .invoke_async(conn)
        .await?;
    Ok(n > 0)
}
