//! Callbacks: insert (optionally idempotent), fetch, cancel.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::slots::SlotClaim;
use crate::{
    error::Error,
    model::{
        CallbackState, CompletionReason,
        callback::{Callback, wire_time},
    },
};

/// A validated callback ready to insert.
#[derive(Debug, Clone)]
pub struct NewCallback {
    /// Time-ordered id (UUIDv7), made by the API; the id create returns.
    pub id: Uuid,
    /// The tenant (contact center id) resolved from the API key.
    pub tenant: String,
    /// The service (callback virtual queue) it is booked on.
    pub service: String,
    /// SCHEDULED (future desired time) or QUEUED (immediate).
    pub state: CallbackState,
    /// The phone number as the create gave it (trimmed); what retrieve shows.
    pub phone_number: String,
    /// Normalised number, E.164 without `+` (`None`: did not normalise, dial as given).
    pub phone_e164: Option<String>,
    /// Desired time (creation time for immediate callbacks).
    pub desired_time: Timestamp,
    /// When the worker submits it.
    pub dispatch_at: Timestamp,
    /// Booked with a desired time.
    pub scheduled: bool,
    /// Priority the callback starts with (the request's, else the service's).
    pub priority: i32,
    /// Per-callback attributes: informational fields, overrides of the service's settings
    /// (`routePoint`, `surveyRP`, `language`) and push targets; stored as JSON.
    pub attrs: Map<String, Value>,
    /// The create's `userData` with non-identifier keys dropped (`None` when empty).
    pub user_data: Option<Map<String, Value>>,
    /// The capacity slot this callback takes (`None`: it is not counted against any slot).
    pub slot: Option<SlotClaim>,
}

/// An immediate callback's desired and dispatch times are the database's `now()`; a scheduled
/// one is never due before it (one clock: docs/bounded-answers.md). The stored dispatch time is
/// returned for the schedule index.
const INSERT: &str = "INSERT INTO callbacks
    (id, tenant_id, service, state, phone_number, desired_time, dispatch_at, scheduled, priority, attrs, user_data, phone_e164)
    VALUES ($1, $2, $3, $4, $5, CASE WHEN $8 THEN $6 ELSE now() END,
            CASE WHEN $8 THEN greatest($7, now()) ELSE now() END, $8, $9, $10, $11, $12)
    RETURNING dispatch_at";

/// Claims one place in the slot and inserts the callback in one statement: when the slot is
/// full the claim returns no row and nothing is inserted (see `db::slots`). `f` counts the
/// places held under another slot grid whose desired time falls in this slot; it is read
/// only when a counter of another grid overlaps the slot (docs/slot-grid.md).
const INSERT_CLAIMING: &str = "WITH f AS (
        SELECT CASE WHEN EXISTS (
            SELECT 1 FROM slot_bookings o
            WHERE o.tenant_id = $2 AND o.service = $3 AND o.booked > 0
              AND o.slot_start > $13::timestamptz - interval '60 minutes'
              AND o.slot_start < $13::timestamptz + make_interval(mins => $15::smallint::integer)
              AND o.slot_start + make_interval(mins => CASE o.slot_minutes WHEN 0 THEN 60
                                                   ELSE o.slot_minutes::integer END) > $13
              AND (o.slot_start, o.slot_minutes) <> ($13, $15::smallint)
        ) THEN (
            SELECT count(*)::integer FROM callbacks c
            WHERE c.tenant_id = $2 AND c.service = $3
              AND c.desired_time >= $13::timestamptz
              AND c.desired_time < $13::timestamptz + make_interval(mins => $15::smallint::integer)
              AND c.slot_start IS NOT NULL AND c.reason IS DISTINCT FROM 'CANCELLED'
              AND (c.slot_start, coalesce(c.slot_minutes, 0::smallint)) <> ($13, $15::smallint)
        ) ELSE 0 END AS n
    ), s AS (
        INSERT INTO slot_bookings (tenant_id, service, slot_start, slot_minutes, booked)
        SELECT $2, $3, $13, $15::smallint, 1 FROM f WHERE f.n < $14::integer
        ON CONFLICT (tenant_id, service, slot_start, slot_minutes) DO UPDATE
            SET booked = slot_bookings.booked + 1
            WHERE slot_bookings.booked + (SELECT n FROM f) < $14::integer
        RETURNING 1
    )
    INSERT INTO callbacks
    (id, tenant_id, service, state, phone_number, desired_time, dispatch_at, scheduled, priority, attrs, user_data, phone_e164, slot_start, slot_minutes)
    SELECT $1, $2, $3, $4, $5, CASE WHEN $8 THEN $6 ELSE now() END,
           CASE WHEN $8 THEN greatest($7::timestamptz, now()) ELSE now() END, $8, $9, $10, $11, $12,
           $13, $15::smallint
    FROM s
    RETURNING dispatch_at";

