//! Running a router: on AWS Lambda when the configuration says so (`AWS_LAMBDA_RUNTIME_API`,
//! which the runtime always sets, read once by `Config::load`), else on `0.0.0.0:$PORT` with
//! graceful shutdown on SIGTERM or Ctrl-C.
//!
//! Connections are served by hyper's HTTP/1 server with explicit limits on what a client may
//! send before its request reaches the router: the size of the request head, the number of
//! headers, and the time to send the head (which also ends idle keep-alive connections), so a
//! slow or oversized request is refused or cut off without holding a task
//! (docs/http-server.md).

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::config::HttpConfig;

/// Bytes of one request head (request line and headers); a larger head answers 431
/// (docs/http-server.md#request-heads).
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Headers of one request; more answer 431 (docs/http-server.md#request-heads).
pub const MAX_HEADERS: usize = 100;

/// What one connection may do before its request reaches the router.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time to send a request head; also how long an idle keep-alive connection is kept.
    pub header_read_timeout: Duration,
}

impl ConnLimits {
    /// The limits the configuration sets (`HEADER_READ_TIMEOUT_MS`).
    pub fn from_config(http: &HttpConfig) -> Self {
        Self {
            header_read_timeout: millis(http.header_read_timeout_ms),
        }
    }
}

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
        ConnLimits::from_config(http),
    )
    .await
}

/// Serves on a bound listener until `shutdown` resolves, then lets in-flight requests finish
/// for at most `grace` (idle keep-alive connections are closed at once). Each request carries
/// its peer address as [`ConnectInfo<SocketAddr>`].
pub async fn serve_listener(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: ConnLimits,
) -> anyhow::Result<()> {
    let builder = http1_builder(limits);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => spawn_connection(&builder, &graceful, stream, peer, &app),
                Err(e) => {
                    // Out of file descriptors and the like: the listener stays usable.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutdown signal: draining in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed; closing remaining connections");
    }
    Ok(())
}

/// hyper's HTTP/1 server with this module's limits (docs/http-server.md).
fn http1_builder(limits: ConnLimits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    builder
}

/// Serves one connection on its own task, watched by the graceful shutdown.
fn spawn_connection(
    builder: &http1::Builder,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    peer: SocketAddr,
    app: &Router,
) {
    let _ = stream.set_nodelay(true);
    let app = app.clone();
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req)
    });
    let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            // Malformed heads, header timeouts, resets: answered by hyper or closed; no data.
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}

pub use crate::process::shutdown_signal;

/// Convenience for binaries: a duration from milliseconds.
pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
