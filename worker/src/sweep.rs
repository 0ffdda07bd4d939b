//! The PostgreSQL sweep: PostgreSQL says what Redis must hold, and every `WORKER_SWEEP_S` the
//! sweep puts back what a failed or lost Redis write left out (docs/derived-state.md).
//!
//! - **Overdue callbacks**: committed, unsubmitted callbacks due more than
//!   `WORKER_SWEEP_GRACE_S` ago (database clock) are re-added to the schedule index where they
//!   are missing (neither indexed nor in flight, see `schedule::index_missing`). This is what
//!   makes "committed means dispatched" hold whatever happened to Redis after the commit: a
//!   timed-out `ZADD`, Redis refusing writes, a process killed between commit and index.
//!   Those already indexed, or in flight with a lease that ran out, are announced on their
//!   shard's wake channel: a worker not told of them (an announcement lost) claims them now
//!   rather than at the safety poll.
//! - **Abandoned withdrawals**: a keyed create answered 503 whose late commit is being
//!   withdrawn marks its key first (`idempotency_keys.given_back_at`); a mark older than
//!   `WORKER_SWEEP_GRACE_S` whose callback is still active and was named by no replay was left
//!   by a process that stopped or died mid-withdrawal, and the sweep withdraws the callback
//!   and frees its throttle place ([`abandoned`]).
//! - **Queue views**: the views of services whose submitted, completed or retried callbacks
//!   changed since the last check are made equal to PostgreSQL's waiting set
//!   ([`crate::reconcile::repair_view`]), so a dequeue that failed or raced with the worker's
//!   enqueue leaves no stray behind for long.
//!
//! - **The horizon** (docs/derived-state.md#the-horizon): creates leave callbacks due beyond
//!   `REDIS_SCHEDULE_HORIZON_S` out of the index; each round first indexes those whose time
//!   came within it since the last round ([`upcoming`]).
//!
//! All read PostgreSQL through partial indexes and send no Redis command when they find
//! nothing: the idle budget is unchanged.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;

use shared::{
    db::{
        self,
        dispatch::{self, Unsubmitted},
    },
    metrics,
    redis::{schedule, throttle},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Worker, error::Result};

const PAGE: i64 = 1_000;

/// Runs the sweep until `stop` fires.
pub async fn run(w: Worker, stop: CancellationToken) {
    let every = Duration::from_secs(w.cfg.worker.sweep_s);
    // Database time of the last successful view check; the start-up rebuild covers before.
    let mut since = Timestamp::now();
    // Where the horizon loader's last pass ended (`None`: everything within the horizon).
    let mut loaded = None;
    loop {
        if let Err(e) = upcoming(&w, &mut loaded).await {
            tracing::warn!(error = %e, "horizon loader pass failed; retrying next round");
        }
        if crate::sleep_or_stop(every, &stop).await {
            return;
        }
        if let Err(e) = abandoned(&w).await {
            tracing::warn!(error = %e, "abandoned withdrawals not finished; retrying next round");
        }
        if let Err(e) = overdue(&w).await {
            tracing::warn!(error = %e, "overdue sweep failed; retrying next round");
        }
        match views(&w, since).await {
            Ok(next) => since = next,
            Err(e) => tracing::warn!(error = %e, "queue-view check failed; retrying next round"),
        }
    }
}

