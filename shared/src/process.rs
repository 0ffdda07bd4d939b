//! What every binary's `main` does, in one place: read and validate the configuration (exit 2
//! naming the variable on error), start logging, build the runtime, run, and map the outcome
//! to an exit code; plus the one shutdown signal (SIGTERM or Ctrl-C).

use std::process::ExitCode;

use crate::{Config, config::ConfigError, telemetry};

/// Runs `body` with the configuration (`Config::load`) on a multi-threaded runtime.
pub fn main_with<F, Fut>(name: &str, target: telemetry::Target, body: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    main_with_loader(name, target, || async { Config::load() }, body)
}

/// As [`main_with`], with the configuration from `load` (e.g. one that also reads AWS
/// Secrets Manager, which needs the runtime).
pub fn main_with_loader<L, LF, F, Fut>(
    name: &str,
    target: telemetry::Target,
    load: L,
    body: F,
) -> ExitCode
where
    L: FnOnce() -> LF,
    LF: Future<Output = Result<Config, ConfigError>>,
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    // Before anything may open a TLS connection (the AWS SDK's included): one rustls provider
    // for the process, as a build can enable two (docs/tls.md#redis).
    crate::redis::tls::install_crypto_provider();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = match rt.block_on(load()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&cfg.log, target);
    match rt.block_on(body(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(binary = name, error = format!("{e:#}"), "exiting on error");
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM (Knative, Kubernetes) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
