//! Fleet-wide rate limits on the service Redis: a GCRA (generic cell rate algorithm: a token
//! bucket kept as one theoretical arrival time, `tat`, per limit) taken in one script. Used by
//! the worker's dispatch pacing (a service's `dispatch_rate_per_second` under its tenant's
//! `WORKER_TENANT_RATE`: a tenant's limits share one hash, so one script in one cluster slot)
//! and by the public port's per-API-key request rate.
//!
//! Callers come here only when their local free allowance is spent (docs/pacing.md): far below
//! a limit no Redis command is issued, and the free permits used meanwhile are reported as
//! `debt` with the next take, so the bucket counts them.

use std::sync::LazyLock;

use super::script::Script;

use super::RedisConn;

/// Takes permits. KEYS: the limits' hash. ARGV: outer interval ms (0 = no outer limit), outer
/// burst, outer debt, place (1 = hand out future slots to what is refused), then per inner
/// limit: field, interval ms, burst, debt, wanted. The outer limit (field `~o`) bounds the sum
/// of the inner ones. Debts are added first, even beyond the burst: they were spent already.
///
/// With `place`, what is refused gets consecutive future slots after the inner limit's
/// horizon (field `h<field>`: the prefix keeps it apart from every limit's field, whose
/// names start with `s:`, `k` or `~`), which then moves past them: callers refused together (several
/// workers, one burst) line up one after the other instead of all aiming at the next permit.
/// A horizon still ahead is dropped when its buckets are full (no permit taken for a burst's
/// time, no debt), which a line being worked through never lets happen: the callbacks placed
/// there are not coming (cancelled, rescheduled), and new ones must not wait behind them. The
/// horizon only places; grants never depend on it.
///
/// Returns `[now ms, per inner limit: granted, first slot ms (absolute, 0 when all were
/// granted), spacing µs]`.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local place = ARGV[4] == '1'
local fields = {'~o'}
for i = 5, #ARGV, 5 do
  fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = 'h' .. ARGV[i]
end
local v = redis.call('HMGET', KEYS[1], unpack(fields))
local oi, ob = tonumber(ARGV[1]), tonumber(ARGV[2])
local otat = math.max(tonumber(v[1]) or 0, now) + tonumber(ARGV[3]) * oi
local ofull = oi <= 0 or otat <= now
local function avail(tat, iv, b)
  if iv <= 0 then return 1e15 end
  return math.max(0, math.floor((now + b * iv - tat) / iv + 1e-6))
end
local function next_at(tat, iv, b)
  if iv <= 0 then return now end
  return math.max(now, tat - (b - 1) * iv)
end
local out, set, far = {math.floor(now)}, {}, now
for k = 1, (#ARGV - 4) / 5 do
  local j = 5 + (k - 1) * 5
  local iv, b, want = tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2]), tonumber(ARGV[j + 4])
  local tat = math.max(tonumber(v[2 * k]) or 0, now) + tonumber(ARGV[j + 3]) * iv
  local h0 = tonumber(v[2 * k + 1]) or 0
  if place and ofull and tat <= now and h0 > now then
    h0 = 0
    set[#set + 1] = fields[2 * k + 1]; set[#set + 1] = '0'
  end
  local g = math.min(want, avail(tat, iv, b), avail(otat, oi, ob))
  tat = tat + g * iv
  otat = otat + g * oi
  local at, sp = 0, math.max(iv, oi)
  if g < want then
    at = math.max(next_at(tat, iv, b), next_at(otat, oi, ob))
    if place then
      at = math.max(at, h0)
      local h = at + (want - g) * sp
      set[#set + 1] = fields[2 * k + 1]; set[#set + 1] = string.format('%.3f', h)
      far = math.max(far, h)
    end
  end
  out[#out + 1] = g; out[#out + 1] = math.ceil(at); out[#out + 1] = math.ceil(sp * 1000)
  set[#set + 1] = fields[2 * k]; set[#set + 1] = string.format('%.3f', tat)
  far = math.max(far, tat)
end
if oi > 0 then
  set[#set + 1] = '~o'; set[#set + 1] = string.format('%.3f', otat)
  far = math.max(far, otat)
end
redis.call('HSET', KEYS[1], unpack(set))
redis.call('PEXPIRE', KEYS[1], math.ceil(far - now) + 1000)
return out",
    )
});

/// One limit: `rate` permits per second with bursts of `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Sustained permits per second (0 = no limit).
    pub rate: u32,
    /// Permits at once (at least 1).
    pub burst: u32,
}

impl Limit {
    /// No limit.
    pub const NONE: Limit = Limit { rate: 0, burst: 1 };

    fn interval_ms(self) -> f64 {
        if self.rate == 0 {
            0.0
        } else {
            1_000.0 / f64::from(self.rate)
        }
    }
}

/// One inner limit's request.
#[derive(Debug, Clone)]
pub struct Want {
    /// Its field in the limits' hash (e.g. `s:<service>`).
    pub field: String,
    /// The limit.
    pub limit: Limit,
    /// Free permits used locally since the last take (counted, never refused).
    pub debt: u32,
    /// Permits wanted now.
    pub want: u32,
}

/// What one inner limit got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grant {
    /// Permits granted (≤ wanted).
    pub granted: u32,
    /// When fewer were granted: the first slot (ms, Redis clock) for what was refused.
    pub next_at_ms: i64,
    /// Interval between further slots (µs).
    pub spacing_us: u64,
}

/// The answer of one take: Redis time and one grant per [`Want`].
#[derive(Debug, Clone, Default)]
pub struct Taken {
    /// Redis time of the take (ms).
    pub now_ms: i64,
    /// Per want, in order.
    pub grants: Vec<Grant>,
}

/// Takes permits of `wants` (each also bounded by `outer`, which gets `outer_debt`) from the
/// hash `key` in one script (`EVALSHA`, with `TIME`, `HMGET`, `HSET`, `PEXPIRE` inside). With
/// `place`, refused permits get future slots (see the script).
pub async fn take(
    conn: &mut RedisConn,
    key: &str,
    (outer, outer_debt): (Limit, u32),
    place: bool,
    wants: &[Want],
) -> redis::RedisResult<Taken> {
    let mut inv = TAKE.key(key);
    inv.arg(outer.interval_ms())
        .arg(outer.burst.max(1))
        .arg(outer_debt)
        .arg(u8::from(place));
    for w in wants {
        inv.arg(&w.field)
            .arg(w.limit.interval_ms())
            .arg(w.limit.burst.max(1))
            .arg(w.debt)
            .arg(w.want);
    }
    let raw: Vec<i64> = inv.invoke_async(conn).await?;
    let grant = |c: &[i64]| Grant {
        granted: u32::try_from(c[0].max(0)).unwrap_or(0),
        next_at_ms: c[1],
        spacing_us: u64::try_from(c[2].max(0)).unwrap_or(0),
    };
    Ok(Taken {
        now_ms: raw.first().copied().unwrap_or_default(),
        grants: raw
            .get(1..)
            .unwrap_or_default()
            .chunks_exact(3)
            .map(grant)
            .collect(),
    })
}
