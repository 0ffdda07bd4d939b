//! The voice Redis: the new-callback stream and the control stream, written exactly once.
//!
//! Every write goes through one Lua script that first sets a dedupe key with `SET NX EX` and
//! adds the stream entry only when that succeeded, so a retried submission (after a timeout, a
//! worker crash or a takeover by another worker) never doubles an entry. The dedupe key carries
//! the stream's hash tag (`{NewCallbackStream}:sub:<id>:<attempt>`): a key without braces hashes
//! by its whole name, so the tag puts the dedupe key in the stream's cluster slot.
//!
//! A cancel of a callback that may be mid-hand-off *fences* its submission: it sets the
//! submission's dedupe key itself (value [`FENCE`]), so a submission not yet written never will
//! be, and a submission already written is proven by the key and gets its control entry after
//! it (docs/voice-platform.md, "Cancel"). A submission that finds its key fenced says so
//! ([`Written::Fenced`]): it was never written, and the worker records no hand-off for it.

use std::sync::LazyLock;

use super::script::{Script, is_noscript};
use uuid::Uuid;

use super::{RedisConn, RedisHandle};
use crate::config::VoiceConfig;

/// How long a dedupe key lives: a submission retried later than this could double.
pub const DEDUPE_TTL_S: u64 = 86_400;

