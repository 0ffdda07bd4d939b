//! The schedule index: what is due when. Writers (create, cancel) use the scripts here; the
//! worker claims from the same keys. Index entries hold only the callback id; the worker loads
//! the rest from PostgreSQL, which keeps Redis memory per waiting callback small.

use std::{
    sync::LazyLock,
    time::{Duration, Instant},
};

use super::script::Script;
use jiff::Timestamp;
use uuid::Uuid;

use super::{Keys, RedisConn, RedisHandle};

/// The horizon's margin (docs/derived-state.md#the-horizon): a create leaves its callback to
/// the worker's horizon loader only when it is due at least this long after the horizon, by
/// the database's clock, and its insert took less than this from before its statement to
/// after its commit, by the host's monotonic clock. Then no loader pass that reaches the
/// callback's time can have read the table before the commit.
pub const HORIZON_MARGIN_MS: i64 = 10_000;

/// A committed callback's stored due time and the database's clock when its statement ran
/// (`statement_timestamp()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The stored `dispatch_at`.
    pub at: Timestamp,
    /// The database's clock at the insert statement.
    pub db_now: Timestamp,
}

impl Due {
    /// Due at once: an insert whose answer was lost and that was found stored (the worker
    /// re-reads the row and moves a scheduled callback to its stored time).
    pub const UNKNOWN: Self = Self {
        at: Timestamp::UNIX_EPOCH,
        db_now: Timestamp::UNIX_EPOCH,
    };

    /// The index entry: id and score (ms).
    pub fn entry(&self, id: Uuid) -> (Uuid, i64) {
        (id, self.at.as_millisecond())
    }

    /// Whether the create may leave this callback out of the index: it is due at least
    /// [`HORIZON_MARGIN_MS`] past the horizon and its insert, begun at `since`, committed within
    /// that margin. Always `false` with the horizon off.
    pub fn beyond_horizon(&self, keys: &Keys, since: Instant) -> bool {
        let horizon = keys.horizon_ms();
        horizon > 0
            && since.elapsed() < Duration::from_millis(HORIZON_MARGIN_MS.unsigned_abs())
            && self.at.as_millisecond()
                >= self.db_now.as_millisecond() + horizon + HORIZON_MARGIN_MS
    }
}

/// Removes a callback from its shard and from in-flight. KEYS: sched, inflight. ARGV: member.
static UNINDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('ZREM', KEYS[1], ARGV[1])
return n + redis.call('ZREM', KEYS[2], ARGV[1])",
    )
});

/// Adds the members that are neither in the shard nor in flight (a claimed callback is being
/// handled: adding it again would only make a second worker find it already submitted), and
/// leaves every existing entry alone (`ZADD NX`: a paced entry keeps its later score). When
/// something was added, announces the earliest added score on the wake channel. With the
/// overdue flag (the sweep: every member is overdue by PostgreSQL), also announces members
/// that were already indexed and are due by their index score (not those a pacer moved later),
/// and in-flight ones whose lease ran out: they wait for a worker
/// that was not told (an announcement lost, a frozen claimer's lease message not heard), and
/// would otherwise wait for the safety poll. With a lease that ran out the message is a lease
/// announcement with tag 0 (`<ms>.0:<shard>`), so a worker also drops what it believed of the
/// shard's leases (docs/derived-state.md#claims-that-know-the-leases). Returns how many were
/// added.
/// KEYS: sched, inflight. ARGV: wake channel, shard, overdue flag ("1" or "0"), score, id, …
static INDEX_MISSING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local overdue = ARGV[3] == '1'
local ids = {}
for i = 5, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
local held = redis.call('ZMSCORE', KEYS[2], unpack(ids))
local add = {}
local lapsed = nil
local now = nil
for i, id in ipairs(ids) do
  if not held[i] then
    add[#add + 1] = tonumber(ARGV[2 * i + 2]); add[#add + 1] = id
  elseif overdue then
    if not now then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    local lease = tonumber(held[i])
    if lease <= now and (not lapsed or lease < lapsed) then lapsed = lease end
  end
end
local n = 0
if #add > 0 then n = redis.call('ZADD', KEYS[1], 'NX', unpack(add)) end
local earliest = lapsed
if n > 0 then
  -- The earliest candidate (an entry kept by NX may make this early: a cheap empty claim).
  for i = 1, #add, 2 do
    if not earliest or add[i] < earliest then earliest = add[i] end
  end
elseif overdue and #add > 0 then
  -- All were indexed already: announce only those due by their index score (one a pacer
  -- moved later waits legitimately, and would wake every worker for nothing).
  local members = {}
  for i = 2, #add, 2 do members[#members + 1] = add[i] end
  local scores = redis.call('ZMSCORE', KEYS[1], unpack(members))
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  for _, sc in ipairs(scores) do
    local v = tonumber(sc)
    if v and v <= now and (not earliest or v < earliest) then earliest = v end
  end
end
if earliest then
  -- A lease that ran out is announced as a lease (tag 0, no worker's own): a worker that
  -- believed no lease could have run out reads the in-flight head again.
  local tag = ''
  if lapsed then tag = '.0' end
  redis.call('PUBLISH', ARGV[1], string.format('%d', earliest) .. tag .. ':' .. ARGV[2])
end
return n",
    )
});

