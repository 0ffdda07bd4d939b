//! One claim-and-submit pass over one shard: claim → load → triage (release, move, pace) →
//! hand off to the voice stream → record in PostgreSQL → queue views → settle.
//!
//! Every step only *decides* what happens to its claims, in the pass's
//! [`Ledger`]; the claims are settled once, at the end, by
//! [`finish`] whether the steps succeeded or failed (see [`super::settle`] for the
//! exactly-once story).

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use shared::{
    db::dispatch::{self, DueCallback, Submitted},
    metrics,
    model::ServiceSettings,
    redis::{
        RedisConn, queue,
        voice::{self, Written},
    },
};
use uuid::Uuid;

use super::settle::Ledger;
use crate::{
    Backoff, Worker, claim, entry,
    error::Cause,
    pacing::{Ask, Pacer},
};

/// Due entries whose row says otherwise by more than this are moved to the row's time.
const EARLY_TOLERANCE_MS: i64 = 1_000;
/// Tries at recording a hand-off before the pass gives up and keeps the claims.
const RECORD_TRIES: usize = 4;

/// What one shard pass found.
#[derive(Debug, Default)]
pub struct ShardPass {
    /// How many members the claim took (callback ids and junk).
    pub claimed: usize,
    /// Earliest due score of the shard after the pass (ms, Redis clock).
    pub next_due_ms: Option<i64>,
    /// Earliest lease deadline of the shard.
    pub next_lease_ms: Option<i64>,
    /// The tag of the claim's lease announcement when no lease of the shard needs this worker
    /// to wake: nothing was in flight before the claim and the pass released or handed back
    /// everything it claimed (later leases are announced by their own claims). The dispatcher
    /// then drops that announcement when it arrives (docs/derived-state.md#wake-ups).
    pub released_tag: Option<u32>,
    /// Redis time of the claim.
    pub now_ms: i64,
    /// Whether the claim read the shard's in-flight head (rather than trusting the bound it
    /// was given, docs/derived-state.md#claims-that-know-the-leases).
    pub read_inflight: bool,
}

/// Why a pass failed (decides the backoff and the health metrics).
#[derive(Debug)]
pub enum PassError {
    /// The service Redis failed the claim or the settlement.
    ServiceRedis(redis::RedisError),
    /// The voice Redis refused the hand-off (the batch went back to the schedule).
    Voice(redis::RedisError),
    /// The claimed rows could not be read (they went back to the schedule).
    Load(shared::Error),
    /// Handed off but not recorded after `RECORD_TRIES` (4) tries (the claims stay in flight).
    NotRecorded(shared::Error),
}

impl std::fmt::Display for PassError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ServiceRedis(e) => write!(f, "service redis: {e}"),
            Self::Voice(e) => write!(f, "voice redis: {e}"),
            Self::Load(e) => write!(f, "database (loading claimed callbacks): {}", Cause(e)),
            Self::NotRecorded(e) => write!(f, "database (recording submissions): {}", Cause(e)),
        }
    }
}

/// A callback cleared to go now, with its service's settings.
struct Ready<'a> {
    cb: &'a DueCallback,
    settings: ServiceSettings,
}

fn local_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A shard's claim, taken and not yet worked through ([`claim()`], then [`finish`] or
/// [`give_back`]).
pub struct Claim {
    shard: u16,
    conn: RedisConn,
    claimed: claim::Claimed,
    /// Local time (ms) the claim was sent: its lease runs from about then.
    sent_ms: i64,
    /// What the claim was told of the shard's leases.
    known: claim::Known,
}

impl Claim {
    /// The tag of the lease announcement the claim published, if it leased anything and was
    /// asked to announce.
    pub fn announced(&self) -> Option<u32> {
        let c = &self.claimed;
        (c.announced && self.leased()).then_some(c.tag)
    }

    /// The lease it took and did not announce (a lone worker's: docs/derived-state.md#a-lone-worker):
    /// `(deadline, tag)`.
    pub fn unannounced(&self) -> Option<(i64, u32)> {
        let c = &self.claimed;
        (!c.announced && self.leased()).then_some((c.deadline_ms, c.tag))
    }