/// Adds entries to one stream, each guarded by its dedupe key.
/// KEYS: stream, dedupe keys…  ARGV: ttl, minid (or "" for no trim), fence value, then per
/// entry its number of fields followed by its fields flattened (field, value, …): entries leave
/// out absent optional fields. Returns per entry 1 (added), 0 (added before) or 2 (fenced: a
/// cancel took the key first, nothing was ever written).
const SUBMIT_LUA: &str = r"
local ttl = ARGV[1]
local minid = ARGV[2]
local fence = ARGV[3]
local moved = ARGV[4]
local base = 5
local out = {}
for i = 2, #KEYS do
  local per = tonumber(ARGV[base]) * 2
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ttl) then
    local args = {KEYS[1]}
    if minid ~= '' then
      args[#args + 1] = 'MINID'; args[#args + 1] = '~'; args[#args + 1] = minid
    end
    args[#args + 1] = '*'
    for j = 1, per do args[#args + 1] = ARGV[base + j] end
    redis.call('XADD', unpack(args))
    out[#out + 1] = 1
  elseif redis.call('GET', KEYS[i]) == fence or redis.call('GET', KEYS[i]) == moved then
    out[#out + 1] = 2
  else
    out[#out + 1] = 0
  end
  base = base + 1 + per
end
return out";
static SUBMIT: LazyLock<Script> = LazyLock::new(|| Script::new(SUBMIT_LUA));

/// Value of a submission dedupe key set by a cancel (a written submission sets `1`).
pub const FENCE: &str = "cancelled";

/// Fences submissions. KEYS: submission dedupe keys (one stream, one slot). ARGV: ttl, fence
/// value. Returns per key 1 (no submission: fenced now or before) or 0 (the submission is in
/// the stream).
const FENCE_LUA: &str = r"
local out = {}
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[2], 'NX', 'EX', ARGV[1]) then
    out[i] = 1
  elseif redis.call('GET', KEYS[i]) == ARGV[2] then
    out[i] = 1
  else
    out[i] = 0
  end
end
return out";
static FENCE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FENCE_LUA));

/// Value of a submission dedupe key set by a reschedule: the old time's hand-off never happens.
pub const MOVED: &str = "rescheduled";

/// The dedupe key of one write to `stream` (`kind` = `sub` or `ctl`). `epoch` is the callback's
/// hand-off epoch (bumped by each reschedule); epoch 0 keeps the key of before reschedules.
pub fn dedupe_key(stream: &str, kind: &str, id: Uuid, attempt: i16, epoch: i16) -> String {
    let tag = hash_tag(stream).unwrap_or(stream);
    // The stream's own tag (when it has one) puts both keys in one slot.
    match epoch {
        0 => format!("{{{tag}}}:{kind}:{id}:{attempt}"),
        e => format!("{{{tag}}}:{kind}:{id}:{attempt}.{e}"),
    }
}

/// The hash tag of `key` (between its first `{` and the next `}`, not empty), as Redis Cluster
/// hashes it.
pub(crate) fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// One stream entry: its dedupe identity and its fields.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The callback the entry is about (part of the dedupe key).
    pub id: Uuid,
    /// Dispatch attempt (part of the dedupe key).
    pub attempt: i16,
    /// Hand-off epoch of the attempt (part of the dedupe key; 0 for control entries).
    pub epoch: i16,
    /// Field/value pairs in `XADD` order; the contract is in docs/voice-platform.md#stream-entries.
    pub fields: Vec<(&'static str, String)>,
}

/// What [`submit`] did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Added to the stream now.
    Added,
    /// Added before (a retried or taken-over submission): the stream holds it once.
    Already,
    /// Never written and never will be: a cancel fenced the attempt first
    /// (docs/voice-platform.md#cancel). Not a hand-off.
    Fenced,
}

/// How many replicas of the voice Redis must hold a write before it counts, and how long to
/// wait for them (`VOICE_REDIS_REPLICA_ACKS`, `VOICE_REDIS_ACK_TIMEOUT_MS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acks {
    /// Replicas that must acknowledge; 0 = do not wait.
    pub replicas: u8,
    /// The longest wait for them (ms).
    pub timeout_ms: u64,
}

impl Acks {
    /// No wait: a write counts once its primary took it.
    pub const NONE: Self = Self {
        replicas: 0,
        timeout_ms: 0,
    };

    /// The acknowledgements `v` asks for.
    pub fn of(v: &VoiceConfig) -> Self {
        Self {
            replicas: v.replica_acks,
            timeout_ms: v.ack_timeout_ms,
        }
    }
}

/// The connection for writes to the voice Redis under `v`'s [`Acks`]: with acknowledgements,
/// one apart from the process's shared connection ([`RedisHandle::conn_apart`]), since each
/// `WAIT` holds its connection on the server for up to `VOICE_REDIS_ACK_TIMEOUT_MS`, and reads
/// on the shared one must not queue behind it.
pub async fn writer(voice: &RedisHandle, v: &VoiceConfig) -> redis::RedisResult<RedisConn> {
    if v.replica_acks > 0 {
        voice.conn_apart().await
    } else {
        voice.conn().await
    }
}

/// What one script call returned, and whether enough replicas hold its writes.
struct Acked {
    value: redis::Value,
    /// `true` when the [`Acks`] asked for none, or that many replicas acknowledged.
    held: bool,
}

/// Calls `script` on the node of `keys`' slot (all keys in `stream`'s slot). With
/// `acks.replicas` > 0 the call, a write of the slot's `{tag}:ack` key and `WAIT` go in one
/// pipeline on one connection: a node that is not the slot's primary answers the keyed
/// commands with `MOVED` (or refuses `WAIT` as a replica), so an acknowledgement is only ever
/// counted from the primary that ran the script, over the connection that wrote. The `ack`
/// write makes `WAIT` cover everything that primary holds, also a submission found written
/// before (docs/voice-platform.md#failover).
async fn call(
    conn: &mut RedisConn,
    script: &Script,
    stream: &str,
    keys: &[String],
    args: &[Vec<u8>],
    acks: Acks,
) -> redis::RedisResult<Acked> {
    let mut inv = script.prepare_invoke();
    inv.key(keys).arg(args);
    if acks.replicas == 0 {
        let value = inv.invoke_async(conn).await?;
        return Ok(Acked { value, held: true });
    }
    let ack_key = format!("{{{}}}:ack", hash_tag(stream).unwrap_or(stream));
    let mut replies = acked_pipeline(conn, inv.evalsha_cmd(), &ack_key, acks).await?;
    if matches!(&replies[0], Err(e) if is_noscript(e)) {
        replies = acked_pipeline(conn, inv.eval_cmd(), &ack_key, acks).await?;
    }
    let mut replies = replies.into_iter();
    let (value, ack, waited) = match (replies.next(), replies.next(), replies.next()) {
        (Some(v), Some(a), Some(w)) => (v, a, w),
        _ => return Err(bad_reply("a script, SET and WAIT pipeline answered short")),
    };
    let value = match value.and_then(|v| ack.map(|_| v)) {
        Ok(v) => v,
        Err(e) => {
            // Not the slot's primary (MOVED, a replica, a node that lost the slot): let the
            // client learn the slot's owner through an ordinary keyed command, then fail.
            let _ = redis::cmd("EXISTS")
                .arg(&ack_key)
                .query_async::<i64>(conn)
                .await;
            return Err(e);
        }
    };
    let acked: i64 = redis::from_redis_value(waited?)?;
    Ok(Acked {
        value,
        held: acked >= i64::from(acks.replicas),
    })
}

/// `[script call, SET ack-key, WAIT]` as one pipeline whose replies come back one by one
/// (a server error in one does not hide the others).
async fn acked_pipeline(
    conn: &mut RedisConn,
    script_call: redis::Cmd,
    ack_key: &str,
    acks: Acks,
) -> redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> {
    let mut pipe = redis::pipe();
    pipe.add_command(script_call)
        .cmd("SET")
        .arg(ack_key)
        .arg(1)
        .cmd("WAIT")
        .arg(acks.replicas)
        .arg(acks.timeout_ms);
    pipe.ignore_errors().query_async(conn).await
}

fn bad_reply(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, what))
}

