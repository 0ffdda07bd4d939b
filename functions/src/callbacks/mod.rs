//! The Callbacks API: create, retrieve, cancel (`/engagement/v3/callbacks/*`).

pub mod cancel;
pub mod create;
pub mod limits;
pub mod retrieve;

use axum::Router;
use shared::http::AppState;

/// All callback routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(create::router())
        .merge(retrieve::router())
        .merge(cancel::router())
}
