//! Queue views: per service, one ZSET with two regions (docs/derived-state.md#queue-views).
//!
//! - **Waiting** (scores below [`DONE_BASE`]): the callbacks the voice platform holds in
//!   QUEUED or ROUTING, for `positionInQueue` (score = [`score`]: base priority first, then
//!   the time the callback waits since, its desired time, so `ZRANK` is the position in
//!   priority-then-time order).
//! - **Dequeued** (scores from [`DONE_BASE`]): the recent dequeues, for wait-time estimates
//!   (`shared::model::ewt`), score = [`DONE_BASE`] + dequeue time (ms, the database's clock
//!   of the event that served the callback, one clock for every replica). A dequeue re-scores
//!   the callback's member from one region to the other: one `ZADD` records it and takes it
//!   out of the waiting region (docs/costs.md), and a hand-off's late `ZADD NX` cannot put
//!   back a callback whose dequeue came first.
//!
//! Both are derived: the reconciler rebuilds the waiting region from PostgreSQL (and never
//! touches the dequeued one), and lost dequeues only make estimates unknown for a while.
//!
//! A service with priority escalation orders by the *escalated* priority, computed at read
//! time by one script from the stored base priorities and times ([`position`],
//! docs/decisions.md#priority-escalation): no member is ever rewritten while it waits.
//!
//! Memory stays small: one ZSET member per queued callback and [`HISTORY`] dequeued members
//! per service plus those since the last trim (64 on average, trimmed lazily: [`dequeue`]).

use std::sync::LazyLock;

use super::script::Script;
use uuid::Uuid;

use super::{Keys, RedisConn};
use crate::model::ServiceSettings;

/// Dequeue times kept per service (the EWT window, docs/decisions.md#estimated-wait-time).
pub const HISTORY: isize = 32;

/// Priorities beyond this magnitude order as if they were at it (keeps [`score`] exact in the
/// double Redis stores).
pub const PRIORITY_CAP: i32 = 2_000;

/// One priority step in score units: more than any time queued in ms (until year 2109).
const PRIORITY_STEP: i64 = 1 << 42;

/// Where the dequeued region starts: above every waiting score (the lowest priority with the
/// latest time), and [`DONE_BASE`] + any time stays below 2^53, so Redis holds it exactly.
pub const DONE_BASE: i64 = (PRIORITY_CAP as i64 + 1) * PRIORITY_STEP;

/// `ZRANGEBYSCORE`/`ZCOUNT` bound of the waiting region's top (exclusive).
fn waiting_max() -> String {
    format!("({DONE_BASE}")
}

/// Dequeued-region score of a dequeue at `at_ms`.
fn done_score(at_ms: i64) -> i64 {
    DONE_BASE + at_ms.clamp(0, PRIORITY_STEP - 1)
}

/// Trims a view's dequeued region to its newest `HISTORY` members (the region is the top of
/// the set). KEYS: view. ARGV: [`DONE_BASE`], [`HISTORY`].
static TRIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local keep = tonumber(ARGV[2])
local d = redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf')
if d <= keep then return 0 end
local n = redis.call('ZCARD', KEYS[1])
return redis.call('ZREMRANGEBYRANK', KEYS[1], n - d, n - keep - 1)",
    )
});

/// Queue-view score of a callback: higher `priority` first, then earlier `since_ms` (the time
/// it waits since: its desired time) first. |score| < 2^53, so Redis holds it exactly.
pub fn score(priority: i32, since_ms: i64) -> i64 {
    -i64::from(priority.clamp(-PRIORITY_CAP, PRIORITY_CAP)) * PRIORITY_STEP
        + since_ms.clamp(0, PRIORITY_STEP - 1)
}

/// A service's priority escalation, as the position script needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escalation {
    /// Priority added per step (> 0).
    pub increment: i32,
    /// Step length, ms (> 0).
    pub interval_ms: i64,
    /// Ceiling (0 = none).
    pub limit: i32,
}

impl Escalation {
    /// The escalation of a service's settings; `None` when its priorities do not rise.
    pub fn of(settings: &ServiceSettings) -> Option<Self> {
        (settings.priority_increment > 0).then(|| Self {
            increment: settings.priority_increment,
            interval_ms: i64::from(settings.priority_interval_seconds.max(1)) * 1_000,
            limit: settings.priority_limit,
        })
    }
}

