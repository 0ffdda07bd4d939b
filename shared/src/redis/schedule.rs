//! The schedule index: what is due when. Writers (create, cancel) use the scripts here; the
//! worker claims from the same keys. Index entries hold only the callback id; the worker loads
//! the rest from PostgreSQL, which keeps Redis memory per waiting callback small.

use std::sync::LazyLock;

use redis::Script;
use uuid::Uuid;

use super::{Keys, RedisConn};

/// Adds (or moves) a callback in its shard and wakes sleeping workers when it becomes the
/// shard's earliest entry; the message is `<score>:<shard>`, so a worker claims from that
/// shard only. KEYS: sched. ARGV: score, member, wake channel, shard.
static INDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
if head[2] == nil or tonumber(ARGV[1]) < tonumber(head[2]) then
  redis.call('PUBLISH', ARGV[3], ARGV[1] .. ':' .. ARGV[4])
end
return 1",
    )
});

/// Removes a callback from its shard and from in-flight. KEYS: sched, inflight. ARGV: member.
static UNINDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('ZREM', KEYS[1], ARGV[1])
return n + redis.call('ZREM', KEYS[2], ARGV[1])",
    )
});

/// Indexes a callback to be dispatched at `dispatch_at_ms`.
pub async fn index(
    conn: &mut RedisConn,
    keys: &Keys,
    id: Uuid,
    dispatch_at_ms: i64,
) -> redis::RedisResult<()> {
    let shard = keys.shard_of(&id);
    INDEX
        .key(keys.sched(shard))
        .arg(dispatch_at_ms)
        .arg(id.to_string())
        .arg(keys.wake_channel())
        .arg(shard)
        .invoke_async::<i64>(conn)
        .await
        .map(drop)
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
