//! State events from the voice platform, applied idempotently and never backwards.
//!
//! The row is locked while an event is applied, so concurrent and duplicated deliveries
//! serialise: a state at or behind the current one changes nothing, a COMPLETED callback never
//! changes again, and an event naming an older attempt is ignored. A FAIL_CALL_TO_CUSTOMER with
//! attempts left schedules the next attempt instead of completing.

use deadpool_postgres::GenericClient;
use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::{
    error::ApiError,
    model::{CallbackState, CompletionReason, ServiceSettings},
};

/// A validated event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Reported state.
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
        /// Current state.
        state: CallbackState,
        /// Why.
        why: &'static str,
    },
    /// The state moved forward.
    Applied {
        /// Previous state.
        from: CallbackState,
        /// New state.
        to: CallbackState,
    },
    /// The call failed and another attempt was scheduled.
    Retry {
        /// The new attempt.
        attempt: i16,
        /// When it will be dispatched.
        dispatch_at: Timestamp,
    },
}

/// Identity of the callback an event was applied to (for the Redis follow-ups).
#[derive(Debug, Clone)]
pub struct Target {
    /// Tenant.
    pub tenant: String,
    /// Service.
    pub service: String,
    /// When it reached the voice stream (queue-view score), if it did.
    pub submitted_at: Option<Timestamp>,
    /// Priority (queue-view order).
    pub priority: i32,
    /// Whether it had reached the voice stream before this event (then the worker already put
    /// it into the queue view).
    pub was_submitted: bool,
}

/// Applies one event in its own transaction. 404 for an unknown id.
pub async fn apply(
    client: &mut deadpool_postgres::Client,
    id: Uuid,
    ev: &Event,
) -> Result<(Target, Outcome), ApiError> {
    let tx = client.transaction().await?;
    let row = super::stmt::query_opt(
        &tx,
        "SELECT tenant_id, service, state, attempt, submitted_at, priority FROM callbacks
             WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no callback {id}")))?;
    let current_s: String = row.get(2);
    let current = CallbackState::parse(&current_s)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("bad state {current_s}")))?;
    let attempt: i16 = row.get(3);
    let mut target = Target {
        tenant: row.get(0),
        service: row.get(1),
        submitted_at: row.get(4),
        priority: row.get(5),
        was_submitted: false,
    };
    target.was_submitted = target.submitted_at.is_some();
    let ignored = |why: &'static str| -> Result<(Target, Outcome), ApiError> {
        Ok((
            target.clone(),
            Outcome::Ignored {
                state: current,
                why,
            },
        ))
    };
    if ev.attempt.is_some_and(|a| a != attempt) {
        return ignored("event of another attempt");
    }
    if current == CallbackState::Completed {
        return ignored("already completed");
    }
    if ev.state <= current {
        return ignored("not ahead of the current state");
    }
    let reason = (ev.state == CallbackState::Completed)
        .then(|| ev.reason.unwrap_or(CompletionReason::NotAvailable));

    if reason == Some(CompletionReason::FailCallToCustomer) {
        let settings = crate::db::services::settings_any(&tx, &target.tenant, &target.service)
            .await?
            .unwrap_or_else(ServiceSettings::default);
        if i32::from(attempt) < i32::from(settings.max_attempts) {
            let dispatch_at = Timestamp::now()
                + SignedDuration::from_secs(i64::from(settings.retry_delay_seconds));
            super::stmt::execute(
                &tx,
                "UPDATE callbacks SET state = 'SCHEDULED', reason = NULL, attempt = attempt + 1,
                    submitted_at = NULL, expires_at = NULL, dispatch_at = $2, updated_at = now()
                 WHERE id = $1",
                &[&id, &dispatch_at],
            )
            .await?;
            super::stmt::execute(
                &tx,
                "INSERT INTO callback_events (callback_id, at, state, reason, source)
                 VALUES ($1, $2, 'COMPLETED', 'FAIL_CALL_TO_CUSTOMER', 'ors'),
                        ($1, now(), 'SCHEDULED', 'RETRY', 'worker')",
                &[&id, &ev.at],
            )
            .await?;
            tx.commit().await?;
            return Ok((
                target,
                Outcome::Retry {
                    attempt: attempt + 1,
                    dispatch_at,
                },
            ));
        }
    }

    // An event proves the voice platform holds the callback: it counts as submitted (and its
    // TTL runs) even if the worker has not recorded the submission yet.
    let row = super::stmt::query_one(
        &tx,
        "UPDATE callbacks c SET state = $2, reason = $3, updated_at = now(),
                submitted_at = COALESCE(c.submitted_at, now()),
                expires_at = COALESCE(c.expires_at, now() + make_interval(secs => COALESCE(
                    (SELECT (s.settings->>'ttl_seconds')::int FROM services s
                     WHERE s.tenant_id = c.tenant_id AND s.name = c.service), 86400)))
             WHERE c.id = $1 RETURNING c.submitted_at",
        &[
            &id,
            &ev.state.as_str(),
            &reason.map(CompletionReason::as_str),
        ],
    )
    .await?;
    target.submitted_at = row.get(0);
    super::stmt::execute(
        &tx,
        "INSERT INTO callback_events (callback_id, at, state, reason, source)
         VALUES ($1, $2, $3, $4, 'ors')",
        &[
            &id,
            &ev.at,
            &ev.state.as_str(),
            &reason.map(CompletionReason::as_str),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok((
        target,
        Outcome::Applied {
            from: current,
            to: ev.state,
        },
    ))
}
