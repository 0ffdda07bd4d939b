//! Create-time limits per service (docs/throttling.md; the settings in
//! docs/decisions.md#service-settings): all checked **and** counted by one Lua script, so they
//! hold exactly across any number of replicas, and a rejected request counts nothing.
//!
//! # Keys
//! One hash, `{<prefix>:thr:<tenant>:<service>}:act` (`T:act`), so every script touches a
//! single cluster slot:
//! - `i:<id>` ([`member`]: the id in 22 characters) → `<number>|<ms>` per active (not COMPLETED) callback (`|d` appended when it
//!   counts in the number's 24 h window); a release prefixes `~` (the admission still counts
//!   in the windows at a re-seed), a give-back empties it;
//! - `n:<number>` → active count of that number, `d:<number>` → the number's immediate
//!   admissions of the last 24 h (comma-separated ms), `~count` → active total (for
//!   `max_queued`), `~seed` → until when the hash counts as checked against PostgreSQL,
//!   `~lease` → until when one caller's re-seed runs, `~t` → the latest admission time (an
//!   admission is never counted earlier: callers pass their estimate of the node's clock,
//!   docs/costs.md#time-from-the-caller);
//! - per service window `k` (1, 2): a ring of 61 sub-window counters `w<k>:<slot>` →
//!   `<sub-window>:<admissions>`, `~s<k>` → the sub-window length it counts in (ms), `~w<k>`
//!   → an upper bound of the window's count.
//!
//! # Cost (docs/decisions.md#budgets: 15 commands per immediate callback, create to COMPLETED)
//! An admission is `HMGET`, `HSET` (and `TIME` when the caller has no recent reading of the
//! node's clock, `super::clock`): the windows and the per-number 24 h window ride in
//! the active hash, and a window's ring is summed only when `~w<k>` says it could be full. A
//! release is `HMGET`, `HSET` (tombstone instead of `HDEL`), plus one `HGET` without the
//! caller's number key. `T:act` expires `period + grace` after its last seed (or seed lease),
//! and admissions happen only before the seed deadline, so an expiry never forgets an
//! in-flight create; a missing hash re-seeds.
//!
//! # Windows
//! Sliding windows counted in sub-windows of `ceil(T / 60)` (docs/throttling.md): a request
//! is admitted while fewer than N admissions lie in the sub-windows that overlap the last T
//! seconds, so "at most N in any T seconds" holds at every instant (a fixed window lets 2 N
//! through around a boundary), conservatively: the count may include admissions up to one
//! sub-window older than T, so a request can be refused up to `T / 60` early, and the
//! announced time a slot frees up is when the oldest counted sub-window leaves the window.
//! Memory is bounded per service (61 counters per window), not per request.
//!
//! # Releasing
//! A callback holds its place in `T:act` until it completes. Whoever moves a callback to
//! COMPLETED calls [`release`] after the commit: the cancel endpoint does, and **the worker
//! must** when the voice platform reports completion (or a TTL expiry ends it). `release` is
//! keyed by callback id and idempotent: a second call is a no-op, so retries never drift.
//!
//! # Self-healing (PostgreSQL is the truth)
//! `~seed` expires every `THROTTLE_RESEED_SECONDS`; the next create of the service then
//! re-seeds `T:act` from PostgreSQL: active callbacks, 24 h lists, and the windows from the
//! recent creations plus the admissions whose insert is still in flight ([`seed`]).
//! Entries PostgreSQL does not know are dropped unless younger than [`SEED_GRACE_MS`] (a
//! create whose insert is still in flight), so a lost release or a crash between reservation
//! and insert heals within one period, and a flushed Redis rebuilds itself on first use. Only one caller per service seeds at a time (a short lease, `~lease`);
//! the others keep counting meanwhile when the rings can count, and wait ([`Verdict::Busy`])
//! when they cannot (a lost hash, a window switched on again, a longer window). A ring
//! counted in longer sub-windows (a shorter window) counts as it is, conservatively, until
//! the next re-seed (docs/throttling.md).

use std::sync::LazyLock;

use jiff::Timestamp;
use redis::{RedisResult, Value};

use super::{clock, script::Script};
use std::time::Instant;
use uuid::Uuid;

use super::{Keys, RedisConn};

/// Reservations younger than this survive a re-seed even when PostgreSQL does not have them
/// yet (their insert may still be running; requests time out well before).
pub const SEED_GRACE_MS: i64 = 120_000;
/// How long one caller may take to re-seed before another one tries.
const SEED_LEASE_MS: i64 = 10_000;
const DAY_MS: i64 = 86_400_000;

/// A callback's name in `T:act` (`i:<name>`): its 16 bytes as unpadded base64url, 22
/// characters instead of the 36 of its text form, 16 B less per counted callback
/// (docs/costs.md#redis-bytes-per-waiting-scheduled-callback).
pub fn member(id: Uuid) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// The keys of one service's throttle state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThrottleKeys {
    tag: String,
}

impl ThrottleKeys {
    /// Keys of `service` of `tenant`.
    pub fn new(keys: &Keys, tenant: &str, service: &str) -> Self {
        // The tag ends at the first '}' after the first '{': a service name with braces in it
        // cuts the tag short, but identically for every key of the service, so they still
        // share one slot.
        Self {
            tag: format!("{{{}:thr:{tenant}:{service}}}", keys.prefix()),
        }
    }
    /// `T:act`: HASH of the service's active callbacks and per-number counts, plus the `~`
    /// bookkeeping fields (see the module doc).
    pub fn act(&self) -> String {
        format!("{}:act", self.tag)
    }
}

/// The limits that apply to one create request (0 = no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// `throttle_per_service_1` and `throttle_ttl_1` (seconds).
    pub per_service_1: (u32, u32),
    /// `throttle_per_service_2` and `throttle_ttl_2` (seconds).
    pub per_service_2: (u32, u32),
    /// `throttle_per_number_24h` for an immediate request, 0 for a scheduled one.
    pub per_number_24h: u32,
    /// Active callbacks per number (`in_queue_checking`), 0 = off.
    pub in_queue: u32,
    /// Active callbacks per service, 0 = no limit.
    pub max_queued: u32,
}

