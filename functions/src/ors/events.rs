//! `POST /ges/v1/ors/callbacks/{id}/events`: the voice platform reports a callback's progress
//! (`{state, reason?, position_in_queue?, ewt_seconds?, session_id?, attempt?, at}`).
//!
//! Internal only (never on the external port), and only for callers sending
//! `Authorization: Bearer $ORS_EVENTS_TOKEN` (required: the route fails closed). Events apply
//! at most once per (callback, attempt, state) and never move a callback backwards
//! (`shared::db::events`); an unknown id is 404, an unknown state or reason 400, an event for an
//! attempt never handed to the voice platform 409 (docs/voice-platform.md). After the commit,
//! the service's queue view follows: QUEUED/ROUTING callbacks are in it (for
//! `positionInQueue`), leaving it records a dequeue time (for wait estimates), and a retry goes
//! back into the schedule index.

use axum::{
    Router,
    extract::{FromRequestParts, State},
    http::{HeaderMap, request::Parts},
    routing::post,
};
use jiff::Timestamp;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use shared::{
    ApiError,
    db::events::{self, Event, Outcome},
    http::ApiResult,
    http::{AppState, Envelope, Json, Path},
    metrics,
    model::{CallbackState, CompletionReason, callback::parse_time},
    redis::{queue, schedule, throttle, voice},
};
use uuid::Uuid;

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route("/ges/v1/ors/callbacks/{id}/events", post(handler))
}

/// The JSON body the voice platform posts (snake_case fields; only `state` is required).
#[derive(Debug, Deserialize)]
pub struct EventBody {
    /// SCHEDULED | QUEUED | ROUTING | PROCESSING | COMPLETED.
    pub state: String,
    /// Completion reason (with COMPLETED).
    #[serde(default)]
    pub reason: Option<String>,
    /// Position reported by the voice platform (informational).
    #[serde(default)]
    pub position_in_queue: Option<i64>,
    /// Wait estimate reported by the voice platform (informational).
    #[serde(default)]
    pub ewt_seconds: Option<i64>,
    /// Voice session id (informational).
    #[serde(default)]
    pub session_id: Option<String>,
    /// Attempt the event belongs to (the stream entry's `attempt`); events of an older attempt
    /// are ignored, of a later one refused. Without it, the current handed-off attempt.
    #[serde(default)]
    pub attempt: Option<i16>,
    /// When it happened (RFC 3339); defaults to now.
    #[serde(default)]
    pub at: Option<String>,
}

/// What the event did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventResult {
    /// The callback the event was for (the path's id).
    pub id: String,
    /// Whether the event changed the callback.
    pub applied: bool,
    /// The callback's state after the event.
    pub callback_state: CallbackState,
    /// Why nothing changed, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    /// The next attempt, when a failed call was re-scheduled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i16>,
}

/// Fails closed: without a configured token every call is refused (the binaries serving this
/// route refuse to start without one, `Config::require_ors_events_token`).
/// The voice platform, authenticated by its bearer token. An extractor, listed before the body
/// and path, so an unauthenticated caller learns nothing from how its body or id is read.
pub(crate) struct OrsCaller;

impl FromRequestParts<AppState> for OrsCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        authorize(state, &parts.headers).map(|()| OrsCaller)
    }
}

fn authorize(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(expected) = &state.cfg.http.ors_events_token else {
        return Err(ApiError::unauthorized(
            "the voice-platform events route is disabled: set ORS_EVENTS_TOKEN to enable it",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized("Authorization: Bearer <ORS events token> is required")
        })?;
    if !shared::auth::secrets_equal(given.trim(), expected.expose_secret()) {
        return Err(ApiError::unauthorized("invalid ORS events token"));
    }
    Ok(())
}

fn parse(body: EventBody) -> ApiResult<Event> {
    let state = CallbackState::parse(body.state.trim()).ok_or_else(|| {
        ApiError::bad_request(
            "state must be one of SCHEDULED, QUEUED, ROUTING, PROCESSING, COMPLETED",
        )
    })?;
    let reason = match body.reason.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(r) => Some(CompletionReason::parse(r).ok_or_else(|| {
            ApiError::bad_request(
                "reason must be one of AGENT_CONNECTED, CANCELLED, FAIL_TIMEOUT_TTL, \
                 FAIL_CALL_TO_CUSTOMER, FAIL_QUEUEING, FAIL_ERROR, NOT_AVAILABLE",
            )
        })?),
    };
    if reason.is_some() && state != CallbackState::Completed {
        return Err(ApiError::bad_request(
            "reason is only allowed with state COMPLETED",
        ));
    }
    if body.attempt.is_some_and(|a| a < 1) {
        return Err(ApiError::bad_request("attempt must be at least 1"));
    }
    let at = match body.at.as_deref().map(str::trim) {
        None | Some("") => Timestamp::now(),
        Some(s) => parse_time("at", s)?,
    };
    Ok(Event {
        state,
        reason,
        attempt: body.attempt,
        at,
    })
}

async fn handler(
    State(state): State<AppState>,
    _: OrsCaller,
    Path(id): Path<String>,
    Json(body): Json<EventBody>,
) -> ApiResult<Envelope<EventResult>> {
    let id =
        Uuid::parse_str(id.trim()).map_err(|_| ApiError::not_found(format!("no callback {id}")))?;
    let event = parse(body)?;
    let (target, outcome) = apply(&state, id, &event).await?;
    let label = match &outcome {
        Outcome::Applied { .. } => "applied",
        Outcome::Ignored { .. } | Outcome::Unconfirmed { .. } => "ignored",
        Outcome::Retry { .. } => "retry",
    };
    ::metrics::counter!(metrics::ORS_EVENTS, "outcome" => label).increment(1);
    follow_up(&state, id, &event, &target, &outcome).await;
    Ok(Envelope::ok(answer(id, outcome)))
}