/// Finishes the withdrawals that a process began and did not finish (it stopped or died
/// between marking the key given back and its withdrawal's `COMMIT`): callbacks whose create
/// was answered 503, marked more than `WORKER_SWEEP_GRACE_S` ago and named by no replay, are
/// withdrawn as that process would have (`db::callbacks::withdraw_unanswered`, one attempt
/// per round) and their throttle place is freed
/// (docs/bounded-answers.md#a-replay-of-a-create-answered-503). Returns how many.
pub async fn abandoned(w: &Worker) -> Result<u64> {
    let grace = w.cfg.worker.sweep_grace_s as f64;
    let found = {
        let client = w.db.get().await?;
        db::callbacks::abandoned_withdrawals(&client, grace, PAGE).await?
    };
    let mut by_tenant: BTreeMap<String, Vec<(String, Uuid)>> = BTreeMap::new();
    for (tenant, service, id) in found {
        by_tenant.entry(tenant).or_default().push((service, id));
    }
    let (mut withdrawn, mut failed) = (0, None);
    // Tenant by tenant, each on its own: one whose rows are locked or whose Redis fails does
    // not hold up the others (their callbacks stay out of the index meanwhile).
    for (tenant, rows) in by_tenant {
        match withdraw_abandoned(w, &tenant, &rows).await {
            Ok(n) => withdrawn += n,
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if withdrawn > 0 {
        ::metrics::counter!(metrics::CREATES_COMPENSATED).increment(withdrawn);
        tracing::warn!(
            count = withdrawn,
            "callbacks whose withdrawal their process did not finish were withdrawn"
        );
    }
    failed.map_or(Ok(withdrawn), Err)
}

/// [`abandoned`] for one tenant's `rows` (service, id): the withdrawal in one transaction,
/// then each withdrawn callback's throttle place freed, best effort (a failed release is
/// logged and left to the next re-seed). Returns how many were withdrawn.
async fn withdraw_abandoned(w: &Worker, tenant: &str, rows: &[(String, Uuid)]) -> Result<u64> {
    let ids: Vec<Uuid> = rows.iter().map(|(_, id)| *id).collect();
    let done = {
        let mut client = w.db.get().await?;
        let tx = client.transaction().await.map_err(shared::Error::from)?;
        let done = db::callbacks::withdraw_unanswered(&tx, tenant, &ids).await?;
        tx.commit().await.map_err(shared::Error::from)?;
        done
    };
    for (service, id) in rows.iter().filter(|(_, id)| !done.spared.contains(id)) {
        let released = async {
            let mut conn = w.redis.conn().await?;
            throttle::release(&mut conn, &w.keys, tenant, service, *id).await
        };
        if let Err(e) = released.await {
            tracing::warn!(callback.id = %id, error = %e, "throttle release of a withdrawn callback failed; the next re-seed repairs it");
        }
    }
    Ok(done.count)
}

/// The horizon loader (docs/derived-state.md#the-horizon): indexes the committed callbacks
/// whose time came within `REDIS_SCHEDULE_HORIZON_S` since its last pass, which ended at
/// `loaded` (`None`: all of them). A pass that fails anywhere leaves `loaded` as it was, so
/// the next one covers its range again (index writes are idempotent). Returns how many were
/// missing.
pub async fn upcoming(w: &Worker, loaded: &mut Option<Timestamp>) -> Result<u64> {
    let horizon = w.keys.horizon_ms();
    if horizon == 0 {
        return Ok(0);
    }
    let to = {
        let client = w.db.get().await?;
        dispatch::horizon_end(&client, horizon).await?
    };
    let from = loaded.unwrap_or(Timestamp::UNIX_EPOCH);
    let added = reindex(w, Unsubmitted::Window { from, to }, None)
        .await?
        .unwrap_or(0);
    *loaded = Some(to);
    if added > 0 {
        ::metrics::counter!(metrics::INDEX_LOADED).increment(added);
    }
    Ok(added)
}

/// What the schedule index must hold: every committed, unsubmitted callback, or with a
/// horizon those due before its end (the rebuild).
pub async fn all_within_horizon(w: &Worker) -> Result<Unsubmitted> {
    let horizon = w.keys.horizon_ms();
    if horizon == 0 {
        return Ok(Unsubmitted::All);
    }
    let client = w.db.get().await?;
    let to = dispatch::horizon_end(&client, horizon).await?;
    Ok(Unsubmitted::Window {
        from: Timestamp::UNIX_EPOCH,
        to,
    })
}

/// Re-indexes overdue committed callbacks that the schedule index lacks; returns how many.
pub async fn overdue(w: &Worker) -> Result<u64> {
    let grace = i32::try_from(w.cfg.worker.sweep_grace_s).unwrap_or(60);
    let repaired = reindex(w, Unsubmitted::OverdueBy(grace), None)
        .await?
        .unwrap_or(0);
    if repaired > 0 {
        ::metrics::counter!(metrics::INDEX_REPAIRED).increment(repaired);
        tracing::warn!(
            count = repaired,
            "overdue callbacks were missing from the schedule index; re-indexed"
        );
    }
    Ok(repaired)
}

/// Puts the committed, unsubmitted callbacks `which` names back into the schedule index where
/// they are missing (neither indexed nor in flight: `schedule::index_missing`, which also wakes
/// the workers), in pages of 1,000, except those being withdrawn
/// (`db::callbacks::being_withdrawn`). Returns how many were missing (`None` if `stop` fired).
pub async fn reindex(
    w: &Worker,
    which: Unsubmitted,
    stop: Option<&CancellationToken>,
) -> Result<Option<u64>> {
    let (mut added, mut failed) = (0, None);
    let mut after = None;
    let withdrawing = {
        let client = w.db.get().await?;
        db::callbacks::being_withdrawn(&client).await?
    };
    loop {
        if stop.is_some_and(CancellationToken::is_cancelled) {
            return Ok(None);
        }
        let page = {
            let client = w.db.get().await?;
            dispatch::unsubmitted_page(&client, which, after, PAGE).await?
        };
        let Some(last) = page.last() else { break };
        after = Some((last.1, last.0));
        let entries: Vec<(Uuid, i64)> = page
            .iter()
            .filter(|(id, _)| !withdrawing.contains(id))
            .map(|(id, at)| (*id, at.as_millisecond()))
            .collect();
        let mut conn = w.redis.conn().await?;
        let overdue = matches!(which, Unsubmitted::OverdueBy(_));
        // A page that fails on one shard (its node down or frozen) still indexed the others,
        // and the pages after it go on: the failure is returned at the end.
        match schedule::index_missing(&mut conn, &w.keys, &entries, overdue).await {
            Ok(n) => added += n,
            Err(e) => failed = failed.or(Some(e)),
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(Some(added)),
    }
}

/// Checks the queue views of services that changed since `since`; returns the database time
/// to start from next time.
pub async fn views(w: &Worker, since: Timestamp) -> Result<Timestamp> {
    let (services, now) = {
        let client = w.db.get().await?;
        dispatch::changed_services(&client, since).await?
    };
    for (tenant, service) in &services {
        crate::reconcile::repair_view(w, tenant, service).await?;
    }
    Ok(now)
}