impl Limits {
    /// The limits of a service for an immediate or scheduled request.
    pub fn of(s: &crate::model::ServiceSettings, immediate: bool) -> Self {
        Self {
            per_service_1: (s.throttle_per_service_1, s.throttle_ttl_1),
            per_service_2: (s.throttle_per_service_2, s.throttle_ttl_2),
            per_number_24h: if immediate {
                s.throttle_per_number_24h
            } else {
                0
            },
            in_queue: s.in_queue_checking.limit().unwrap_or(0),
            max_queued: s.max_queued,
        }
    }

    /// The sub-window length (ms) of service window 1 or 2, 0 when that window is off.
    fn sub_ms(&self, window: u8) -> i64 {
        let (limit, ttl) = if window == 1 {
            self.per_service_1
        } else {
            self.per_service_2
        };
        sub_ms(limit, i64::from(ttl) * 1000)
    }

    /// How far back the windows reach (ms).
    fn keep_ms(&self) -> i64 {
        let mut keep = 0;
        for (limit, ttl) in [self.per_service_1, self.per_service_2] {
            if limit > 0 {
                keep = keep.max(i64::from(ttl) * 1000);
            }
        }
        keep
    }
}

/// The limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `throttle_per_service_1` requests per `throttle_ttl_1` seconds.
    PerService1 {
        /// Admissions allowed in the window.
        limit: u32,
        /// Window length in seconds.
        ttl: u32,
    },
    /// `throttle_per_service_2` requests per `throttle_ttl_2` seconds.
    PerService2 {
        /// Admissions allowed in the window.
        limit: u32,
        /// Window length in seconds.
        ttl: u32,
    },
    /// `throttle_per_number_24h` immediate requests per number per 24 h.
    PerNumber24h {
        /// Immediate admissions allowed per number in any 24 h.
        limit: u32,
    },
    /// `in_queue_checking`: active callbacks per number.
    InQueue {
        /// Active callbacks one number may hold on the service (2, or 1 when strict).
        limit: u32,
    },
    /// `max_queued`: active callbacks per service.
    MaxQueued {
        /// Active callbacks the service may hold.
        limit: u32,
    },
}

impl Limit {
    /// The setting's name (also the `limit` label of the counters).
    pub fn name(self) -> &'static str {
        match self {
            Self::PerService1 { .. } => "throttle_per_service_1",
            Self::PerService2 { .. } => "throttle_per_service_2",
            Self::PerNumber24h { .. } => "throttle_per_number_24h",
            Self::InQueue { .. } => "in_queue_checking",
            Self::MaxQueued { .. } => "max_queued",
        }
    }

    /// The alert counter GES raises for it: service throttles are `CB_TTL_LIMIT_REACHED`,
    /// number and queue limits `CB_ENQUEUE_LIMIT_REACHED`.
    pub fn counter(self) -> &'static str {
        match self {
            Self::PerService1 { .. } | Self::PerService2 { .. } => {
                crate::metrics::CB_TTL_LIMIT_REACHED
            }
            _ => crate::metrics::CB_ENQUEUE_LIMIT_REACHED,
        }
    }
}

/// A refused request: which limit, and when it frees up (when that is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Which limit refused it, with the figures the 429 message quotes.
    pub limit: Limit,
    /// When the next request would pass (windows only; active limits free up on completion).
    pub frees_at: Option<Timestamp>,
    /// How long after the refusal that is, by the Redis node's clock (the `Retry-After`: the
    /// API host's own clock may be skewed; docs/throttling.md).
    pub wait_ms: Option<i64>,
}

impl Rejection {
    /// The 429 message: names the limit and when it frees up.
    pub fn message(&self, service: &str) -> String {
        let when = self.frees_at.map_or_else(String::new, |t| {
            format!("; retry after {}", crate::model::callback::wire_time(t))
        });
        match self.limit {
            Limit::PerService1 { limit, ttl } | Limit::PerService2 { limit, ttl } => format!(
                "{} reached: {limit} requests per {ttl} s for service {service}{when}",
                self.limit.name()
            ),
            Limit::PerNumber24h { limit } => format!(
                "throttle_per_number_24h reached: {limit} immediate requests per phone number per 24 h{when}"
            ),
            Limit::InQueue { limit } => format!(
                "in_queue_checking reached: this phone number already has {limit} active callback(s) \
                 on service {service}; retry after one completes or is cancelled"
            ),
            Limit::MaxQueued { limit } => format!(
                "max_queued reached: service {service} already has {limit} active callbacks; \
                 retry after some complete"
            ),
        }
    }
}

/// What the admission script decided for one create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; the reservation is the callback id.
    Admitted,
    /// The id is counted already (nothing counted now, nothing to give back).
    Counted,
    /// Refused; nothing counted.
    Rejected(Rejection),
    /// This caller must re-seed from PostgreSQL ([`seed`], passing this Redis time) and ask
    /// again; nothing counted.
    NeedsSeed(i64),
    /// Another caller is re-seeding state that cannot count meanwhile (lost, or a window
    /// switched on again): ask again shortly, or re-seed with this Redis time; nothing counted.
    Busy(i64),
}

/// Slots in each window's ring of sub-window counters: a window of `T` is counted in
/// sub-windows of `ceil(T / 60)`, and at most 61 of them overlap any instant's window.
const RING: i64 = 61;

/// The sub-window length of a window of `ttl_ms` (0 = window off): `ceil(ttl / 60)`.
fn sub_ms(limit: u32, ttl_ms: i64) -> i64 {
    if limit == 0 {
        0
    } else {
        (ttl_ms.max(1) + RING - 2) / (RING - 1)
    }
}

