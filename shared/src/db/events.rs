//! State events from the voice platform, applied at most once and never backwards.
//!
//! The row is locked while an event is applied, so concurrent and duplicated deliveries
//! serialise: a state at or behind the current one changes nothing, a COMPLETED callback never
//! changes again, and an event naming an older attempt is ignored. Every applied event is
//! recorded with its attempt under a unique index, so one (callback, attempt, state) applies
//! once. An event for an attempt the voice platform was never handed is refused (409). An event
//! without `attempt` belongs to the current attempt once it was handed off; before that, or
//! when it repeats an earlier attempt's event (same state, reason and `at`), it is a late copy
//! of an earlier attempt's event and changes nothing. A FAIL_CALL_TO_CUSTOMER with attempts left
//! schedules the next attempt (on PostgreSQL's clock) instead of completing.
//! See docs/voice-platform.md.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use uuid::Uuid;

use crate::{
    error::Error,
    model::{CallbackState, CompletionReason, ServiceSettings},
};

/// A voice-platform event after validation (known state and reason, parsed time).
#[derive(Debug, Clone)]
pub struct Event {
    /// The state the voice platform reports the callback in.
    pub state: CallbackState,
    /// Completion reason (COMPLETED only; defaults to NOT_AVAILABLE).
    pub reason: Option<CompletionReason>,
    /// Attempt the event belongs to, when the voice platform says.
    pub attempt: Option<i16>,
    /// When it happened at the voice platform.
    pub at: Timestamp,
}

/// What applying an event did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Nothing changed (duplicate, out of order, stale attempt, already completed).
    Ignored {
        /// The callback's state, unchanged.
        state: CallbackState,
        /// Why nothing changed, for the answer (e.g. "already applied for this attempt").
        why: &'static str,
    },
    /// The state moved forward.
    Applied {
        /// The state before the event.
        from: CallbackState,
        /// The state the event moved it to.
        to: CallbackState,
    },
    /// The event is for the current attempt, which PostgreSQL does not yet record as handed off
    /// (nothing changed): the caller asks the voice stream and applies again with
    /// `handed_off = true` if the submission is there.
    Unconfirmed {
        /// The callback's state, unchanged.
        state: CallbackState,
        /// The attempt whose submission must be confirmed in the voice Redis.
        attempt: i16,
        /// Its hand-off epoch (part of the submission's dedupe key).
        epoch: i16,
    },
    /// The call failed and another attempt was scheduled.
    Retry {
        /// The attempt scheduled next (the failed one plus 1).
        attempt: i16,
        /// When it will be dispatched.
        dispatch_at: Timestamp,
    },
}

/// Identity of the callback an event was applied to (for the Redis follow-ups).
#[derive(Debug, Clone)]
pub struct Target {
    /// The callback's tenant (part of its queue view's key).
    pub tenant: String,
    /// The callback's service (part of its queue view's key).
    pub service: String,
    /// When it reached the voice stream, if it did.
    pub submitted_at: Option<Timestamp>,
    /// Its desired time: what it waits since (queue-view order after the priority).
    pub desired_time: Timestamp,
    /// Priority (queue-view order).
    pub priority: i32,
    /// Whether it had reached the voice stream before this event (then the worker already put
    /// it into the queue view).
    pub was_submitted: bool,
    /// The number its create-time limits counted (`phone::number_key`): the release on
    /// COMPLETED reads its counts in one go (docs/costs.md).
    pub number_key: String,
    /// When the event was applied, by the database's clock (`now()` of its transaction): the
    /// time a dequeue is recorded at, the same clock whichever replica applied it
    /// (docs/derived-state.md#queue-views). `None` until the state moves.
    pub applied_at: Option<Timestamp>,
}

/// The locked row an event applies to.
struct Current {
    state: CallbackState,
    attempt: i16,
    epoch: i16,
}

