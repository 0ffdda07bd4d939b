//! What every function binary's `main` does: config, logs, metrics, state, serve.
//! A function binary is one line calling [`run_function`].

use std::process::ExitCode;

use axum::Router;
use shared::{
    Config,
    http::{
        AppState,
        middleware::{Exposure, stack, stack_with_fleet},
        serve,
        serve::{ConnLimits, millis},
        serve_listener, shutdown_signal,
    },
};

use crate::{gms, ops};

/// Runs one function: `routes` on `$PORT` (with the liveness/readiness probes), and `/metrics`
/// plus health detail on `METRICS_PORT` (kept off the public port).
pub fn run_function(
    name: &'static str,
    exposure: Exposure,
    routes: fn() -> Router<AppState>,
) -> ExitCode {
    run_function_checked(name, exposure, routes, |_| Ok(()))
}

/// [`run_function`] for a function that needs more configuration than every function does:
/// `check` runs on the loaded configuration and a failure stops the start (e.g.
/// [`Config::require_ors_events_token`]).
pub fn run_function_checked(
    name: &'static str,
    exposure: Exposure,
    routes: fn() -> Router<AppState>,
    check: fn(&Config) -> Result<(), shared::config::ConfigError>,
) -> ExitCode {
    shared::process::main_with_loader(
        name,
        shared::telemetry::Target::Stdout,
        load_config,
        move |cfg| async move {
            check(&cfg)?;
            run(name, exposure, routes, cfg).await
        },
    )
}

/// Lambda builds (feature `lambda`) also read the Secrets Manager secrets in `AWS_SECRETS_ID`,
/// once per cold start.
#[cfg(feature = "lambda")]
async fn load_config() -> Result<Config, shared::config::ConfigError> {
    Config::load_with_aws().await
}

/// Container builds read the environment and the secret folders only.
#[cfg(not(feature = "lambda"))]
async fn load_config() -> Result<Config, shared::config::ConfigError> {
    Config::load()
}

async fn run(
    name: &'static str,
    exposure: Exposure,
    routes: fn() -> Router<AppState>,
    cfg: Config,
) -> anyhow::Result<()> {
    shared::metrics::install();
    let state = AppState::new(cfg)?;
    let http = state.cfg.http.clone();
    let fleet = (exposure == Exposure::External).then(|| (state.redis.clone(), state.keys.clone()));
    let mut app = stack_with_fleet(
        routes()
            .merge(ops::probe_router())
            .with_state(state.clone()),
        exposure,
        &http,
        state.errors.clone(),
        fleet,
    );
    match exposure {
        Exposure::External => app = shared::http::cors::wrap(app, &state),
        // The stack's own errors under `/genesys/` in GMS's shape, as on the internal port.
        Exposure::Internal => app = app.layer(axum::middleware::from_fn(gms::error::reshape)),
    }
    if !http.on_lambda() && http.metrics_port != 0 {
        ops::spawn_health_refresh(state.clone());
        let errors = state.errors.clone();
        let side = stack(
            ops::health_router()
                .merge(ops::metrics_router())
                .with_state(state),
            Exposure::Internal,
            &http,
            errors,
        );
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", http.metrics_port)).await?;
        tokio::spawn(serve_listener(
            listener,
            side,
            shutdown_signal(),
            millis(1_000),
            ConnLimits::from_config(&http),
        ));
    }
    tracing::info!(function = name, "starting");
    serve(app, &http).await
}