/// Counts the members ahead of one member of a view under escalation, one level (stored base
/// priority) at a time: within a level the escalated priority falls as the time rises, so the
/// members ahead are those up to one time, found by arithmetic and counted with one `ZCOUNT`.
/// Four commands plus two per distinct base priority in the view, whatever its length.
/// KEYS: view. ARGV: member, increment, interval ms, limit (0 = none), step, history length,
/// [`DONE_BASE`]. Returns `{ahead, dequeue times…}`, or `{-1, dequeue times…}` when the member
/// is not waiting.
static POSITION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local inc, iv, lim, step = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local base = tonumber(ARGV[7])
local done = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[7], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[6]))
local hist = {}
for i = 2, #done, 2 do hist[#hist + 1] = tonumber(done[i]) - base end
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) >= base then return {-1, unpack(hist)} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function level(score) return -math.floor(score / step) end
local function eff(b, tm)
  local w = now - tm
  if w < 0 then w = 0 end
  local e = b + inc * math.floor(w / iv)
  if lim ~= 0 and e > math.max(b, lim) then e = math.max(b, lim) end
  return e
end
-- the latest time at which a member of level b has an escalated priority >= e (nil: never)
local function latest(b, e)
  if e <= b then return math.huge end
  if lim ~= 0 and e > math.max(b, lim) then return nil end
  return now - math.ceil((e - b) / inc) * iv
end
s = tonumber(s)
local bx = level(s)
local tx = s + bx * step
local ex = eff(bx, tx)
local ahead, cursor = 0, '-inf'
while true do
  local r = redis.call('ZRANGEBYSCORE', KEYS[1], cursor, '(' .. ARGV[7], 'WITHSCORES', 'LIMIT', 0, 1)
  if #r == 0 then break end
  local b = level(tonumber(r[2]))
  local lo = -b * step
  local above, equal = latest(b, ex + 1), latest(b, ex)
  local thr = above
  if equal then
    local tie = math.min(equal, tx - 1)
    if not thr or tie > thr then thr = tie end
  end
  if thr and thr >= 0 then
    if thr > step - 1 then thr = step - 1 end
    ahead = ahead + redis.call('ZCOUNT', KEYS[1], string.format('%.0f', lo),
      string.format('%.0f', lo + thr))
  end
  cursor = string.format('%.0f', lo + step)
end
return {ahead, unpack(hist)}",
    )
});

/// Adds callbacks to a service's queue view (no-op for members already there, in either
/// region: a dequeue that came first stays); scores come from [`score`].
pub async fn enqueue(
    conn: &mut RedisConn,
    keys: &Keys,
    tenant: &str,
    service: &str,
    members: &[(Uuid, i64)],
) -> redis::RedisResult<()> {
    zadd(conn, keys.queue(tenant, service), "NX", members).await
}

/// Puts callbacks PostgreSQL says are waiting into the waiting region of their view
/// (`ZADD LT`: added if absent, moved back down if the dequeued region holds them, e.g. a
/// retried callback whose earlier removal failed; a waiting member keeps the lower score).
/// The reconciler's repair; a hand-off uses [`enqueue`], which must not undo a dequeue.
pub async fn restore(
    conn: &mut RedisConn,
    keys: &Keys,
    tenant: &str,
    service: &str,
    members: &[(Uuid, i64)],
) -> redis::RedisResult<()> {
    zadd(conn, keys.queue(tenant, service), "LT", members).await
}

/// One `ZADD view <flag> score id …` (nothing for no members).
async fn zadd(
    conn: &mut RedisConn,
    view: String,
    flag: &str,
    members: &[(Uuid, i64)],
) -> redis::RedisResult<()> {
    if members.is_empty() {
        return Ok(());
    }
    let mut cmd = redis::cmd("ZADD");
    cmd.arg(view).arg(flag);
    for (id, score) in members {
        cmd.arg(*score).arg(id.to_string());
    }
    cmd.query_async::<i64>(conn).await.map(drop)
}

/// Every waiting member of a service's queue view (the reconciler's check; the dequeued
/// region is not the waiting set's and is left alone).
pub async fn members(
    conn: &mut RedisConn,
    keys: &Keys,
    tenant: &str,
    service: &str,
) -> redis::RedisResult<Vec<String>> {
    redis::cmd("ZRANGEBYSCORE")
        .arg(keys.queue(tenant, service))
        .arg("-inf")
        .arg(waiting_max())
        .query_async(conn)
        .await
}

