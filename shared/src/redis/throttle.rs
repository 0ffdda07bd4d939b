//! Create-time limits per service (docs/throttling.md; the settings in
//! docs/decisions.md#service-settings): all checked **and** counted by one Lua script, so they
//! hold exactly across any number of replicas, and a rejected request counts nothing.
//!
//! # Keys
//! One hash tag per service, `{<prefix>:thr:<tenant>:<service>}` (written `T` below), so every
//! script touches a single cluster slot:
//! - `T:win` — ZSET, member = callback id, score = admission time (ms, Redis clock): the
//!   requests of both service windows (`throttle_per_service_1/2` over `throttle_ttl_1/2`).
//! - `T:act` — HASH of the active (not COMPLETED) callbacks: `i:<id>` → `<number>|<ms>`
//!   (`|d` appended when it counts in the number's 24 h window; `""` = released),
//!   `n:<number>` → active count of that number, `d:<number>` → the number's immediate
//!   admissions of the last 24 h (comma-separated ms), `~count` → active total (for
//!   `max_queued`), `~w` → an upper bound of `T:win`'s size, `~wx` → when `T:win` expires,
//!   `~seed` → until when the hash counts as checked against PostgreSQL.
//!
//! # Cost (docs/decisions.md#budgets: 15 commands per immediate callback, create to COMPLETED)
//! An admission is `TIME`, `HMGET`, `ZADD`, `HSET`: the per-number 24 h window rides in the
//! active hash instead of a ZSET of its own, the service windows are counted only when `~w`
//! says one could be full, and `T:win`'s TTL is refreshed once per window length. A release
//! is `HGET`, `HMGET`, `HSET` (tombstone instead of `HDEL`). `T:act` expires
//! `period + grace` after its last seed (or seed lease), and admissions happen only before
//! the seed deadline, so an expiry never forgets an in-flight create; a missing hash re-seeds.
//!
//! # Windows
//! Sliding windows (a log of admission times), not fixed buckets: "at most N in any T
//! seconds" holds at every instant (a fixed window lets 2 N through around a boundary), the
//! time a slot frees up is exact (oldest entry + T), and giving back a reservation is one
//! `ZREM`. Memory is bounded by the limits themselves (an entry exists only for an admitted
//! request): at the defaults, at most 1000 entries per busy service.
//!
//! # Releasing
//! A callback holds its place in `T:act` until it completes. Whoever moves a callback to
//! COMPLETED calls [`release`] after the commit: the cancel endpoint does, and **the worker
//! must** when the voice platform reports completion (or a TTL expiry ends it). `release` is
//! keyed by callback id and idempotent: a second call is a no-op, so retries never drift.
//!
//! # Self-healing (PostgreSQL is the truth)
//! `~seed` expires every `THROTTLE_RESEED_SECONDS`; the next create of the service then
//! re-seeds `T:act` from PostgreSQL (active callbacks, 24 h lists) and `T:win` from the recent
//! creations ([`seed`]). Entries PostgreSQL does not know are dropped unless younger than
//! [`SEED_GRACE_MS`] (a create whose insert is still in flight), so a lost release or a crash
//! between reservation and insert heals within one period, and a flushed Redis rebuilds
//! itself on first use. Only one caller per service seeds at a time (a short lease); the
//! others keep counting meanwhile.

use std::sync::LazyLock;

use jiff::Timestamp;
use redis::{RedisResult, Script, Value};
use uuid::Uuid;

use super::{Keys, RedisConn};

/// Reservations younger than this survive a re-seed even when PostgreSQL does not have them
/// yet (their insert may still be running; requests time out well before).
pub const SEED_GRACE_MS: i64 = 120_000;
/// How long one caller may take to re-seed before another one tries.
const SEED_LEASE_MS: i64 = 10_000;
const DAY_MS: i64 = 86_400_000;

