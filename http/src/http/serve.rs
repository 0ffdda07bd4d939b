//! Running a router: on AWS Lambda when the configuration says so (`AWS_LAMBDA_RUNTIME_API`,
//! which the runtime always sets, read once by `Config::load`), else on `0.0.0.0:$PORT` with
//! graceful shutdown on SIGTERM or Ctrl-C.

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::Router;
use tokio::net::TcpListener;

use crate::config::HttpConfig;

/// Serves `app` on Lambda ([`HttpConfig::on_lambda`]) or on `PORT` until SIGTERM, then drains
/// for at most `SHUTDOWN_GRACE_MS`.
pub async fn serve(app: Router, http: &HttpConfig) -> anyhow::Result<()> {
    if http.on_lambda() {
        return lambda_http::run(app)
            .await
            .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"));
    }
    let port = http.port;
    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?;
    tracing::info!(port, "listening");
    serve_listener(
        listener,
        app,
        shutdown_signal(),
        millis(http.shutdown_grace_ms),
    )
    .await
}

/// Serves on a bound listener until `shutdown` resolves, then lets in-flight requests finish
/// for at most `grace` (idle keep-alive connections must not hold the process).
pub async fn serve_listener(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = rx.await;
    });
    let mut task = tokio::spawn(async move { server.await });
    tokio::select! {
        res = &mut task => return Ok(res??),
        () = shutdown => {}
    }
    tracing::info!("shutdown signal: draining in-flight requests");
    let _ = tx.send(());
    match tokio::time::timeout(grace, &mut task).await {
        Ok(res) => res??,
        Err(_) => {
            tracing::warn!("drain deadline passed; closing remaining connections");
            task.abort();
        }
    }
    Ok(())
}

pub use crate::process::shutdown_signal;

/// Convenience for binaries: a duration from milliseconds.
pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
