//! The internal admin API under `/ges/v1/tenants`: tenants, API keys, callback services,
//! business hours and capacity rules, the Designer publish of CALLBACK_SETTINGS, number rules,
//! CORS origins, the GMS surface's Basic credentials, third-party credentials (FCM, CAPTCHA,
//! GWS), Click-To-Call-In groups, the admin UI's users (`ui::users`), and the tenant's
//! callbacks (list, search, export, cancel, reschedule: [`callbacks`], docs/admin-queries.md).
//! Every route requires `Authorization: Bearer $ADMIN_TOKEN`.

pub mod api_errors;
pub mod api_keys;
pub mod call_in_groups;
pub mod callbacks;
pub mod cors;
pub mod credentials;
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
        .merge(credentials::router())
        .merge(crate::ui::users::router())
        .merge(callbacks::router())
        .merge(call_in_groups::router())
}
