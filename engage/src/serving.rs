//! `engage serve`: every route on `INTERNAL_PORT`, the public allowlist on `EXTERNAL_PORT`, and
//! with `--with-worker` the dispatcher in the same process, sharing its pools. One
//! cancellation token stops everything: SIGTERM or Ctrl-C cancels it, both listeners drain for
//! at most `SHUTDOWN_GRACE_MS`, and the dispatcher finishes or hands back its batch.

use shared::http::{
    AppState,
    serve::{ConnLimits, millis},
    serve_listener, shutdown_signal,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// Serves until SIGTERM or Ctrl-C, then waits for the listeners and the dispatcher.
pub(crate) async fn serve(state: AppState, with_worker: bool) -> anyhow::Result<()> {
    shared::metrics::install();
    functions::ops::spawn_health_refresh(state.clone());
    let stop = CancellationToken::new();
    let listeners = listen(&state, &stop).await?;
    let dispatcher = with_worker.then(|| dispatcher(&state, &stop));
    shutdown_signal().await;
    tracing::info!("shutdown signal: stopping");
    stop.cancel();
    let mut result = Ok(());
    for task in listeners {
        result = result.and(task.await?);
    }
    if let Some(task) = dispatcher {
        result = result.and(task.await?);
    }
    result
}

type Task = JoinHandle<anyhow::Result<()>>;

/// Binds both ports and serves them until `stop` is cancelled.
async fn listen(state: &AppState, stop: &CancellationToken) -> anyhow::Result<[Task; 2]> {
    let http = &state.cfg.http;
    let grace = millis(http.shutdown_grace_ms);
    let limits = ConnLimits::from_config(http);
    let internal = TcpListener::bind(("0.0.0.0", http.internal_port)).await?;
    let external = TcpListener::bind(("0.0.0.0", http.external_port)).await?;
    tracing::info!(
        internal = http.internal_port,
        external = http.external_port,
        "listening"
    );
    let internal_app = functions::internal_app(state.clone());
    let external_app = functions::external_app(state.clone());
    Ok([
        tokio::spawn(serve_listener(
            internal,
            internal_app,
            stop.clone().cancelled_owned(),
            grace,
            limits,
        )),
        tokio::spawn(serve_listener(
            external,
            external_app,
            stop.clone().cancelled_owned(),
            grace,
            limits,
        )),
    ])
}

/// The in-process dispatcher on the API's own resources, stopped by the same token.
fn dispatcher(state: &AppState, stop: &CancellationToken) -> Task {
    let w = worker::Worker::new(state.resources.clone());
    tracing::info!("dispatcher running in-process");
    let stop = stop.clone();
    tokio::spawn(async move { w.run(stop).await })
}
