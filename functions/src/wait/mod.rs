//! Estimated wait time (`GET /engagement/v3/estimated-wait-time`) and the per-service estimate
//! that `queue-status` shares (docs/decisions.md#estimated-wait-time).

pub mod estimated_wait_time;

use axum::Router;
use shared::{
    http::AppState,
    model::ewt::{Mode, Unknown, estimate},
    redis::queue,
};

/// All wait-time routes.
pub fn router() -> Router<AppState> {
    estimated_wait_time::router()
}

/// Why a service's estimate is missing: the model's reasons, or the queue view unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The estimate cannot be made (no history, no agent activity, no source); see
    /// [`Unknown`].
    Unknown(Unknown),
    /// The service Redis did not answer.
    Unavailable,
}

impl Missing {
    /// The item's `resultCode`: the model's, `-1` when the view was unreadable.
    pub fn result_code(&self) -> i32 {
        match self {
            Self::Unknown(u) => u.result_code(),
            Self::Unavailable => -1,
        }
    }

    /// The `message` shown beside `-1` in the answer.
    pub fn message(&self) -> String {
        match self {
            Self::Unknown(u) => u.message(),
            Self::Unavailable => "wait-time data unavailable, retry later".into(),
        }
    }
}

/// The estimate (seconds) for a callback joining `service` now: one pipeline of two O(1)
/// commands on the service's queue view.
pub async fn for_service(
    state: &AppState,
    tenant: &str,
    service: &str,
    mode: Mode,
) -> Result<i64, Missing> {
    if mode == Mode::Mode3 {
        return crate::statistics::ewt(state, tenant, service)
            .await
            .map_err(Missing::Unknown);
    }
    let snap = async {
        let mut conn = state.redis.conn().await?;
        queue::snapshot(&mut conn, &state.keys, tenant, service).await
    }
    .await
    .map_err(|e| {
        tracing::warn!(error = %e, "queue view unavailable for an estimate");
        Missing::Unavailable
    })?;
    let now = jiff::Timestamp::now().as_millisecond();
    estimate(&snap, mode, now, state.cfg.http.ewt_agent_activity_window_s).map_err(Missing::Unknown)
}
