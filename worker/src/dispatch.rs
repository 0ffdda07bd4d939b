//! The dispatch loop.
//!
//! Idle path: the loop knows each shard's earliest due score and lease deadline (every claim
//! returns them) and sleeps until the earliest of those, a wake-up from [`crate::wake`], or the
//! safety poll (`WORKER_SAFETY_POLL_S`, which reads only the shards' heads). Nothing is polled
//! per callback or per minute while callbacks wait.
//!
//! Busy path, per shard: claim up to `WORKER_BATCH` due ids (lease `WORKER_LEASE_MS`), load the
//! rows, drop what is no longer pending (cancelled, already submitted, purged), hand back what
//! pacing holds, submit the rest in one deduplicating script, mark them submitted in PostgreSQL
//! and release the claims. A failed submission (voice Redis down) counts `CB_SUBMIT_FAILED`,
//! hands the batch back as still due and backs off; the dedupe key makes the later retry safe
//! even if the failed call had in fact reached Redis.

use std::{collections::HashMap, time::Duration};

use jiff::Timestamp;
use shared::{
    db::dispatch::{self, DueCallback, Submitted},
    metrics,
    model::ServiceSettings,
    redis::{queue, voice},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Backoff, Signal, Worker, claim, entry, pacing::Pacer};

/// Due entries whose row says otherwise by more than this are moved to the row's time.
const EARLY_TOLERANCE_MS: i64 = 1_000;

/// What one shard pass found.
#[derive(Debug, Default)]
struct ShardPass {
    claimed: usize,
    next_due_ms: Option<i64>,
    next_lease_ms: Option<i64>,
    now_ms: i64,
}

/// Why a pass failed (decides the backoff and the metrics).
#[derive(Debug)]
enum PassError {
    ServiceRedis(redis::RedisError),
    Voice(redis::RedisError),
    Db(shared::Error),
}

impl std::fmt::Display for PassError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ServiceRedis(e) => write!(f, "service redis: {e}"),
            Self::Voice(e) => write!(f, "voice redis: {e}"),
            Self::Db(e) => write!(f, "database: {e}"),
        }
    }
}

fn local_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// Runs the dispatch loop until `stop` fires.
pub async fn run(w: Worker, mut rx: mpsc::Receiver<Signal>, stop: CancellationToken) {
    let shards = usize::from(w.keys.shards());
    let safety = Duration::from_secs(w.cfg.worker.worker_safety_poll_s);
    let mut pacer = Pacer::new(w.cfg.worker.worker_tenant_rate);
    // Per shard: earliest due score and lease deadline as last seen, and the earliest time
    // announced on the wake channel since the shard's last pass (Redis clock, ms).
    let mut heads: Vec<(Option<i64>, Option<i64>)> = vec![(None, None); shards];
    let mut announced: Vec<Option<i64>> = vec![None; shards];
    // Shards to pass over now (all at start).
    let mut pending: Vec<bool> = vec![true; shards];
    // Redis clock minus local clock, so sleeps follow Redis time.
    let mut offset_ms = 0i64;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        if stop.is_cancelled() {
            break;
        }
        if pending.iter().any(|p| *p) {
            let mut failed = None;
            for shard in 0..w.keys.shards() {
                let i = usize::from(shard);
                if !pending[i] || stop.is_cancelled() {
                    continue;
                }
                let before = local_ms();
                match pass(&w, shard, &mut pacer).await {
                    Ok(p) => {
                        heads[i] = (p.next_due_ms, p.next_lease_ms);
                        announced[i] = None;
                        // Measured against the time before the call: errs towards waking a
                        // little early (a cheap empty claim), never late.
                        offset_ms = p.now_ms - before;
                        // A full batch: more may be due right now.
                        pending[i] = p.claimed >= w.cfg.worker.worker_batch;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                match &e {
                    PassError::ServiceRedis(_) => {
                        metrics::set_health(metrics::REDIS_CONNECTION, false)
                    }
                    PassError::Voice(_) => metrics::set_health(metrics::ORS_REDIS_STATUS, false),
                    PassError::Db(_) => {}
                }
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "dispatch pass failed");
                if crate::sleep_or_stop(d, &stop).await {
                    break;
                }
                continue;
            }
            backoff.reset();
            metrics::set_health(metrics::REDIS_CONNECTION, true);
            continue;
        }

        // Sleep until the earliest known due time, lease deadline or announcement.
        let target = |i: usize| {
            [heads[i].0, heads[i].1, announced[i]]
                .into_iter()
                .flatten()
                .min()
        };
        let earliest = (0..shards).filter_map(target).min();
        let now = local_ms();
        let (sleep, is_safety_poll) = match earliest {
            Some(t) => {
                let ms = u64::try_from((t - offset_ms - now).max(0)).unwrap_or(0);
                let d = Duration::from_millis(ms);
                if d >= safety {
                    (safety, true)
                } else {
                    (d, false)
                }
            }
            None => (safety, true),
        };
        if !sleep.is_zero() {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(sleep) => {}
                msg = rx.recv() => {
                    match msg {
                        Some(Signal::At(t, shard)) => {
                            let slots = match shard {
                                Some(s) if usize::from(s) < shards => usize::from(s)..usize::from(s) + 1,
                                _ => 0..shards,
                            };
                            for i in slots {
                                announced[i] = Some(announced[i].map_or(t, |a| a.min(t)));
                            }
                        }
                        Some(Signal::Resync) => pending.fill(true),
                        None => break,
                    }
                    continue;
                }
            }
            if is_safety_poll {
                // Nothing known to be due before the poll: re-read the heads (cheap) in case a
                // wake-up was missed.
                match w.redis.conn().await {
                    Ok(mut c) => match claim::heads(&mut c, &w.keys).await {
                        Ok(h) => heads = h,
                        Err(e) => {
                            tracing::warn!(error = %e, "safety poll failed");
                            pending.fill(true);
                        }
                    },
                    Err(_) => pending.fill(true),
                }
                continue;
            }
        }
        // Pass over every shard whose time has come.
        let now = local_ms() + offset_ms;
        for (i, p) in pending.iter_mut().enumerate() {
            *p = target(i).is_some_and(|t| t <= now + 1);
        }
        if !pending.iter().any(|p| *p) {
            // Timer granularity: the earliest shard is due within a millisecond or two.
            if let Some(i) = (0..shards).min_by_key(|i| target(*i).unwrap_or(i64::MAX)) {
                pending[i] = true;
            }
        }
    }
    tracing::info!("dispatcher stopped claiming");
}

