//! Reschedule and property updates of one callback, in the caller's transaction: lock the row,
//! check that it may change, give back its slot place and claim the new one, write the new
//! times and user data (docs/voice-platform.md#reschedule).
//!
//! A move gives back the old place and claims the new one in the same transaction (the claim
//! is the create's, `db::callbacks::claim_ctes!`), so a full slot rolls both back and the
//! counts stay exact; it bumps the hand-off epoch, so a worker that loaded the row before the
//! commit can neither write the old time's hand-off (its dedupe key is fenced by the caller
//! before the commit) nor mark the row submitted (`db::dispatch::mark_submitted` matches the
//! epoch).

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{callbacks::claim_ctes, slots::SlotClaim};
use crate::{
    error::Error,
    model::{CallbackState, CompletionReason},
};

/// The locked row a change applies to.
#[derive(Debug, Clone)]
pub struct Locked {
    /// The callback's service.
    pub service: String,
    /// Its state.
    pub state: CallbackState,
    /// Why it completed (COMPLETED only).
    pub reason: Option<CompletionReason>,
    /// The current attempt.
    pub attempt: i16,
    /// The attempt's hand-off epoch.
    pub epoch: i16,
    /// The attempt reached the voice stream (PostgreSQL recorded it).
    pub submitted: bool,
    /// Its dispatch time is within the hour by PostgreSQL's clock: a worker may be handing it
    /// off right now (the window cancel uses, docs/voice-platform.md#cancel).
    pub due_soon: bool,
    /// Its user data.
    pub user_data: Map<String, Value>,
    /// The slot place it holds: (slot start, slot minutes; 0 before v6).
    pub slot: Option<(Timestamp, i16)>,
}

/// Locks callback `id` of `tenant` for a change (404 when it is not the tenant's).
pub async fn lock(db: &impl GenericClient, tenant: &str, id: Uuid) -> Result<Locked, Error> {
    let row = super::stmt::query_opt(
        db,
        "SELECT service, state, reason, attempt, handoff_epoch, submitted_at IS NOT NULL,
                dispatch_at <= now() + interval '1 hour', user_data, slot_start,
                coalesce(slot_minutes, 0::smallint)
         FROM callbacks WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
        &[&id, &tenant],
    )
    .await?
    .ok_or_else(|| Error::not_found(format!("no callback {id}")))?;
    let state: String = row.get(1);
    let reason: Option<String> = row.get(2);
    Ok(Locked {
        service: row.get(0),
        state: CallbackState::parse(&state)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("bad state {state}")))?,
        reason: reason.as_deref().and_then(CompletionReason::parse),
        attempt: row.get(3),
        epoch: row.get(4),
        submitted: row.get(5),
        due_soon: row.get(6),
        user_data: match row.get::<_, Option<Value>>(7) {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        },
        slot: row
            .get::<_, Option<Timestamp>>(8)
            .map(|start| (start, row.get(9))),
    })
}

/// Locks the slot counters a move touches (the one it leaves, the one it claims), in slot
/// order, before either is updated: two moves crossing between the same slots (A→B, B→A)
/// would otherwise each hold one counter and wait for the other, and PostgreSQL would abort
/// one of them as a deadlock (docs/voice-platform.md#reschedule).
pub async fn lock_counters(
    db: &impl GenericClient,
    (tenant, service): (&str, &str),
    left: Option<(Timestamp, i16)>,
    claimed: Option<(Timestamp, i16)>,
) -> Result<(), Error> {
    let (a, b) = (left.unzip(), claimed.unzip());
    super::stmt::query(
        db,
        "SELECT 1 FROM slot_bookings
         WHERE tenant_id = $1 AND service = $2
           AND ((slot_start = $3 AND slot_minutes = $4) OR (slot_start = $5 AND slot_minutes = $6))
         ORDER BY slot_start, slot_minutes FOR UPDATE",
        &[&tenant, &service, &a.0, &a.1, &b.0, &b.1],
    )
    .await?;
    Ok(())
}

impl Locked {
    /// 409 unless the callback may still change at all (not COMPLETED).
    pub fn changeable(&self, id: Uuid) -> Result<(), Error> {
        if self.state != CallbackState::Completed {
            return Ok(());
        }
        let reason = self
            .reason
            .map_or("NOT_AVAILABLE", CompletionReason::as_str);
        Err(Error::conflict(format!(
            "callback {id} is already completed ({reason}) and can no longer change"
        )))
    }

    /// 409 unless its time may still move: not completed and not handed to the voice platform
    /// (SCHEDULED, or QUEUED waiting for its hand-off).
    pub fn movable(&self, id: Uuid) -> Result<(), Error> {
        self.changeable(id)?;
        if self.epoch == i16::MAX {
            // The hand-off epoch (a smallint in every dedupe key) cannot count another move.
            return Err(Error::conflict(format!(
                "callback {id} was rescheduled {} times, the most a callback can be; cancel it \
                 and create a new one",
                i16::MAX
            )));
        }
        match self.state {
            CallbackState::Scheduled | CallbackState::Queued if !self.submitted => Ok(()),
            s => Err(Error::conflict(format!(
                "callback {id} is already with the voice platform ({}); it can no longer be \
                 rescheduled",
                s.as_str()
            ))),
        }
    }
}

