//! Running a router: on AWS Lambda when `AWS_LAMBDA_RUNTIME_API` is set (the runtime always
//! sets it), else on `0.0.0.0:$PORT` with graceful shutdown on SIGTERM or Ctrl-C.

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::Router;
use tokio::net::TcpListener;

/// Serves `app` on Lambda or on `port` until SIGTERM, then drains for at most `grace`.
pub async fn serve(app: Router, port: u16, grace: Duration) -> anyhow::Result<()> {
    // Runtime detection, not configuration: Lambda sets this variable for every invocation host.
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return lambda_http::run(app)
            .await
            .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"));
    }
    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?;
    tracing::info!(port, "listening");
    serve_listener(listener, app, shutdown_signal(), grace).await
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
    let server =
        axum::serve(listener, app.into_make_service()).with_graceful_shutdown(async move {
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
