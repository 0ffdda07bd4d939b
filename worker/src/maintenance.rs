//! PostgreSQL-side passes, each an indexed query that touches Redis only when it found work:
//! - control outbox: cancels owed to the voice platform (`control_pending`, set by a cancel of a
//!   submitted or soon-due callback, or an expiry) are settled (hand-off fenced, or a control
//!   entry through the deduplicating script) and then cleared, so a cancel is never lost when
//!   the API's own write failed (docs/voice-platform.md);
//! - TTL expiry: submitted callbacks not served within the service's `ttl_seconds` end
//!   COMPLETED/FAIL_TIMEOUT_TTL (and owe a cancel to the voice platform);
//! - gauges: `ges_monitor_size` by type;
//! - retention: finished callbacks (and their events) 14 days past their desired time are
//!   deleted in small batches with their Redis traces, plus expired idempotency keys and
//!   Click-To-Call-In requests that ended as long ago;
//!   unfinished ones past the window are first ended like an expiry (control entry owed), so
//!   retention never deletes a callback that is still waiting or in the voice platform's hands.

use std::time::{Duration, Instant};

use shared::{
    db::dispatch::{self, Ended},
    metrics,
    redis::{queue, voice},
};
use tokio_util::sync::CancellationToken;

use crate::{
    Worker,
    error::{Error, Result},
};

const BATCH: i64 = 500;
const GAUGE_EVERY: Duration = Duration::from_secs(30);

/// Runs the passes until `stop` fires.
pub async fn run(w: Worker, stop: CancellationToken) {
    let every = Duration::from_secs(w.cfg.worker.maintenance_s);
    let retention_every = Duration::from_secs(w.cfg.worker.retention_interval_s);
    let mut last_gauges: Option<Instant> = None;
    // First retention pass shortly after start, then on its own cadence.
    let mut next_retention = Instant::now() + every.min(Duration::from_secs(10));
    loop {
        if let Err(e) = expire(&w).await {
            tracing::warn!(error = %e, "expiry pass failed");
        }
        if let Err(e) = outbox(&w).await {
            tracing::warn!(error = %e, "control outbox pass failed");
        }
        if last_gauges.is_none_or(|t| t.elapsed() >= GAUGE_EVERY) {
            last_gauges = Some(Instant::now());
            if let Err(e) = gauges(&w).await {
                tracing::warn!(error = %e, "gauge pass failed");
            }
        }
        if Instant::now() >= next_retention {
            next_retention = Instant::now() + retention_every;
            if let Err(e) = retention(&w, &stop).await {
                tracing::warn!(error = %e, "retention pass failed");
            }
        }
        if crate::sleep_or_stop(every, &stop).await {
            return;
        }
    }
}

/// Sends owed control entries; returns how many were sent.
pub async fn outbox(w: &Worker) -> Result<usize> {
    let mut sent = 0;
    loop {
        let owed = {
            let client = w.db.get().await?;
            dispatch::control_pending(&client, BATCH).await?
        };
        if owed.is_empty() {
            return Ok(sent);
        }
        let cancels: Vec<voice::OwedCancel> = owed
            .iter()
            .map(|(id, (attempt, epoch), submitted)| voice::OwedCancel {
                id: *id,
                attempt: *attempt,
                epoch: *epoch,
                submitted: *submitted,
            })
            .collect();
        let v = &w.cfg.voice;
        let added = async {
            let mut conn = voice::writer(&w.voice, v).await?;
            voice::settle_cancels(&mut conn, v, &cancels).await
        }
        .await
        .map_err(Error::VoiceRedis)?;
        let ids: Vec<_> = owed.iter().map(|(id, ..)| *id).collect();
        {
            let client = w.db.get().await?;
            dispatch::clear_control(&client, &ids).await?;
        }
        ::metrics::counter!(metrics::CONTROL_SENT, "via" => "outbox").increment(added as u64);
        sent += ids.len();
        if owed.len() < BATCH as usize {
            return Ok(sent);
        }
    }
}

async fn expire(w: &Worker) -> Result<()> {
    loop {
        let ended = {
            let client = w.db.get().await?;
            dispatch::expire(&client, BATCH).await?
        };
        if ended.is_empty() {
            return Ok(());
        }
        ::metrics::counter!(metrics::EXPIRED, "cause" => "ttl").increment(ended.len() as u64);
        tracing::info!(count = ended.len(), "callbacks expired (FAIL_TIMEOUT_TTL)");
        leave_views(w, &ended).await?;
        if ended.len() < BATCH as usize {
            return Ok(());
        }
    }
}