/// The keys of one service's throttle state.
#[derive(Debug, Clone)]
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
    /// `T:win`: ZSET of the service's recent admissions (member callback id, score admission
    /// ms), counted by both service windows.
    pub fn win(&self) -> String {
        format!("{}:win", self.tag)
    }
    /// `T:act`: HASH of the service's active callbacks and per-number counts, plus the `~`
    /// bookkeeping fields (see the module doc).
    pub fn act(&self) -> String {
        format!("{}:act", self.tag)
    }
}

/// The limits that apply to one create request (0 = no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// How long window entries must be kept (ms).
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
    /// Refused; nothing counted.
    Rejected(Rejection),
    /// This caller must re-seed from PostgreSQL ([`seed`]) and ask again; nothing counted.
    NeedsSeed,
}

/// Checks every limit and, only when all pass, counts the request.
/// KEYS: win, act. ARGV: id, number, lim1, ttl1 ms, lim2, ttl2 ms, n24 limit, in-queue
/// limit, max queued, seed lease ms, grace ms.
///
/// Cost when admitted: `TIME`, one `HMGET`, one `ZADD`, one `HSET` (plus a `ZREMRANGEBYSCORE`
/// on one call in 16 and a `PEXPIRE` once per window length). The windows are only counted
/// (`ZCARD`, `ZCOUNT`) when `~w`, an upper bound of the window ZSET's size, says one could be
/// full; the 24 h list of the number rides in the same `HMGET`/`HSET` as the active counts.
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, num = ARGV[1], ARGV[2]
local lim1, ttl1, lim2, ttl2 = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local n24, inq, maxq = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local lease, grace = tonumber(ARGV[10]), tonumber(ARGV[11])
local st = redis.call('HMGET', KEYS[2], '~seed', '~count', 'n:' .. num, '~w', '~wx', 'd:' .. num)
if (tonumber(st[1]) or 0) < now then
  redis.call('HSET', KEYS[2], '~seed', now + lease)
  redis.call('PEXPIRE', KEYS[2], lease + grace)
  return {'seed'}
end
local keep = 0
if lim1 > 0 then keep = ttl1 end
if lim2 > 0 and ttl2 > keep then keep = ttl2 end
local w = tonumber(st[4])
if keep > 0 then
  local low = lim1
  if lim1 <= 0 or (lim2 > 0 and lim2 < low) then low = lim2 end
  if w == nil or w >= low then w = redis.call('ZCARD', KEYS[1]) end
end
local function window(lim, ttl, name)
  if lim <= 0 or w < lim then return nil end
  local lo = '(' .. (now - ttl)
  local n = redis.call('ZCOUNT', KEYS[1], lo, '+inf')
  if n < lim then return nil end
  local e = redis.call('ZRANGEBYSCORE', KEYS[1], lo, '+inf', 'WITHSCORES', 'LIMIT', n - lim, 1)
  return {name, tostring(tonumber(e[2]) + ttl)}
end
local r = window(lim1, ttl1, 'throttle_per_service_1')
  or window(lim2, ttl2, 'throttle_per_service_2')