/// A window's length in ms.
fn ttl_ms((_, ttl): (u32, u32)) -> i64 {
    i64::from(ttl) * 1000
}

/// Lua shared by admission and seed: the ring fields of window `k`.
const RING_BODY: &str = r"
local RING = 61
local function slot(k, b) return 'w' .. k .. ':' .. (b % RING) end
local function parse(v)
  if not v then return nil, 0 end
  local b, c = string.match(v, '^(%-?%d+):(%d+)$')
  return tonumber(b), tonumber(c) or 0
end
";

/// Checks every limit and, only when all pass, counts the request; for each of a group of
/// requests in turn, exactly as if each had its own call (docs/throttling.md#group-admission).
/// KEYS: act. ARGV: lim1, ttl1 ms, sub1 ms, lim2, ttl2 ms, sub2 ms, n24 limit, in-queue limit,
/// max queued, seed lease ms, seed grace ms, the node's time (ms) or "" to read `TIME`
/// (docs/costs.md#time-from-the-caller), then `id, number` per request. Returns
/// `verdict, detail` per request (`error, <Redis's error>` for a request whose write failed),
/// then "1" if it read `TIME` (else "0") and the time it counted at.
///
/// Cost when admitted: `TIME` once per call without the caller's time, then per request one
/// `HMGET`, one `HSET`. A refusal is decided on the node's clock (`TIME`, once per call):
/// a retry at the announced time must not meet a lagging caller's time. Each service window is a ring of
/// sub-window counters in the same hash (`w<k>:<slot>` → `<sub-window>:<count>`); the ring
/// is only summed (one more `HMGET` of its 61 slots) when `~w<k>`, an upper bound of the
/// window's count, says it could be full. The 24 h list of the number rides in the same
/// `HMGET`/`HSET` as the active counts.
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{RING_BODY}
local now, timed, read = tonumber(ARGV[12]), '0', nil
-- The node's clock; `read` is what the caller may keep as a reading of it (never `~t`).
local function read_time()
  local t = redis.call('TIME')
  read = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  now, timed = read, '1'
end
if not now then read_time() end
local lim = {{tonumber(ARGV[1]), tonumber(ARGV[4])}}
local ttl = {{tonumber(ARGV[2]), tonumber(ARGV[5])}}
local sub = {{tonumber(ARGV[3]), tonumber(ARGV[6])}}
local n24, inq, maxq = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local lease, grace = tonumber(ARGV[10]), tonumber(ARGV[11])
local function check(id, num)
local cur, fld = {{}}, {{}}
for k = 1, 2 do
  fld[k] = '~'
  if lim[k] > 0 then
    cur[k] = math.floor(now / sub[k])
    fld[k] = slot(k, cur[k])
  end
end
local st = redis.call('HMGET', KEYS[1], '~seed', '~count', 'n:' .. num, 'd:' .. num,
  '~s1', '~s2', '~w1', '~w2', fld[1], fld[2], '~lease', 'i:' .. id, '~t')
-- Never earlier than the latest admission counted (`~t`) by up to a second: a caller's time
-- lags the node's clock (its reading's round trip, a call that waited in its queue), and the
-- service's counts must not go back in time. A caller's time further behind is stale (its
-- process stopped): the node's clock decides. A `~t` further ahead of the node's own clock
-- is not followed (that clock was stepped back). Read again only when the current
-- sub-window moves.
local last = tonumber(st[13])
if last and last > now then
  if last - now > 1000 and timed == '0' then
    read_time()
    return check(id, num)
  end
  if last - now <= 1000 then
    now = last
    for k = 1, 2 do
      if lim[k] > 0 and math.floor(now / sub[k]) ~= cur[k] then return check(id, num) end
    end
  end
end
-- A ring counted in longer sub-windows (a shorter window now, or another replica's cached
-- settings) is counted as it is, conservatively, until the next re-seed rebuilds it in this
-- caller's. A ring in shorter ones (a longer window) lacks older admissions, and a length no
-- settings give (at least 17 ms, whole) means the hash was altered: both re-seed.
local rings_ok, unit = true, {{}}
for k = 1, 2 do
  if lim[k] > 0 then
    local s = tonumber(st[4 + k])
    unit[k] = s
    if s ~= sub[k] and not (s and s > sub[k] and s == math.floor(s) and s < 1e12) then
      rings_ok = false
    end
  end
end
-- A hash without a seed deadline was lost (or never seeded): nothing in it counts yet.
if not st[1] then rings_ok = false end
local stale = (tonumber(st[1]) or 0) < now
-- Whether the hash is due for a re-seed is the node's clock's to say (a caller's estimate
-- ahead of it, after the clock was stepped back, would re-seed over and over).
if stale and timed == '0' and st[1] then
  read_time()
  return check(id, num)
end
if stale or not rings_ok then
  -- One caller re-seeds (the lease); meanwhile the others count on when the rings are
  -- usable, and wait when they are not. Before its deadline the hash already lives long
  -- enough; past it (or lost), it must outlive the lease.
  local held = tonumber(st[11])
  if not (held and held >= now and held <= now + lease + 1000) then
    redis.call('HSET', KEYS[1], '~lease', now + lease)
    if stale then redis.call('PEXPIRE', KEYS[1], lease + grace) end
    return {{'seed', string.format('%d', now)}}
  end
  if not rings_ok then return {{'busy', string.format('%d', now)}} end