/// Takes ended callbacks off their queue views and frees their places in the service's active
/// counts (in-queue checking, max_queued). A failure is repaired by the sweep's view check
/// (the rows changed) and the throttle re-seed.
async fn leave_views(w: &Worker, ended: &[Ended]) -> Result<()> {
    let mut conn = w.redis.conn().await?;
    for e in ended {
        shared::redis::schedule::unindex(&mut conn, &w.keys, e.id).await?;
        queue::dequeue(&mut conn, &w.keys, (&e.tenant, &e.service), e.id, None).await?;
        shared::redis::throttle::release(&mut conn, &w.keys, &e.tenant, &e.service, e.id).await?;
    }
    Ok(())
}

/// Ends unfinished callbacks past the retention window (TTL path, control entry owed), so
/// that the purge deletes only finished ones.
async fn expire_stale(w: &Worker, days: u32) -> Result<usize> {
    let mut total = 0;
    loop {
        let ended = {
            let client = w.db.get().await?;
            dispatch::expire_stale(&client, days, BATCH).await?
        };
        total += ended.len();
        if !ended.is_empty() {
            ::metrics::counter!(metrics::EXPIRED, "cause" => "retention")
                .increment(ended.len() as u64);
            tracing::info!(
                count = ended.len(),
                "unfinished callbacks past retention ended (FAIL_TIMEOUT_TTL)"
            );
            if let Err(e) = leave_views(w, &ended).await {
                tracing::warn!(error = %e, "removing Redis traces of ended callbacks failed; the sweep repairs it");
            }
        }
        if ended.len() < BATCH as usize {
            return Ok(total);
        }
    }
}

async fn gauges(w: &Worker) -> Result<()> {
    let client = w.db.get().await?;
    let (scheduled, queued) = dispatch::monitor_counts(&client).await?;
    ::metrics::gauge!(metrics::MONITOR_SIZE, "type" => "scheduled").set(scheduled as f64);
    ::metrics::gauge!(metrics::MONITOR_SIZE, "type" => "queued").set(queued as f64);
    Ok(())
}

/// One retention pass; returns how many callbacks were deleted.
pub async fn retention(w: &Worker, stop: &CancellationToken) -> Result<usize> {
    let days = w.cfg.worker.retention_days;
    if expire_stale(w, days).await? > 0 {
        // Their control entries go out now; the next pass deletes them.
        outbox(w).await?;
    }
    let mut total = 0;
    loop {
        let gone = {
            let client = w.db.get().await?;
            dispatch::purge(&client, days, BATCH).await?
        };
        if gone.is_empty() {
            break;
        }
        total += gone.len();
        ::metrics::counter!(metrics::PURGED).increment(gone.len() as u64);
        if let Err(e) = forget(w, &gone).await {
            tracing::warn!(error = %e, "removing Redis traces of purged callbacks failed");
        }
        if gone.len() < BATCH as usize
            || crate::sleep_or_stop(Duration::from_millis(50), stop).await
        {
            break;
        }
    }
    let client = w.db.get().await?;
    dispatch::purge_idempotency_keys(&client).await?;
    // Click-To-Call-In requests that ended (matched, or expired) as long ago as finished
    // callbacks are kept (docs/call-in.md#retention).
    shared::db::call_in::purge(&client, days, 20 * BATCH).await?;
    shared::db::slots::purge_past(
        &client,
        jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24),
        20 * BATCH,
    )
    .await?;
    if total > 0 {
        tracing::info!(count = total, "retention: callbacks deleted");
    }
    Ok(total)
}

/// Removes every Redis trace of deleted callbacks (index, claims, queue views).
async fn forget(w: &Worker, gone: &[Ended]) -> Result<()> {
    let mut conn = w.redis.conn().await?;
    for e in gone {
        shared::redis::schedule::unindex(&mut conn, &w.keys, e.id).await?;
        shared::redis::throttle::release(&mut conn, &w.keys, &e.tenant, &e.service, e.id).await?;
        redis::cmd("ZREM")
            .arg(w.keys.queue(&e.tenant, &e.service))
            .arg(e.id.to_string())
            .query_async::<i64>(&mut conn)
            .await?;
    }
    Ok(())
}