/// One claim-and-submit pass over one shard.
async fn pass(w: &Worker, shard: u16, pacer: &mut Pacer) -> Result<ShardPass, PassError> {
    let mut conn = w.redis.conn().await.map_err(PassError::ServiceRedis)?;
    let c = claim::claim(
        &mut conn,
        &w.keys,
        shard,
        w.cfg.worker.worker_batch,
        w.cfg.worker.worker_lease_ms,
    )
    .await
    .map_err(PassError::ServiceRedis)?;
    let mut result = ShardPass {
        claimed: c.ids.len() + c.junk.len(),
        next_due_ms: c.next_due_ms,
        next_lease_ms: c.next_lease_ms,
        now_ms: c.now_ms,
    };
    if !c.junk.is_empty() {
        claim::release(&mut conn, &w.keys, shard, &c.junk)
            .await
            .map_err(PassError::ServiceRedis)?;
    }
    if c.ids.is_empty() {
        return Ok(result);
    }
    let ids: Vec<Uuid> = c.ids.iter().map(|(id, _)| *id).collect();
    let rows = match load(w, &ids).await {
        Ok(rows) => rows,
        Err(e) => {
            // Keep them due: back in the schedule one second from now.
            let back: Vec<(Uuid, i64)> = ids.iter().map(|id| (*id, c.now_ms + 1_000)).collect();
            let _ = claim::hand_back(&mut conn, &w.keys, shard, &back).await;
            return Err(PassError::Db(e));
        }
    };
    let by_id: HashMap<Uuid, &DueCallback> = rows.iter().map(|r| (r.id, r)).collect();

    let mut done: Vec<String> = Vec::new();
    let mut back: Vec<(Uuid, i64)> = Vec::new();
    let mut ready: Vec<(&DueCallback, ServiceSettings)> = Vec::new();
    let mut deferred: HashMap<(&str, &str), u32> = HashMap::new();
    for id in &ids {
        let Some(cb) = by_id.get(id) else {
            done.push(id.to_string()); // purged
            continue;
        };
        if !cb.pending() {
            done.push(id.to_string()); // cancelled, submitted, or moved on
            continue;
        }
        let dispatch_ms = cb.dispatch_at.as_millisecond();
        if dispatch_ms > c.now_ms + EARLY_TOLERANCE_MS {
            back.push((*id, dispatch_ms)); // re-scheduled (retry) after it was indexed
            continue;
        }
        let settings = cb.settings.clone().unwrap_or_default();
        match pacer.admit(&cb.tenant, &cb.service, settings.dispatch_rate_per_second) {
            Ok(()) => ready.push((cb, settings)),
            Err(not_now) => {
                let k = deferred
                    .entry((cb.tenant.as_str(), cb.service.as_str()))
                    .or_default();
                let delay = not_now.wait + not_now.spacing * *k;
                *k += 1;
                let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                back.push((*id, c.now_ms + delay_ms.max(1)));
                ::metrics::counter!(metrics::DISPATCH_PACED).increment(1);
            }
        }
    }
    if !back.is_empty() {
        claim::hand_back(&mut conn, &w.keys, shard, &back)
            .await
            .map_err(PassError::ServiceRedis)?;
        // The claim reported the shard's head before these went back: wake for them too.
        let earliest_back = back.iter().map(|(_, at)| *at).min();
        result.next_due_ms = [result.next_due_ms, earliest_back]
            .into_iter()
            .flatten()
            .min();
    }
    if !ready.is_empty()
        && let Err(e) = submit(w, &mut conn, shard, &ready, &mut done).await
    {
        let _ = claim::release(&mut conn, &w.keys, shard, &done).await;
        return Err(e);
    }
    if !done.is_empty() {
        claim::release(&mut conn, &w.keys, shard, &done)
            .await
            .map_err(PassError::ServiceRedis)?;
    }
    Ok(result)
}