/// Removes strays from the waiting region of a service's queue view (the reconciler's
/// repair). A member found dequeued meanwhile is left: its dequeue was recorded between the
/// repair's read of the view and its read of PostgreSQL.
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
    REMOVE_WAITING
        .key(keys.queue(tenant, service))
        .arg(DONE_BASE)
        .arg(members)
        .invoke_async::<i64>(conn)
        .await
        .map(drop)
}

/// Removes the given members that are in the waiting region. KEYS: view. ARGV: [`DONE_BASE`],
/// member, …
static REMOVE_WAITING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local members = {}
for i = 2, #ARGV do members[#members + 1] = ARGV[i] end
local scores = redis.call('ZMSCORE', KEYS[1], unpack(members))
local gone = {}
for i, sc in ipairs(scores) do
  if sc and tonumber(sc) < tonumber(ARGV[1]) then gone[#gone + 1] = members[i] end
end
if #gone == 0 then return 0 end
return redis.call('ZREM', KEYS[1], unpack(gone))",
    )
});

/// Takes a callback off its queue view; `served_at` (ms, the database's clock of the event
/// that served it) records a dequeue for wait-time estimates.
///
/// Unserved, the member is removed (`ZREM`), from either region: a retried callback must be
/// able to wait again, and a callback that leaves for good no longer needs its record.
/// Served, one `ZADD` moves it to the dequeued region at `served_at` (a lost view does not
/// lose the dequeue: the member is added if absent; a callback served twice counts once, at
/// its last dequeue). The times come from one clock, so replicas with skewed clocks neither
/// hide each other's dequeues nor keep a future one the newest. A Redis out of memory refuses
/// the `ZADD` but still takes a `ZREM`: the callback then at least stops waiting (its dequeue
/// is lost, and the error returned). The region is trimmed back to [`HISTORY`] members by the
/// dequeue of one callback in [`HISTORY`] (chosen by its id, so whichever replica serves it),
/// about one script of four commands per `HISTORY` dequeues; between trims it holds
/// `HISTORY` plus the dequeues since the last trim (64 on average, a few hundred at worst in
/// a long run without one); readers take the newest `HISTORY`.
pub async fn dequeue(
    conn: &mut RedisConn,
    keys: &Keys,
    (tenant, service): (&str, &str),
    id: Uuid,
    served_at: Option<i64>,
) -> redis::RedisResult<()> {
    let view = keys.queue(tenant, service);
    let zrem = |view: &str| {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(view).arg(id.to_string());
        cmd
    };
    let Some(at) = served_at else {
        return zrem(&view).query_async::<i64>(conn).await.map(drop);
    };
    let added = redis::cmd("ZADD")
        .arg(&view)
        .arg(done_score(at))
        .arg(id.to_string())
        .query_async::<i64>(conn)
        .await;
    if let Err(e) = added {
        if e.code() == Some("OOM") {
            let _ = zrem(&view).query_async::<i64>(conn).await;
        }
        return Err(e);
    }
    if trims(id) {
        TRIM.key(&view)
            .arg(DONE_BASE)
            .arg(HISTORY)
            .invoke_async::<i64>(conn)
            .await?;
    }
    Ok(())
}

/// Whether `id`'s dequeue trims its view: one callback in [`HISTORY`], by the id's random low
/// bits (v4 and v7 ids alike).
fn trims(id: Uuid) -> bool {
    id.as_u128().is_multiple_of(HISTORY as u128)
}

/// Dequeue times (ms, newest first) from a `ZREVRANGEBYSCORE … WITHSCORES` of the dequeued
/// region (scores read as doubles: exact below 2^53, whatever notation Redis replies in).
fn times(done: &[(String, f64)]) -> Vec<i64> {
    done.iter()
        .map(|(_, score)| *score as i64 - DONE_BASE)
        .collect()
}

/// `ZREVRANGEBYSCORE` of the newest [`HISTORY`] dequeues of `view`, with their scores.
fn newest_dequeues(view: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("ZREVRANGEBYSCORE");
    cmd.arg(view)
        .arg("+inf")
        .arg(DONE_BASE)
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(0)
        .arg(HISTORY);
    cmd
}