/// The result of [`submit`]: what happened to each entry, and whether the replicas asked for
/// hold them.
#[derive(Debug)]
pub struct Submitted {
    /// Per entry, in order.
    pub written: Vec<Written>,
    /// Enough replicas acknowledged (always `true` with [`Acks::NONE`]). When `false` the
    /// entries are on the primary but a failover could still lose them: the caller must not
    /// record them as handed off (a retry finds them, deduplicated).
    pub held: bool,
}

/// Adds `entries` to `stream` exactly once each; returns per entry what happened
/// ([`Written`]) and whether `acks` replicas hold it. `trim_before_ms` trims entries older
/// than that time (`MINID ~`), 0 = no trim.
pub async fn submit(
    conn: &mut RedisConn,
    stream: &str,
    kind: &str,
    entries: &[Entry],
    trim_before_ms: i64,
    acks: Acks,
) -> redis::RedisResult<Submitted> {
    if entries.is_empty() {
        return Ok(Submitted {
            written: Vec::new(),
            held: true,
        });
    }
    let mut keys = vec![stream.to_string()];
    keys.extend(
        entries
            .iter()
            .map(|e| dedupe_key(stream, kind, e.id, e.attempt, e.epoch)),
    );
    let trim = if trim_before_ms > 0 {
        format!("{trim_before_ms}-0")
    } else {
        String::new()
    };
    let mut args: Vec<Vec<u8>> = vec![
        DEDUPE_TTL_S.to_string().into_bytes(),
        trim.into_bytes(),
        FENCE.into(),
        MOVED.into(),
    ];
    for e in entries {
        args.push(e.fields.len().to_string().into_bytes());
        for (k, v) in &e.fields {
            args.push(k.as_bytes().to_vec());
            args.push(v.as_bytes().to_vec());
        }
    }
    let out = call(conn, &SUBMIT, stream, &keys, &args, acks).await?;
    let codes: Vec<i64> = redis::from_redis_value(out.value)?;
    Ok(Submitted {
        written: codes
            .into_iter()
            .map(|n| match n {
                1 => Written::Added,
                2 => Written::Fenced,
                _ => Written::Already,
            })
            .collect(),
        held: out.held,
    })
}

/// A control entry (`{callback_id, action, attempt, at}`) for the voice platform.
pub fn control_entry(id: Uuid, attempt: i16, action: &str) -> Entry {
    Entry {
        id,
        attempt,
        epoch: 0,
        fields: vec![
            ("callback_id", id.to_string()),
            ("action", action.to_string()),
            ("attempt", attempt.to_string()),
            ("at", jiff::Timestamp::now().to_string()),
        ],
    }
}

/// A cancel owed to the voice platform (`control_pending` in PostgreSQL).
#[derive(Debug, Clone, Copy)]
pub struct OwedCancel {
    /// The cancelled callback.
    pub id: Uuid,
    /// The attempt the cancel is about.
    pub attempt: i16,
    /// The attempt's hand-off epoch (the submission that is fenced or followed).
    pub epoch: i16,
    /// PostgreSQL recorded the attempt's submission (no fence needed).
    pub submitted: bool,
}