    fn leased(&self) -> bool {
        let c = &self.claimed;
        !(c.ids.is_empty() && c.junk.is_empty())
    }

    /// How long ago the claim was sent (ms).
    pub fn age_ms(&self) -> i64 {
        local_ms() - self.sent_ms
    }

    /// The connection, the claim's answer, and its ledger (every claim kept).
    fn open(self) -> (RedisConn, claim::Claimed, Ledger) {
        let ledger = Ledger::new(self.shard, &self.claimed);
        (self.conn, self.claimed, ledger)
    }
}

/// The first step of a pass over `shard`: claims its due entries on `conn`, with what the
/// dispatcher `known`s of the shard's leases and whether it expects `due` entries. Claims of
/// several shards can run at once (each on its own cluster slot); only this step waits on the
/// shard's node.
pub async fn claim(
    w: &Worker,
    mut conn: RedisConn,
    shard: u16,
    (known, due, announce): (claim::Known, bool, bool),
) -> Result<Claim, PassError> {
    let sent_ms = local_ms();
    let ask = claim::Ask {
        batch: w.cfg.worker.batch,
        lease_ms: w.cfg.worker.lease_ms,
        // Tells this claim's lease announcement apart from every other (docs/derived-state.md).
        tag: (Uuid::new_v4().as_u128() as u32).max(1),
        known,
        due,
        announce,
    };
    let claimed = claim::claim(&mut conn, &w.keys, shard, ask)
        .await
        .map_err(PassError::ServiceRedis)?;
    Ok(Claim {
        shard,
        conn,
        claimed,
        sent_ms,
        known,
    })
}

/// Gives a claim back untouched (the worker is stopping, or the claim waited too long for its
/// turn): every id returns to the schedule at its due time, and a wake-up tells every worker,
/// so the next claim takes it instead of waiting for the lease. A claim whose lease has run
/// out is left alone (another worker may hold it by now). If the settlement fails the claims
/// stay in flight until their lease runs out.
pub async fn give_back(w: &Worker, claim: Claim) {
    if claim.age_ms() >= i64::try_from(w.cfg.worker.lease_ms).unwrap_or(i64::MAX) {
        return;
    }
    let shard = claim.shard;
    let (mut conn, c, mut ledger) = claim.open();
    for (id, due) in &c.ids {
        ledger.hand_back(*id, due.unwrap_or(c.now_ms));
    }
    let earliest = ledger.earliest_hand_back();
    if let Err(e) = ledger.settle(&mut conn, &w.keys).await {
        tracing::warn!(error = %e, shard, "giving back the claims of a pass failed");
        return;
    }
    if let Some(at) = earliest
        && let Err(e) = shared::redis::schedule::announce(&mut conn, &w.keys, shard, at).await
    {
        tracing::debug!(error = %e, shard, "announcing given-back claims failed");
    }
}

/// The rest of the pass: works through the claims and settles each claim once.
pub async fn finish(w: &Worker, claim: Claim, pacer: &mut Pacer) -> Result<ShardPass, PassError> {
    // Redis time now: the claim's, plus how long it waited for its turn.
    let now_ms = claim.claimed.now_ms + claim.age_ms();
    let read_inflight = match claim.known {
        claim::Known::Nothing => true,
        claim::Known::Empty => false,
        claim::Known::From(t) => claim.claimed.now_ms >= t,
    };
    let (mut conn, c, mut ledger) = claim.open();
    let worked = work(w, &mut conn, now_ms, &mut ledger, pacer).await;
    let next_due_ms = [c.next_due_ms, ledger.earliest_hand_back()]
        .into_iter()
        .flatten()
        .min();
    let settled = ledger.settle(&mut conn, &w.keys).await;
    match (worked, settled) {
        (Ok(()), Ok(plan)) => {
            let claimed = c.ids.len() + c.junk.len();
            let ours_gone = c.inflight_was_empty && claimed > 0 && plan.kept == 0;
            Ok(ShardPass {
                claimed,
                next_due_ms,
                next_lease_ms: c.next_lease_ms.filter(|_| !ours_gone),
                released_tag: (ours_gone && c.announced).then_some(c.tag),
                now_ms: c.now_ms,
                read_inflight,
            })
        }
        (Ok(()), Err(e)) => Err(PassError::ServiceRedis(e)),
        (Err(e), Ok(_)) => Err(e),
        (Err(e), Err(e2)) => {
            // The leases run out and the claims are re-claimed then. The settlement's error is
            // the one returned: it failed on the service Redis, which the health gauge reports.
            tracing::warn!(error = %e, "a pass failed, and settling its claims failed too");
            Err(PassError::ServiceRedis(e2))
        }
    }
}

