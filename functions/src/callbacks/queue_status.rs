//! `GET /engagement/v3/callbacks/queue-status/{queue}`: `{ewt, offerImmediateCallback,
//! offerScheduledCallback}` (docs/ges-behavior.md#queue-status).
//!
//! `ewt` is the `mode2` estimate (`-1` when unknown). An immediate callback is offered when the
//! service is enabled, immediate callbacks are enabled, the office is open and now + `ewt` is
//! before closing (`open-for`). As in GES, `-1` with no history yet still offers (nothing says
//! the wait is long); `-1` because no agent took a waiting callback within the activity window
//! does not. A scheduled callback is offered when the service and scheduled callbacks are
//! enabled. Unknown queue → 400 "unknown service".

use axum::{Router, extract::State, routing::get};
use jiff::Timestamp;
use shared::{
    ApiError, db,
    http::ApiResult,
    http::{ApiTenant, AppState, Envelope, Path},
    model::ewt::{Mode, QueueStatus, Unknown},
};

use crate::wait::{self, Missing};

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/engagement/v3/callbacks/queue-status/{queue}",
        get(handler),
    )
}

/// Whether an immediate callback is offered, given the estimate and seconds until closing.
fn offer_immediate(immediate_enabled: bool, ewt: &Result<i64, Missing>, open_for: i64) -> bool {
    let wait = match ewt {
        Ok(secs) => *secs,
        // No history yet (or no view to read): nothing says the wait is long.
        Err(Missing::Unknown(Unknown::NoHistory) | Missing::Unavailable) => 0,
        Err(Missing::Unknown(_)) => return false,
    };
    immediate_enabled && open_for > 0 && wait < open_for
}

async fn handler(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    Path(queue): Path<String>,
) -> ApiResult<Envelope<QueueStatus>> {
    let service = state
        .service(&tenant, &queue)
        .await?
        .ok_or_else(|| ApiError::bad_request("unknown service"))?;
    let s = &service.body;
    let ewt = wait::for_service(&state, &tenant, &queue, Mode::Mode2).await;
    let offer_immediate_callback = if s.enabled && s.immediate_enabled {
        let client = state.db.get().await?;
        let open_for = db::hours::plan(&client, &tenant, &queue, s)
            .await?
            .open_for(Timestamp::now())
            .as_secs();
        offer_immediate(true, &ewt, open_for)
    } else {
        false
    };
    Ok(Envelope::ok(QueueStatus {
        ewt: ewt.unwrap_or(-1),
        offer_immediate_callback,
        offer_scheduled_callback: s.enabled && s.scheduled_enabled,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediate_offered_only_when_served_before_closing() {
        assert!(offer_immediate(true, &Ok(60), 61));
        assert!(!offer_immediate(true, &Ok(60), 60));
        assert!(!offer_immediate(false, &Ok(0), 3600));
        assert!(!offer_immediate(true, &Ok(0), 0));
        let no_history = Err(Missing::Unknown(Unknown::NoHistory));
        assert!(offer_immediate(true, &no_history, 10));
        let unattended = Err(Missing::Unknown(Unknown::NoAgentActivity(600)));
        assert!(!offer_immediate(true, &unattended, 3600));
    }
}
