//! The worker's queries: load claimed callbacks, mark them submitted, page through what the
//! schedule index and queue views must hold (reconciler), the control outbox, TTL expiry and
//! the retention purge. Each one reads through a partial index, so none scans the table.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use serde_json::Value;
use uuid::Uuid;

use super::callbacks::{COLUMNS, StoredCallback};
use crate::{
    error::Error,
    model::{CallbackState, ServiceSettings},
};

/// A claimed callback with what the stream entry needs.
#[derive(Debug, Clone)]
pub struct DueCallback {
    /// The claimed callback's row (read through `Deref`: `cb.id`, `cb.attrs`, …); its fields
    /// become the stream entry's.
    pub callback: StoredCallback,
    /// The service's settings (also of a soft-deleted service); `None` if it never existed.
    pub settings: Option<ServiceSettings>,
}

impl std::ops::Deref for DueCallback {
    type Target = StoredCallback;

    fn deref(&self) -> &StoredCallback {
        &self.callback
    }
}

impl DueCallback {
    /// Whether the schedule index should still hold it (mirrors `callbacks_pending_idx`).
    pub fn pending(&self) -> bool {
        self.submitted_at.is_none()
            && matches!(self.state, CallbackState::Scheduled | CallbackState::Queued)
    }
}

/// Loads claimed callbacks with their service settings.
pub async fn load(db: &impl GenericClient, ids: &[Uuid]) -> Result<Vec<DueCallback>, Error> {
    let sql = format!(
        "SELECT {COLUMNS}, s.settings
         FROM callbacks c
         LEFT JOIN services s ON s.tenant_id = c.tenant_id AND s.name = c.service
         WHERE c.id = ANY($1)"
    );
    let rows = super::stmt::query(db, &sql, &[&ids]).await?;
    rows.iter()
        .map(|r| {
            Ok(DueCallback {
                callback: StoredCallback::from_row(r)?,
                settings: r
                    .get::<_, Option<Value>>("settings")
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(Error::internal)?,
            })
        })
        .collect()
}

/// One submitted attempt to record.
#[derive(Debug, Clone, Copy)]
pub struct Submitted {
    /// The submitted callback.
    pub id: Uuid,
    /// The attempt that reached the stream.
    pub attempt: i16,
    /// The hand-off epoch the entry was written under (a reschedule since then moved the
    /// callback: that row is not marked).
    pub epoch: i16,
    /// The service's `ttl_seconds` (sets `expires_at`).
    pub ttl_seconds: i32,
}

/// Records that these attempts are in the voice stream: SCHEDULED becomes QUEUED,
/// `submitted_at` and `expires_at` are set, and an event row is written. A callback cancelled
/// while it was being submitted gets `control_pending`, so the voice platform is told to drop
/// it. Rows whose attempt or hand-off epoch moved on (a retry, a reschedule) or that were
/// already marked are left alone. Returns the ids
/// marked now with their submission time (ms).
pub async fn mark_submitted(
    db: &impl GenericClient,
    items: &[Submitted],
) -> Result<Vec<(Uuid, i64)>, Error> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = items.iter().map(|s| s.id).collect();
    let attempts: Vec<i16> = items.iter().map(|s| s.attempt).collect();
    let ttls: Vec<i32> = items.iter().map(|s| s.ttl_seconds).collect();
    let epochs: Vec<i16> = items.iter().map(|s| s.epoch).collect();
    let rows = super::stmt::query(
        db,
        "WITH s AS (
                UPDATE callbacks c SET
                    submitted_at = now(),
                    updated_at = now(),
                    state = CASE WHEN c.state = 'SCHEDULED' THEN 'QUEUED' ELSE c.state END,
                    expires_at = now() + make_interval(secs => u.ttl),
                    control_pending = c.control_pending
                        OR (c.state = 'COMPLETED' AND c.reason = 'CANCELLED')
                FROM unnest($1::uuid[], $2::smallint[], $3::int[], $4::smallint[])
                    AS u(id, attempt, ttl, epoch)
                WHERE c.id = u.id AND c.attempt = u.attempt AND c.handoff_epoch = u.epoch
                  AND c.submitted_at IS NULL
                RETURNING c.id, c.state, c.submitted_at
             ), e AS (
                INSERT INTO callback_events (callback_id, state, reason, source)
                SELECT id, state, 'SUBMITTED', 'worker' FROM s WHERE state = 'QUEUED'
             )
             SELECT id, submitted_at FROM s WHERE state = 'QUEUED'",
        &[&ids, &attempts, &ttls, &epochs],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, Timestamp>(1).as_millisecond()))
        .collect())
}