/// Gives back the slot place callback `id` holds (if any) and forgets its slot, so that the
/// claim of the new one does not count it.
pub async fn release_slot(db: &impl GenericClient, id: Uuid) -> Result<(), Error> {
    super::stmt::execute(
        db,
        "WITH old AS (
                SELECT tenant_id, service, slot_start, coalesce(slot_minutes, 0) AS minutes
                FROM callbacks WHERE id = $1 AND slot_start IS NOT NULL
             ), r AS (
                UPDATE slot_bookings b SET booked = b.booked - 1 FROM old
                WHERE b.tenant_id = old.tenant_id AND b.service = old.service
                  AND b.slot_start = old.slot_start AND b.slot_minutes = old.minutes
                  AND b.booked > 0
             )
             UPDATE callbacks SET slot_start = NULL, slot_minutes = NULL
             WHERE id = $1 AND slot_start IS NOT NULL",
        &[&id],
    )
    .await?;
    Ok(())
}

/// The new times of a move (the desired time, the dispatch time before the insert's
/// `greatest(…, now())`, the slot place to claim).
#[derive(Debug, Clone, Copy)]
pub struct NewTime {
    /// The time the customer now asks for.
    pub desired: Timestamp,
    /// Desired time less the service's lead time (never earlier than the database's `now()`).
    pub dispatch_at: Timestamp,
    /// The slot place to claim (`None`: counted against no slot).
    pub slot: Option<SlotClaim>,
}

const MOVE_CLAIMING: &str = concat!(
    claim_ctes!("$2", "$3", "$6", "$7", "$8"),
    "UPDATE callbacks SET desired_time = $4, dispatch_at = greatest($5::timestamptz, now()),
        state = 'SCHEDULED', scheduled = true, slot_start = $6, slot_minutes = $8::smallint,
        handoff_epoch = handoff_epoch + 1, updated_at = now()
     FROM s WHERE id = $1 AND tenant_id = $2
     RETURNING dispatch_at"
);

const MOVE: &str =
    "UPDATE callbacks SET desired_time = $4, dispatch_at = greatest($5::timestamptz, now()),
        state = 'SCHEDULED', scheduled = true, handoff_epoch = handoff_epoch + 1,
        updated_at = now()
     WHERE id = $1 AND tenant_id = $2 AND service = $3
     RETURNING dispatch_at";

/// Moves callback `id` (locked, its old place released by [`release_slot`]) to `to`, claiming
/// the new slot place in the same statement: `Some(stored dispatch time)`, or `None` when the
/// slot is full (nothing written: roll back, then refuse with proposals).
pub async fn move_to(
    db: &impl GenericClient,
    (tenant, service, id): (&str, &str, Uuid),
    to: &NewTime,
) -> Result<Option<Timestamp>, Error> {
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        vec![&id, &tenant, &service, &to.desired, &to.dispatch_at];
    let Some(claim) = &to.slot else {
        let row = super::stmt::query_one(db, MOVE, &params).await?;
        return Ok(Some(row.get(0)));
    };
    let capacity = i32::try_from(claim.capacity).unwrap_or(i32::MAX);
    let minutes = i16::try_from(claim.minutes).unwrap_or(i16::MAX);
    params.push(&claim.start);
    params.push(&capacity);
    params.push(&minutes);
    let row = super::stmt::query_opt(db, MOVE_CLAIMING, &params).await?;
    Ok(row.map(|r| r.get(0)))
}

/// Writes the user data of callback `id` (already merged and checked by the caller).
pub async fn set_user_data(
    db: &impl GenericClient,
    id: Uuid,
    user_data: &Map<String, Value>,
) -> Result<(), Error> {
    let value = (!user_data.is_empty()).then(|| Value::Object(user_data.clone()));
    super::stmt::execute(
        db,
        "UPDATE callbacks SET user_data = $2, updated_at = now() WHERE id = $1",
        &[&id, &value],
    )
    .await?;
    Ok(())
}

/// After a change whose `COMMIT` broke: whether it landed (the row's hand-off epoch moved past
/// `epoch` for a move, its user data equals `user_data` otherwise). Takes the row lock, so a
/// transaction still holding it is waited for first. Run it in a transaction.
pub async fn landed(
    db: &impl GenericClient,
    id: Uuid,
    moved_from_epoch: Option<i16>,
    user_data: &Map<String, Value>,
) -> Result<bool, Error> {
    let row = super::stmt::query_opt(
        db,
        "SELECT handoff_epoch, coalesce(user_data, '{}'::jsonb) FROM callbacks
         WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await?;
    Ok(row.is_some_and(|r| match moved_from_epoch {
        Some(e) => r.get::<_, i16>(0) > e,
        None => r.get::<_, Value>(1) == Value::Object(user_data.clone()),
    }))
}