/// Members due before the local clock plus this are announced without reading the head.
const DUE_NOW_MS: i64 = 1_000;

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
    index_many(conn, keys, &[(id, dispatch_at_ms)]).await
}

/// [`index`] for many callbacks at once (a group commit's batch): one `ZADD` of all of a
/// shard's members and one `ZRANGE 0 0` per shard, in one round trip per shard (a shard is one
/// cluster slot), then a `PUBLISH` for each shard whose head is now one of them. Reading the
/// head after the add keeps the argument of [`index`]: every other new member of the shard
/// is at or after the head that is announced.
///
/// Members already due (immediate callbacks: their score is PostgreSQL's `now()`) skip the
/// head read: `ZADD`, then `PUBLISH` of the earliest. Announcing a time
/// that is not the head is always safe (a worker wakes for a cheap claim), so this only
/// trades the `ZRANGE` for the `PUBLISH` a due head needs anyway (docs/costs.md).
pub async fn index_many(
    conn: &mut RedisConn,
    keys: &Keys,
    entries: &[(Uuid, i64)],
) -> redis::RedisResult<()> {
    let mut by_shard: std::collections::BTreeMap<u16, Vec<(String, i64)>> = Default::default();
    for (id, at) in entries {
        by_shard
            .entry(keys.shard_of(id))
            .or_default()
            .push((id.to_string(), *at));
    }
    let due_by = Timestamp::now().as_millisecond() + DUE_NOW_MS;
    // Every shard at once, each on its own: a shard whose node is slow or down delays or fails
    // only its own members (docs/derived-state.md#a-failing-shard).
    let shards = by_shard.into_iter().map(|(shard, members)| {
        let mut conn = conn.clone();
        async move { index_shard(&mut conn, keys, shard, &members, due_by).await }
    });
    futures::future::join_all(shards)
        .await
        .into_iter()
        .collect()
}

/// [`index_many`]'s write of one shard's `members`.
async fn index_shard(
    conn: &mut RedisConn,
    keys: &Keys,
    shard: u16,
    members: &[(String, i64)],
    due_by: i64,
) -> redis::RedisResult<()> {
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(keys.sched(shard));
    for (member, at) in members {
        zadd.arg(*at).arg(member);
    }
    let earliest = members.iter().map(|(_, at)| *at).min().unwrap_or_default();
    if earliest <= due_by {
        return add_and_announce(conn, keys, shard, zadd, earliest).await;
    }
    let (_, head): (i64, Vec<String>) = redis::pipe()
        .add_command(zadd)
        .cmd("ZRANGE")
        .arg(keys.sched(shard))
        .arg(0)
        .arg(0)
        .query_async(conn)
        .await?;
    if let Some((_, at)) = head
        .first()
        .and_then(|h| members.iter().find(|(m, _)| m == h))
    {
        announce(conn, keys, shard, *at).await?;
    }
    Ok(())
}

/// `ZADD` of a shard's due members, then the announcement of the earliest. A standalone
/// server gets both in one round trip: one connection runs them in order, so no worker can
/// hear of the entry before it is there. A cluster gets two: `PUBLISH` is not bound to a slot
/// there, so a node that redirects the `ZADD` (`MOVED` during a slot migration) would still
/// deliver the announcement, before the retried `ZADD` lands, and the worker it wakes would
/// find nothing.
async fn add_and_announce(
    conn: &mut RedisConn,
    keys: &Keys,
    shard: u16,
    zadd: redis::Cmd,
    earliest: i64,
) -> redis::RedisResult<()> {
    if matches!(conn, RedisConn::Single(_)) {
        redis::pipe()
            .add_command(zadd)
            .ignore()
            .add_command(publish(keys, shard, earliest))
            .ignore()
            .query_async::<()>(conn)
            .await
    } else {
        zadd.query_async::<i64>(conn).await?;
        announce(conn, keys, shard, earliest).await
    }
}