/// Which committed, unsubmitted callbacks a page lists.
#[derive(Debug, Clone, Copy)]
pub enum Unsubmitted {
    /// All of them: what the schedule index must hold (the rebuild).
    All,
    /// Those due more than this many seconds ago by the database's clock (the sweep).
    OverdueBy(i32),
    /// Those due at or after `from` and before `to` (the horizon loader and, with a horizon,
    /// the rebuild: docs/derived-state.md#the-horizon).
    Window {
        /// First due time listed.
        from: Timestamp,
        /// First due time not listed.
        to: Timestamp,
    },
}

/// The end of the horizon now: the database's clock plus `horizon_ms`. Pages listed up to it
/// afterwards see every callback committed before this statement ran.
pub async fn horizon_end(db: &impl GenericClient, horizon_ms: i64) -> Result<Timestamp, Error> {
    let row = super::stmt::query_one(
        db,
        "SELECT statement_timestamp() + $1::int8 * interval '1 millisecond'",
        &[&horizon_ms],
    )
    .await?;
    Ok(row.get(0))
}

/// One page of committed, unsubmitted callbacks in (dispatch_at, id) order after `after`.
/// Both forms are a range scan of `callbacks_pending_idx`: a sweep with nothing overdue reads
/// one index page and no table row.
pub async fn unsubmitted_page(
    db: &impl GenericClient,
    which: Unsubmitted,
    after: Option<(Timestamp, Uuid)>,
    limit: i64,
) -> Result<Vec<(Uuid, Timestamp)>, Error> {
    let (t, id) = after.unwrap_or((Timestamp::UNIX_EPOCH, Uuid::nil()));
    let rows = match which {
        Unsubmitted::All => {
            super::stmt::query(
                db,
                "SELECT id, dispatch_at FROM callbacks
                     WHERE submitted_at IS NULL AND state IN ('SCHEDULED', 'QUEUED')
                       AND (dispatch_at, id) > ($1, $2)
                     ORDER BY dispatch_at, id LIMIT $3",
                &[&t, &id, &limit],
            )
            .await?
        }
        Unsubmitted::OverdueBy(grace_s) => {
            super::stmt::query(
                db,
                "SELECT id, dispatch_at FROM callbacks
                     WHERE submitted_at IS NULL AND state IN ('SCHEDULED', 'QUEUED')
                       AND dispatch_at < now() - make_interval(secs => $3)
                       AND (dispatch_at, id) > ($1, $2)
                     ORDER BY dispatch_at, id LIMIT $4",
                &[&t, &id, &f64::from(grace_s), &limit],
            )
            .await?
        }
        Unsubmitted::Window { from, to } => {
            super::stmt::query(
                db,
                "SELECT id, dispatch_at FROM callbacks
                     WHERE submitted_at IS NULL AND state IN ('SCHEDULED', 'QUEUED')
                       AND dispatch_at >= $3 AND dispatch_at < $4
                       AND (dispatch_at, id) > ($1, $2)
                     ORDER BY dispatch_at, id LIMIT $5",
                &[&t, &id, &from, &to, &limit],
            )
            .await?
        }
    };
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A callback the voice platform holds (QUEUED or ROUTING, submitted).
#[derive(Debug, Clone)]
pub struct Active {
    /// The callback, a member of its service's queue view.
    pub id: Uuid,
    /// Its tenant (part of the queue view's key).
    pub tenant: String,
    /// Its service (part of the queue view's key).
    pub service: String,
    /// Its desired time: what it waits since (queue-view score after the priority).
    pub desired_time: Timestamp,
    /// Priority (queue-view order).
    pub priority: i32,
}

/// What one service's queue view must hold: its submitted QUEUED/ROUTING callbacks with their
/// queue-view score inputs (through `callbacks_service_idx`).
pub async fn active_of(
    db: &impl GenericClient,
    tenant: &str,
    service: &str,
) -> Result<Vec<Active>, Error> {
    let rows = super::stmt::query(
        db,
        "SELECT id, tenant_id, service, desired_time, priority FROM callbacks
             WHERE tenant_id = $1 AND service = $2 AND state IN ('QUEUED', 'ROUTING')
               AND submitted_at IS NOT NULL",
        &[&tenant, &service],
    )
    .await?;
    Ok(rows.iter().map(active).collect())
}

fn active(r: &tokio_postgres::Row) -> Active {
    Active {
        id: r.get(0),
        tenant: r.get(1),
        service: r.get(2),
        desired_time: r.get(3),
        priority: r.get(4),
    }
}

/// Every service that may have a queue view: configured ones (soft-deleted too) and any that
/// callbacks in the voice platform's hands name.
pub async fn view_services(db: &impl GenericClient) -> Result<Vec<(String, String)>, Error> {
    let rows = super::stmt::query(
        db,
        "SELECT tenant_id, name FROM services
         UNION
         SELECT DISTINCT tenant_id, service FROM callbacks
             WHERE state IN ('QUEUED', 'ROUTING') AND submitted_at IS NOT NULL",
        &[],
    )
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Services whose submitted, completed or retried callbacks changed since `since` (by the
/// database's clock, through `callbacks_updated_idx`; 30 s of overlap covers transactions that
/// started before `since` and committed after), and the database time of the query: the next
/// call's `since`.
pub async fn changed_services(
    db: &impl GenericClient,
    since: Timestamp,
) -> Result<(Vec<(String, String)>, Timestamp), Error> {
    let rows = super::stmt::query(
        db,
        "SELECT DISTINCT tenant_id, service FROM callbacks
             WHERE updated_at >= $1::timestamptz - interval '30 seconds'
               AND (state = 'COMPLETED' OR submitted_at IS NOT NULL OR attempt > 1)",
        &[&since],
    )
    .await?;
    let now: Timestamp = super::stmt::query_one(db, "SELECT now()", &[])
        .await?
        .get(0);
    Ok((rows.iter().map(|r| (r.get(0), r.get(1))).collect(), now))
}

/// Callbacks owing a cancel to the voice platform, oldest first: (id, (attempt, hand-off
/// epoch), whether the attempt's submission is recorded).
pub async fn control_pending(
    db: &impl GenericClient,
    limit: i64,
) -> Result<Vec<(Uuid, (i16, i16), bool)>, Error> {
    let rows = super::stmt::query(
        db,
        "SELECT id, attempt, submitted_at IS NOT NULL, handoff_epoch FROM callbacks
             WHERE control_pending ORDER BY updated_at LIMIT $1",
        &[&limit],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(3)), r.get(2)))
        .collect())
}

