//! Reconciler: PostgreSQL is the truth, the service Redis a derived copy (invariant 2).
//!
//! At start, and whenever the copy may be gone, it rebuilds the schedule index
//! (`callbacks_pending_idx`) and the queue views (`callbacks_active_idx`) in pages of 1,000 rows
//! with `ZADD` only (idempotent: an entry added twice or added while being claimed is harmless,
//! because every claim re-reads the row and the voice write is deduplicated).
//!
//! "May be gone" is detected cheaply: the marker key holds the Redis `run_id` seen when the
//! index was last built; every `WORKER_RECONCILE_CHECK_S` one `GET` checks it (a `FLUSHALL`
//! removes it), and after the wake subscription reconnects `INFO server` tells whether Redis
//! restarted. The marker is written *before* a rebuild, so a flush during a rebuild removes it
//! again and the next check repeats the rebuild.

use std::{collections::HashMap, time::Duration};

use shared::{db::dispatch, metrics, redis::queue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Backoff, Signal, Worker};

const PAGE: i64 = 1_000;

/// Runs the reconciler until `stop` fires.
pub async fn run(w: Worker, tx: mpsc::Sender<Signal>, stop: CancellationToken) {
    let check_every = Duration::from_secs(w.cfg.worker.worker_reconcile_check_s);
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let mut cause = Some("start");
    let mut run_id = String::new();
    loop {
        if let Some(why) = cause {
            match rebuild(&w, &stop, why).await {
                Ok(Some(id)) => {
                    run_id = id;
                    cause = None;
                    backoff.reset();
                    let _ = tx.try_send(Signal::Resync);
                }
                Ok(None) => return, // stopped
                Err(e) => {
                    tracing::warn!(error = %e, "index rebuild failed; retrying");
                    if crate::sleep_or_stop(backoff.next_delay(), &stop).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let full = tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(check_every) => false,
            () = w.reconcile_check.notified() => true,
        };
        match check(&w, &run_id, full).await {
            Ok(None) => {}
            Ok(Some(why)) => cause = Some(why),
            Err(e) => tracing::warn!(error = %e, "reconcile check failed"),
        }
    }
}

/// One check: the marker (one `GET`), plus the run id when `full`. Returns why to rebuild.
async fn check(w: &Worker, run_id: &str, full: bool) -> anyhow::Result<Option<&'static str>> {
    let mut conn = w.redis.conn().await?;
    let marker: Option<String> = redis::cmd("GET")
        .arg(w.keys.marker())
        .query_async(&mut conn)
        .await?;
    if marker.is_none() {
        return Ok(Some("marker_missing"));
    }
    if full && !w.redis.is_cluster() && current_run_id(w).await? != run_id {
        return Ok(Some("run_id_changed"));
    }
    Ok(None)
}

async fn current_run_id(w: &Worker) -> anyhow::Result<String> {
    if w.redis.is_cluster() {
        return Ok("cluster".into());
    }
    let mut conn = w.redis.conn().await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// Rebuilds the index and queue views; returns the run id recorded in the marker (`None` if
/// stopped midway).
async fn rebuild(
    w: &Worker,
    stop: &CancellationToken,
    why: &'static str,
) -> anyhow::Result<Option<String>> {
    let started = std::time::Instant::now();
    let run_id = current_run_id(w).await?;
    let mut conn = w.redis.conn().await?;
    redis::cmd("SET")
        .arg(w.keys.marker())
        .arg(&run_id)
        .query_async::<()>(&mut conn)
        .await?;

    let mut indexed = 0usize;
    let mut earliest: Option<i64> = None;
    let mut after = None;
    loop {
        if stop.is_cancelled() {
            return Ok(None);
        }
        let page = {
            let client = w.db.get().await?;
            dispatch::pending_page(&client, after, PAGE).await?
        };
        let Some(last) = page.last() else { break };
        after = Some((last.1, last.0));
        let mut by_shard: HashMap<u16, Vec<(i64, String)>> = HashMap::new();
        for (id, at) in &page {
            let ms = at.as_millisecond();
            earliest = Some(earliest.map_or(ms, |e| e.min(ms)));
            by_shard
                .entry(w.keys.shard_of(id))
                .or_default()
                .push((ms, id.to_string()));
        }
        for (shard, members) in by_shard {
            redis::cmd("ZADD")
                .arg(w.keys.sched(shard))
                .arg(&members)
                .query_async::<i64>(&mut conn)
                .await?;
        }
        indexed += page.len();
        if page.len() < PAGE as usize {
            break;
        }
    }

    let mut queued = 0usize;
    let mut after = Uuid::nil();
    loop {
        if stop.is_cancelled() {
            return Ok(None);
        }
        let page = {
            let client = w.db.get().await?;
            dispatch::active_page(&client, after, PAGE).await?
        };
        let Some(last) = page.last() else { break };
        after = last.id;
        let mut by_service: HashMap<(&str, &str), Vec<(Uuid, i64)>> = HashMap::new();
        for a in &page {
            by_service
                .entry((a.tenant.as_str(), a.service.as_str()))
                .or_default()
                .push((
                    a.id,
                    queue::score(a.priority, a.submitted_at.as_millisecond()),
                ));
        }
        for ((tenant, service), members) in by_service {
            queue::enqueue(&mut conn, &w.keys, tenant, service, &members).await?;
        }
        queued += page.len();
        if page.len() < PAGE as usize {
            break;
        }
    }
    if let Some(t) = earliest {
        // Other workers may be asleep past what was just re-added.
        redis::cmd("PUBLISH")
            .arg(w.keys.wake_channel())
            .arg(t)
            .query_async::<i64>(&mut conn)
            .await?;
    }
    ::metrics::counter!(metrics::RECONCILE_REBUILDS, "cause" => why).increment(1);
    tracing::info!(
        cause = why,
        indexed,
        queued,
        took_ms = started.elapsed().as_millis() as u64,
        "schedule index rebuilt from PostgreSQL"
    );
    Ok(Some(run_id))
}
