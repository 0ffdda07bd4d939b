#![doc = include_str!("../README.md")]

pub mod admin;
pub mod call_in;
pub mod callbacks;
pub mod gms;
pub mod openapi;
pub mod ops;
pub mod ors;
pub mod outbound;
pub mod runtime;
pub mod statistics;
pub mod ui;
pub mod wait;

use axum::Router;
use shared::{
    config::HttpConfig,
    http::{
        AppState,
        middleware::{Exposure, stack, stack_with_fleet},
    },
};

/// Every route of the public Engagement API (the allowlist of the external port).
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .merge(callbacks::router())
        .merge(call_in::router())
        .merge(wait::router())
        .merge(statistics::router())
        .merge(openapi::router())
}

/// Every route: public API, admin API, health and metrics (the internal port).
pub fn internal_routes() -> Router<AppState> {
    Router::new()
        .merge(public_routes())
        .merge(admin::router())
        .merge(ors::router())
        .merge(gms::router())
        .merge(ui::router())
        .merge(ops::health_router())
        .merge(ops::metrics_router())
}

/// The external port's app: allowlisted routes plus probes, public hardening, per-tenant CORS.
pub fn external_app(state: AppState) -> Router {
    let http: HttpConfig = state.cfg.http.clone();
    let errors = state.errors.clone();
    let fleet = Some((state.redis.clone(), state.keys.clone()));
    let app = stack_with_fleet(
        public_routes()
            .merge(ops::probe_router())
            .with_state(state.clone()),
        Exposure::External,
        &http,
        errors,
        fleet,
    );
    shared::http::cors::wrap(app, &state)
}

/// The internal port's app: every route; errors under `/genesys/` in the GMS shape, whichever
/// layer wrote them (`gms::error::reshape`, outermost).
pub fn internal_app(state: AppState) -> Router {
    let http: HttpConfig = state.cfg.http.clone();
    let errors = state.errors.clone();
    stack(
        internal_routes().with_state(state),
        Exposure::Internal,
        &http,
        errors,
    )
    .layer(axum::middleware::from_fn(gms::error::reshape))
}

#[cfg(test)]
mod tests {
    /// axum panics at router build on bad or overlapping paths; build every router here.
    #[test]
    fn every_router_builds() {
        let _ = super::internal_routes();
        let _ = super::public_routes().merge(super::ops::probe_router());
        let _ = super::callbacks::create::router();
        let _ = super::callbacks::retrieve::router();
        let _ = super::callbacks::cancel::router();
        let _ = super::callbacks::availability::router();
        let _ = super::callbacks::open_for::router();
        let _ = super::callbacks::queue_status::router();
        let _ = super::wait::estimated_wait_time::router();
        let _ = super::statistics::router();
        let _ = super::admin::rules::router();
        let _ = super::admin::publish::router();
        let _ = super::admin::router();
        let _ = super::ors::router();
        let _ = super::gms::router();
        let _ = super::admin::gms_credentials::router();
        let _ = super::admin::credentials::router();
        let _ = super::admin::call_in_groups::router();
        let _ = super::call_in::create::router();
        let _ = super::call_in::matching::router();
    }
}
