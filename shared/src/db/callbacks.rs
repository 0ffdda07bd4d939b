//! Callbacks: insert (claiming a slot place, under an Idempotency-Key), fetch, cancel.

use std::collections::HashSet;

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::slots::SlotClaim;
use crate::{
    error::Error,
    model::{
        CallbackState, CompletionReason,
        attrs::CallbackAttrs,
        callback::{Callback, wire_time},
    },
    redis::schedule::Due,
};

/// When a new callback is due, decided once per create (`functions::callbacks::create::admit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Dispatched at once: its desired and dispatch times are the database's `now()`, taken
    /// by the insert (QUEUED).
    Immediate,
    /// Booked for a desired time (SCHEDULED).
    Scheduled {
        /// The time the customer asked for.
        desired: Timestamp,
        /// When the worker hands it off: the desired time less the service's lead time (the
        /// insert makes it no earlier than the database's `now()`).
        dispatch_at: Timestamp,
        /// The capacity slot place it takes, claimed by the insert (`None`: counted against
        /// no slot).
        slot: Option<SlotClaim>,
    },
}

impl Admission {
    /// Whether the callback is dispatched at once.
    pub fn is_immediate(&self) -> bool {
        matches!(self, Self::Immediate)
    }

    /// The state it is stored in.
    pub fn state(&self) -> CallbackState {
        match self {
            Self::Immediate => CallbackState::Queued,
            Self::Scheduled { .. } => CallbackState::Scheduled,
        }
    }

    /// The slot place the insert claims.
    pub fn slot(&self) -> Option<&SlotClaim> {
        match self {
            Self::Immediate => None,
            Self::Scheduled { slot, .. } => slot.as_ref(),
        }
    }

    /// The desired and dispatch times the insert is given. An immediate callback's are
    /// ignored by the statements (they take `now()`); the epoch stands in for them.
    pub fn times(&self) -> (Timestamp, Timestamp) {
        match self {
            Self::Immediate => (Timestamp::UNIX_EPOCH, Timestamp::UNIX_EPOCH),
            Self::Scheduled {
                desired,
                dispatch_at,
                ..
            } => (*desired, *dispatch_at),
        }
    }
}

/// A validated callback ready to insert.
#[derive(Debug, Clone)]
pub struct NewCallback {
    /// Time-ordered id (UUIDv7), made by the API; the id create returns.
    pub id: Uuid,
    /// The tenant (contact center id) resolved from the API key.
    pub tenant: String,
    /// The service (callback virtual queue) it is booked on.
    pub service: String,
    /// Immediate or scheduled, with its times and slot (decided once, by admission).
    pub admission: Admission,
    /// The phone number as the create gave it (trimmed); what retrieve shows.
    pub phone_number: String,
    /// Normalised number, E.164 without `+` (`None`: did not normalise, dial as given).
    pub phone_e164: Option<String>,
    /// Priority the callback starts with (the request's, else the service's).
    pub priority: i32,
    /// Per-callback attributes: informational fields, overrides of the service's settings
    /// (`routePoint`, `surveyRP`, `language`) and push targets; stored as JSON.
    pub attrs: CallbackAttrs,
    /// The create's `userData` with non-identifier keys dropped (`None` when empty).
    pub user_data: Option<Map<String, Value>>,
}

/// An immediate callback's desired and dispatch times are the database's `now()`; a scheduled
/// one is never due before it (one clock: docs/bounded-answers.md). The stored dispatch time is
/// returned for the schedule index.
const INSERT: &str = "INSERT INTO callbacks
    (id, tenant_id, service, state, phone_number, desired_time, dispatch_at, scheduled, priority, attrs, user_data, phone_e164)
    VALUES ($1, $2, $3, $4, $5, CASE WHEN $8 THEN $6 ELSE now() END,
            CASE WHEN $8 THEN greatest($7, now()) ELSE now() END, $8, $9, $10, $11, $12)
    RETURNING dispatch_at, statement_timestamp()";