end
-- An id counted already (a replay admitting its callback again after a re-seed counted it
-- from PostgreSQL) is not counted twice.
local mine = st[12]
if mine and mine ~= '' and string.sub(mine, 1, 1) ~= '~' then return {{'counted'}} end
-- A window off in this caller's settings still counts in its ring while the ring lives
-- (another replica's settings have it on; a re-seed with it off drops the ring), so
-- replicas that disagree on a window never undo each other's ring.
local alive = {{}}
for k = 1, 2 do
  local s = tonumber(st[4 + k])
  if lim[k] <= 0 and s and s >= 1 and s == math.floor(s) and s < 1e12 then
    alive[k], unit[k] = true, s
  end
end
-- In a ring of another unit, the current sub-window is another slot.
for k = 1, 2 do
  if (lim[k] > 0 and unit[k] ~= sub[k]) or alive[k] then
    cur[k] = math.floor(now / unit[k])
    fld[k] = slot(k, cur[k])
    st[8 + k] = redis.call('HGET', KEYS[1], fld[k])
  end
end
-- A caller's time older than a sub-window already counted is stale (its process stopped
-- between reading its estimate and sending): the node's clock decides instead.
if timed == '0' then
  for k = 1, 2 do
    if lim[k] > 0 and (parse(st[8 + k]) or cur[k]) > cur[k] then
      read_time()
      return check(id, num)
    end
  end
