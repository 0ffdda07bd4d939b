//! `/health` and `/metrics` on `WORKER_PORT`, served with a few lines over tokio.
//!
//! The worker deliberately carries no web framework (the `shared` crate's HTTP stack is a
//! feature the worker turns off, docs/decisions.md#shape-of-the-system). Two read-only routes
//! for probes and Prometheus do not need one: each connection gets one response and is closed.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

use crate::Worker;

/// Serves until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    w: Worker,
    metrics: PrometheusHandle,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (w, metrics) = (w.clone(), metrics.clone());
        // Bounded by the timeout below; never outlives a slow client by more than 5 s.
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), answer(stream, &w, &metrics)).await;
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    w: &Worker,
    metrics: &PrometheusHandle,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read the request head (the routes take no body).
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        ("GET", "/health" | "/ges/v1/health/live" | "/ges/v1/health/ready") => {
            if w.is_running() {
                (
                    "200 OK",
                    "application/json",
                    r#"{"status":"UP"}"#.to_string(),
                )
            } else {
                (
                    "503 Service Unavailable",
                    "application/json",
                    r#"{"status":"DOWN"}"#.to_string(),
                )
            }
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
