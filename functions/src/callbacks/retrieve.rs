//! `POST /engagement/v3/callbacks/retrieve`: one callback of the caller's tenant. While the
//! voice platform holds it (QUEUED, ROUTING), `positionInQueue` (priority-then-time order, the
//! escalated priority when the service escalates: docs/decisions.md#priority-escalation) and
//! `estimatedWaitTime` (callbacks ahead × mean dequeue interval) come from the service's queue
//! view in Redis; while an agent handles it (PROCESSING) both are 0; never in other states.

use axum::{Router, extract::State, routing::post};
use shared::{
    db,
    http::ApiResult,
    http::{ApiTenant, AppState, Envelope, Json},
    model::{
        CallbackState,
        callback::{Callback, CallbackIdParms},
    },
    redis::queue,
};

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route("/engagement/v3/callbacks/retrieve", post(handler))
}

async fn handler(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    Json(body): Json<CallbackIdParms>,
) -> ApiResult<Envelope<Callback>> {
    let id = body.parse()?;
    let client = state.db.get().await?;
    let stored = db::callbacks::get(&client, &tenant, id).await?;
    drop(client);
    let mut model = stored.to_model();
    if stored.state == CallbackState::Processing {
        model.position_in_queue = Some(0);
        model.estimated_wait_time = Some(0);
    } else if matches!(stored.state, CallbackState::Queued | CallbackState::Routing)
        && stored.submitted_at.is_some()
    {
        // From the service's queue view; left out when Redis cannot say (never an error).
        let looked_up = async {
            let service = state.service(&tenant, &stored.service).await?;
            let escalation = service.and_then(|s| queue::Escalation::of(&s.body));
            let mut conn = state.redis.conn().await.map_err(shared::Error::internal)?;
            queue::position(
                &mut conn,
                &state.keys,
                &tenant,
                &stored.service,
                id,
                escalation,
            )
            .await
            .map_err(shared::Error::internal)
        }
        .await;
        match looked_up {
            Ok((position, ewt)) => {
                model.position_in_queue = position;
                model.estimated_wait_time = ewt;
            }
            Err(e) => tracing::warn!(callback.id = %id, error = %e, "queue position unavailable"),
        }
    }
    Ok(Envelope::ok(model))
}
