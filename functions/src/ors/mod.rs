//! The voice platform's (ORS) internal API: state events of the callbacks it was handed, and
//! the Click-To-Call-In match of inbound calls (`crate::call_in::matching`).

pub mod events;

use axum::Router;
use shared::http::AppState;

/// All voice-platform routes (internal only).
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(events::router())
        .merge(crate::call_in::matching::router())
}
