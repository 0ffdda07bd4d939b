//! Writes whose caller may stop waiting: a bounded wait on one side, an outcome that is always
//! settled on the other (docs/bounded-answers.md).
//!
//! A handler hands its write to a task (or to the group-commit batcher) and waits for the
//! outcome with a [`Waiter`] until its deadline. The write's side holds the [`Writer`]. One
//! atomic state per write decides, by compare-and-swap, who owns the outcome:
//!
//! - the writer calls [`Writer::begin_commit`] just before sending the statement or `COMMIT`
//!   that makes the write durable; when the waiter already gave up it gets `false` and must not
//!   commit (roll back, or leave the row out of the batch);
//! - the writer calls [`Writer::settle`] once the outcome is known; `false` means the waiter
//!   gave up while the commit was in flight, so a write that turned out stored must be
//!   **compensated** (undone) by the writer: the caller was told it failed;
//! - the waiter, at its deadline (or when dropped), takes the write away from the writer; what
//!   it took tells it whether the write surely did not happen ([`Waited::Abandoned`]) or may
//!   still commit and will be compensated ([`Waited::InDoubt`]).
//!
//! Whatever happens to PostgreSQL, the waiter answers by its deadline plus
//! [`LATE_VALUE_GRACE`], and an answer of failure never hides a stored write for long: it is
//! either not committed or deleted as soon as PostgreSQL answers again.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use deadpool_postgres::Pool;
use tokio::{sync::oneshot, time::Instant};
use uuid::Uuid;

use super::callbacks::{NewCallback, Withdrawn};
use crate::error::Error;

const WAITING: u8 = 0;
const COMMITTING: u8 = 1;
const DONE_STORED: u8 = 2;
const ABANDONED: u8 = 3;
const ABANDONED_IN_DOUBT: u8 = 4;
const DONE_NOT_STORED: u8 = 5;

/// How long a waiter that lost the race to a settled writer still waits for the value (the
/// batcher indexes the rows it committed before it hands out the answers).
pub const LATE_VALUE_GRACE: Duration = Duration::from_millis(1_000);

/// The writing side of one write.
#[derive(Debug)]
pub struct Writer<T> {
    state: Arc<AtomicU8>,
    tx: oneshot::Sender<T>,
}

/// The waiting side of one write.
#[derive(Debug)]
pub struct Waiter<T> {
    state: Arc<AtomicU8>,
    rx: Option<oneshot::Receiver<T>>,
}

/// What the waiter learnt.
#[derive(Debug)]
pub enum Waited<T> {
    /// The writer answered before the deadline; `T` is its result.
    Done(T),
    /// The writer settled before the deadline but its answer came too late (the batcher
    /// indexes stored rows before it answers); `stored` is what it settled.
    DoneLate {
        /// The write is committed.
        stored: bool,
    },
    /// Given up before the commit was sent: the write never happens.
    Abandoned,
    /// Given up while the commit was in flight: if it turns out committed, the writer undoes it.
    InDoubt,
}

/// A new write's two sides.
pub fn pair<T>() -> (Writer<T>, Waiter<T>) {
    let state = Arc::new(AtomicU8::new(WAITING));
    let (tx, rx) = oneshot::channel();
    (
        Writer {
            state: state.clone(),
            tx,
        },
        Waiter {
            state,
            rx: Some(rx),
        },
    )
}

fn swap(state: &AtomicU8, from: u8, to: u8) -> bool {
    state
        .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

impl<T> Writer<T> {
    /// Marks the commit as sent from now on; `false`: the waiter is gone, do not commit.
    pub fn begin_commit(&self) -> bool {
        swap(&self.state, WAITING, COMMITTING)
    }

    /// Records the outcome (`stored`: committed); `false`: the waiter gave up meanwhile
    /// (compensate a stored write).
    pub fn settle(&self, stored: bool) -> bool {
        let done = if stored { DONE_STORED } else { DONE_NOT_STORED };
        swap(&self.state, COMMITTING, done) || swap(&self.state, WAITING, done)
    }

    /// Whether the waiter gave up.
    pub fn abandoned(&self) -> bool {
        matches!(
            self.state.load(Ordering::Acquire),
            ABANDONED | ABANDONED_IN_DOUBT
        )
    }

    /// Hands the answer to the waiter (after [`Self::settle`] returned `true`).
    pub fn send(self, value: T) {
        let _ = self.tx.send(value);
    }
}

/// Work to undo should a write not be kept (the create-time limits reserved for a callback):
/// run when its guard is dropped and the write is not stored, whether the request answered
/// a failure or was itself dropped mid-wait (client gone). Decided on the write's state, by
/// the same compare-and-swap as a waiter giving up, so it runs exactly when the row is not
/// (or will not stay) stored, whatever the order of the drops.
pub struct UndoUnlessStored {
    state: Option<Arc<AtomicU8>>,
    undo: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for UndoUnlessStored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UndoUnlessStored")
            .field("armed", &self.undo.is_some())
            .finish()
    }
}

