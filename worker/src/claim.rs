//! The schedule-index scripts only the worker runs: claim due callbacks into the in-flight set,
//! settle a pass's claims (release finished ones, hand unfinished ones back), and read the
//! shards' heads.
//!
//! Every script touches one shard's two keys, which share a hash tag, so each runs in one
//! cluster slot. Time is the node's (`TIME`, or this process's estimate of it from a recent
//! `TIME`: `shared::redis::clock`), so workers on hosts with skewed clocks agree on what is due
//! and when a lease runs out.

use std::{sync::LazyLock, time::Instant};

use shared::redis::{Keys, RedisConn};
use shared::redis::{clock, script::Script};
use uuid::Uuid;

/// Claims due work of one shard. First re-leases in-flight entries whose lease ran out (their
/// worker died or stalled), then moves due entries from the schedule into in-flight with
/// deadline now + lease. Publishes the new deadline on the wake channel so every worker knows
/// when to look again should this one die, as `<deadline>.<tag>:<shard>` (workers of earlier
/// releases read the fraction as part of a number and drop it; the claiming worker knows its
/// own tag and, when its pass released everything it claimed, does not wake for it:
/// docs/derived-state.md#wake-ups). Returns `[now, next due score or "", earliest lease
/// deadline or "", "1" if nothing was in flight before or "", "1" if it read `TIME` or "",
/// id, due score or "-1", …]`.
/// KEYS: sched, inflight. ARGV: batch, lease ms, wake channel, shard, tag, what the worker
/// knows of the shard's leases ([`Known`]: "" nothing, "e" none in flight, or a deadline every
/// lease is at or after), the node's time (ms) or "" to read `TIME`
/// (docs/costs.md#time-from-the-caller), "p" when due entries are expected, "a" to announce
/// the lease (a worker that knows no other does not: docs/derived-state.md#a-lone-worker).
///
/// Reads cost one command per key in the common case (docs/costs.md): the in-flight head
/// (`ZRANGE 0 0`) says whether any lease ran out (only then a `ZRANGEBYSCORE` and a re-read),
/// and is not read at all when the worker knows no lease can have run out yet
/// (docs/derived-state.md#claims-that-know-the-leases); the earliest deadline it returns is
/// then that bound (or earlier). When due entries are expected, `ZPOPMIN` of two reads and
/// removes the due one and the next (put back with a `ZADD` if not taken; a backlog pops on,
/// up to the batch); otherwise one short `ZRANGE` of the schedule (17 entries; a backlog reads
/// on up to the batch) gives both the due entries and the next due score (the first entry not
/// taken) and a `ZREM` removes what was taken. A lone callback's claim in a shard that holds
/// nothing else is `ZPOPMIN`, `ZADD` and `PUBLISH` (docs/costs.md).
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now, timed = tonumber(ARGV[7]), ''
if not now then
  local t = redis.call('TIME')
  now, timed = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), '1'