/// Clears the control debt of callbacks whose control entry is in the stream.
pub async fn clear_control(db: &impl GenericClient, ids: &[Uuid]) -> Result<(), Error> {
    super::stmt::execute(
        db,
        "UPDATE callbacks SET control_pending = false WHERE id = ANY($1) AND control_pending",
        &[&ids],
    )
    .await?;
    Ok(())
}

/// A callback a maintenance pass ended or deleted (its Redis traces must go).
#[derive(Debug, Clone)]
pub struct Ended {
    /// The callback whose schedule-index entry, queue-view entry and throttle place go.
    pub id: Uuid,
    /// Its tenant (part of those keys).
    pub tenant: String,
    /// Its service (part of those keys).
    pub service: String,
}

fn ended(rows: &[tokio_postgres::Row]) -> Vec<Ended> {
    rows.iter()
        .map(|r| Ended {
            id: r.get(0),
            tenant: r.get(1),
            service: r.get(2),
        })
        .collect()
}

/// The statement that ends the callbacks a selection names: COMPLETED/FAIL_TIMEOUT_TTL with
/// an event row, owing a cancel to the voice platform (`control_pending`: it may hold them; a
/// cancel of a session it does not know is ignored), returning their identity.
macro_rules! end_with_ttl {
    ($select:literal) => {
        concat!(
            "WITH x AS (
                UPDATE callbacks SET state = 'COMPLETED', reason = 'FAIL_TIMEOUT_TTL',
                    control_pending = true, updated_at = now()
                WHERE id IN (",
            $select,
            ") RETURNING id, tenant_id, service
             ), e AS (
                INSERT INTO callback_events (callback_id, state, reason, source)
                SELECT id, 'COMPLETED', 'FAIL_TIMEOUT_TTL', 'worker' FROM x
             )
             SELECT id, tenant_id, service FROM x"
        )
    };
}