/// Settles owed cancels: fences the submissions not known to be written, then writes a control
/// entry (once, deduplicated) for every attempt whose submission is in the voice stream. Safe to
/// repeat. Returns how many control entries were added now. With
/// `VOICE_REDIS_REPLICA_ACKS` it fails unless that many replicas hold the fences and entries
/// (each acknowledged by the primary that wrote it: `call`), so the caller keeps the cancel
/// owed (`control_pending`) and settles it again after a failover
/// (docs/voice-platform.md#failover).
pub async fn settle_cancels(
    conn: &mut RedisConn,
    v: &VoiceConfig,
    owed: &[OwedCancel],
) -> redis::RedisResult<usize> {
    let acks = Acks::of(v);
    let unknown: Vec<&OwedCancel> = owed.iter().filter(|o| !o.submitted).collect();
    let mut fenced = std::collections::HashSet::new();
    let mut fences_held = true;
    if !unknown.is_empty() {
        let keys: Vec<String> = unknown
            .iter()
            .map(|o| dedupe_key(&v.stream, "sub", o.id, o.attempt, o.epoch))
            .collect();
        let codes;
        (codes, fences_held) = fence(conn, v, &keys, (DEDUPE_TTL_S, FENCE)).await?;
        fenced.extend(
            unknown
                .iter()
                .zip(codes)
                .filter(|(_, f)| *f == 1)
                .map(|(o, _)| (o.id, o.attempt)),
        );
    }
    // A submission found written is with the voice platform (it may be dialling): its control
    // entry goes now, whether or not a replica holds the fences of the others yet.
    let entries: Vec<Entry> = owed
        .iter()
        .filter(|o| !fenced.contains(&(o.id, o.attempt)))
        .map(|o| control_entry(o.id, o.attempt, "cancel"))
        .collect();
    let sent = submit(conn, &v.control_stream, "ctl", &entries, 0, acks).await?;
    if !fences_held {
        return Err(under_acked("cancel fences", acks));
    }
    if !sent.held {
        return Err(under_acked("cancel entries", acks));
    }
    Ok(sent
        .written
        .iter()
        .filter(|w| **w == Written::Added)
        .count())
}

/// Sets fence `value` for `ttl_s` on the submission dedupe `keys` (one slot: `v.stream`'s)
/// under `v`'s [`Acks`]; returns per key 1 (fenced, now or before) or 0 (the submission is in
/// the stream), and whether enough replicas hold the fences.
async fn fence(
    conn: &mut RedisConn,
    v: &VoiceConfig,
    keys: &[String],
    (ttl_s, value): (u64, &str),
) -> redis::RedisResult<(Vec<i64>, bool)> {
    let args = [ttl_s.to_string().into_bytes(), value.as_bytes().to_vec()];
    let out = call(conn, &FENCE_SCRIPT, &v.stream, keys, &args, Acks::of(v)).await?;
    Ok((redis::from_redis_value(out.value)?, out.held))
}

/// The error of a write fewer than `acks.replicas` replicas acknowledged in time.
fn under_acked(what: &str, acks: Acks) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "write not yet on enough voice Redis replicas",
        format!(
            "{what}: fewer than {} acknowledged within {} ms",
            acks.replicas, acks.timeout_ms
        ),
    ))
}

/// Whether attempt `attempt` (epoch `epoch`) of `id` was written to `voice_stream` (its dedupe
/// key holds a submission, not a fence).
pub async fn was_submitted(
    conn: &mut RedisConn,
    voice_stream: &str,
    id: Uuid,
    (attempt, epoch): (i16, i16),
) -> redis::RedisResult<bool> {
    let v: Option<String> = redis::cmd("GET")
        .arg(dedupe_key(voice_stream, "sub", id, attempt, epoch))
        .query_async(conn)
        .await?;
    Ok(v.is_some_and(|v| v != FENCE && v != MOVED))
}

/// How long a reschedule's fence lives until its commit is known: a reschedule that dies
/// before it can lift or keep its fence delays the callback's hand-off by at most this.
pub const MOVE_FENCE_TTL_S: u64 = 120;

