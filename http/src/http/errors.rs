//! Recording failed API calls by correlation id (Developer tab), off the request path: the
//! request middleware hands a record to a bounded channel (dropped and counted when full) and a
//! background task writes batches to PostgreSQL and prunes old ones.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use crate::{
    db::api_errors::{self, FailedCallRecord},
    metrics,
};

/// The message an error response carried (set by `ApiError::into_response`).
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

/// Sender side of the API-error log; cheap to clone.
#[derive(Debug, Clone)]
pub struct ErrorSink {
    /// `None` when built outside a runtime (CLI use): recording is then a no-op.
    tx: Option<mpsc::Sender<FailedCallRecord>>,
}

impl ErrorSink {
    /// Starts the writer task on the current runtime (none outside a runtime). The task ends
    /// when every sender is dropped, after writing what it holds.
    pub fn spawn(pool: Pool) -> Self {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Self { tx: None };
        };
        let (tx, rx) = mpsc::channel(1024);
        rt.spawn(writer(pool, rx));
        Self { tx: Some(tx) }
    }

    /// A sink that records nothing (tools and tests without a database).
    pub fn disabled() -> Self {
        Self { tx: None }
    }

    /// Queues a record; never waits.
    pub fn record(&self, rec: FailedCallRecord) {
        if let Some(tx) = &self.tx
            && tx.try_send(rec).is_err()
        {
            ::metrics::counter!(metrics::API_ERRORS_DROPPED).increment(1);
        }
    }
}

async fn writer(pool: Pool, mut rx: mpsc::Receiver<FailedCallRecord>) {
    let mut last_prune = tokio::time::Instant::now();
    let mut batch = Vec::with_capacity(100);
    while rx.recv_many(&mut batch, 100).await > 0 {
        let written = async {
            let client = pool.get().await?;
            api_errors::insert_batch(&client, &batch).await?;
            if last_prune.elapsed() > Duration::from_secs(600) {
                last_prune = tokio::time::Instant::now();
                api_errors::prune(&client).await?;
            }
            Ok::<_, crate::Error>(())
        }
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, records = batch.len(), "could not record API errors");
        }
        batch.clear();
    }
}