/// The slot claim of a scheduled callback as two CTEs, with the statement's parameter numbers
/// of tenant, service, slot start, capacity and slot minutes: `s` returns a row when one place
/// was claimed (`INSERT … ON CONFLICT DO UPDATE … WHERE booked < capacity`), none when the slot
/// is full. `f` counts the places held under another slot grid whose desired time falls in
/// this slot; it is read only when a counter of another grid overlaps the slot
/// (docs/slot-grid.md). Create and reschedule claim through it (`db::reschedule`).
macro_rules! claim_ctes {
    ($t:literal, $s:literal, $start:literal, $cap:literal, $min:literal) => {
        concat!(
            "WITH f AS (
        SELECT CASE WHEN EXISTS (
            SELECT 1 FROM slot_bookings o
            WHERE o.tenant_id = ",
            $t,
            " AND o.service = ",
            $s,
            " AND o.booked > 0
              AND o.slot_start > ",
            $start,
            "::timestamptz - interval '60 minutes'
              AND o.slot_start < ",
            $start,
            "::timestamptz + make_interval(mins => ",
            $min,
            "::smallint::integer)
              AND o.slot_start + make_interval(mins => CASE o.slot_minutes WHEN 0 THEN 60
                                                   ELSE o.slot_minutes::integer END) > ",
            $start,
            "
              AND (o.slot_start, o.slot_minutes) <> (",
            $start,
            ", ",
            $min,
            "::smallint)
        ) THEN (
            SELECT count(*)::integer FROM callbacks c
            WHERE c.tenant_id = ",
            $t,
            " AND c.service = ",
            $s,
            "
              AND c.desired_time >= ",
            $start,
            "::timestamptz
              AND c.desired_time < ",
            $start,
            "::timestamptz + make_interval(mins => ",
            $min,
            "::smallint::integer)
              AND c.slot_start IS NOT NULL AND c.reason IS DISTINCT FROM 'CANCELLED'
              AND (c.slot_start, coalesce(c.slot_minutes, 0::smallint)) <> (",
            $start,
            ", ",
            $min,
            "::smallint)
        ) ELSE 0 END AS n
    ), s AS (
        INSERT INTO slot_bookings (tenant_id, service, slot_start, slot_minutes, booked)
        SELECT ",
            $t,
            ", ",
            $s,
            ", ",
            $start,
            ", ",
            $min,
            "::smallint, 1 FROM f WHERE f.n < ",
            $cap,
            "::integer
        ON CONFLICT (tenant_id, service, slot_start, slot_minutes) DO UPDATE
            SET booked = slot_bookings.booked + 1
            WHERE slot_bookings.booked + (SELECT n FROM f) < ",
            $cap,
            "::integer
        RETURNING 1
    ) "
        )
    };
}
pub(crate) use claim_ctes;

/// Claims one place in the slot ([`claim_ctes`]) and inserts the callback in one statement:
/// when the slot is full the claim returns no row and nothing is inserted (see `db::slots`).
const INSERT_CLAIMING: &str = concat!(
    claim_ctes!("$2", "$3", "$13", "$14", "$15"),
    "INSERT INTO callbacks
    (id, tenant_id, service, state, phone_number, desired_time, dispatch_at, scheduled, priority, attrs, user_data, phone_e164, slot_start, slot_minutes)
    SELECT $1, $2, $3, $4, $5, CASE WHEN $8 THEN $6 ELSE now() END,
           CASE WHEN $8 THEN greatest($7::timestamptz, now()) ELSE now() END, $8, $9, $10, $11, $12,
           $13, $15::smallint
    FROM s
    RETURNING dispatch_at, statement_timestamp()"
);

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored (committed, or pending the caller's commit), due at this stored time.
    Stored(Due),
    /// The claimed slot had no place left: nothing was written. Roll the transaction back
    /// (the claim holds the slot's row lock until then), then refuse with
    /// [`super::slots::Alternatives::refuse`].
    SlotFull(SlotClaim),
}

/// Inserts a callback (autocommit: durable when this returns; or in the caller's
/// transaction). With a slot claim, the place is claimed by the same statement, and a full
/// slot writes nothing. Plain callbacks take the request path through
/// [`super::batch::InsertBatcher`], which shares commits.
pub async fn insert(db: &impl GenericClient, cb: &NewCallback) -> Result<Inserted, Error> {
    let attrs = cb.attrs.to_json();
    let user_data = cb.user_data.clone().map(Value::Object);
    let state = cb.admission.state().as_str();
    let (desired, dispatch_at) = cb.admission.times();
    let scheduled = !cb.admission.is_immediate();
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &cb.id,
        &cb.tenant,
        &cb.service,
        &state,
        &cb.phone_number,
        &desired,
        &dispatch_at,
        &scheduled,
        &cb.priority,
        &attrs,
        &user_data,
        &cb.phone_e164,
    ];
    let Some(claim) = cb.admission.slot() else {
        let row = super::stmt::query_one(db, INSERT, &params).await?;
        return Ok(Inserted::Stored(due(&row)));
    };
    let capacity = i32::try_from(claim.capacity).unwrap_or(i32::MAX);
    let minutes = i16::try_from(claim.minutes).unwrap_or(i16::MAX);
    params.push(&claim.start);
    params.push(&capacity);
    params.push(&minutes);
    let row = super::stmt::query_opt(db, INSERT_CLAIMING, &params).await?;
    Ok(row.map_or(Inserted::SlotFull(*claim), |r| Inserted::Stored(due(&r))))
}