/// Lifts (ARGV[2] = "lift") or keeps for ARGV[2] seconds a reschedule's fence. KEYS: the
/// dedupe key. ARGV: [`MOVED`], "lift" or a ttl.
const MOVE_FENCE_END_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == 'lift' then return redis.call('DEL', KEYS[1]) end
return redis.call('EXPIRE', KEYS[1], ARGV[2])";
static MOVE_FENCE_END: LazyLock<Script> = LazyLock::new(|| Script::new(MOVE_FENCE_END_LUA));

/// Fences the hand-off of attempt `attempt` (epoch `epoch`) of `id` before a reschedule
/// commits (for [`MOVE_FENCE_TTL_S`]): `true` when no submission of it is in the voice stream
/// (none will be while the fence holds), `false` when it was written (the callback is with
/// the voice platform and cannot move). With `VOICE_REDIS_REPLICA_ACKS` a fence no replica
/// acknowledged is lifted again and answered as an error (the reschedule must not commit on a
/// fence a failover could lose: docs/voice-platform.md#failover); so is a fence whose call
/// failed any other way (it may have been set).
pub async fn fence_for_move(
    conn: &mut RedisConn,
    v: &VoiceConfig,
    id: Uuid,
    (attempt, epoch): (i16, i16),
) -> redis::RedisResult<bool> {
    let keys = [dedupe_key(&v.stream, "sub", id, attempt, epoch)];
    let acks = Acks::of(v);
    let fenced = async {
        let (codes, held) = fence(conn, v, &keys, (MOVE_FENCE_TTL_S, MOVED)).await?;
        let fenced = codes.first() == Some(&1);
        if fenced && !held {
            return Err(under_acked("reschedule fence", acks));
        }
        Ok(fenced)
    }
    .await;
    if fenced.is_err() {
        // The fence may be set (a call that timed out on this side still runs on the server):
        // the reschedule will not commit, so lift it, or the old time's hand-off waits out
        // MOVE_FENCE_TTL_S. `EVAL`, not `EVALSHA`: sent on the same connection, it runs after
        // the fence even when its own answer times out here (no NOSCRIPT round trip to miss).
        // Only a reschedule's fence value is lifted, never a cancel's; a lift that never
        // reaches the server leaves the fence to its TTL.
        let lift = redis::cmd("EVAL")
            .arg(MOVE_FENCE_END_LUA)
            .arg(1)
            .arg(&keys[0])
            .arg(MOVED)
            .arg("lift")
            .query_async::<i64>(conn)
            .await;
        if let Err(e) = lift {
            tracing::warn!(callback.id = %id, error = %e, "lifting a refused reschedule's fence: no answer (it runs on the server after the calls queued before it)");
        }
    }
    fenced
}

/// Ends a reschedule's fence: committed (`keep`), it stays as long as any dedupe key, so the
/// old time's hand-off never happens; rolled back, it is lifted and the hand-off may go.
pub async fn end_move_fence(
    conn: &mut RedisConn,
    voice_stream: &str,
    id: Uuid,
    (attempt, epoch): (i16, i16),
    keep: bool,
) -> redis::RedisResult<()> {
    let how = if keep {
        DEDUPE_TTL_S.to_string()
    } else {
        "lift".to_string()
    };
    MOVE_FENCE_END
        .key(dedupe_key(voice_stream, "sub", id, attempt, epoch))
        .arg(MOVED)
        .arg(how)
        .invoke_async::<i64>(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_keys_share_the_stream_slot() {
        let id = Uuid::nil();
        assert_eq!(
            dedupe_key("NewCallbackStream", "sub", id, 2, 0),
            format!("{{NewCallbackStream}}:sub:{id}:2")
        );
        assert_eq!(
            dedupe_key("{voice}:NewCallbackStream", "ctl", id, 1, 0),
            format!("{{voice}}:ctl:{id}:1")
        );
        assert_eq!(
            dedupe_key("NewCallbackStream", "sub", id, 1, 3),
            format!("{{NewCallbackStream}}:sub:{id}:1.3"),
            "a rescheduled hand-off has a key of its own"
        );
    }
}
