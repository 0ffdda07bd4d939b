//! The admin callback API under `/ges/v1/tenants/{ccid}/callbacks` (internal port, the first
//! client being the `/ges` UI): list and search with keyset pages, one callback with its state
//! history, the CSV export (streamed), cancel, reschedule and bulk cancel through the public
//! API's domain functions (docs/admin-queries.md).
//!
//! - `GET …/callbacks` (`?format=csv`: the export) and `GET …/callbacks.csv`: [`list`].
//! - `GET …/callbacks/{id}`: [`list::detail`].
//! - `POST …/callbacks/{id}/cancel`, `POST …/callbacks/{id}/reschedule`,
//!   `POST …/callbacks/bulk-cancel`: [`actions`].
//!
//! Every handler checks its [`access::Operation`] through [`access::Actor::may`] first.

pub mod access;
pub mod actions;
pub mod export;
pub mod list;
pub mod view;

use axum::{
    Router,
    routing::{get, post},
};
use shared::{ApiError, db, http::AppState};
use uuid::Uuid;

/// The routes of the admin callback API.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ges/v1/tenants/{ccid}/callbacks", get(list::list))
        .route("/ges/v1/tenants/{ccid}/callbacks.csv", get(export::csv))
        .route(
            "/ges/v1/tenants/{ccid}/callbacks/bulk-cancel",
            post(actions::bulk_cancel),
        )
        .route("/ges/v1/tenants/{ccid}/callbacks/{id}", get(list::detail))
        .route(
            "/ges/v1/tenants/{ccid}/callbacks/{id}/cancel",
            post(actions::cancel),
        )
        .route(
            "/ges/v1/tenants/{ccid}/callbacks/{id}/reschedule",
            post(actions::reschedule),
        )
}

/// 404 unless `tenant` exists (an unknown tenant's listing is not an empty one).
async fn known_tenant(state: &AppState, tenant: &str) -> Result<(), ApiError> {
    let client = state.db.get().await?;
    db::tenants::get(&client, tenant).await?;
    Ok(())
}

/// A callback id of the path; anything else is a 404 (no such callback).
fn callback_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        let shown: String = raw.chars().take(64).collect();
        ApiError::not_found(format!("no callback {shown:?}"))
    })
}
