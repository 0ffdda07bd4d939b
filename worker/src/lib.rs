//! The Engage worker: hands due callbacks to the voice platform exactly once.
//!
//! Layout (one module per concern; every loop is owned by [`Worker::run`] and stops on its
//! cancellation token):
//! - [`dispatch`]: sleeps until the earliest due time or a wake-up, claims due callbacks from the
//!   sharded schedule index ([`claim`]), loads them from PostgreSQL, paces them ([`pacing`]),
//!   submits them to the voice stream through the deduplicating script of
//!   `shared::redis::voice`, marks them submitted, and settles each claim once
//!   ([`dispatch::settle`]: released, handed back, or kept in flight for its lease).
//! - [`wake`]: the pub/sub subscriber (its own connection) that tells the dispatcher when an
//!   earlier callback was indexed or a lease was taken.
//! - [`reconcile`]: rebuilds the schedule index and queue views from PostgreSQL at start and
//!   whenever any part of the service Redis may be lost (a node restarted, evicted keys or was
//!   flushed; the marker key is gone).
//! - [`sweep`]: the PostgreSQL sweep that re-indexes overdue callbacks a failed Redis write
//!   left out and keeps the queue views of changed services equal to PostgreSQL.
//! - [`maintenance`]: the control-stream outbox, TTL expiry, retention, gauges.
//! - [`push`]: the push-notification watcher (`CALLBACK_UPCOMING` owed when a waiting
//!   callback's estimate drops below its service's threshold) and the outbox sender (FCM).
//! - [`http`]: `/health` and `/metrics` on `WORKER_PORT` without a web framework.
//!
//! Exactly-once in brief: a claim moves ids into an in-flight ZSET with a lease (a dead
//! worker's claims are re-claimed when the lease runs out); the voice-stream write is guarded
//! by a `SET NX` dedupe key per (callback, attempt) in the same script as the `XADD`; and
//! PostgreSQL (`submitted_at`) is checked before and recorded after each submission. Any crash
//! between those steps leads to a retry that the dedupe key or the row turns into a no-op.
//! Each pass settles every claim once, at its end; a claim is released only when its attempt
//! is finished, so a pass that fails midway keeps its claims for the lease
//! (docs/derived-state.md).

pub mod claim;
pub mod dispatch;
pub mod entry;
pub mod error;
pub mod fleet;
pub mod http;
pub mod maintenance;
pub mod pacing;
pub mod push;
pub mod reconcile;
pub mod sweep;
pub mod wake;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use shared::Resources;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Messages to the dispatcher.
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    /// Something may be due at this time (ms since the epoch) in this shard (`None` = any).
    At(i64, Option<u16>),
    /// A claim's lease deadline (ms since the epoch) in this shard, with the claim's tag: the
    /// claiming worker drops its own when its pass left nothing in flight.
    Lease(i64, u16, u32),
    /// Look at every shard now (index rebuilt, subscriber reconnected).
    Resync,
    /// Another worker is known for the first time: announce the leases claimed unannounced
    /// while alone ([`fleet`]).
    Crowded,
}

/// The worker's shared state: the process [`Resources`] (reached through `Deref`: `w.cfg`,
/// `w.db`, `w.redis`, `w.voice`, `w.keys`) and the worker's own signals.
pub struct Inner {
    /// The process resources: configuration, PostgreSQL pool, both Redis handles, key layout.
    pub resources: Resources,
    /// Asks the reconciler for a full check now (run id, marker).
    pub reconcile_check: Notify,
    /// Set when a wake-up could not be queued (the dispatcher's channel was full): the
    /// dispatcher then looks at every shard, as for [`Signal::Resync`], so no wake-up is lost.
    pub wake_overflow: AtomicBool,
    /// Whether other workers are known ([`fleet`]): a lone worker's claims do not announce.
    pub fleet: fleet::Fleet,
    running: AtomicBool,
}

/// How long a worker waits after its hello came back before it counts itself alone: an
/// answer takes two trips through Redis.
fn fleet_grace(timeout_ms: u64) -> Duration {
    Duration::from_millis(timeout_ms.saturating_mul(2).max(1_000))
}

/// A cheap-to-clone handle on one worker.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl std::ops::Deref for Inner {
    type Target = Resources;
    fn deref(&self) -> &Resources {
        &self.resources
    }
}

impl std::ops::Deref for Worker {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Worker {
    /// A worker on `resources` ([`Resources::connect`]; `engage serve --with-worker` passes the
    /// API's own).
    pub fn new(resources: Resources) -> Self {
        let grace = fleet_grace(resources.cfg.redis.timeout_ms);
        Self {
            inner: Arc::new(Inner {
                resources,
                reconcile_check: Notify::new(),
                wake_overflow: AtomicBool::new(false),
                fleet: fleet::Fleet::new(grace),
                running: AtomicBool::new(false),
            }),
        }
    }

    /// Queues a wake-up for the dispatcher. When its channel is full the wake-up is not lost:
    /// the dispatcher looks at every shard after its current round instead.
    pub fn wake(&self, tx: &mpsc::Sender<Signal>, signal: Signal) {
        if tx.try_send(signal).is_err() {
            self.wake_overflow.store(true, Ordering::Relaxed);
            tracing::debug!("wake channel full");
        }
    }

    /// Whether the loops are running (health).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Runs every loop until `stop` is cancelled; claims stop at once, the batch in hand is
    /// finished (or handed back), and this returns within a few seconds.
    pub async fn run(&self, stop: CancellationToken) -> anyhow::Result<()> {
        self.running.store(true, Ordering::Relaxed);
        // Alert counters exist from the start (at 0), so `rate()` and alert rules see them.
        for name in [
            shared::metrics::CB_SUBMIT_FAILED,
            shared::metrics::DISPATCHED,
            shared::metrics::DISPATCH_DUPLICATES,
            shared::metrics::INDEX_REPAIRED,
        ] {
            ::metrics::counter!(name).increment(0);
        }
        let (tx, rx) = mpsc::channel::<Signal>(1024);
        // Every task below ends when `stop` is cancelled (no loop outlives `run`).
        let tasks = [
            tokio::spawn(wake::run(self.clone(), tx.clone(), stop.clone())),
            tokio::spawn(reconcile::run(self.clone(), tx.clone(), stop.clone())),
            tokio::spawn(maintenance::run(self.clone(), stop.clone())),
            tokio::spawn(sweep::run(self.clone(), stop.clone())),
            tokio::spawn(push::run(self.clone(), stop.clone())),
            tokio::spawn(dispatch::run(self.clone(), rx, stop.clone())),
        ];
        drop(tx);
        stop.cancelled().await;
        let joined = tokio::time::timeout(Duration::from_secs(8), futures::future::join_all(tasks));
        let result = match joined.await {
            Ok(results) => {
                for r in results {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "worker task failed");
                    }
                }
                Ok(())
            }
            Err(_) => {
                tracing::warn!("worker tasks did not stop within 8 s");
                Ok(())
            }
        };
        self.running.store(false, Ordering::Relaxed);
        tracing::info!("worker stopped");
        result
    }
}

/// Sleeps for `d` unless `stop` fires first; returns whether it was stopped.
pub async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// Exponential backoff between `min` and `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff starting at `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            next: min,
            min,
            max,
        }
    }
    /// The next delay (doubles each time).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
    /// Back to the minimum after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

pub use shared::process::shutdown_signal;
