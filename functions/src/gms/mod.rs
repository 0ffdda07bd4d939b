//! The GMS-compatible callback surface under `/genesys/` (docs/gms.md): what Designer/ORS
//! applications and GMS callback clients call (`gms/_url=…/genesys/`). Internal port only:
//! the tenant comes from the `ContactCenterId` header ([`tenant`]), never from an API key, so
//! these routes are never on the public allowlist.
//!
//! One module per concern: [`tenant`] (the header, optional HTTP Basic credentials),
//! [`body`] (form-urlencoded and JSON bodies into one flat map), [`record`] (a stored callback
//! as a GMS record), [`error`] (every failure in GMS's `{"message","exception"}` shape,
//! including the ones the middleware stack produces), and one module per operation, each
//! calling the same domain functions as the v3 API.
//!
//! Path parameters are named `{service}` and `{id}` in every route of this surface (axum
//! refuses one path spelled with two names).

pub mod admin;
pub mod availability;
pub mod body;
pub mod cancel;
pub mod create;
pub mod error;
pub mod query;
pub mod record;
pub mod tenant;

use axum::Router;
use shared::http::AppState;

/// Every `/genesys/` route (merged into `internal_routes` only).
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(create::router())
        .merge(cancel::router())
        .merge(query::router())
        .merge(availability::router())
        .merge(admin::router())
}

/// The path prefix of this surface; errors under it answer in the GMS shape
/// ([`error::reshape`]).
pub const PREFIX: &str = "/genesys/";