/// Tells every worker (the shard's wake channel) that `shard` has an entry due at `at` (ms).
pub async fn announce(
    conn: &mut RedisConn,
    keys: &Keys,
    shard: u16,
    at: i64,
) -> redis::RedisResult<()> {
    publish(keys, shard, at).query_async::<i64>(conn).await?;
    Ok(())
}

/// The `PUBLISH` of [`announce`].
fn publish(keys: &Keys, shard: u16, at: i64) -> redis::Cmd {
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg(keys.wake_channel(shard))
        .arg(format!("{at}:{shard}"));
    cmd
}

/// Indexes committed callbacks ([`index_many`]) on the service Redis; a failure is counted
/// (`engage_redis_write_failed_total{op="index"}`) and logged, not returned: the callbacks are
/// committed, and the worker's reconciler indexes them from PostgreSQL.
pub async fn index_committed(redis: &RedisHandle, keys: &Keys, entries: &[(Uuid, i64)]) {
    let result = async {
        let mut conn = redis.conn().await?;
        index_many(&mut conn, keys, entries).await
    }
    .await;
    if let Err(e) = result {
        ::metrics::counter!(crate::metrics::REDIS_WRITE_FAILED, "op" => "index")
            .increment(entries.len() as u64);
        tracing::warn!(count = entries.len(), error = %e, "schedule index write failed; the reconciler will repair it");
    }
}

/// Puts committed, unsubmitted callbacks back into the index where they are missing (the
/// PostgreSQL sweep and the rebuild): per shard one script (`INDEX_MISSING`) that skips
/// entries already indexed or in flight. `overdue` (the sweep: all of them are overdue) also
/// announces those already indexed and those whose lease ran out, so that no worker sleeps on
/// them. Returns how many were missing.
pub async fn index_missing(
    conn: &mut RedisConn,
    keys: &Keys,
    entries: &[(Uuid, i64)],
    overdue: bool,
) -> redis::RedisResult<u64> {
    let mut by_shard: std::collections::BTreeMap<u16, Vec<(Uuid, i64)>> = Default::default();
    for (id, at) in entries {
        by_shard
            .entry(keys.shard_of(id))
            .or_default()
            .push((*id, *at));
    }
    // Every shard at once, each on its own (as `index_many`): a shard whose node is slow or
    // down keeps no other shard's callbacks out of the index.
    let shards = by_shard.into_iter().map(|(shard, members)| {
        let mut conn = conn.clone();
        async move {
            let mut inv = INDEX_MISSING.key(keys.sched(shard));
            inv.key(keys.inflight(shard))
                .arg(keys.wake_channel(shard))
                .arg(shard)
                .arg(if overdue { "1" } else { "0" });
            for (id, at) in &members {
                inv.arg(*at).arg(id.to_string());
            }
            inv.invoke_async::<u64>(&mut conn).await
        }
    });
    futures::future::join_all(shards).await.into_iter().sum()
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use jiff::{SignedDuration, Timestamp};

    use super::{Due, HORIZON_MARGIN_MS, Keys};

    fn due(lead_ms: i64) -> Due {
        let db_now = Timestamp::from_second(1_800_000_000).expect("time");
        Due {
            at: db_now + SignedDuration::from_millis(lead_ms),
            db_now,
        }
    }

    #[test]
    fn only_callbacks_past_horizon_and_margin_with_a_quick_commit_stay_out() {
        let keys = Keys::new("t", 4).with_horizon(600);
        let edge = 600_000 + HORIZON_MARGIN_MS;
        let now = Instant::now();
        assert!(due(edge).beyond_horizon(&keys, now));
        assert!(
            !due(edge - 1).beyond_horizon(&keys, now),
            "inside the margin"
        );
        assert!(
            !Due::UNKNOWN.beyond_horizon(&keys, now),
            "a resolved commit"
        );
        let slow = now.checked_sub(Duration::from_millis(10_001));
        if let Some(slow) = slow {
            assert!(
                !due(edge * 100).beyond_horizon(&keys, slow),
                "an insert that took longer than the margin is indexed"
            );
        }
        let off = Keys::new("t", 4);
        assert!(
            !due(i64::from(i32::MAX)).beyond_horizon(&off, now),
            "horizon off"
        );
    }
}