end
local batch = tonumber(ARGV[1])
local deadline = now + tonumber(ARGV[2])
local out = {tostring(now), '', '', '', timed}
local lease = {}
local lease_head = nil
local expired = {}
-- Reads the in-flight head and re-leases up to n entries whose lease ran out.
local function take_expired(n)
  lease_head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2]
  if lease_head and tonumber(lease_head) <= now then
    expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, n)
    for _, id in ipairs(expired) do
      lease[#lease + 1] = deadline; lease[#lease + 1] = id
      out[#out + 1] = id; out[#out + 1] = '-1'
    end
  end
end
local skip = ARGV[6] == 'e' or (ARGV[6] ~= '' and tonumber(ARGV[6]) > now)
if not skip then
  take_expired(batch)
elseif ARGV[6] ~= 'e' then
  lease_head = ARGV[6]
end
local room = batch - #expired
local ids = {}
-- Popped entries not taken, to put back (score, id, ...).
local back = {}
-- Takes the due entries of one read or pop; true when it met an entry it does not take (the
-- next due). Popped entries not taken go back.
local function take(entries, popped)
  local met = false
  for i = 1, #entries, 2 do
    if not met and #ids < room and tonumber(entries[i + 1]) <= now then
      ids[#ids + 1] = entries[i]
      lease[#lease + 1] = deadline; lease[#lease + 1] = entries[i]
      out[#out + 1] = entries[i]; out[#out + 1] = entries[i + 1]
    else
      if not met then out[2] = entries[i + 1] end
      met = true
      if not popped then return true end
      back[#back + 1] = entries[i + 1]; back[#back + 1] = entries[i]
    end
  end
  return met
end
local pop = ARGV[8] == 'p' and room > 0
if pop then
  -- Due entries expected: pop them (read and removal in one command when the shard holds
  -- nothing more); what is not taken goes back below. Two first (the lone callback and the
  -- next due), then up to 17, then the rest of the room.
  local n = 2
  for stage = 1, 3 do
    local got = redis.call('ZPOPMIN', KEYS[1], n)
    if take(got, true) or #got < 2 * n or #ids >= room then break end
    n = room - #ids + 1
    if stage == 1 then n = math.min(n, 17) end
  end
else
  -- A short first read (the light case in one command); a backlog reads on from there, by
  -- index: nothing is removed before the ZREM below.
  local first = math.max(math.min(room, 16), 0)
  local fetched = redis.call('ZRANGE', KEYS[1], 0, first, 'WITHSCORES')
  if not take(fetched) and #fetched == 2 * (first + 1) then
    take(redis.call('ZRANGE', KEYS[1], first + 1, room, 'WITHSCORES'))
  end
end
-- A claim that takes nothing due was woken for something else, perhaps a lease announced in
-- a form the bound does not count (an earlier release's): it reads the in-flight head anyway.
if skip and #ids == 0 then take_expired(batch) end
if not lease_head then out[4] = '1' end
if #back > 0 then redis.call('ZADD', KEYS[1], unpack(back)) end
if #ids > 0 and not pop then redis.call('ZREM', KEYS[1], unpack(ids)) end
if #lease > 0 then
  redis.call('ZADD', KEYS[2], unpack(lease))
  if ARGV[9] == 'a' then
    redis.call('PUBLISH', ARGV[3], deadline .. '.' .. ARGV[5] .. ':' .. ARGV[4])
  end
end
if #expired > 0 then
  local h = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if h[2] then out[3] = h[2] end
elseif #lease > 0 and (not lease_head or deadline < tonumber(lease_head)) then
  out[3] = tostring(deadline)
elseif lease_head then
  out[3] = lease_head
end
return out",
    )
});

/// Settles claims of one shard: hands entries back to the schedule with new scores and removes
/// their claims together with the released ones. The `ZADD` comes first, so a Redis that
/// refuses writes refuses the script before it changed anything (every claim stays in flight).
/// KEYS: sched, inflight. ARGV: n released, released…, score, id, score, id, …
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = tonumber(ARGV[1])
local gone = {}
for i = 2, n + 1 do gone[#gone + 1] = ARGV[i] end
local back = {}
for i = n + 2, #ARGV, 2 do
  back[#back + 1] = ARGV[i]; back[#back + 1] = ARGV[i + 1]
  gone[#gone + 1] = ARGV[i + 1]
end
if #back > 0 then redis.call('ZADD', KEYS[1], unpack(back)) end
if #gone > 0 then redis.call('ZREM', KEYS[2], unpack(gone)) end
return #gone",
    )
});

/// What a worker knows of a shard's lease deadlines when it claims: from its last read of the
/// in-flight head and every lease announcement it heard since
/// (docs/derived-state.md#claims-that-know-the-leases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Nothing sure: the claim reads the in-flight head.
    Nothing,
    /// No lease is in flight.
    Empty,
    /// Every lease deadline is at or after this (ms, Redis clock): the claim reads the head
    /// only once Redis's clock has reached it.
    From(i64),
}

impl Known {
    fn arg(self) -> String {
        match self {
            Self::Nothing => String::new(),
            Self::Empty => "e".into(),
            Self::From(t) => t.to_string(),
        }
    }
}

/// What one claim returned.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Redis time of the claim (ms).
    pub now_ms: i64,
    /// Earliest remaining due score of the shard.
    pub next_due_ms: Option<i64>,
    /// Earliest lease deadline of the shard.
    pub next_lease_ms: Option<i64>,
    /// Whether nothing was in flight before this claim: every lease of the shard is then this
    /// claim's or was taken after it (and announced).
    pub inflight_was_empty: bool,
    /// The tag of this claim's lease announcement.
    pub tag: u32,
    /// The lease deadline of what it took (ms, Redis clock).
    pub deadline_ms: i64,
    /// Whether the script announced the lease ([`Ask::announce`]).
    pub announced: bool,
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

/// What a claim asks besides its shard.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    /// Most ids to take.
    pub batch: usize,
    /// The lease (ms).
    pub lease_ms: u64,
    /// The tag of its lease announcement.
    pub tag: u32,
    /// What the worker knows of the shard's leases: spares the in-flight read when no lease
    /// can have run out.
    pub known: Known,
    /// Whether the worker expects due entries (a due time it knows or heard has come): the
    /// claim then pops them.
    pub due: bool,
    /// Whether the claim announces its lease (not when the worker is alone).
    pub announce: bool,
}

/// Claims up to `ask.batch` due callbacks of `shard` (the `CLAIM` script), at the node's time as
/// this process estimates it ([`shared::redis::clock`]), or `TIME` without an estimate.
pub async fn claim(
    conn: &mut RedisConn,
    keys: &Keys,
    shard: u16,
    ask: Ask,
) -> redis::RedisResult<Claimed> {
    let sched = keys.sched(shard);
    let tag = clock::tag(conn.is_cluster(), &sched).to_string();
    let time = clock::now(&tag);
    let sent = Instant::now();
    let raw: Vec<String> = CLAIM
        .key(&sched)
        .key(keys.inflight(shard))
        .arg(ask.batch)
        .arg(ask.lease_ms)
        .arg(keys.wake_channel(shard))
        .arg(shard)
        .arg(ask.tag)
        .arg(ask.known.arg())
        .arg(time.map(|t| t.to_string()).unwrap_or_default())
        .arg(if ask.due { "p" } else { "" })
        .arg(if ask.announce { "a" } else { "" })
        .invoke_async(conn)
        .await?;
    let now_ms = raw.first().and_then(|s| opt_ms(s)).unwrap_or_default();
    if raw.get(4).is_some_and(|s| s == "1") {
        clock::observe(&tag, now_ms, sent, Instant::now());
    }
    let mut out = Claimed {
        now_ms,
        next_due_ms: raw.get(1).and_then(|s| opt_ms(s)),
        next_lease_ms: raw.get(2).and_then(|s| opt_ms(s)),
        inflight_was_empty: raw.get(3).is_some_and(|s| s == "1"),
        tag: ask.tag,
        deadline_ms: now_ms.saturating_add(i64::try_from(ask.lease_ms).unwrap_or(i64::MAX)),
        announced: ask.announce,
        ..Claimed::default()
    };
    for pair in raw.get(5..).unwrap_or_default().chunks(2) {
        let [member, score] = pair else { continue };
        match Uuid::parse_str(member) {
            Ok(id) => out.ids.push((id, opt_ms(score).filter(|s| *s >= 0))),
            Err(_) => out.junk.push(member.clone()),
        }
    }
    Ok(out)
}

/// Announces a claim's lease (deadline and tag) on the shard's wake channel, as the claim
/// script does when asked to: a lone worker that learns of another announces the leases it
/// claimed unannounced (docs/derived-state.md#a-lone-worker).
pub async fn announce(
    conn: &mut RedisConn,
    keys: &Keys,
    shard: u16,
    (deadline_ms, tag): (i64, u32),
) -> redis::RedisResult<()> {
    redis::cmd("PUBLISH")
        .arg(keys.wake_channel(shard))
        .arg(format!("{deadline_ms}.{tag}:{shard}"))
        .query_async::<i64>(conn)
        .await
        .map(drop)
}

/// Settles claims of one shard in one call: removes the claims of `released` members and
/// hands `back` to the schedule at their scores (`dispatch::settle` decides which is which).
/// A plain `ZREM` when nothing goes back, one script otherwise; either way all or nothing.
pub async fn settle(
    conn: &mut RedisConn,
    keys: &Keys,
    shard: u16,
    released: &[String],
    back: &[(Uuid, i64)],
) -> redis::RedisResult<()> {
    if back.is_empty() {
        if released.is_empty() {
            return Ok(());
        }
        return redis::cmd("ZREM")
            .arg(keys.inflight(shard))
            .arg(released)
            .query_async::<i64>(conn)
            .await
            .map(drop);
    }
    let mut inv = SETTLE.key(keys.sched(shard));
    inv.key(keys.inflight(shard))
        .arg(released.len())
        .arg(released);
    for (id, score) in back {
        inv.arg(*score).arg(id.to_string());
    }
    inv.invoke_async::<i64>(conn).await.map(drop)
}

/// `ZRANGE key 0 0 WITHSCORES`: a sorted set's first entry and its score.
fn first(key: String) -> redis::Cmd {
    let mut cmd = redis::cmd("ZRANGE");
    cmd.arg(key).arg(0).arg(0).arg("WITHSCORES");
    cmd
}

/// The score of [`first`]'s answer.
fn first_score(entry: &[String]) -> Option<i64> {
    entry.get(1).and_then(|s| opt_ms(s))
}

/// The earliest due score and lease deadline of `shard` (two reads in one round trip, one
/// cluster slot): a lease look, for a worker woken only by a lease deadline
/// (docs/derived-state.md#wake-ups), and each shard of the safety poll.
pub async fn shard_heads(
    conn: &mut RedisConn,
    keys: &Keys,
    shard: u16,
) -> redis::RedisResult<(Option<i64>, Option<i64>)> {
    let (sched, inflight): (Vec<String>, Vec<String>) = redis::pipe()
        .add_command(first(keys.sched(shard)))
        .add_command(first(keys.inflight(shard)))
        .query_async(conn)
        .await?;
    Ok((first_score(&sched), first_score(&inflight)))
}

/// The earliest due score and lease deadline of every shard ([`shard_heads`] each): the
/// safety poll, so it stays cheap on the idle path.
pub async fn heads(
    conn: &mut RedisConn,
    keys: &Keys,
) -> redis::RedisResult<Vec<(Option<i64>, Option<i64>)>> {
    let mut out = Vec::with_capacity(usize::from(keys.claimed_shards()));
    for shard in 0..keys.claimed_shards() {
        out.push(shard_heads(conn, keys, shard).await?);
    }
    Ok(out)
}