async fn load(w: &Worker, ids: &[Uuid]) -> Result<Vec<DueCallback>, shared::Error> {
    let client = w.db.get().await?;
    dispatch::load(&client, ids).await
}

/// Submits `ready` to the voice stream, records it in PostgreSQL, and adds the finished ids to
/// `done` (their claims are released by the caller).
async fn submit(
    w: &Worker,
    conn: &mut shared::redis::RedisConn,
    shard: u16,
    ready: &[(&DueCallback, ServiceSettings)],
    done: &mut Vec<String>,
) -> Result<(), PassError> {
    let entries: Vec<voice::Entry> = ready
        .iter()
        .map(|(cb, s)| entry::build(cb, s, &w.cfg.voice.ges_url))
        .collect();
    let horizon = i64::try_from(w.cfg.worker.worker_stream_horizon_s).unwrap_or(0) * 1_000;
    let trim_before = if horizon > 0 { local_ms() - horizon } else { 0 };
    let submitted = async {
        let mut v = w.voice.conn().await?;
        voice::submit(
            &mut v,
            &w.cfg.voice.voice_stream,
            "sub",
            &entries,
            trim_before,
        )
        .await
    }
    .await;
    let added = match submitted {
        Ok(added) => added,
        Err(e) => {
            ::metrics::counter!(metrics::CB_SUBMIT_FAILED).increment(ready.len() as u64);
            let now = local_ms();
            let back: Vec<(Uuid, i64)> = ready
                .iter()
                .map(|(cb, _)| (cb.id, cb.dispatch_at.as_millisecond().min(now)))
                .collect();
            if let Err(e2) = claim::hand_back(conn, &w.keys, shard, &back).await {
                // The leases expire and the batch is re-claimed then.
                tracing::warn!(error = %e2, "hand-back after failed submission failed");
            }
            return Err(PassError::Voice(e));
        }
    };
    metrics::set_health(metrics::ORS_REDIS_STATUS, true);
    let now = local_ms();
    let mut fresh = 0u64;
    for ((cb, _), was_added) in ready.iter().zip(&added) {
        if *was_added {
            fresh += 1;
            let late = (now - cb.dispatch_at.as_millisecond()).max(0) as f64 / 1_000.0;
            ::metrics::histogram!(metrics::DISPATCH_LATENESS).record(late);
        }
    }
    ::metrics::counter!(metrics::DISPATCHED).increment(fresh);
    ::metrics::counter!(metrics::DISPATCH_DUPLICATES).increment(ready.len() as u64 - fresh);

    let items: Vec<Submitted> = ready
        .iter()
        .map(|(cb, s)| Submitted {
            id: cb.id,
            attempt: cb.attempt,
            ttl_seconds: i32::try_from(s.ttl_seconds).unwrap_or(i32::MAX),
        })
        .collect();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
    let mut marked = None;
    for _ in 0..4 {
        let r = async {
            let client = w.db.get().await?;
            dispatch::mark_submitted(&client, &items).await
        }
        .await;
        match r {
            Ok(m) => {
                marked = Some(m);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "marking submitted failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
    let Some(marked) = marked else {
        // In the stream but not recorded: the claims stay in flight, the lease expires, the
        // re-claim finds the dedupe key and records them then.
        return Err(PassError::Db(shared::Error::unavailable(
            "could not record submissions",
        )));
    };
    done.extend(ready.iter().map(|(cb, _)| cb.id.to_string()));

    // Queue views (positionInQueue) for what became QUEUED now.
    let when: HashMap<Uuid, i64> = marked.into_iter().collect();
    let mut views: HashMap<(&str, &str), Vec<(Uuid, i64)>> = HashMap::new();
    for (cb, _) in ready {
        if let Some(t) = when.get(&cb.id) {
            views
                .entry((cb.tenant.as_str(), cb.service.as_str()))
                .or_default()
                .push((cb.id, queue::score(cb.priority, *t)));
        }
    }
    for ((tenant, service), members) in views {
        if let Err(e) = queue::enqueue(conn, &w.keys, tenant, service, &members).await {
            ::metrics::counter!(metrics::REDIS_WRITE_FAILED, "op" => "queue_view").increment(1);
            tracing::warn!(error = %e, "queue view update failed; the reconciler repairs it");
        }
    }
    Ok(())
}