/// The stored due time and the statement's clock of an insert's `RETURNING`.
fn due(row: &tokio_postgres::Row) -> Due {
    Due {
        at: row.get(0),
        db_now: row.get(1),
    }
}

/// What a compensation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Withdrawn {
    /// How many callbacks it withdrew.
    pub count: u64,
    /// Callbacks it kept: a replay of their Idempotency-Key was answered with them.
    pub spared: Vec<Uuid>,
    /// Those of `spared` still active (not cancelled meanwhile), their rows locked by the
    /// withdrawal's transaction until it ends: nothing can complete them before then.
    pub kept_active: Vec<Uuid>,
}

/// The locks of a withdrawal of `ids`: their Idempotency-Keys first, then their rows. Returns
/// the callbacks a replay marked (kept) and those of them still active.
async fn lock_for_withdrawal(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    ids: &[Uuid],
) -> Result<(Vec<Uuid>, Vec<Uuid>), Error> {
    // The keys first: a replay holding one commits its mark before this reads it, and one
    // that comes later waits for this transaction and then finds the key gone.
    let spared: Vec<Uuid> = tx
        .query(
            "SELECT callback_id, replayed FROM idempotency_keys
             WHERE tenant_id = $2 AND callback_id = ANY($1) ORDER BY key FOR UPDATE",
            &[&ids, &tenant],
        )
        .await?
        .iter()
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect();
    // The row locks next, in a statement of their own (as `cancel`): the withdrawal below
    // then reads the slot counters after any move that committed meanwhile, and gives back
    // the place held now, not the one held at its snapshot. A kept row is locked too, so that
    // whatever the caller does for it before the commit (counting it again) sees it active.
    let kept_active: Vec<Uuid> = tx
        .query(
            "SELECT id, state <> 'COMPLETED' FROM callbacks WHERE id = ANY($1) AND tenant_id = $2
             ORDER BY id FOR UPDATE",
            &[&ids, &tenant],
        )
        .await?
        .iter()
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get::<_, Uuid>(0))
        .filter(|id| spared.contains(id))
        .collect();
    Ok((spared, kept_active))
}