impl UndoUnlessStored {
    /// A guard that runs `undo` when dropped, unless it watches a write that ends stored.
    pub fn new(undo: Option<Box<dyn FnOnce() + Send>>) -> Self {
        Self { state: None, undo }
    }

    /// Watches the write of `waiter` from now on.
    pub fn watch<T>(&mut self, waiter: &Waiter<T>) {
        self.state = Some(waiter.state.clone());
    }

    /// The write is stored (a path without a [`Waiter`]): nothing to undo.
    pub fn stored(mut self) {
        self.undo = None;
    }
}

impl Drop for UndoUnlessStored {
    fn drop(&mut self) {
        let Some(undo) = self.undo.take() else {
            return;
        };
        if let Some(state) = &self.state {
            // Gives the write up like a dropped waiter; a write that already settled keeps
            // its outcome, and only a stored one keeps its reservation.
            let _ = swap(state, WAITING, ABANDONED) || swap(state, COMMITTING, ABANDONED_IN_DOUBT);
            if state.load(Ordering::Acquire) == DONE_STORED {
                return;
            }
        }
        undo();
    }
}

impl<T> Waiter<T> {
    /// Waits for the answer until `deadline` (`None`: without bound), then gives up.
    pub async fn wait(mut self, deadline: Option<Instant>) -> Waited<T> {
        // The receiver stays in `self` while this future waits: should it be dropped midway
        // (the request's client went away, or the last-resort 503), `Drop` still sees a waiter
        // and gives the write up, and a stored one is withdrawn. A retry with the same
        // Idempotency-Key that replays it marks its key first, and the withdrawal then keeps
        // it (docs/bounded-answers.md#a-replay-of-a-create-answered-503).
        let Some(rx) = self.rx.as_mut() else {
            return Waited::Abandoned;
        };
        let early = match deadline {
            Some(d) => tokio::time::timeout_at(d, &mut *rx).await.ok(),
            None => Some((&mut *rx).await),
        };
        // `Some(Err)`: the writer vanished without answering (its task panicked): nothing
        // was settled for us, so it is handled like the deadline.
        if let Some(Ok(v)) = early {
            self.rx = None;
            return Waited::Done(v);
        }
        if let Some(given_up) = self.give_up() {
            self.rx = None;
            return given_up;
        }
        // Settled by the writer: only its answer is late (dropping now gives nothing up).
        let Some(rx) = self.rx.take() else {
            return Waited::Abandoned;
        };
        match tokio::time::timeout(LATE_VALUE_GRACE, rx).await {
            Ok(Ok(v)) => Waited::Done(v),
            _ => Waited::DoneLate {
                stored: self.state.load(Ordering::Acquire) == DONE_STORED,
            },
        }
    }

    /// Takes the write away from the writer, unless it already settled (`None`).
    fn give_up(&self) -> Option<Waited<T>> {
        if swap(&self.state, WAITING, ABANDONED) {
            return Some(Waited::Abandoned);
        }
        if swap(&self.state, COMMITTING, ABANDONED_IN_DOUBT) {
            return Some(Waited::InDoubt);
        }
        None
    }
}

impl<T> Drop for Waiter<T> {
    fn drop(&mut self) {
        // A request dropped before or while it waits (client gone, last-resort 503) gives up
        // the same way as at its deadline.
        if self.rx.is_some() {
            let _ = self.give_up();
        }
    }
}

/// Why a write's transaction did not end in a known state (create and cancel transactions).
#[derive(Debug)]
pub enum TxFail {
    /// A definite answer: nothing changed.
    Api(Error),
    /// The `COMMIT` was sent and the connection broke: outcome unknown ([`in_doubt`]).
    InDoubt(tokio_postgres::Error),
}

