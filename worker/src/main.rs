//! `engage-worker`: the dispatcher as its own process (a Kubernetes Deployment), with `/health`
//! and `/metrics` on `WORKER_PORT`. SIGTERM stops claiming at once, finishes or hands back the
//! batch in hand, and exits 0 within 10 s.

use std::process::ExitCode;

use shared::{Config, Resources};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    shared::process::main_with("engage-worker", shared::telemetry::Target::Stdout, run)
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let metrics = shared::metrics::install();
    let schema = cfg.db.schema.clone();
    let port = cfg.worker.port;
    let w = worker::Worker::new(Resources::connect(cfg)?);
    shared::db::migrate(&w.db, schema.as_deref()).await?;
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(port, "worker listening for /health and /metrics");
    let http = tokio::spawn(worker::http::serve(
        listener,
        w.clone(),
        metrics,
        stop.clone(),
    ));
    let signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            worker::shutdown_signal().await;
            tracing::info!("shutdown signal: stopping");
            stop.cancel();
        })
    };
    let result = w.run(stop.clone()).await;
    stop.cancel();
    signal.abort();
    let _ = http.await;
    result
}