/// The steps of a pass between claim and settlement; each decides fates in `ledger`.
async fn work(
    w: &Worker,
    conn: &mut RedisConn,
    now_ms: i64,
    ledger: &mut Ledger,
    pacer: &mut Pacer,
) -> Result<(), PassError> {
    let ids = ledger.ids().to_vec();
    if ids.is_empty() {
        return Ok(());
    }
    let rows = match load(w, &ids).await {
        Ok(rows) => rows,
        Err(e) => {
            // Keep them due: back in the schedule one second from now.
            for id in &ids {
                ledger.hand_back(*id, now_ms + 1_000);
            }
            return Err(PassError::Load(e));
        }
    };
    let ready = triage(&ids, &rows, now_ms, ledger);
    let ready = pace(w, conn, now_ms, (pacer, ledger), ready).await;
    if ready.is_empty() {
        return Ok(());
    }
    let written = hand_off(w, &ready, now_ms, ledger).await?;
    let ready = drop_fenced(ready, &written, now_ms, ledger);
    if ready.is_empty() {
        return Ok(());
    }
    let marked = record(w, &ready).await?;
    for r in &ready {
        ledger.release(r.cb.id);
    }
    enqueue_views(w, conn, &ready, marked).await;
    Ok(())
}

async fn load(w: &Worker, ids: &[Uuid]) -> Result<Vec<DueCallback>, shared::Error> {
    let client = w.db.get().await?;
    dispatch::load(&client, ids).await
}

/// Sorts the claimed rows: no longer pending → released; moved later → handed back at the
/// row's time; the rest may go as far as pacing lets them.
fn triage<'a>(
    ids: &[Uuid],
    rows: &'a [DueCallback],
    now_ms: i64,
    ledger: &mut Ledger,
) -> Vec<Ready<'a>> {
    let by_id: HashMap<Uuid, &DueCallback> = rows.iter().map(|r| (r.id, r)).collect();
    let mut ready = Vec::new();
    for id in ids {
        // Purged, cancelled, submitted, or moved on.
        let Some(cb) = by_id.get(id).copied().filter(|cb| cb.pending()) else {
            ledger.release(*id);
            continue;
        };
        let dispatch_ms = cb.dispatch_at.as_millisecond();
        if dispatch_ms > now_ms + EARLY_TOLERANCE_MS {
            ledger.hand_back(*id, dispatch_ms); // re-scheduled (retry) after it was indexed
            continue;
        }
        let settings = cb.settings.clone().unwrap_or_default();
        ready.push(Ready { cb, settings });
    }
    ready
}