end
local bound = {{}}
-- Window k's refusal (name, when a slot frees) or nil; sums the ring only when its bound
-- says it could be full.
local function window(k, name)
  if lim[k] <= 0 then return nil end
  local w = tonumber(st[6 + k])
  if w ~= nil and w >= 0 and w < lim[k] then bound[k] = w return nil end
  local names = {{}}
  for i = 0, RING - 1 do names[#names + 1] = 'w' .. k .. ':' .. i end
  local vals = redis.call('HMGET', KEYS[1], unpack(names))
  local lo, sum, live = math.floor((now - ttl[k]) / unit[k]), 0, {{}}
  for i = 1, RING do
    local b, c = parse(vals[i])
    if b and b >= lo and c > 0 then
      sum = sum + c
      live[#live + 1] = {{b, c}}
    end
  end
  -- Only the ring's own window's sum bounds every window counted in it (the longest).
  if unit[k] == sub[k] then bound[k] = sum end
  if sum < lim[k] then return nil end
  table.sort(live, function(x, y) return x[1] < y[1] end)
  for _, e in ipairs(live) do
    sum = sum - e[2]
    if sum < lim[k] then return {{name, (e[1] + 1) * unit[k] + ttl[k]}} end
  end
  return {{name, now + ttl[k]}}
end
local days = {{}}
local function per_number()
  if n24 <= 0 then return nil end
  for ms in string.gmatch(st[4] or '', '%d+') do
    if tonumber(ms) > now - 86400000 then days[#days + 1] = ms end
  end
  if #days < n24 then return nil end
  return {{'throttle_per_number_24h', tonumber(days[#days - n24 + 1]) + 86400000}}
end
-- Every timed limit is checked, and the one that frees last answers: at its time every
-- other timed limit has freed too.
local refusal
for _, r in ipairs({{window(1, 'throttle_per_service_1') or false,
    window(2, 'throttle_per_service_2') or false, per_number() or false}}) do
  if r and (not refusal or r[2] > refusal[2]) then refusal = r end
end
-- A refusal is the node's clock's to make: a caller's time behind it (a reading's round trip,
-- a call queued) could still see the sub-window that left the window at the announced time,
-- and refuse a retry sent then. Before that time the refusal stands (a later time only frees
-- more, and frees it then); from it on, the request is checked again on the node's clock.
if refusal and timed == '0' then
  read_time()
  if now >= refusal[2] then return check(id, num) end
end
-- The wait is the node's clock's too (`now` may follow a `~t` ahead of it).
if refusal then
  local wait = math.max(refusal[2] - (read or now), 0)
  return {{refusal[1], string.format('%d %d', refusal[2], wait)}}
end
local active = tonumber(st[3]) or 0
if inq > 0 and active >= inq then return {{'in_queue_checking', ''}} end
local total = tonumber(st[2]) or 0
if maxq > 0 and total >= maxq then return {{'max_queued', ''}} end
local flag = ''
if n24 > 0 then flag = '|d' end
local args = {{'i:' .. id, num .. '|' .. now .. flag, 'n:' .. num, active + 1, '~count', total + 1,
  '~t', now}}
for k = 1, 2 do
  if lim[k] > 0 or alive[k] then
    local b, c = parse(st[8 + k])
    -- A slot that holds a newer sub-window (a clock stepped back) keeps it, one more.
    local at = cur[k]
    if b and b > at then at = b elseif b ~= at then c = 0 end
    args[#args + 1] = fld[k]
    args[#args + 1] = at .. ':' .. (c + 1)
    local w = bound[k] or tonumber(st[6 + k])
    if w then
      args[#args + 1] = '~w' .. k
      args[#args + 1] = w + 1
    end
  elseif tonumber(st[4 + k]) ~= 0 then
    -- The window is off and its ring (an altered one) cannot count: when it is on again,
    -- re-seed.
    args[#args + 1] = '~s' .. k
    args[#args + 1] = 0
  end
end
if n24 > 0 then
  days[#days + 1] = tostring(now)
  args[#args + 1] = 'd:' .. num
  args[#args + 1] = table.concat(days, ',')
end
redis.call('HSET', KEYS[1], unpack(args))
return {{'ok'}}
end
-- A request whose write fails (Redis out of memory, a read-only replica) answers 'error' by
-- itself: the others of the group keep their verdicts, as separate calls would.
local out = {{}}
for i = 13, #ARGV - 1, 2 do
  local ok, r = pcall(check, ARGV[i], ARGV[i + 1])
  if ok then
    out[#out + 1] = r[1]
    out[#out + 1] = r[2] or ''
  else
    out[#out + 1] = 'error'
    out[#out + 1] = type(r) == 'table' and tostring(r.err) or tostring(r)
  end
end
out[#out + 1] = timed
out[#out + 1] = string.format('%d', read or now)
return out",
    ))
});

/// Lua shared by release and give-back: drops one active callback from `act` (KEYS[n]).
/// The callback's field is overwritten with a tombstone (`~` + its value; empty for a
/// give-back) and a number's count may drop to 0, all in one `HSET` (a `HDEL` would cost a
/// second write); the next re-seed or the hash's expiry clears both. `extra` = more
/// field/value pairs for the same `HSET`.
const RELEASE_BODY: &str = r"
local function gone(v) return not v or v == '' or string.sub(v, 1, 1) == '~' end
local function release(act, id, extra)
  local v = redis.call('HGET', act, 'i:' .. id)
  if gone(v) then return 0 end
  local num, ms, flag = string.match(v, '^([^|]*)|?(%d*)|?(.*)$')
  local st = redis.call('HMGET', act, 'n:' .. num, '~count', 'd:' .. num)
  local n = math.max((tonumber(st[1]) or 1) - 1, 0)
  local total = math.max((tonumber(st[2]) or 1) - 1, 0)
  local args = {'i:' .. id, '~' .. v, 'n:' .. num, n, '~count', total}
  if extra then extra(args, st, num, ms, flag) end
  redis.call('HSET', act, unpack(args))
  return 1
end
";

/// With the caller's number key (`ARGV[2]`, or `""`): the callback's field and both counts in
/// one `HMGET` (`EVALSHA`, `HMGET`, `HSET`); a hint that does not match the stored number falls
/// back to [`RELEASE_BODY`]'s two reads.
const RELEASE_HINTED: &str = r"
local function release_hinted(act, id, hint)
  local st = redis.call('HMGET', act, 'i:' .. id, 'n:' .. hint, '~count')
  local v = st[1]
  if gone(v) then return 0 end
  if string.match(v, '^([^|]*)') ~= hint then return release(act, id) end
  local n = math.max((tonumber(st[2]) or 1) - 1, 0)
  local total = math.max((tonumber(st[3]) or 1) - 1, 0)
  redis.call('HSET', act, 'i:' .. id, '~' .. v, 'n:' .. hint, n, '~count', total)
  return 1
end
if ARGV[2] ~= '' then return release_hinted(KEYS[1], ARGV[1], ARGV[2]) end
return release(KEYS[1], ARGV[1])
";

/// KEYS: act. ARGV: id, number key or `""`.
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{RELEASE_BODY}\n{RELEASE_HINTED}")));

/// Undoes an admission entirely (its sub-window counts, 24 h entry, active place).
/// KEYS: act. ARGV: id, sub1 ms, sub2 ms (0 = window off). A sub-window count is only taken
/// back while the ring still counts in that sub-window length and holds that sub-window.
static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{RELEASE_BODY}{RING_BODY}
return release(KEYS[1], ARGV[1], function(args, st, num, ms, flag)
  args[2] = ''
  local at, sub = tonumber(ms), {{tonumber(ARGV[2]), tonumber(ARGV[3])}}
  if at then
    local f = {{'~', '~'}}
    for k = 1, 2 do
      if sub[k] > 0 then f[k] = slot(k, math.floor(at / sub[k])) end
    end
    local r = redis.call('HMGET', KEYS[1], '~s1', '~s2', f[1], f[2])
    for k = 1, 2 do
      -- Off for this caller, but its ring lives: the admission counted there (CHECK).
      local s = tonumber(r[k])
      if sub[k] == 0 and s and s >= 1 and s == math.floor(s) and s < 1e12 then
        sub[k], f[k] = s, slot(k, math.floor(at / s))
        r[2 + k] = redis.call('HGET', KEYS[1], f[k])
      end
    end
    for k = 1, 2 do
      local b, c = parse(r[2 + k])
      if sub[k] > 0 and tonumber(r[k]) == sub[k] and b == math.floor(at / sub[k]) and c > 0 then
        args[#args + 1] = f[k]
        args[#args + 1] = b .. ':' .. (c - 1)
      end
    end
  end
  if flag == 'd' and st[3] then
    local days, gone = {{}}, false
    for e in string.gmatch(st[3], '%d+') do
      if not gone and e == ms then gone = true else days[#days + 1] = e end
    end
    args[#args + 1] = 'd:' .. num
    args[#args + 1] = table.concat(days, ',')
  end
end)"
    ))
});

/// Merges the truth into the state. KEYS: act. ARGV: grace ms, period ms, ttl1 ms, sub1 ms,
/// ttl2 ms, sub2 ms (sub 0 = window off), the Redis time the admission asked for this seed
/// (a seed asked before the last one applied is older: it returns -1 and changes nothing),
/// then the active count and (id, number, created ms)
/// per active callback, then the recent count and (id, created ms, number if it counts in
/// the number's 24 h window else "") per recent creation.
///
/// The windows are rebuilt from the recent creations plus the admissions PostgreSQL does not
/// show yet (an `i:` entry younger than the grace: its insert is in flight), so each
/// admission is counted once, in the sub-window of its time (a time ahead of the Redis clock
/// counts in the current one).
static SEED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{RING_BODY}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local grace, period, asked = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[7])
local ttl, sub = {{tonumber(ARGV[3]), tonumber(ARGV[5])}}, {{tonumber(ARGV[4]), tonumber(ARGV[6])}}
local day = now - 86400000
local i = 8
local truth = {{}}
for _ = 1, tonumber(ARGV[i]) do
  truth[ARGV[i + 1]] = ARGV[i + 2] .. '|' .. ARGV[i + 3]
  i = i + 3
end
i = i + 1
local recent, days, rings = {{}}, {{}}, {{{{}}, {{}}}}
local function day_entry(num, ms)
  if num == '' or ms <= day then return end
  days[num] = days[num] or {{}}
  table.insert(days[num], ms)
end
-- Counts an admission at `ms`; `late`: a time PostgreSQL gave (the creating transaction's
-- start, which may precede the admission, and another host's clock) counts one sub-window
-- later, never earlier than the admission was.
local function admitted(ms, late)
  for k = 1, 2 do
    local at = ms
    if late then at = ms + sub[k] end
    if sub[k] > 0 and at > now - ttl[k] then
      local b = math.min(math.floor(at / sub[k]), math.floor(now / sub[k]))
      rings[k][b] = (rings[k][b] or 0) + 1
    end
  end
end
-- A field name of the releases before 2026-12-05 (the id's 36-character text) as the
-- 22-character name of `member`, so that both spellings of one callback are one callback.
local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
local function member(name)
  local hex = string.gsub(name, '-', '')
  if #name ~= 36 or #hex ~= 32 or string.find(hex, '[^0-9a-fA-F]') then return name end
  local out, bits, n = {{}}, 0, 0
  for k = 1, 32 do
    bits, n = bits * 16 + tonumber(string.sub(hex, k, k), 16), n + 4
    if n >= 6 then
      n = n - 6
      local c = math.floor(bits / 2 ^ n)
      out[#out + 1] = string.sub(B64, c + 1, c + 1)
      bits = bits - c * 2 ^ n
    end
  end
  local c = bits * 2 ^ (6 - n)
  out[#out + 1] = string.sub(B64, c + 1, c + 1)
  return table.concat(out)
end
local held, ended, live = {{}}, {{}}, {{}}
local all = redis.call('HGETALL', KEYS[1])
for j = 1, #all, 2 do
  local f, v = all[j], all[j + 1]
  if string.sub(f, 1, 2) == 'i:' then
    local id = member(string.sub(f, 3))
    -- A tombstone (released, or given back) is newer than any snapshot that shows the
    -- callback active: the snapshot was read before the release. When both spellings are
    -- there (replicas of two releases), a live one wins: the count then errs high.
    if v ~= '' and string.sub(v, 1, 1) ~= '~' then
      held[id], live[id], ended[id] = v, true, nil
    elseif not live[id] then
      ended[id] = true
      if v ~= '' then held[id] = v end
    end
  elseif f == '~asked' and tonumber(v) and tonumber(v) > asked and tonumber(v) <= now then
    return -1
  end
end
local function admission_ms(v)
  return tonumber(string.match(v, '^~?[^|]*|(%d+)')) or 0
end
for _ = 1, tonumber(ARGV[i]) do
  local id, ms, num = ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  i = i + 3
  recent[id] = true
  -- Counted at Redis's admission time when the hash still holds it: in the sub-window its
  -- admission counted in, so the time a refusal announced stays true (PostgreSQL's time
  -- may be later: an insert that waited for its batch); else at PostgreSQL's creation
  -- time one sub-window late.
  -- A held time more than half the grace before its row is no admission of that row's
  -- create (a clock stepped, an altered hash): PostgreSQL's time counts instead.
  local at = held[id] and admission_ms(held[id]) or 0
  if at > 0 and at >= ms - grace / 2 then
    ms = at
    admitted(ms, false)
  else
    admitted(ms, true)
  end
  day_entry(num, ms)
end
local kept = {{}}
for id, v in pairs(held) do
  local released = string.sub(v, 1, 1) == '~'
  local num, ms, flag = string.match(v, '^~?([^|]*)|?(%d*)|?(.*)$')
  local added = tonumber(ms) or 0
  if not released and (truth[id] or added > now - grace) then kept[id] = v end
  -- An admission PostgreSQL does not show yet still counts in the windows: its insert is in
  -- flight, or it was inserted and released after this seed's snapshot (a released one's
  -- tombstone keeps its admission).
  if not recent[id] and (released or added > now - grace) then
    admitted(added, false)
    if flag == 'd' then day_entry(num, added) end
  end
end
for id, v in pairs(truth) do
  if not kept[id] and not ended[id] then kept[id] = v end
end
redis.call('DEL', KEYS[1])
local counts, total, args = {{}}, 0, {{}}
local function flush()
  if #args > 0 then redis.call('HSET', KEYS[1], unpack(args)) end
  args = {{}}
end
local function put(f, v)
  args[#args + 1] = f
  args[#args + 1] = v
  if #args >= 1000 then flush() end
end
for id, v in pairs(kept) do
  local num = string.match(v, '^([^|]*)')
  counts[num] = (counts[num] or 0) + 1
  total = total + 1
  put('i:' .. id, v)
end
for num, n in pairs(counts) do put('n:' .. num, n) end
for num, list in pairs(days) do
  table.sort(list)
  put('d:' .. num, table.concat(list, ','))
end
for k = 1, 2 do
  put('~s' .. k, sub[k])
  if sub[k] > 0 then
    local sum = 0
    for b, c in pairs(rings[k]) do
      put(slot(k, b), b .. ':' .. c)
      sum = sum + c
    end
    put('~w' .. k, sum)
  end
end
put('~count', total)
put('~asked', asked)
put('~t', now)
put('~seed', now + period)
flush()
redis.call('PEXPIRE', KEYS[1], period + grace)
return total",
    ))
});

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Checks the limits for callback `id` of `number` and counts it when every limit passes.
pub async fn check_and_count(
    conn: &mut RedisConn,
    tk: &ThrottleKeys,
    id: Uuid,
    number: &str,
    limits: &Limits,
) -> RedisResult<Verdict> {
    let mut verdicts = check_many(conn, tk, limits, &[(id, number)]).await?;
    verdicts
        .pop()
        .unwrap_or_else(|| Err(unexpected("no verdict".into())))
}

/// [`check_and_count`] for several creates of one service under the same `limits`, in one
/// script call: each is checked and counted in turn, as if each had its own call (the verdicts
/// in the order of `requests`; docs/throttling.md#group-admission). Outer error: the call
/// failed (none was decided); inner: that request's write failed (the others stand).
pub async fn check_many(
    conn: &mut RedisConn,
    tk: &ThrottleKeys,
    limits: &Limits,
    requests: &[(Uuid, &str)],
) -> RedisResult<Vec<RedisResult<Verdict>>> {
    let mut call = CHECK.key(tk.act());
    call.arg(limits.per_service_1.0)
        .arg(ttl_ms(limits.per_service_1))
        .arg(limits.sub_ms(1))
        .arg(limits.per_service_2.0)
        .arg(ttl_ms(limits.per_service_2))
        .arg(limits.sub_ms(2))
        .arg(limits.per_number_24h)
        .arg(limits.in_queue)
        .arg(limits.max_queued)
        .arg(SEED_LEASE_MS)
        .arg(SEED_GRACE_MS);
    let act = tk.act();
    let tag = clock::tag(conn.is_cluster(), &act);
    call.arg(clock::now(tag).map(|t| t.to_string()).unwrap_or_default());
    for (id, number) in requests {
        call.arg(member(*id)).arg(*number);
    }
    let sent = Instant::now();
    let reply: Vec<Value> = call.invoke_async(conn).await?;
    if reply.len() != 2 * requests.len() + 2 {
        return Err(unexpected(format!("{} values", reply.len())));
    }
    let (verdicts, time) = reply.split_at(2 * requests.len());
    if time.first().and_then(text).as_deref() == Some("1")
        && let Some(ms) = time.get(1).and_then(text).and_then(|s| s.parse().ok())
    {
        clock::observe(tag, ms, sent, Instant::now());
    }
    Ok(verdicts
        .chunks(2)
        .map(|pair| verdict(pair, limits))
        .collect())
}

/// One request's verdict from its `[word, detail]` pair of the script's reply.
fn verdict(pair: &[Value], limits: &Limits) -> RedisResult<Verdict> {
    let word = pair.first().and_then(text).unwrap_or_default();
    // `<frees at ms> <wait ms>` for a timed refusal.
    let detail = pair.get(1).and_then(text).unwrap_or_default();
    let mut times = detail.split(' ').map(|s| s.parse::<i64>().ok());
    let frees_at = times
        .next()
        .flatten()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok());
    let wait_ms = times.next().flatten().filter(|_| frees_at.is_some());
    let limit = match word.as_str() {
        "ok" => return Ok(Verdict::Admitted),
        "counted" => return Ok(Verdict::Counted),
        "seed" => return Ok(Verdict::NeedsSeed(asked(pair))),
        "busy" => return Ok(Verdict::Busy(asked(pair))),
        "error" => {
            let detail = pair.get(1).and_then(text).unwrap_or_default();
            return Err(redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
                "throttle write refused",
                detail,
            )));
        }
        "throttle_per_service_1" => Limit::PerService1 {
            limit: limits.per_service_1.0,
            ttl: limits.per_service_1.1,
        },
        "throttle_per_service_2" => Limit::PerService2 {
            limit: limits.per_service_2.0,
            ttl: limits.per_service_2.1,
        },
        "throttle_per_number_24h" => Limit::PerNumber24h {
            limit: limits.per_number_24h,
        },
        "in_queue_checking" => Limit::InQueue {
            limit: limits.in_queue,
        },
        "max_queued" => Limit::MaxQueued {
            limit: limits.max_queued,
        },
        other => return Err(unexpected(other.to_string())),
    };
    Ok(Verdict::Rejected(Rejection {
        limit,
        frees_at,
        wait_ms,
    }))
}

fn unexpected(detail: String) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "unexpected throttle script reply",
        detail,
    ))
}

/// The Redis time a `seed` or `busy` answer carries (0 when missing: the oldest).
fn asked(reply: &[Value]) -> i64 {
    reply
        .get(1)
        .and_then(text)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Undoes the admission of `id` (its insert failed, or an idempotent replay answered instead),
/// admitted under `limits`.
pub async fn give_back(
    conn: &mut RedisConn,
    tk: &ThrottleKeys,
    limits: &Limits,
    id: Uuid,
) -> RedisResult<()> {
    GIVE_BACK
        .key(tk.act())
        .arg(member(id))
        .arg(limits.sub_ms(1))
        .arg(limits.sub_ms(2))
        .invoke_async::<i64>(conn)
        .await
        .map(drop)
}

/// The Lua of [`restore`]. KEYS: act. ARGV: id, number key, `d` when the admission counted in
/// the number's 24 h window (else `""`), sub1 ms, sub2 ms (0 = window off).
static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{RING_BODY}
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f, num, flag = 'i:' .. ARGV[1], ARGV[2], ARGV[3]
local sub, cur, fld = {{tonumber(ARGV[4]), tonumber(ARGV[5])}}, {{}}, {{'~', '~'}}
for k = 1, 2 do
  if sub[k] > 0 then
    cur[k] = math.floor(now / sub[k])
    fld[k] = slot(k, cur[k])
  end
end
local st = redis.call('HMGET', KEYS[1], f, 'n:' .. num, '~count', 'd:' .. num,
  '~s1', '~s2', fld[1], fld[2], '~w1', '~w2')
local v = st[1]
if v and v ~= '' and string.sub(v, 1, 1) ~= '~' then return 0 end
local value = num .. '|' .. now
if flag == 'd' then value = value .. '|d' end
local args = {{f, value, 'n:' .. num, (tonumber(st[2]) or 0) + 1, '~count', (tonumber(st[3]) or 0) + 1}}
-- Only the give-back's own mark (an empty field) says the admission left the windows and
-- the 24 h list: a re-seed since (the field gone) counted it again from PostgreSQL, where the
-- row is not withdrawn. Then its admission counts again in the current sub-window of each
-- ring that still counts in this caller's sub-windows (another unit is rebuilt by the next
-- re-seed).
local given = v == ''
for k = 1, 2 do
  if given and sub[k] > 0 and tonumber(st[4 + k]) == sub[k] then
    local b, c = parse(st[6 + k])
    -- A slot that holds a newer sub-window (a clock stepped back) keeps it, one more.
    local at = cur[k]
    if b and b > at then at = b elseif b ~= at then c = 0 end
    args[#args + 1] = fld[k]
    args[#args + 1] = at .. ':' .. (c + 1)
    local w = tonumber(st[8 + k])
    if w then
      args[#args + 1] = '~w' .. k
      args[#args + 1] = w + 1
    end
  end
end
if given and flag == 'd' then
  local days = st[4]
  if days and days ~= '' then days = days .. ',' .. now else days = tostring(now) end
  args[#args + 1] = 'd:' .. num
  args[#args + 1] = days
end
redis.call('HSET', KEYS[1], unpack(args))
return 1",
    ))
});

/// Counts callback `id` (number key `number`) as admitted and active again after a
/// [`give_back`] that turned out wrong: the withdrawal it belonged to kept the callback after
/// all (docs/bounded-answers.md#a-replay-of-a-create-answered-503). Its active place comes
/// back (what `in_queue_checking` and `max_queued` read) and, while the give-back's empty
/// field says no re-seed counted it since, its service-window admission and, under
/// `throttle_per_number_24h`, its number's 24 h entry, at Redis's time now. The caller must
/// hold the callback's row locked and have seen it active, so that no release can be lost in
/// between. A no-op while the callback is counted,
/// or when the state is gone (the next seed counts it from PostgreSQL). Returns whether it
/// counted the callback again.
pub async fn restore(
    conn: &mut RedisConn,
    tk: &ThrottleKeys,
    limits: &Limits,
    id: Uuid,
    number: &str,
) -> RedisResult<bool> {
    let n: i64 = RESTORE
        .key(tk.act())
        .arg(member(id))
        .arg(number)
        .arg(if limits.per_number_24h > 0 { "d" } else { "" })
        .arg(limits.sub_ms(1))
        .arg(limits.sub_ms(2))
        .invoke_async(conn)
        .await?;
    Ok(n > 0)
}

/// The state of callback `id`'s field in the active counts ([`counted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Live: the callback holds its place.
    Counted,
    /// Empty: a give-back took its place and its window admission.
    GivenBack,
    /// Missing (a re-seed dropped it, or it was never counted) or a release's tombstone: no
    /// place, its admission still in the windows.
    Uncounted,
}

/// Whether callback `id` holds a place in the active counts, and if not why. One `HGET`.
pub async fn counted(conn: &mut RedisConn, tk: &ThrottleKeys, id: Uuid) -> RedisResult<Field> {
    let v: Option<String> = redis::cmd("HGET")
        .arg(tk.act())
        .arg(format!("i:{}", member(id)))
        .query_async(conn)
        .await?;
    Ok(match v {
        Some(v) if v.is_empty() => Field::GivenBack,
        Some(v) if !v.starts_with('~') => Field::Counted,
        _ => Field::Uncounted,
    })
}

/// Frees the place callback `id` held in its service's active count (and its number's).
/// Call after committing the move to COMPLETED: the cancel endpoint does, the worker must on
/// completion. Idempotent; returns whether the callback was counted.
pub async fn release(
    conn: &mut RedisConn,
    keys: &Keys,
    tenant: &str,
    service: &str,
    id: Uuid,
) -> RedisResult<bool> {
    release_number(conn, keys, tenant, service, id, "").await
}

/// [`release`] by a caller that knows the callback's number key
/// (`phone::number_key(phone_e164, phone_number)`, what the admission counted): one read
/// fewer (docs/costs.md). A wrong or empty key only costs the read back.
pub async fn release_number(
    conn: &mut RedisConn,
    keys: &Keys,
    tenant: &str,
    service: &str,
    id: Uuid,
    number_key: &str,
) -> RedisResult<bool> {
    let tk = ThrottleKeys::new(keys, tenant, service);
    let n: i64 = RELEASE
        .key(tk.act())
        .arg(member(id))
        .arg(number_key)
        .invoke_async(conn)
        .await?;
    Ok(n > 0)
}

/// One callback as the seed needs it.
#[derive(Debug, Clone)]
pub struct SeedEntry {
    /// The callback, as counted in `T:act`.
    pub id: Uuid,
    /// Throttle number key (E.164 digits, else digits as given).
    pub number: String,
    /// Creation time in epoch ms (PostgreSQL's `created_at`): places it in the windows.
    pub created_ms: i64,
    /// Created as an immediate callback.
    pub immediate: bool,
}

/// Merges the truth from PostgreSQL into the service's state: `active` = its callbacks not
/// COMPLETED, `recent` = its creations of the last `max(window, 24 h)`. Returns the active
/// count now held, or -1 when a seed asked later was applied already (nothing changed).
/// `period_s` = seconds until the next re-seed; `asked_ms` = the Redis time of the answer that
/// asked for it ([`Verdict::NeedsSeed`], [`Verdict::Busy`]).
pub async fn seed(
    conn: &mut RedisConn,
    tk: &ThrottleKeys,
    limits: &Limits,
    active: &[SeedEntry],
    recent: &[SeedEntry],
    (period_s, asked_ms): (u32, i64),
) -> RedisResult<i64> {
    let mut inv = SEED.prepare_invoke();
    inv.key(tk.act());
    inv.arg(SEED_GRACE_MS)
        .arg(i64::from(period_s) * 1000)
        .arg(ttl_ms(limits.per_service_1))
        .arg(limits.sub_ms(1))
        .arg(ttl_ms(limits.per_service_2))
        .arg(limits.sub_ms(2))
        .arg(asked_ms)
        .arg(active.len());
    for e in active {
        inv.arg(member(e.id)).arg(&e.number).arg(e.created_ms);
    }
    inv.arg(recent.len());
    for e in recent {
        let day_number = if e.immediate && limits.per_number_24h > 0 {
            e.number.as_str()
        } else {
            ""
        };
        inv.arg(member(e.id)).arg(e.created_ms).arg(day_number);
    }
    inv.invoke_async(conn).await
}

/// How far back [`seed`]'s `recent` must reach, seconds.
pub fn recent_horizon_s(limits: &Limits) -> i64 {
    let windows = limits.keep_ms() / 1000;
    if limits.per_number_24h > 0 {
        windows.max(DAY_MS / 1000)
    } else {
        windows
    }
}