/// The error a full slot produces; `create` turns it into a 429 with proposed slots.
pub fn slot_full(claim: &SlotClaim) -> Error {
    Error::LimitReached {
        message: format!(
            "the slot starting {} is fully booked",
            wire_time(claim.start)
        ),
        data: None,
        retry_after_s: None,
    }
}

async fn insert_row(db: &impl GenericClient, cb: &NewCallback) -> Result<Timestamp, Error> {
    let attrs = (!cb.attrs.is_empty()).then(|| Value::Object(cb.attrs.clone()));
    let user_data = cb.user_data.clone().map(Value::Object);
    let state = cb.state.as_str();
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &cb.id,
        &cb.tenant,
        &cb.service,
        &state,
        &cb.phone_number,
        &cb.desired_time,
        &cb.dispatch_at,
        &cb.scheduled,
        &cb.priority,
        &attrs,
        &user_data,
        &cb.phone_e164,
    ];
    let Some(claim) = &cb.slot else {
        let row = super::stmt::query_one(db, INSERT, &params).await?;
        return Ok(row.get(0));
    };
    let capacity = i32::try_from(claim.capacity).unwrap_or(i32::MAX);
    let minutes = i16::try_from(claim.minutes).unwrap_or(i16::MAX);
    params.push(&claim.start);
    params.push(&capacity);
    params.push(&minutes);
    match super::stmt::query_opt(db, INSERT_CLAIMING, &params).await? {
        Some(row) => Ok(row.get(0)),
        None => Err(slot_full(claim)),
    }
}

/// Inserts a callback (autocommit: durable when this returns); returns its stored dispatch
/// time. With a slot claim, a full slot is [`slot_full`]'s error and nothing is written.
/// Callbacks without a slot claim take the request path through
/// [`super::batch::InsertBatcher`], which shares commits.
pub async fn insert(db: &impl GenericClient, cb: &NewCallback) -> Result<Timestamp, Error> {
    insert_row(db, cb).await
}

/// Withdraws callbacks of `tenant` whose create answered 503 but which were stored after all
/// (compensation, docs/bounded-answers.md). They are not deleted: while the API could not
/// reach PostgreSQL a worker may have found and handed one off, so each is cancelled
/// (COMPLETED/CANCELLED) owing the voice platform a settle (`control_pending`: the hand-off is
/// fenced if not yet written, a control entry follows it otherwise), in the same statement
/// that gives back its slot place and frees its Idempotency-Key. Returns how many.
pub async fn withdraw_unanswered(
    db: &impl GenericClient,
    tenant: &str,
    ids: &[Uuid],
) -> Result<u64, Error> {
    let row = super::stmt::query_one(
        db,
        "WITH d AS (
                UPDATE callbacks SET state = 'COMPLETED', reason = 'CANCELLED',
                    control_pending = true, updated_at = now()
                WHERE id = ANY($1) AND tenant_id = $2 AND state <> 'COMPLETED'
                RETURNING id, service, slot_start, slot_minutes
             ), e AS (
                INSERT INTO callback_events (callback_id, state, reason, source)
                SELECT id, 'COMPLETED', 'CANCELLED', 'compensation' FROM d
             ), k AS (
                DELETE FROM idempotency_keys WHERE tenant_id = $2 AND callback_id IN (SELECT id FROM d)
             ), s AS (
                UPDATE slot_bookings b SET booked = b.booked - 1 FROM d
                WHERE b.tenant_id = $2 AND b.service = d.service AND b.slot_start = d.slot_start
                  AND b.slot_minutes = coalesce(d.slot_minutes, 0) AND b.booked > 0
             )
             SELECT count(*) FROM d",
        &[&ids, &tenant],
    )
    .await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Result of an idempotent insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotent {
    /// First use of the key: the callback was inserted.
    Created,
    /// The key was used before with the same body: that callback's id.
    Replayed(Uuid),
    /// The key was used before with a different body.
    Mismatch,
}