async fn lock(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Uuid,
) -> Result<(Target, Current), Error> {
    let row = super::stmt::query_opt(
        tx,
        "SELECT tenant_id, service, state, attempt, submitted_at, priority, desired_time,
                    handoff_epoch, phone_e164, phone_number
             FROM callbacks WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await?
    .ok_or_else(|| Error::not_found(format!("no callback {id}")))?;
    let state: String = row.get(2);
    let state = CallbackState::parse(&state)
        .ok_or_else(|| Error::internal(anyhow::anyhow!("bad state {state}")))?;
    let submitted_at: Option<Timestamp> = row.get(4);
    let target = Target {
        tenant: row.get(0),
        service: row.get(1),
        submitted_at,
        desired_time: row.get(6),
        priority: row.get(5),
        was_submitted: submitted_at.is_some(),
        applied_at: None,
        number_key: crate::phone::number_key(row.get(8), row.get(9)),
    };
    Ok((
        target,
        Current {
            state,
            attempt: row.get(3),
            epoch: row.get(7),
        },
    ))
}

/// Applies one event in its own transaction. 404 for an unknown id, 409 for an attempt the
/// voice platform was never handed. `handed_off`: the caller saw the current attempt's
/// submission in the voice stream (after an [`Outcome::Unconfirmed`]).
pub async fn apply(
    client: &mut deadpool_postgres::Client,
    id: Uuid,
    ev: &Event,
    handed_off: bool,
) -> Result<(Target, Outcome), Error> {
    let tx = client.transaction().await?;
    let (target, cur) = lock(&tx, id).await?;
    let ignored = |why: &'static str| {
        let outcome = Outcome::Ignored {
            state: cur.state,
            why,
        };
        Ok((target.clone(), outcome))
    };
    let of = ev.attempt.unwrap_or(cur.attempt);
    if of < cur.attempt {
        return ignored("event of an earlier attempt");
    }
    if of > cur.attempt {
        return Err(not_handed_off(id, of, &cur));
    }
    if cur.state == CallbackState::Completed {
        return ignored("already completed");
    }
    if !target.was_submitted && !handed_off {
        let outcome = Outcome::Unconfirmed {
            state: cur.state,
            attempt: cur.attempt,
            epoch: cur.epoch,
        };
        return Ok((target, outcome));
    }
    let reason = (ev.state == CallbackState::Completed)
        .then(|| ev.reason.unwrap_or(CompletionReason::NotAvailable));
    if ev.attempt.is_none() && cur.attempt > 1 && repeats_earlier(&tx, id, &cur, ev, reason).await?
    {
        return ignored("repeats an event of an earlier attempt");
    }
    if ev.state <= cur.state {
        return ignored("not ahead of the current state");
    }
    if !record_once(&tx, id, cur.attempt, ev, reason).await? {
        return ignored("already applied for this attempt");
    }
    if reason == Some(CompletionReason::FailCallToCustomer)
        && let Some(outcome) = retry(&tx, id, &target, cur.attempt).await?
    {
        tx.commit().await?;
        return Ok((target, outcome));
    }
    let target = advance(&tx, id, target, ev.state, reason).await?;
    if ev.state == CallbackState::Routing {
        // USERORIGINATED: the customer's turn to call in, owed with the state (docs/push.md).
        super::push::owe_ready(&tx, id).await?;
    }
    tx.commit().await?;
    let outcome = Outcome::Applied {
        from: cur.state,
        to: ev.state,
    };
    Ok((target, outcome))
}

/// The 409 of an event naming an attempt the voice platform was not handed.
pub fn not_handed_off_message(
    id: Uuid,
    attempt: i16,
    current: i16,
    state: CallbackState,
) -> String {
    format!(
        "attempt {attempt} of callback {id} was never handed to the voice platform \
         (current attempt {current}, {}); events are accepted only for submitted attempts",
        state.as_str()
    )
}

fn not_handed_off(id: Uuid, attempt: i16, cur: &Current) -> Error {
    Error::conflict(not_handed_off_message(id, attempt, cur.attempt, cur.state))
}