/// Keeps what pacing lets go now, in claim order; hands each of the rest back to the schedule
/// at the slot pacing gave it (docs/pacing.md).
async fn pace<'a>(
    w: &Worker,
    conn: &mut RedisConn,
    now_ms: i64,
    (pacer, ledger): (&mut Pacer, &mut Ledger),
    ready: Vec<Ready<'a>>,
) -> Vec<Ready<'a>> {
    let mut order: Vec<(&str, &str)> = Vec::new();
    let mut asks: Vec<Ask<'_>> = Vec::new();
    for r in &ready {
        let key = (r.cb.tenant.as_str(), r.cb.service.as_str());
        match order.iter().position(|k| *k == key) {
            Some(i) => asks[i].n += 1,
            None => {
                order.push(key);
                asks.push(Ask {
                    tenant: key.0,
                    service: key.1,
                    rate: r.settings.dispatch_rate_per_second,
                    n: 1,
                });
            }
        }
    }
    let paced = pacer.admit(conn, &w.keys, now_ms, &asks).await;
    let mut seen = vec![0u32; order.len()];
    let mut go = Vec::with_capacity(ready.len());
    for r in ready {
        let key = (r.cb.tenant.as_str(), r.cb.service.as_str());
        let Some(i) = order.iter().position(|k| *k == key) else {
            continue;
        };
        let k = seen[i];
        seen[i] += 1;
        match k.checked_sub(paced[i].granted) {
            None => go.push(r),
            Some(late) => {
                ledger.hand_back(r.cb.id, paced[i].not_now.slot(late).max(now_ms + 1));
                ::metrics::counter!(metrics::DISPATCH_PACED).increment(1);
            }
        }
    }
    go
}

/// Hands `ready` to the voice stream in one deduplicating script; returns what it did with
/// each. When the voice Redis refuses it, the batch goes back to the schedule as still due (the
/// dedupe key makes the retry safe even if the refused call did reach Redis). `now_ms` (the
/// claim's Redis time) is the time priorities are escalated to.
async fn hand_off(
    w: &Worker,
    ready: &[Ready<'_>],
    now_ms: i64,
    ledger: &mut Ledger,
) -> Result<Vec<Written>, PassError> {
    let ges_url = &w.cfg.voice.ges_url;
    let entries: Vec<voice::Entry> = ready
        .iter()
        .map(|r| entry::build(r.cb, &r.settings, ges_url, now_ms))
        .collect();
    let horizon = i64::try_from(w.cfg.worker.stream_horizon_s).unwrap_or(0) * 1_000;
    let trim_before = if horizon > 0 { local_ms() - horizon } else { 0 };
    let submitted = async {
        let mut v = voice::writer(&w.voice, &w.cfg.voice).await?;
        let (stream, acks) = (&w.cfg.voice.stream, voice::Acks::of(&w.cfg.voice));
        let sent = voice::submit(&mut v, stream, "sub", &entries, trim_before, acks).await?;
        // Counted as written now, whether or not the replicas acknowledge it in time (the
        // retry of a batch handed back for that counts as duplicates).
        count_hand_off(ready, &sent.written);
        held(sent.held, acks)?;
        Ok(sent.written)
    }
    .await;
    match submitted {
        Ok(written) => {
            metrics::set_health(metrics::ORS_REDIS_STATUS, true);
            Ok(written)
        }
        Err(e) => {
            ::metrics::counter!(metrics::CB_SUBMIT_FAILED).increment(ready.len() as u64);
            let now = local_ms();
            for r in ready {
                ledger.hand_back(r.cb.id, r.cb.dispatch_at.as_millisecond().min(now));
            }
            Err(PassError::Voice(e))
        }
    }
}

/// With `VOICE_REDIS_REPLICA_ACKS`, fails unless that many replicas of the stream's primary
/// hold the hand-off (`held`, acknowledged by the primary that wrote it): then it goes back to
/// the schedule as still due, and the retry finds the entry (added before) or, if a failover
/// lost it, adds it again (docs/voice-platform.md#failover).
fn held(held: bool, acks: voice::Acks) -> redis::RedisResult<()> {
    if held {
        return Ok(());
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Io,
        "hand-off not yet on enough voice Redis replicas",
        format!(
            "fewer than {} acknowledged within {} ms",
            acks.replicas, acks.timeout_ms
        ),
    )))
}

