//! Click-To-Call-In (docs/call-in.md): the public create
//! (`POST /engagement/v3/call-in/requests/create`) and the voice platform's match
//! (`POST /ges/v1/call-in/match`, internal, served with the voice-platform events).

pub mod create;
pub mod matching;

use axum::Router;
use shared::http::AppState;

/// The public call-in routes.
pub fn router() -> Router<AppState> {
    create::router()
}