/// Inserts a callback under an `Idempotency-Key` (kept 24 h). Concurrent requests with one key
/// serialise on the key's primary-key index: the first commits, the others then see its row.
/// The slot claim is part of the same transaction: a full slot rolls the key back too.
pub async fn insert_idempotent(
    client: &mut deadpool_postgres::Client,
    cb: &NewCallback,
    key: &str,
    request_hash: &[u8],
) -> Result<Idempotent, Error> {
    let tx = client.transaction().await?;
    if let Some(earlier) = claim_idempotency_key(&tx, cb, key, request_hash).await? {
        tx.rollback().await?;
        return Ok(earlier);
    }
    insert_row(&tx, cb).await?;
    tx.commit().await?;
    Ok(Idempotent::Created)
}

/// Claims `key` for `cb` inside the caller's transaction: `None` = claimed (insert `cb`, then
/// commit; rolling back frees the key), else the earlier use (`Replayed` or `Mismatch`).
/// A concurrent claim of the same key waits here until the first transaction ends.
pub async fn claim_idempotency_key(
    tx: &deadpool_postgres::Transaction<'_>,
    cb: &NewCallback,
    key: &str,
    request_hash: &[u8],
) -> Result<Option<Idempotent>, Error> {
    let claimed = super::stmt::query_opt(
        tx,
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, callback_id)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, key) DO UPDATE
                SET request_hash = EXCLUDED.request_hash, callback_id = EXCLUDED.callback_id,
                    created_at = now()
                WHERE idempotency_keys.created_at < now() - interval '24 hours'
             RETURNING 1",
        &[&cb.tenant, &key, &request_hash, &cb.id],
    )
    .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    let row = super::stmt::query_one(
        tx,
        "SELECT request_hash, callback_id FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
        &[&cb.tenant, &key],
    )
    .await?;
    let (hash, id): (Vec<u8>, Uuid) = (row.get(0), row.get(1));
    Ok(Some(if hash == request_hash {
        Idempotent::Replayed(id)
    } else {
        Idempotent::Mismatch
    }))
}

/// A callback row as retrieve and cancel read it.
#[derive(Debug, Clone)]
pub struct StoredCallback {
    /// The callback's id.
    pub id: Uuid,
    /// The tenant that owns it.
    pub tenant: String,
    /// The service (callback virtual queue) it is booked on.
    pub service: String,
    /// Where it is in its lifecycle.
    pub state: CallbackState,
    /// Why it completed; only when COMPLETED.
    pub reason: Option<CompletionReason>,
    /// The phone number as the create gave it.
    pub phone_number: String,
    /// Normalised number, E.164 without `+` (`None`: dial as given).
    pub phone_e164: Option<String>,
    /// When the customer wants the call (creation time for an immediate callback).
    pub desired_time: Timestamp,
    /// When the worker hands the current attempt to the voice platform (desired time minus the
    /// lead time, or the retry time).
    pub dispatch_at: Timestamp,
    /// The current dial attempt, 1 for the first.
    pub attempt: i16,
    /// When the current attempt reached the voice stream.
    pub submitted_at: Option<Timestamp>,
    /// When the create was committed (PostgreSQL's clock).
    pub created_at: Timestamp,
    /// Per-callback attributes (informational fields, overrides, push targets).
    pub attrs: Map<String, Value>,
    /// The filtered `userData`, if any.
    pub user_data: Option<Value>,
}

impl StoredCallback {
    fn from_row(r: &tokio_postgres::Row) -> Result<Self, Error> {
        let state: String = r.get("state");
        let reason: Option<String> = r.get("reason");
        let attrs = match r.get::<_, Option<Value>>("attrs") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Ok(Self {
            id: r.get("id"),
            tenant: r.get("tenant_id"),
            service: r.get("service"),
            state: CallbackState::parse(&state)
                .ok_or_else(|| Error::internal(anyhow::anyhow!("bad state {state}")))?,
            reason: reason.as_deref().and_then(CompletionReason::parse),
            phone_number: r.get("phone_number"),
            phone_e164: r.get("phone_e164"),
            desired_time: r.get("desired_time"),
            dispatch_at: r.get("dispatch_at"),
            attempt: r.get("attempt"),
            submitted_at: r.get("submitted_at"),
            created_at: r.get("created_at"),
            attrs,
            user_data: r.get("user_data"),
        })
    }

    /// The API model (queue position and EWT are filled in by the caller when known).
    pub fn to_model(&self) -> Callback {
        Callback {
            id: self.id.to_string(),
            service_name: self.service.clone(),
            desired_time: wire_time(self.desired_time),
            callback_state: self.state,
            callback_reason: self
                .reason
                .filter(|_| self.state == CallbackState::Completed),
            phone_number: self.phone_number.clone(),
            position_in_queue: None,
            estimated_wait_time: None,
            attempt: self.attempt,
            created_time: wire_time(self.created_at),
            attrs: self.attrs.clone(),
            user_data: self.user_data.clone(),
        }
    }
}