impl From<Error> for TxFail {
    fn from(e: Error) -> Self {
        Self::Api(e)
    }
}

impl From<tokio_postgres::Error> for TxFail {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Api(e.into())
    }
}

/// Whether a failed statement may still have committed: the connection broke or closed after
/// it may have been sent (no error from the server), or the server reported the end of the
/// session rather than of the statement: operator intervention (class 57: a terminated
/// backend, a fast or immediate shutdown, which can strike between the commit record and its
/// acknowledgement), connection, system or internal errors (08, 58, XX). Every other server
/// error means the statement, and so its transaction, failed.
pub fn in_doubt(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => ["57", "08", "58", "XX"]
            .iter()
            .any(|class| db.code().code().starts_with(class)),
    }
}

/// Which of `rows` are stored, asked on a fresh connection. Each row is inserted again with
/// `ON CONFLICT (id) DO NOTHING` in a transaction that is rolled back: an insert of the same id
/// still in flight elsewhere makes this one wait on its unique-index entry until it commits or
/// aborts, so the answer is final. Retries until PostgreSQL answers.
pub async fn resolve_stored(pool: &Pool, rows: &[NewCallback]) -> HashSet<Uuid> {
    let mut delay = Duration::from_millis(100);
    loop {
        match probe(pool, rows).await {
            Ok(stored) => return stored,
            Err(e) => {
                tracing::warn!(count = rows.len(), error = %e, retry_in_ms = delay.as_millis() as u64,
                    "in-doubt insert not resolved yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn probe(pool: &Pool, rows: &[NewCallback]) -> Result<HashSet<Uuid>, Error> {
    let mut client = pool.get().await?;
    let inserted = async {
        let tx = client.transaction().await?;
        let inserted = super::batch::probe_rows(&tx, rows).await?;
        tx.rollback().await?;
        Ok::<_, Error>(inserted)
    }
    .await;
    discard_on_error(client, &inserted);
    let inserted = inserted?;
    Ok(rows
        .iter()
        .map(|r| r.id)
        .filter(|id| !inserted.contains(id))
        .collect())
}

/// Withdraws callbacks whose caller was told they failed (cancelled with a settle owed, so a
/// hand-off made meanwhile is fenced or followed by a control entry), with what they held:
/// their slot place and Idempotency-Key. Retries until PostgreSQL answers. Returns the
/// callbacks it kept because a replay of their Idempotency-Key was answered with them: those
/// stay, and the caller indexes them. The create-time throttle reservation is Redis state; the
/// caller gives it back for the others.
pub async fn compensate(pool: &Pool, tenant: &str, ids: &[Uuid]) -> Vec<Uuid> {
    compensate_with(pool, tenant, ids, &mut |_| Box::pin(async {}))
        .await
        .spared
}

/// Marks the Idempotency-Key of callback `id` given back before a withdrawal gives its
/// throttle reservation back (`callbacks::mark_given_back`), committed on its own. Retries
/// until PostgreSQL answers, as the withdrawal does. Returns whether a key was marked.
pub async fn mark_given_back(pool: &Pool, tenant: &str, id: Uuid) -> bool {
    let mut delay = Duration::from_millis(100);
    loop {
        let marked = async {
            let client = pool.get().await?;
            let marked = super::callbacks::mark_given_back(&client, tenant, id).await;
            discard_on_error(client, &marked);
            marked
        }
        .await;
        match marked {
            Ok(marked) => return marked,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "give-back mark not written yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Drops `client` from the pool when `result` failed: a retry loop's failure is often a
/// connection the server ended (a terminated backend, a restart), and the pool's fast check
/// (`is_closed`) may not see that yet when the next request takes the connection (that
/// request then failed at its first statement).
fn discard_on_error<T>(client: deadpool_postgres::Object, result: &Result<T, Error>) {
    if result.is_err() {
        drop(deadpool_postgres::Object::take(client));
    }
}

/// Work run before a withdrawal commits ([`compensate_with`]).
pub type BeforeCommit<'a> =
    &'a mut (dyn FnMut(&Withdrawn) -> futures::future::BoxFuture<'static, ()> + Send);

/// [`compensate`], running `before_commit` with what is being withdrawn just before the
/// withdrawal commits, while it holds the callbacks' Idempotency-Keys: a retry that claims a
/// key anew waits for the commit and so sees what `before_commit` did (the keyed create gives
/// its throttle reservation back there, so the retry is not refused for the callback being
/// withdrawn). It may run again if the commit fails. Returns what the attempt that committed
/// did.
pub async fn compensate_with(
    pool: &Pool,
    tenant: &str,
    ids: &[Uuid],
    before_commit: BeforeCommit<'_>,
) -> Withdrawn {
    let mut delay = Duration::from_millis(100);
    loop {
        let done = async {
            let mut client = pool.get().await?;
            let attempt = async {
                let tx = client.transaction().await?;
                let w = super::callbacks::withdraw_unanswered(&tx, tenant, ids).await?;
                before_commit(&w).await;
                tx.commit().await?;
                Ok::<_, Error>(w)
            }
            .await;
            discard_on_error(client, &attempt);
            attempt
        }
        .await;
        match done {
            Ok(w) => {
                ::metrics::counter!(crate::metrics::CREATES_COMPENSATED).increment(w.count);
                tracing::warn!(
                    count = w.count,
                    kept_for_a_replay = w.spared.len(),
                    "callbacks stored after their request gave up (answered 503, or its client went away) were withdrawn"
                );
                return w;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "compensation not done yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_settled_writer_answers() {
        let (w, wait) = pair::<u8>();
        assert!(w.begin_commit());
        assert!(w.settle(true));
        w.send(7);
        assert!(matches!(wait.wait(None).await, Waited::Done(7)));
    }

    #[tokio::test]
    async fn a_waiter_at_its_deadline_abandons_before_the_commit_and_is_in_doubt_after() {
        let (w, wait) = pair::<u8>();
        let d = Instant::now() + Duration::from_millis(10);
        assert!(matches!(wait.wait(Some(d)).await, Waited::Abandoned));
        assert!(!w.begin_commit(), "an abandoned write is not committed");

        let (w, wait) = pair::<u8>();
        assert!(w.begin_commit());
        let d = Instant::now() + Duration::from_millis(10);
        assert!(matches!(wait.wait(Some(d)).await, Waited::InDoubt));
        assert!(!w.settle(true), "the writer must compensate");
    }

    #[tokio::test]
    async fn undo_runs_exactly_when_the_write_is_not_stored() {
        use std::sync::atomic::AtomicUsize;
        let runs = Arc::new(AtomicUsize::new(0));
        let guard = || {
            let runs = runs.clone();
            UndoUnlessStored::new(Some(Box::new(move || {
                runs.fetch_add(1, Ordering::SeqCst);
            })))
        };
        // Stored, then the request went away before reading the answer: kept.
        let (w, wait) = pair::<u8>();
        let mut g = guard();
        g.watch(&wait);
        assert!(w.begin_commit() && w.settle(true));
        drop(wait);
        drop(g);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        // Dropped mid-commit (the guard first, then the waiter): undone, and the writer
        // compensates.
        let (w, wait) = pair::<u8>();
        let mut g = guard();
        g.watch(&wait);
        assert!(w.begin_commit());
        drop(g);
        drop(wait);
        assert!(!w.settle(true));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Dropped while queued (the waiter first): undone, never written.
        let (w, wait) = pair::<u8>();
        let mut g = guard();
        g.watch(&wait);
        drop(wait);
        drop(g);
        assert!(!w.begin_commit());
        // Answered "not stored": undone. Before any write was handed over: undone.
        let (w, wait) = pair::<u8>();
        let mut g = guard();
        g.watch(&wait);
        assert!(w.settle(false));
        drop(g);
        drop(guard());
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        // A path without a waiter that stored: kept.
        guard().stored();
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn dropping_a_wait_in_progress_gives_up() {
        let (w, wait) = pair::<u8>();
        assert!(w.begin_commit());
        let waiting = tokio::spawn(wait.wait(None));
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting.abort();
        let _ = waiting.await;
        assert!(w.abandoned(), "a dropped wait left the write to its writer");
        assert!(!w.settle(true));
    }

    #[tokio::test]
    async fn dropping_the_waiter_gives_up() {
        let (w, wait) = pair::<u8>();
        assert!(w.begin_commit());
        drop(wait);
        assert!(w.abandoned());
        assert!(!w.settle(true));
    }
}