/// Dispatch metrics of one hand-off (`written[i]`: what became of entry `i`).
fn count_hand_off(ready: &[Ready<'_>], written: &[Written]) {
    let now = local_ms();
    let (mut fresh, mut again) = (0u64, 0u64);
    for (r, w) in ready.iter().zip(written) {
        match w {
            Written::Added => {
                fresh += 1;
                let late = (now - r.cb.dispatch_at.as_millisecond()).max(0) as f64 / 1_000.0;
                ::metrics::histogram!(metrics::DISPATCH_LATENESS).record(late);
            }
            Written::Already => again += 1,
            Written::Fenced => {}
        }
    }
    ::metrics::counter!(metrics::DISPATCHED).increment(fresh);
    ::metrics::counter!(metrics::DISPATCH_DUPLICATES).increment(again);
}

/// Drops the submissions fenced before they were written (a cancel, or a reschedule, whose
/// statement committed or is committing after this pass loaded the row): nothing reached the
/// stream, so nothing is recorded and no cancel is owed for them. Recording them would claim a
/// hand-off the stream does not hold (docs/voice-platform.md#cancel). Each goes back to the
/// schedule a second from now, where the next load decides it from the row as it is then:
/// cancelled → released; moved → handed back at its new time; a move that was refused (fence
/// lifted) → handed off, a second late rather than at the sweep's next pass.
fn drop_fenced<'a>(
    ready: Vec<Ready<'a>>,
    written: &[Written],
    now_ms: i64,
    ledger: &mut Ledger,
) -> Vec<Ready<'a>> {
    ready
        .into_iter()
        .zip(written)
        .filter_map(|(r, w)| {
            if *w != Written::Fenced {
                return Some(r);
            }
            tracing::info!(
                callback.id = %r.cb.id,
                attempt = r.cb.attempt,
                "hand-off refused: the attempt was fenced by a cancel or a reschedule; not recorded"
            );
            ledger.hand_back(r.cb.id, now_ms + 1_000);
            None
        })
        .collect()
}

/// Records the hand-off in PostgreSQL (a few tries); returns the ids marked now with their
/// submission time (ms). Failing, the claims stay in flight: the lease runs out, and the
/// re-claim finds the dedupe key and records them then.
async fn record(w: &Worker, ready: &[Ready<'_>]) -> Result<Vec<(Uuid, i64)>, PassError> {
    let items: Vec<Submitted> = ready
        .iter()
        .map(|r| Submitted {
            id: r.cb.id,
            attempt: r.cb.attempt,
            epoch: r.cb.handoff_epoch,
            ttl_seconds: i32::try_from(r.settings.ttl_seconds).unwrap_or(i32::MAX),
        })
        .collect();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
    let mut tries = 0;
    loop {
        let r = async {
            let client = w.db.get().await?;
            dispatch::mark_submitted(&client, &items).await
        }
        .await;
        tries += 1;
        match r {
            Ok(marked) => return Ok(marked),
            Err(e) if tries >= RECORD_TRIES => return Err(PassError::NotRecorded(e)),
            Err(e) => tracing::warn!(error = %e, "marking submitted failed; retrying"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Adds what became QUEUED now to its service's queue view (positionInQueue). A failure is
/// counted and left to the sweep's view repair.
async fn enqueue_views(
    w: &Worker,
    conn: &mut RedisConn,
    ready: &[Ready<'_>],
    marked: Vec<(Uuid, i64)>,
) {
    let marked: HashSet<Uuid> = marked.into_iter().map(|(id, _)| id).collect();
    let mut views: HashMap<(&str, &str), Vec<(Uuid, i64)>> = HashMap::new();
    for r in ready.iter().filter(|r| marked.contains(&r.cb.id)) {
        // Ordered by what the callback waits since: its desired time
        // (docs/decisions.md#priority-escalation).
        let since = r.cb.desired_time.as_millisecond();
        views
            .entry((r.cb.tenant.as_str(), r.cb.service.as_str()))
            .or_default()
            .push((r.cb.id, queue::score(r.cb.priority, since)));
    }
    for ((tenant, service), members) in views {
        if let Err(e) = queue::enqueue(conn, &w.keys, tenant, service, &members).await {
            ::metrics::counter!(metrics::REDIS_WRITE_FAILED, "op" => "queue_view").increment(1);
            tracing::warn!(error = %e, "queue view update failed; the reconciler repairs it");
        }
    }
}