/// Whether an event without `attempt` repeats one already applied for an earlier attempt
/// (same state, reason and `at`: a redelivery after a retry moved the callback on).
async fn repeats_earlier(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Uuid,
    cur: &Current,
    ev: &Event,
    reason: Option<CompletionReason>,
) -> Result<bool, Error> {
    let reason = reason.map(CompletionReason::as_str);
    let row = super::stmt::query_opt(
        tx,
        "SELECT 1 FROM callback_events
             WHERE callback_id = $1 AND source = 'ors' AND attempt < $2 AND state = $3
               AND reason IS NOT DISTINCT FROM $4 AND at = $5
             LIMIT 1",
        &[&id, &cur.attempt, &ev.state.as_str(), &reason, &ev.at],
    )
    .await?;
    Ok(row.is_some())
}

/// Records the event for (callback, attempt, state); `false` when it was recorded before.
async fn record_once(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Uuid,
    attempt: i16,
    ev: &Event,
    reason: Option<CompletionReason>,
) -> Result<bool, Error> {
    let n = super::stmt::execute(
        tx,
        "INSERT INTO callback_events (callback_id, at, state, reason, source, attempt)
         VALUES ($1, $2, $3, $4, 'ors', $5)
         ON CONFLICT (callback_id, attempt, state) WHERE source = 'ors' AND attempt IS NOT NULL
         DO NOTHING",
        &[
            &id,
            &ev.at,
            &ev.state.as_str(),
            &reason.map(CompletionReason::as_str),
            &attempt,
        ],
    )
    .await?;
    Ok(n == 1)
}

/// A failed call with attempts left: schedules the next attempt `retry_delay_seconds` from
/// now on PostgreSQL's clock. `None` when no attempt is left (the failure completes it).
async fn retry(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Uuid,
    target: &Target,
    attempt: i16,
) -> Result<Option<Outcome>, Error> {
    let settings = crate::db::services::settings_any(tx, &target.tenant, &target.service)
        .await?
        .unwrap_or_else(ServiceSettings::default);
    if i32::from(attempt) >= i32::from(settings.max_attempts) {
        return Ok(None);
    }
    let delay = f64::from(settings.retry_delay_seconds);
    let row = super::stmt::query_one(
        tx,
        "WITH r AS (
                UPDATE callbacks SET state = 'SCHEDULED', reason = NULL, attempt = attempt + 1,
                    submitted_at = NULL, expires_at = NULL,
                    dispatch_at = now() + make_interval(secs => $2), updated_at = now()
                WHERE id = $1 RETURNING attempt, dispatch_at
             ), e AS (
                INSERT INTO callback_events (callback_id, at, state, reason, source, attempt)
                SELECT $1, now(), 'SCHEDULED', 'RETRY', 'worker', attempt FROM r
             )
             SELECT attempt, dispatch_at FROM r",
        &[&id, &delay],
    )
    .await?;
    Ok(Some(Outcome::Retry {
        attempt: row.get(0),
        dispatch_at: row.get(1),
    }))
}

/// Moves the callback to `state`. An event proves the voice platform holds the callback: it
/// counts as submitted (and its TTL runs) even if the worker has not recorded the submission.
async fn advance(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Uuid,
    mut target: Target,
    state: CallbackState,
    reason: Option<CompletionReason>,
) -> Result<Target, Error> {
    let row = super::stmt::query_one(
        tx,
        "UPDATE callbacks c SET state = $2, reason = $3, updated_at = now(),
                submitted_at = COALESCE(c.submitted_at, now()),
                expires_at = COALESCE(c.expires_at, now() + make_interval(secs => COALESCE(
                    (SELECT (s.settings->>'ttl_seconds')::int FROM services s
                     WHERE s.tenant_id = c.tenant_id AND s.name = c.service), 86400)))
             WHERE c.id = $1 RETURNING c.submitted_at, now()",
        &[&id, &state.as_str(), &reason.map(CompletionReason::as_str)],
    )
    .await?;
    target.submitted_at = row.get(0);
    target.applied_at = Some(row.get(1));
    Ok(target)
}