/// Withdraws callbacks of `tenant` whose create answered 503 but which were stored after all
/// (compensation, docs/bounded-answers.md). They are not deleted: while the API could not
/// reach PostgreSQL a worker may have found and handed one off, so each is cancelled
/// (COMPLETED/CANCELLED) owing the voice platform a settle (`control_pending`: the hand-off is
/// fenced if not yet written, a control entry follows it otherwise), in the same statement
/// that gives back its slot place and frees its Idempotency-Key. A callback whose key a replay
/// marked is kept (`Withdrawn::spared`): that replay's answer named it.
pub async fn withdraw_unanswered(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    ids: &[Uuid],
) -> Result<Withdrawn, Error> {
    let (spared, kept_active) = lock_for_withdrawal(tx, tenant, ids).await?;
    let ids: Vec<Uuid> = ids
        .iter()
        .filter(|id| !spared.contains(id))
        .copied()
        .collect();
    let row = super::stmt::query_one(
        tx,
        "WITH d AS (
                UPDATE callbacks SET state = 'COMPLETED', reason = 'CANCELLED',
                    control_pending = true, withdrawn = true, updated_at = now()
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
    let count = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
    Ok(Withdrawn {
        count,
        spared,
        kept_active,
    })
}

/// Locks callback `id` of `tenant` against changes (`FOR SHARE`: a cancel waits for the
/// caller's transaction) and tells whether it is active (not COMPLETED), and if so whether a
/// withdrawal gave its throttle reservation back ([`mark_given_back`]) with no replay since:
/// `None` when not active, else `Some(given_back)`. Read in a replay's transaction, which holds
/// the key's row.
pub async fn lock_if_active(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    id: Uuid,
) -> Result<Option<bool>, Error> {
    let row = super::stmt::query_opt(
        tx,
        "SELECT EXISTS (SELECT 1 FROM idempotency_keys k
                         WHERE k.tenant_id = $2 AND k.callback_id = $1
                           AND k.given_back_at IS NOT NULL)
         FROM callbacks WHERE id = $1 AND tenant_id = $2 AND state <> 'COMPLETED'
         FOR SHARE OF callbacks",
        &[&id, &tenant],
    )
    .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Marks the Idempotency-Key of callback `id` as given back (migration V20), unless a replay
/// marked it first: a withdrawal commits this before it gives the callback's throttle
/// reservation back, so that the give-back is known whatever Redis loses or a re-seed
/// rewrites. Returns whether a key was marked (none: no key, or a replay's answer named the
/// callback and the withdrawal will keep it). docs/bounded-answers.md#a-replay-of-a-create-answered-503
pub async fn mark_given_back(
    db: &impl GenericClient,
    tenant: &str,
    id: Uuid,
) -> Result<bool, Error> {
    let n = super::stmt::execute(
        db,
        "UPDATE idempotency_keys SET given_back_at = now()
         WHERE tenant_id = $1 AND callback_id = $2 AND NOT replayed",
        &[&tenant, &id],
    )
    .await?;
    Ok(n > 0)
}

/// Callbacks whose withdrawal was begun and not finished: their Idempotency-Key was marked
/// given back ([`mark_given_back`]) more than `older_than_s` seconds ago, no replay named
/// them since, and they are still active. The process that began the withdrawal went away
/// (the worker's sweep finishes it). At most `limit`, as (tenant, service, id); read through
/// the partial index on the marks.
pub async fn abandoned_withdrawals(
    db: &impl GenericClient,
    older_than_s: f64,
    limit: i64,
) -> Result<Vec<(String, String, Uuid)>, Error> {
    let rows = super::stmt::query(
        db,
        "SELECT k.tenant_id, c.service, c.id FROM idempotency_keys k
         JOIN callbacks c ON c.id = k.callback_id AND c.tenant_id = k.tenant_id
         WHERE k.given_back_at IS NOT NULL
           AND k.given_back_at < now() - make_interval(secs => $1)
           AND NOT k.replayed AND c.state <> 'COMPLETED'
         LIMIT $2",
        &[&older_than_s, &limit],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Callbacks being withdrawn: their Idempotency-Key is marked given back and no replay named
/// them since ([`mark_given_back`]). The sweep's re-index and the rebuild leave them out of the
/// schedule index: indexed, they could be dialled before the withdrawal (or the sweep's
/// `abandoned` step) takes them out (helper-64). Read through the partial index on the marks;
/// there are usually none.
pub async fn being_withdrawn(db: &impl GenericClient) -> Result<HashSet<Uuid>, Error> {
    let rows = super::stmt::query(
        db,
        "SELECT callback_id FROM idempotency_keys
         WHERE given_back_at IS NOT NULL AND NOT replayed",
        &[],
    )
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Clears the give-back mark of callback `id` in the replay's transaction that admitted it
/// again: from its commit on, re-seeds count the callback.
pub async fn clear_given_back(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    id: Uuid,
) -> Result<(), Error> {
    super::stmt::execute(
        tx,
        "UPDATE idempotency_keys SET given_back_at = NULL
         WHERE tenant_id = $1 AND callback_id = $2 AND given_back_at IS NOT NULL",
        &[&tenant, &id],
    )
    .await?;
    Ok(())
}

/// Result of an idempotent insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotent {
    /// The key was used before with the same body: that callback's id.
    Replayed(Uuid),
    /// The key was used before with a different body.
    Mismatch,
}

/// The earlier use of an Idempotency-Key still in force (kept 24 h), without claiming it:
/// `Replayed` for the same body, `Mismatch` for another, `None` when unused. A replay marks
/// the key (`replayed`, committed by `db`'s transaction) before its answer names the callback, so
/// that a compensation still to come for that callback keeps it
/// (docs/bounded-answers.md#a-replay-of-a-create-answered-503); a key being withdrawn is waited
/// for, and is then unused.
pub async fn earlier_use(
    db: &impl GenericClient,
    tenant: &str,
    key: &str,
    request_hash: &[u8],
) -> Result<Option<Idempotent>, Error> {
    let row = db
        .query_opt(
            "UPDATE idempotency_keys SET replayed = replayed OR request_hash = $3
             WHERE tenant_id = $1 AND key = $2 AND created_at >= now() - interval '24 hours'
             RETURNING request_hash, callback_id",
            &[&tenant, &key, &request_hash],
        )
        .await?;
    Ok(row.map(|r| earlier(&r, request_hash)))
}

fn earlier(row: &tokio_postgres::Row, request_hash: &[u8]) -> Idempotent {
    let (hash, id): (Vec<u8>, Uuid) = (row.get(0), row.get(1));
    match hash == request_hash {
        true => Idempotent::Replayed(id),
        false => Idempotent::Mismatch,
    }
}

/// Claims `key` for `cb` inside the caller's transaction: `None` = claimed (insert `cb`, then
/// commit; rolling back frees the key), else the earlier use (`Replayed` or `Mismatch`).
/// A concurrent claim of the same key waits here until the first transaction ends. A
/// `Replayed` key is marked in this transaction, which the caller commits before it answers
/// (see [`earlier_use`]).
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
                    created_at = now(), replayed = false, given_back_at = NULL
                WHERE idempotency_keys.created_at < now() - interval '24 hours'
             RETURNING 1",
        &[&cb.tenant, &key, &request_hash, &cb.id],
    )
    .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    // The conflict locked the row (ON CONFLICT DO UPDATE locks it even where it updates
    // nothing): it is the one that stays until this transaction ends.
    let row = super::stmt::query_one(
        tx,
        "UPDATE idempotency_keys SET replayed = replayed OR request_hash = $3
         WHERE tenant_id = $1 AND key = $2 RETURNING request_hash, callback_id",
        &[&cb.tenant, &key, &request_hash],
    )
    .await?;
    Ok(Some(earlier(&row, request_hash)))
}

/// A callback row: what retrieve and cancel read, and what the worker loads to dispatch
/// (`db::dispatch::DueCallback` adds the service's settings).
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
    /// Priority the callback started with (the voice platform raises it while it waits).
    pub priority: i32,
    /// The current dial attempt, 1 for the first.
    pub attempt: i16,
    /// The hand-off epoch of the attempt: bumped by each reschedule, part of the hand-off's
    /// dedupe key (docs/voice-platform.md#reschedule).
    pub handoff_epoch: i16,
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
    /// Reads a row selected with [`COLUMNS`] (each named as the table names it).
    pub fn from_row(r: &tokio_postgres::Row) -> Result<Self, Error> {
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
            priority: r.get("priority"),
            attempt: r.get("attempt"),
            handoff_epoch: r.get("handoff_epoch"),
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
            attrs: crate::model::attrs::shown(&self.attrs),
            user_data: self.user_data.clone(),
        }
    }
}