/// What wait-time estimates need of one service's view: how many callbacks wait, and the
/// recent dequeue times (ms, newest first). Two commands in one pipeline, O(log n) each
/// (`ZCOUNT` of the waiting region, `ZREVRANGEBYSCORE` of at most [`HISTORY`] dequeues).
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
    let view = keys.queue(tenant, service);
    let (pending, done): (i64, Vec<(String, f64)>) = redis::pipe()
        .cmd("ZCOUNT")
        .arg(&view)
        .arg("-inf")
        .arg(waiting_max())
        .add_command(newest_dequeues(&view))
        .query_async(conn)
        .await?;
    Ok(Snapshot {
        pending,
        history: times(&done),
    })
}

/// Position (1-based, priority-then-time order; escalated priority under `escalation`) of a
/// callback in its queue view and the estimated wait in seconds (callbacks ahead × mean
/// interval between recent dequeues, the same arithmetic as `mode1` for a newcomer), each
/// when known.
pub async fn position(
    conn: &mut RedisConn,
    keys: &Keys,
    tenant: &str,
    service: &str,
    id: Uuid,
    escalation: Option<Escalation>,
) -> redis::RedisResult<(Option<i64>, Option<i64>)> {
    let (rank, history) = match escalation {
        None => rank_and_history(conn, keys, tenant, service, id).await?,
        Some(e) => {
            let out: Vec<i64> = POSITION
                .key(keys.queue(tenant, service))
                .arg(id.to_string())
                .arg(e.increment)
                .arg(e.interval_ms)
                .arg(e.limit)
                .arg(PRIORITY_STEP)
                .arg(HISTORY)
                .arg(DONE_BASE)
                .invoke_async(conn)
                .await?;
            let ahead = out.first().copied().filter(|a| *a >= 0);
            (ahead, out.get(1..).unwrap_or_default().to_vec())
        }
    };
    let ewt = rank.and_then(|ahead| mean_interval_ms(&history).map(|ms| wait_secs(ahead, ms)));
    Ok((rank.map(|r| r + 1), ewt))
}

/// `ZRANK`, the size of the waiting region and the dequeue history in one pipeline (no
/// escalation). The waiting region is the bottom of the set, so a rank below its size is the
/// member's place in it; a rank at or above it is a dequeued member (not waiting).
async fn rank_and_history(
    conn: &mut RedisConn,
    keys: &Keys,
    tenant: &str,
    service: &str,
    id: Uuid,
) -> redis::RedisResult<(Option<i64>, Vec<i64>)> {
    let view = keys.queue(tenant, service);
    let (rank, waiting, done): (Option<i64>, i64, Vec<(String, f64)>) = redis::pipe()
        .cmd("ZRANK")
        .arg(&view)
        .arg(id.to_string())
        .cmd("ZCOUNT")
        .arg(&view)
        .arg("-inf")
        .arg(waiting_max())
        .add_command(newest_dequeues(&view))
        .query_async(conn)
        .await?;
    Ok((rank.filter(|r| *r < waiting), times(&done)))
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
    fn the_dequeued_region_sits_above_every_waiting_score_and_stays_exact() {
        let waiting_top = [i32::MIN, -PRIORITY_CAP, 0, PRIORITY_CAP]
            .iter()
            .map(|p| score(*p, i64::MAX))
            .max();
        assert!(waiting_top < Some(DONE_BASE));
        assert_eq!(done_score(-5), DONE_BASE);
        for at in [0, 1_780_000_000_000, i64::MAX] {
            let s = done_score(at);
            assert!((DONE_BASE..1 << 53).contains(&s), "{at}: {s}");
            assert_eq!((s as f64) as i64, s);
        }
        assert_eq!(
            times(&[("a".into(), done_score(1_780_000_000_123) as f64)]),
            [1_780_000_000_123]
        );
    }

    #[test]
    fn one_dequeue_in_history_trims() {
        let n = (0..3_200u128)
            .filter(|i| trims(Uuid::from_u128(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))))
            .count();
        assert_eq!(n, 100);
    }

    #[test]
    fn waits_round_to_the_nearest_second() {
        assert_eq!(wait_secs(0, 250), 0);
        assert_eq!(wait_secs(10, 249), 2);
        assert_eq!(wait_secs(10, 250), 3);
        assert_eq!(wait_secs(-3, 250), 0);
    }
}
