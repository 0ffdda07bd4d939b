//! The schedule-index scripts only the worker runs: claim due callbacks into the in-flight set,
//! release finished ones, hand unfinished ones back, and read the shards' heads.
//!
//! Every script touches one shard's two keys, which share a hash tag, so each runs in one
//! cluster slot. Time comes from Redis (`TIME`), so workers on hosts with skewed clocks agree
//! on what is due and when a lease runs out.

use std::sync::LazyLock;

use redis::Script;
use shared::redis::{Keys, RedisConn};
use uuid::Uuid;

/// Claims due work of one shard. First re-leases in-flight entries whose lease ran out (their
/// worker died or stalled), then moves due entries from the schedule into in-flight with
/// deadline now + lease. Publishes the new deadline on the wake channel so every worker knows
/// when to look again should this one die. Returns
/// `[now, next due score or "", earliest lease deadline or "", id, due score or "-1", …]`.
/// KEYS: sched, inflight. ARGV: batch, lease ms, wake channel, shard.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local batch = tonumber(ARGV[1])
local deadline = now + tonumber(ARGV[2])
local out = {tostring(now), '', ''}
local lease = {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(expired) do
  lease[#lease + 1] = deadline; lease[#lease + 1] = id
  out[#out + 1] = id; out[#out + 1] = '-1'
end
local room = batch - #expired
if room > 0 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, room)
  if #due > 0 then
    local ids = {}
    for i = 1, #due, 2 do
      ids[#ids + 1] = due[i]
      lease[#lease + 1] = deadline; lease[#lease + 1] = due[i]
      out[#out + 1] = due[i]; out[#out + 1] = due[i + 1]
    end
    redis.call('ZREM', KEYS[1], unpack(ids))
  end
end
if #lease > 0 then
  redis.call('ZADD', KEYS[2], unpack(lease))
  redis.call('PUBLISH', ARGV[3], deadline .. ':' .. ARGV[4])
end
local h = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if h[2] then out[2] = h[2] end
local f = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if f[2] then out[3] = f[2] end
return out",
    )
});

/// Hands entries back to the schedule with new scores (paced, or kept due after a failed
/// submission), removing their claim. KEYS: sched, inflight. ARGV: score, id, score, id, …
static HAND_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ids = {}
for i = 2, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
redis.call('ZREM', KEYS[2], unpack(ids))
redis.call('ZADD', KEYS[1], unpack(ARGV))
return #ids",
    )
});

/// What one claim returned.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Redis time of the claim (ms).
    pub now_ms: i64,
    /// Earliest remaining due score of the shard.
    pub next_due_ms: Option<i64>,
    /// Earliest lease deadline of the shard.
    pub next_lease_ms: Option<i64>,
    /// Claimed ids (with their due score; `None` for taken-over leases).
    pub ids: Vec<(Uuid, Option<i64>)>,
    /// Members that were not callback ids (dropped from in-flight).
    pub junk: Vec<String>,
}

fn opt_ms(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    // Scores come back as Lua-formatted numbers ("1.7e12" never appears below 2^53, but be safe).
    s.parse::<i64>()
        .ok()
        .or_else(|| s.parse::<f64>().ok().map(|f| f as i64))
}

/// Claims up to `batch` due callbacks of `shard` with a lease of `lease_ms`.
pub async fn claim(
    conn: &mut RedisConn,
    keys: &Keys,
    shard: u16,
    batch: usize,
    lease_ms: u64,
) -> redis::RedisResult<Claimed> {
    let raw: Vec<String> = CLAIM
        .key(keys.sched(shard))
        .key(keys.inflight(shard))
        .arg(batch)
        .arg(lease_ms)
        .arg(keys.wake_channel())
        .arg(shard)
        .invoke_async(conn)
        .await?;
    let mut out = Claimed {
        now_ms: raw.first().and_then(|s| opt_ms(s)).unwrap_or_default(),
        next_due_ms: raw.get(1).and_then(|s| opt_ms(s)),
        next_lease_ms: raw.get(2).and_then(|s| opt_ms(s)),
        ..Claimed::default()
    };
    for pair in raw.get(3..).unwrap_or_default().chunks(2) {
        let [member, score] = pair else { continue };
        match Uuid::parse_str(member) {
            Ok(id) => out.ids.push((id, opt_ms(score).filter(|s| *s >= 0))),
            Err(_) => out.junk.push(member.clone()),
        }
    }
    Ok(out)
}

/// Removes finished claims of one shard.
pub async fn release(
    conn: &mut RedisConn,
    keys: &Keys,
    shard: u16,
    members: &[String],
) -> redis::RedisResult<()> {
    if members.is_empty() {
        return Ok(());
    }
    redis::cmd("ZREM")
        .arg(keys.inflight(shard))
        .arg(members)
        .query_async::<i64>(conn)
        .await
        .map(drop)
}

/// Hands claims of one shard back to the schedule at the given scores.
pub async fn hand_back(
    conn: &mut RedisConn,
    keys: &Keys,
    shard: u16,
    entries: &[(Uuid, i64)],
) -> redis::RedisResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut inv = HAND_BACK.key(keys.sched(shard));
    inv.key(keys.inflight(shard));
    for (id, score) in entries {
        inv.arg(*score).arg(id.to_string());
    }
    inv.invoke_async::<i64>(conn).await.map(drop)
}

/// The earliest due score and lease deadline of every shard (two reads per shard): the safety
/// poll, so it stays cheap on the idle path. One pipeline per shard keeps each in one slot.
pub async fn heads(
    conn: &mut RedisConn,
    keys: &Keys,
) -> redis::RedisResult<Vec<(Option<i64>, Option<i64>)>> {
    let mut out = Vec::with_capacity(usize::from(keys.shards()));
    for shard in 0..keys.shards() {
        let (sched, inflight): (Vec<String>, Vec<String>) = redis::pipe()
            .cmd("ZRANGE")
            .arg(keys.sched(shard))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .cmd("ZRANGE")
            .arg(keys.inflight(shard))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(conn)
            .await?;
        let score = |v: &Vec<String>| v.get(1).and_then(|s| opt_ms(s));
        out.push((score(&sched), score(&inflight)));
    }
    Ok(out)
}