/// The columns [`StoredCallback::from_row`] reads, of the table aliased `c`.
pub const COLUMNS: &str =
    "c.id, c.tenant_id, c.service, c.state, c.reason, c.phone_number, c.phone_e164,
    c.desired_time, c.dispatch_at, c.priority, c.attempt, c.submitted_at, c.created_at, c.attrs,
    c.user_data, c.handoff_epoch";

/// One callback of the tenant, or 404 (another tenant's id is 404 too: invariant 10).
pub async fn get(db: &impl GenericClient, tenant: &str, id: Uuid) -> Result<StoredCallback, Error> {
    let row = super::stmt::query_opt(
        db,
        &format!("SELECT {COLUMNS} FROM callbacks c WHERE c.id = $1 AND c.tenant_id = $2"),
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
    /// That attempt's hand-off epoch (the submission the fence is for).
    pub epoch: i16,
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
    // The row lock first, in a statement of its own: the cancel below then reads with a
    // snapshot taken after any reschedule that held the row committed, so it gives back the
    // slot place the callback holds now. In one statement the counter row is read with the
    // snapshot of before that commit: a counter the move created, or raised from 0, is not
    // seen and the place leaks (docs/voice-platform.md#reschedule).
    super::stmt::query_opt(
        db,
        "SELECT 1 FROM callbacks WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
        &[&id, &tenant],
    )
    .await?;
    let row = super::stmt::query_opt(
        db,
        "WITH c AS (
                UPDATE callbacks SET state = 'COMPLETED', reason = 'CANCELLED', updated_at = now(),
                    control_pending = submitted_at IS NOT NULL
                        OR dispatch_at <= now() + interval '1 hour'
                WHERE id = $1 AND tenant_id = $2 AND state NOT IN ('PROCESSING', 'COMPLETED')
                RETURNING id, submitted_at, attempt, service, slot_start, slot_minutes, control_pending,
                    handoff_epoch
             ), e AS (
                INSERT INTO callback_events (callback_id, state, reason, source)
                SELECT id, 'COMPLETED', 'CANCELLED', 'api' FROM c
             ), f AS (
                UPDATE slot_bookings b SET booked = b.booked - 1 FROM c
                WHERE b.tenant_id = $2 AND b.service = c.service AND b.slot_start = c.slot_start
                  AND b.slot_minutes = coalesce(c.slot_minutes, 0) AND b.booked > 0
             )
             SELECT submitted_at IS NOT NULL, attempt, service, control_pending, handoff_epoch
             FROM c",
        &[&id, &tenant],
    )
    .await?;
    if let Some(row) = row {
        return Ok(Cancelled {
            submitted: row.get(0),
            attempt: row.get(1),
            service: row.get(2),
            owes_control: row.get(3),
            epoch: row.get(4),
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
                state = 'COMPLETED' AND reason = 'CANCELLED', handoff_epoch
         FROM callbacks WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
        &[&id, &tenant],
    )
    .await?;
    Ok(row.filter(|r| r.get::<_, bool>(4)).map(|r| Cancelled {
        submitted: r.get(0),
        attempt: r.get(1),
        service: r.get(2),
        owes_control: r.get(3),
        epoch: r.get(5),
    }))
}

#[cfg(test)]
mod float_tests {
    /// PostgreSQL prints a jsonb number as its exact decimal: the largest finite f64 a create
    /// accepted comes back as 309 digits, which must parse to the same number (serde_json's
    /// default parser overflowed to "number out of range" and retrieve panicked; schemathesis
    /// found it). `float_roundtrip` parses exactly.
    #[test]
    fn postgres_renderings_of_extreme_floats_read_back() {
        for v in [
            f64::MAX,
            f64::MIN_POSITIVE,
            1.6131411405945793e-16,
            -f64::MAX,
        ] {
            let exact = format!("{v:.0}");
            let text = if v.abs() >= 1.0 {
                exact
            } else {
                format!("{v:.330}")
            };
            let back: f64 = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back, v, "{text}");
        }
    }
}
