//! The internal admin API under `/ges/v1/tenants`: tenants, API keys, callback services,
//! business hours and capacity rules, the Designer publish of CALLBACK_SETTINGS, number rules,
//! CORS origins, the GMS surface's Basic credentials, the admin UI's users (`ui::users`).
//! Every route requires `Authorization: Bearer $ADMIN_TOKEN`.

pub mod api_errors;
pub mod api_keys;
pub mod cors;
pub mod gms_credentials;
pub mod number_rules;
pub mod publish;
pub mod rules;
pub mod services;
pub mod tenants;
pub mod versioned;

use axum::Router;
use shared::http::AppState;

/// All admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(api_errors::router())
        .merge(tenants::router())
        .merge(api_keys::router())
        .merge(services::router())
        .merge(rules::router())
        .merge(publish::router())
        .merge(number_rules::router())
        .merge(cors::router())
        .merge(gms_credentials::router())
        .merge(crate::ui::users::router())
}
