//! The Callbacks API: create, retrieve, cancel, availability, open-for, queue-status, and the
//! reschedule extension
//! (`/engagement/v3/callbacks/*`).

pub mod availability;
pub mod cancel;
pub mod create;
pub mod open_for;
pub mod queue_status;
pub mod reschedule;
pub mod retrieve;

use axum::Router;
use shared::http::AppState;

/// All callback routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(create::router())
        .merge(retrieve::router())
        .merge(cancel::router())
        .merge(availability::router())
        .merge(open_for::router())
        .merge(queue_status::router())
        .merge(reschedule::router())
}
