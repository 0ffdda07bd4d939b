//! `POST /engagement/v3/callbacks/cancel`: cancel a callback that is not yet with an agent.
//!
//! The cancel is committed first (with `control_pending` set when the voice platform already
//! has the callback); then the callback leaves the schedule index and its queue view (so
//! positions and wait estimates stop counting it) and a control entry asks the
//! voice platform to stop the session. A failed control write is not lost: the worker's outbox
//! sends every control entry still owed.

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
    if cancelled.submitted {
        // Owed durably (`control_pending` was set with the cancel): if this write fails, the
        // worker's outbox sends it; the dedupe key keeps the entry single either way.
        let sent = async {
            let mut conn = state.voice.conn().await?;
            let entry = voice::control_entry(id, cancelled.attempt, "cancel");
            voice::submit(
                &mut conn,
                &state.cfg.voice.control_stream,
                "ctl",
                &[entry],
                0,
            )
            .await
        }
        .await;
        match sent {
            Ok(_) => {
                ::metrics::counter!(metrics::CONTROL_SENT, "via" => "api").increment(1);
                let cleared = async {
                    let client = state.db.get().await?;
                    db::dispatch::clear_control(&client, &[id]).await
                }
                .await;
                if let Err(e) = cleared {
                    tracing::warn!(callback.id = %id, error = %e, "clearing the control debt failed; the outbox re-sends (deduplicated)");
                }
            }
            Err(e) => {
                ::metrics::counter!(metrics::REDIS_WRITE_FAILED, "op" => "control").increment(1);
                tracing::warn!(callback.id = %id, error = %e, "control stream write failed; the worker's outbox retries it");
            }
        }
    }
}