if r then return r end
local days = {}
if n24 > 0 then
  for ms in string.gmatch(st[6] or '', '%d+') do
    if tonumber(ms) > now - 86400000 then days[#days + 1] = ms end
  end
  if #days >= n24 then
    return {'throttle_per_number_24h', tostring(tonumber(days[#days - n24 + 1]) + 86400000)}
  end
end
local active = tonumber(st[3]) or 0
if inq > 0 and active >= inq then return {'in_queue_checking', ''} end
local total = tonumber(st[2]) or 0
if maxq > 0 and total >= maxq then return {'max_queued', ''} end
local flag = ''
if n24 > 0 then flag = '|d' end
local args = {'i:' .. id, num .. '|' .. now .. flag, 'n:' .. num, active + 1, '~count', total + 1}
if keep > 0 then
  w = w + redis.call('ZADD', KEYS[1], now, id)
  if now % 16 == 0 then
    w = w - redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - keep)
  end
  if (tonumber(st[5]) or 0) < now + keep then
    redis.call('PEXPIRE', KEYS[1], 2 * keep)
    args[#args + 1] = '~wx'
    args[#args + 1] = now + 2 * keep
  end
  args[#args + 1] = '~w'
  args[#args + 1] = w
end
if n24 > 0 then
  days[#days + 1] = tostring(now)
  args[#args + 1] = 'd:' .. num
  args[#args + 1] = table.concat(days, ',')
end
redis.call('HSET', KEYS[2], unpack(args))
return {'ok'}",
    )
});

/// Lua shared by release and give-back: drops one active callback from `act` (KEYS[n]).
/// The callback's field is overwritten with an empty tombstone and a number's count may drop
/// to 0, all in one `HSET` (a `HDEL` would cost a second write); the next re-seed or the
/// hash's expiry clears both. `extra` = more field/value pairs for the same `HSET`.
const RELEASE_BODY: &str = r"
local function release(act, id, extra)
  local v = redis.call('HGET', act, 'i:' .. id)
  if not v or v == '' then return 0 end
  local num, ms, flag = string.match(v, '^([^|]*)|?(%d*)|?(.*)$')
  local st = redis.call('HMGET', act, 'n:' .. num, '~count', '~w', 'd:' .. num)
  local n = math.max((tonumber(st[1]) or 1) - 1, 0)
  local total = math.max((tonumber(st[2]) or 1) - 1, 0)
  local args = {'i:' .. id, '', 'n:' .. num, n, '~count', total}
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
  if not v or v == '' then return 0 end
  if string.match(v, '^([^|]*)') ~= hint then return release(act, id) end
  local n = math.max((tonumber(st[2]) or 1) - 1, 0)
  local total = math.max((tonumber(st[3]) or 1) - 1, 0)
  redis.call('HSET', act, 'i:' .. id, '', 'n:' .. hint, n, '~count', total)
  return 1
end
if ARGV[2] ~= '' then return release_hinted(KEYS[1], ARGV[1], ARGV[2]) end
return release(KEYS[1], ARGV[1])
";

/// KEYS: act. ARGV: id, number key or `""`.
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{RELEASE_BODY}\n{RELEASE_HINTED}")));

/// Undoes an admission entirely (window entry, 24 h entry, active place). KEYS: win, act.
/// ARGV: id.
static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{RELEASE_BODY}
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
return release(KEYS[2], ARGV[1], function(args, st, num, ms, flag)
  if removed > 0 and st[3] then
    args[#args + 1] = '~w'
    args[#args + 1] = math.max(tonumber(st[3]) - removed, 0)
    args[#args + 1] = '~wx'
    args[#args + 1] = 0
  end
  if flag == 'd' and st[4] then
    local days, gone = {{}}, false
    for e in string.gmatch(st[4], '%d+') do
      if not gone and e == ms then gone = true else days[#days + 1] = e end
    end
    args[#args + 1] = 'd:' .. num
    args[#args + 1] = table.concat(days, ',')
  end
end)"
    ))
});

/// Merges the truth into the state. KEYS: win, act. ARGV: grace ms, period ms, keep ms,
/// then the active count and (id, number, created ms) per active callback, then the recent
/// count and (id, created ms, number if it counts in the number's 24 h window else "") per
/// recent creation.
static SEED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local grace, period, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local day = now - 86400000
local i = 4
local truth = {}
for _ = 1, tonumber(ARGV[i]) do
  truth[ARGV[i + 1]] = ARGV[i + 2] .. '|' .. ARGV[i + 3]
  i = i + 3
end
i = i + 1
local recent, days = {}, {}
local function day_entry(num, ms)
  if num == '' or ms <= day then return end
  days[num] = days[num] or {}
  table.insert(days[num], ms)
end
for _ = 1, tonumber(ARGV[i]) do
  local id, ms, num = ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  i = i + 3
  recent[id] = true
  if keep > 0 and ms > now - keep then redis.call('ZADD', KEYS[1], 'NX', ms, id) end
  day_entry(num, ms)
end
local kept = {}
local all = redis.call('HGETALL', KEYS[2])
for j = 1, #all, 2 do
  local f, v = all[j], all[j + 1]
  if string.sub(f, 1, 2) == 'i:' and v ~= '' then
    local id = string.sub(f, 3)
    local num, ms, flag = string.match(v, '^([^|]*)|?(%d*)|?(.*)$')
    local added = tonumber(ms) or 0
    if truth[id] or added > now - grace then kept[id] = v end
    -- An admission PostgreSQL does not show yet (insert in flight) still counts for its number.
    if not recent[id] and flag == 'd' and added > now - grace then day_entry(num, added) end
  end
end
for id, v in pairs(truth) do
  if not kept[id] then kept[id] = v end
end
redis.call('DEL', KEYS[2])
local counts, total, args = {}, 0, {}
local function flush()
  if #args > 0 then redis.call('HSET', KEYS[2], unpack(args)) end
  args = {}
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
if keep > 0 then
  local w = redis.call('ZCARD', KEYS[1])
  put('~w', w)
  if w > 0 then
    redis.call('PEXPIRE', KEYS[1], 2 * keep)
    put('~wx', now + 2 * keep)
  else
    put('~wx', 0)
  end
end
put('~count', total)
put('~seed', now + period)
flush()
redis.call('PEXPIRE', KEYS[2], period + grace)
return total",
    )
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
    let reply: Vec<Value> = CHECK
        .key(tk.win())
        .key(tk.act())
        .arg(id.to_string())
        .arg(number)
        .arg(limits.per_service_1.0)
        .arg(i64::from(limits.per_service_1.1) * 1000)
        .arg(limits.per_service_2.0)
        .arg(i64::from(limits.per_service_2.1) * 1000)
        .arg(limits.per_number_24h)
        .arg(limits.in_queue)
        .arg(limits.max_queued)
        .arg(SEED_LEASE_MS)
        .arg(SEED_GRACE_MS)
        .invoke_async(conn)
        .await?;
    let word = reply.first().and_then(text).unwrap_or_default();
    let frees_at = reply
        .get(1)
        .and_then(text)
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|ms| Timestamp::from_millisecond(ms).ok());
    let limit = match word.as_str() {
        "ok" => return Ok(Verdict::Admitted),
        "seed" => return Ok(Verdict::NeedsSeed),
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
        other => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "unexpected throttle script reply",
                other.to_string(),
            )));
        }
    };
    Ok(Verdict::Rejected(Rejection { limit, frees_at }))
}

/// Undoes the admission of `id` (its insert failed, or an idempotent replay answered instead).
pub async fn give_back(conn: &mut RedisConn, tk: &ThrottleKeys, id: Uuid) -> RedisResult<()> {
    GIVE_BACK
        .key(tk.win())
        .key(tk.act())
        .arg(id.to_string())
        .invoke_async::<i64>(conn)
        .await
        .map(drop)
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
        .arg(id.to_string())
        .arg(number_key)
        .invoke_async(conn)
        .await?;
    Ok(n > 0)
}

/// One callback as the seed needs it.
#[derive(Debug, Clone)]
pub struct SeedEntry {
    /// The callback, as counted in `T:act` and `T:win`.
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
/// count now held. `period_s` = seconds until the next re-seed.
pub async fn seed(
    conn: &mut RedisConn,
    tk: &ThrottleKeys,
    limits: &Limits,
    active: &[SeedEntry],
    recent: &[SeedEntry],
    period_s: u32,
) -> RedisResult<i64> {
    let mut inv = SEED.prepare_invoke();
    inv.key(tk.win()).key(tk.act());
    inv.arg(SEED_GRACE_MS)
        .arg(i64::from(period_s) * 1000)
        .arg(limits.keep_ms())
        .arg(active.len());
    for e in active {
        inv.arg(e.id.to_string()).arg(&e.number).arg(e.created_ms);
    }
    inv.arg(recent.len());
    for e in recent {
        let day_number = if e.immediate && limits.per_number_24h > 0 {
            e.number.as_str()
        } else {
            ""
        };
        inv.arg(e.id.to_string()).arg(e.created_ms).arg(day_number);
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