/// Applies the event; when PostgreSQL does not yet record the current attempt as handed off,
/// the voice stream's dedupe key decides (the worker may have written it and not marked it
/// yet): written → applied; not written → refused (409), or, without `attempt` on a retried
/// callback, taken as a late copy of an earlier attempt's event.
async fn apply(state: &AppState, id: Uuid, event: &Event) -> ApiResult<(events::Target, Outcome)> {
    let mut client = state.db.get().await?;
    let (target, outcome) = events::apply(&mut client, id, event, false).await?;
    let Outcome::Unconfirmed {
        state: current,
        attempt,
        epoch,
    } = outcome
    else {
        return Ok((target, outcome));
    };
    let handed_off = async {
        let mut conn = state.voice.conn().await?;
        voice::was_submitted(&mut conn, &state.cfg.voice.stream, id, (attempt, epoch)).await
    }
    .await
    .map_err(|e| {
        tracing::warn!(callback.id = %id, error = %e, "voice redis unreachable while checking a hand-off");
        ApiError::unavailable(format!(
            "cannot check whether attempt {attempt} was handed to the voice platform (voice Redis unreachable); retry later"
        ))
    })?;
    if handed_off {
        // Confirmed for this attempt only: if the callback moved on to another attempt
        // meanwhile (a retry), the event is that earlier attempt's and changes nothing.
        let confirmed = Event {
            attempt: Some(attempt),
            ..event.clone()
        };
        return Ok(events::apply(&mut client, id, &confirmed, true).await?);
    }
    if event.attempt.is_none() && attempt > 1 {
        let why = "no attempt given and the current attempt is not with the voice platform: \
                   taken as a late event of an earlier attempt";
        return Ok((
            target,
            Outcome::Ignored {
                state: current,
                why,
            },
        ));
    }
    Err(ApiError::conflict(events::not_handed_off_message(
        id, attempt, attempt, current,
    )))
}

fn answer(id: Uuid, outcome: Outcome) -> EventResult {
    let (applied, callback_state, note, attempt) = match outcome {
        Outcome::Applied { to, .. } => (true, to, None, None),
        Outcome::Ignored { state, why } => (false, state, Some(why), None),
        Outcome::Unconfirmed { state, .. } => (false, state, Some("attempt not handed off"), None),
        Outcome::Retry { attempt, .. } => (
            true,
            CallbackState::Scheduled,
            Some("call failed; next attempt scheduled"),
            Some(attempt),
        ),
    };
    EventResult {
        id: id.to_string(),
        applied,
        callback_state,
        note,
        attempt,
    }
}

/// The Redis side of an applied event; failures are repaired by the reconciler.
async fn follow_up(
    state: &AppState,
    id: Uuid,
    event: &Event,
    target: &events::Target,
    outcome: &Outcome,
) {
    // Only what changed the view costs a command: duplicates and steps inside the queue
    // (QUEUED → ROUTING) touch nothing.
    let result = async {
        let (tenant, service) = (target.tenant.as_str(), target.service.as_str());
        // A dequeue is recorded at the database's time of the event (one clock for every
        // replica); the host's if the row did not say.
        let served_at = target
            .applied_at
            .unwrap_or_else(Timestamp::now)
            .as_millisecond();
        let in_view =
            |s: CallbackState| matches!(s, CallbackState::Queued | CallbackState::Routing);
        match outcome {
            Outcome::Applied { from, to }
                if in_view(*to) && (!target.was_submitted || !in_view(*from)) =>
            {
                let score = queue::score(target.priority, target.desired_time.as_millisecond());
                let mut conn = state.redis.conn().await?;
                queue::enqueue(&mut conn, &state.keys, tenant, service, &[(id, score)]).await
            }
            Outcome::Applied {
                to: CallbackState::Processing,
                ..
            } => {
                let mut conn = state.redis.conn().await?;
                queue::dequeue(
                    &mut conn,
                    &state.keys,
                    (tenant, service),
                    id,
                    Some(served_at),
                )
                .await
            }
            Outcome::Applied {
                from,
                to: CallbackState::Completed,
            } if in_view(*from) => {
                let served = event.reason == Some(CompletionReason::AgentConnected);
                let served_at = served.then_some(served_at);
                let mut conn = state.redis.conn().await?;
                queue::dequeue(&mut conn, &state.keys, (tenant, service), id, served_at).await
            }
            Outcome::Retry { dispatch_at, .. } => {
                let mut conn = state.redis.conn().await?;
                queue::dequeue(&mut conn, &state.keys, (tenant, service), id, None).await?;
                schedule::index(&mut conn, &state.keys, id, dispatch_at.as_millisecond()).await
            }
            _ => Ok(()),
        }?;
        // A completed callback frees its place in the service's active counts (in-queue
        // checking, max_queued); releasing twice is a no-op.
        if let Outcome::Applied {
            to: CallbackState::Completed,
            ..
        } = outcome
        {
            let mut conn = state.redis.conn().await?;
            let number = target.number_key.as_str();
            throttle::release_number(&mut conn, &state.keys, tenant, service, id, number).await?;
        }
        Ok::<(), redis::RedisError>(())
    }
    .await;
    if let Err(e) = result {
        ::metrics::counter!(metrics::REDIS_WRITE_FAILED, "op" => "ors_event").increment(1);
        tracing::warn!(callback.id = %id, error = %e, "queue view update failed; the reconciler repairs it");
    }
}