const COLUMNS: &str =
    "id, tenant_id, service, state, reason, phone_number, phone_e164, desired_time, dispatch_at,
    attempt, submitted_at, created_at, attrs, user_data";

/// One callback of the tenant, or 404 (another tenant's id is 404 too: invariant 10).
pub async fn get(db: &impl GenericClient, tenant: &str, id: Uuid) -> Result<StoredCallback, Error> {
    let row = super::stmt::query_opt(
        db,
        &format!("SELECT {COLUMNS} FROM callbacks WHERE id = $1 AND tenant_id = $2"),
        &[&id, &tenant],
    )
    .await?
    .ok_or_else(|| Error::not_found(format!("no callback {id}")))?;
    StoredCallback::from_row(&row)
}

/// What a successful cancel changed.
#[derive(Debug, Clone)]
pub struct Cancelled {
    /// The current attempt had reached the voice stream (a control entry is due).
    pub submitted: bool,
    /// A cancel is owed to the voice platform (`control_pending` was set).
    pub owes_control: bool,
    /// The attempt that was current when cancelled (the one a control entry or fence is for).
    pub attempt: i16,
    /// The callback's service (to release its throttle place).
    pub service: String,
}

/// Cancels a callback: allowed in every state but PROCESSING and COMPLETED
/// (docs/decisions.md#callback-lifecycle). The capacity slot the callback held is given back in
/// the same statement. When the voice platform may have it (submitted, or due within the hour:
/// a worker may be handing it off right now, and the hour covers a Redis clock that far ahead of
/// PostgreSQL's), `control_pending` is set in the same statement: the cancel is owed durably
/// (fence or control entry, `redis::voice::settle_cancels`), and the worker's outbox settles it
/// if the caller's write fails (docs/voice-platform.md#cancel).
pub async fn cancel(db: &impl GenericClient, tenant: &str, id: Uuid) -> Result<Cancelled, Error> {
    let row = super::stmt::query_opt(
        db,
        "WITH c AS (
                UPDATE callbacks SET state = 'COMPLETED', reason = 'CANCELLED', updated_at = now(),
                    control_pending = submitted_at IS NOT NULL
                        OR dispatch_at <= now() + interval '1 hour'
                WHERE id = $1 AND tenant_id = $2 AND state NOT IN ('PROCESSING', 'COMPLETED')
                RETURNING id, submitted_at, attempt, service, slot_start, slot_minutes, control_pending
             ), e AS (
                INSERT INTO callback_events (callback_id, state, reason, source)
                SELECT id, 'COMPLETED', 'CANCELLED', 'api' FROM c
             ), f AS (
                UPDATE slot_bookings b SET booked = b.booked - 1 FROM c
                WHERE b.tenant_id = $2 AND b.service = c.service AND b.slot_start = c.slot_start
                  AND b.slot_minutes = coalesce(c.slot_minutes, 0) AND b.booked > 0
             )
             SELECT submitted_at IS NOT NULL, attempt, service, control_pending FROM c",
        &[&id, &tenant],
    )
    .await?;
    if let Some(row) = row {
        return Ok(Cancelled {
            submitted: row.get(0),
            attempt: row.get(1),
            service: row.get(2),
            owes_control: row.get(3),
        });
    }
    let current = get(db, tenant, id).await?;
    Err(match current.state {
        CallbackState::Processing => Error::invalid(
            "callback is being handled by an agent (PROCESSING) and cannot be cancelled",
        ),
        _ => Error::invalid(format!(
            "callback already completed ({})",
            current
                .reason
                .map_or("NOT_AVAILABLE", CompletionReason::as_str)
        )),
    })
}

/// After a cancel whose `COMMIT` broke: the callback as cancelled (`Some`) if the cancel
/// landed, `None` if not. Takes the row lock, so a transaction still holding it (the broken
/// one, when its backend lives on) is waited for first. Run it in a transaction.
pub async fn cancel_outcome(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    id: Uuid,
) -> Result<Option<Cancelled>, Error> {
    let row = super::stmt::query_opt(
        tx,
        "SELECT submitted_at IS NOT NULL, attempt, service, control_pending,
                state = 'COMPLETED' AND reason = 'CANCELLED'
         FROM callbacks WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
        &[&id, &tenant],
    )
    .await?;
    Ok(row.filter(|r| r.get::<_, bool>(4)).map(|r| Cancelled {
        submitted: r.get(0),
        attempt: r.get(1),
        service: r.get(2),
        owes_control: r.get(3),
    }))
}