/// Completes up to `limit` submitted callbacks not served within their TTL
/// (COMPLETED/FAIL_TIMEOUT_TTL) and asks the voice platform to drop them.
pub async fn expire(db: &impl GenericClient, limit: i64) -> Result<Vec<Ended>, Error> {
    let rows = super::stmt::query(
        db,
        end_with_ttl!(
            "SELECT id FROM callbacks
             WHERE state IN ('QUEUED', 'ROUTING') AND submitted_at IS NOT NULL
               AND expires_at < now()
             ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED"
        ),
        &[&limit],
    )
    .await?;
    Ok(ended(&rows))
}

/// Ends up to `limit` unfinished callbacks whose desired time is more than `days` days ago
/// (the retention window): they are expired the way the TTL expires them, control entry
/// included, so that retention only ever deletes finished callbacks ([`purge`]).
pub async fn expire_stale(
    db: &impl GenericClient,
    days: u32,
    limit: i64,
) -> Result<Vec<Ended>, Error> {
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    let rows = super::stmt::query(
        db,
        end_with_ttl!(
            "SELECT id FROM callbacks
             WHERE desired_time < now() - make_interval(days => $1) AND state <> 'COMPLETED'
             ORDER BY desired_time LIMIT $2 FOR UPDATE SKIP LOCKED"
        ),
        &[&days, &limit],
    )
    .await?;
    Ok(ended(&rows))
}

/// Deletes up to `limit` finished callbacks (and, by cascade, their events) whose desired time
/// is more than `days` days ago. Only COMPLETED callbacks that owe the voice platform nothing
/// go: anything unfinished is ended first ([`expire_stale`]) and its control entry sent.
pub async fn purge(db: &impl GenericClient, days: u32, limit: i64) -> Result<Vec<Ended>, Error> {
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    let rows = super::stmt::query(
        db,
        "DELETE FROM callbacks WHERE id IN (
                SELECT id FROM callbacks
                WHERE desired_time < now() - make_interval(days => $1)
                  AND state = 'COMPLETED' AND NOT control_pending
                ORDER BY desired_time LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING id, tenant_id, service",
        &[&days, &limit],
    )
    .await?;
    Ok(ended(&rows))
}

/// Deletes expired idempotency keys (kept 24 h).
pub async fn purge_idempotency_keys(db: &impl GenericClient) -> Result<u64, Error> {
    Ok(super::stmt::execute(
        db,
        "DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'",
        &[],
    )
    .await?)
}

/// Callbacks the dispatcher watches: waiting for dispatch, and held by the voice platform.
pub async fn monitor_counts(db: &impl GenericClient) -> Result<(i64, i64), Error> {
    let row = super::stmt::query_one(
        db,
        "SELECT
               (SELECT count(*) FROM callbacks
                 WHERE submitted_at IS NULL AND state IN ('SCHEDULED', 'QUEUED')),
               (SELECT count(*) FROM callbacks
                 WHERE state IN ('QUEUED', 'ROUTING') AND submitted_at IS NOT NULL)",
        &[],
    )
    .await?;
    Ok((row.get(0), row.get(1)))
}
