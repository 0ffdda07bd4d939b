//! `POST /engagement/v3/callbacks/cancel`: cancel a callback that is not yet with an agent.
//!
//! The cancel is committed first (with `control_pending` set when the voice platform may have
//! the callback: submitted, or due soon enough to be mid-hand-off); then the callback leaves the
//! schedule index and its queue view (so positions and wait estimates stop counting it), and
//! the owed cancel is settled: a hand-off not yet written is fenced off, a written one gets a
//! control entry asking the voice platform to stop the session (docs/voice-platform.md). A
//! failed write is not lost: the worker's outbox settles every cancel still owed.

use axum::{Router, extract::State, routing::post};
use serde::Serialize;
use shared::{
    db,
    error::ApiResult,
    http::{ApiTenant, AppState, Envelope, Json},
    metrics,
    model::callback::CallbackIdParms,
    redis::{queue, schedule, throttle, voice},
};
use uuid::Uuid;

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route("/engagement/v3/callbacks/cancel", post(handler))
}

/// `CancelCallbackData`.
#[derive(Debug, Serialize)]
pub struct CancelledData {
    /// The cancelled callback's id.
    pub id: String,
}

async fn handler(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    Json(body): Json<CallbackIdParms>,
) -> ApiResult<Envelope<CancelledData>> {
    let id = body.parse()?;
    let cancelled = {
        let client = state.db.get().await?;
        shared::http::envelope::committing();
        db::callbacks::cancel(&client, &tenant, id).await?
    };
    release_throttle(&state, &tenant, &cancelled.service, id).await;
    after_cancel(&state, &tenant, id, cancelled).await;
    Ok(Envelope::ok(CancelledData { id: id.to_string() }))
}

/// Frees the callback's place in its service's active counts (`in_queue_checking`,
/// `max_queued`). Best effort: the next re-seed from PostgreSQL repairs a miss.
async fn release_throttle(state: &AppState, tenant: &str, service: &str, id: Uuid) {
    let released = async {
        let mut conn = state.redis.conn().await?;
        throttle::release(&mut conn, &state.keys, tenant, service, id).await
    }
    .await;
    if let Err(e) = released {
        ::metrics::counter!(metrics::REDIS_WRITE_FAILED, "op" => "throttle_release").increment(1);
        tracing::warn!(callback.id = %id, error = %e, "throttle release failed; the next re-seed repairs it");
    }
}

/// Best-effort follow-ups of a committed cancel.
async fn after_cancel(
    state: &AppState,
    tenant: &str,
    id: Uuid,
    cancelled: db::callbacks::Cancelled,
) {
    let unindexed = async {
        let mut conn = state.redis.conn().await?;
        schedule::unindex(&mut conn, &state.keys, id).await?;
        if cancelled.submitted {
            // Not served: no dequeue time is recorded.
            queue::dequeue(
                &mut conn,
                &state.keys,
                tenant,
                &cancelled.service,
                id,
                false,
            )
            .await?;
        }
        Ok::<(), redis::RedisError>(())
    }
    .await;
    if let Err(e) = unindexed {
        // The worker re-reads the row before submitting and skips cancelled callbacks.
        ::metrics::counter!(metrics::REDIS_WRITE_FAILED, "op" => "unindex").increment(1);
        tracing::warn!(callback.id = %id, error = %e, "schedule index removal failed");
    }
    if cancelled.owes_control {
        settle(state, id, &cancelled).await;
    }
}

/// Settles the owed cancel now (fence the hand-off, or a control entry after a submission that
/// is in the stream). Owed durably (`control_pending` was set with the cancel): if this fails,
/// the worker's outbox settles it; both paths are deduplicated.
async fn settle(state: &AppState, id: Uuid, cancelled: &db::callbacks::Cancelled) {
    let owed = voice::OwedCancel {
        id,
        attempt: cancelled.attempt,
        submitted: cancelled.submitted,
    };
    let sent = async {
        let mut conn = state.voice.conn().await?;
        let v = &state.cfg.voice;
        voice::settle_cancels(&mut conn, &v.voice_stream, &v.control_stream, &[owed]).await
    }
    .await;
    match sent {
        Ok(added) => {
            if added > 0 {
                ::metrics::counter!(metrics::CONTROL_SENT, "via" => "api").increment(1);
            }
            let cleared = async {
                let client = state.db.get().await?;
                db::dispatch::clear_control(&client, &[id]).await
            }
            .await;
            if let Err(e) = cleared {
                tracing::warn!(callback.id = %id, error = %e, "clearing the control debt failed; the outbox re-settles it (deduplicated)");
            }
        }
        Err(e) => {
            ::metrics::counter!(metrics::REDIS_WRITE_FAILED, "op" => "control").increment(1);
            tracing::warn!(callback.id = %id, error = %e, "settling the cancel with the voice platform failed; the worker's outbox retries it");
        }
    }
}
