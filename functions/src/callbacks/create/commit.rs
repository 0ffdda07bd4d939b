//! The transactional writes of create (slot claims and Idempotency-Key creates), run in a task
//! of their own so that the request answers by its deadline whatever PostgreSQL does
//! (docs/bounded-answers.md).
//!
//! The task owns the connection and the write's [`Writer`]: it claims the key (when there is
//! one), reserves the create-time limits, inserts (a full slot is refused with proposals, on
//! the same connection), and commits only if the request still waits
//! ([`Writer::begin_commit`]); a request that gave up before the `COMMIT` is sent gets a
//! rollback. A `COMMIT` whose connection broke is resolved on a fresh connection
//! ([`outcome::resolve_stored`]). What is committed is indexed before the answer is handed
//! over, like the batcher does. A commit that lands after the request gave up is undone: the
//! callback, its slot place and its key are withdrawn in one statement and the throttle
//! reservation is given back.

use std::sync::{Arc, Mutex, PoisonError};

use deadpool_postgres::Object;
use futures::future::BoxFuture;
use jiff::Timestamp;
use shared::{
    db::{
        self,
        batch::not_confirmed,
        callbacks::{Idempotent, Inserted, Withdrawn},
        outcome::{self, TxFail, Waited, Writer},
        slots::SlotRefusal,
    },
    error::{Error, Result},
    http::envelope,
    redis::schedule,
};
use uuid::Uuid;

use super::{Ctx, limits::Reservation, store::Write};

/// What the transaction did.
#[derive(Debug)]
enum Written {
    /// The callback is committed, due at this stored time.
    Stored(Timestamp),
    /// The Idempotency-Key was used before: nothing written.
    Earlier(Idempotent),
}

/// Everything the task needs, owned.
pub struct Job {
    /// The create's context.
    pub ctx: Ctx,
    /// The write.
    pub w: Write,
}

/// Runs `job` on `client` in its own task and waits for it until the request's commit
/// deadline; a write given up there is never left stored. Returns the callback's id (the
/// earlier one's for a replayed Idempotency-Key).
pub async fn run(client: Object, job: Job) -> Result<Uuid> {
    let id = job.w.cb.id;
    envelope::committing();
    let deadline = envelope::commit_deadline();
    let (writer, waiter) = outcome::pair();
    tokio::spawn(write(client, job, writer));
    match waiter.wait(deadline).await {
        Waited::Done(Ok(Written::Stored(_))) => Ok(id),
        Waited::Done(Ok(Written::Earlier(Idempotent::Replayed(earlier)))) => Ok(earlier),
        Waited::Done(Ok(Written::Earlier(_))) => Err(Error::conflict(
            "Idempotency-Key was already used with a different request body",
        )),
        Waited::Done(Err(e)) => Err(e),
        // Committed, answer late: the task indexes it.
        Waited::DoneLate { stored: true } => Ok(id),
        Waited::DoneLate { stored: false } | Waited::Abandoned | Waited::InDoubt => {
            Err(not_confirmed())
        }
    }
}

async fn write(mut client: Object, job: Job, writer: Writer<Result<Written>>) {
    let mut reservation = None;
    let result = transaction(&mut client, &job, &writer, &mut reservation).await;
    // Back to the pool before the Redis writes and the answer.
    drop(client);
    let result = match result {
        Err(TxFail::InDoubt(e)) => resolve(&job, e).await,
        Err(TxFail::Api(e)) => Err(e),
        Ok(w) => Ok(w),
    };
    let stored = matches!(result, Ok(Written::Stored(_)));
    let ctx = &job.ctx;
    if writer.settle(stored) {
        if let Ok(Written::Stored(at)) = &result {
            super::store::created(ctx);
            let entry = (job.w.cb.id, at.as_millisecond());
            schedule::index_committed(&ctx.state.redis, &ctx.state.keys, &[entry]).await;
        }
        writer.send(result);
        if !stored && let Some(r) = reservation.take() {
            r.give_back(&ctx.state).await;
        }
        return;
    }
    // The request answered 503 meanwhile.
    if let Ok(Written::Stored(at)) = &result {
        // Given back before the withdrawal commits, while it holds the key: a retry that then
        // claims the key anew is counted without this callback.
        let (state, mut held) = (ctx.state.clone(), reservation.take());
        let given = Arc::new(Mutex::new(None));
        let restore = given.clone();
        let mut give_back = move |w: &Withdrawn| -> BoxFuture<'static, ()> {
            let r = if w.spared.is_empty() {
                held.take()
            } else {
                None
            };
            let (state, given) = (state.clone(), given.clone());
            Box::pin(async move {
                if let Some(r) = r {
                    let handle = r.give_back_restorable(&state).await;
                    *given.lock().unwrap_or_else(PoisonError::into_inner) = handle;
                }
            })
        };
        let (db, ids) = (&ctx.state.db, [job.w.cb.id]);
        let spared = outcome::compensate_with(db, &ctx.tenant, &ids, &mut give_back).await;
        if !spared.is_empty() {
            // A retry with the same Idempotency-Key was answered with this callback: it
            // stays, with its reservation (docs/bounded-answers.md#a-replay-of-a-create-answered-503);
            // one given back by an attempt whose commit failed is counted again.
            let undo = restore
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(r) = undo {
                r.count_again(&ctx.state, &job.w.number.key).await;
            }
            super::store::created(ctx);
            let entry = (job.w.cb.id, at.as_millisecond());
            schedule::index_committed(&ctx.state.redis, &ctx.state.keys, &[entry]).await;
            return;
        }
    }
    if let Some(r) = reservation.take() {
        r.give_back(&ctx.state).await;
    }
}

/// A `COMMIT` whose outcome is unknown: asks a fresh connection whether the row is stored.
async fn resolve(job: &Job, e: impl std::fmt::Display) -> Result<Written> {
    let cb = &job.w.cb;
    tracing::warn!(callback.id = %cb.id, error = %e, "create commit outcome unknown; resolving");
    let stored = outcome::resolve_stored(&job.ctx.state.db, std::slice::from_ref(cb)).await;
    if stored.contains(&cb.id) {
        // Indexed as due at once: the worker re-reads the row and moves a scheduled
        // callback to its stored time (the host's time may be off).
        Ok(Written::Stored(Timestamp::UNIX_EPOCH))
    } else {
        Err(Error::unavailable(
            "database connection lost; nothing was stored, retry later",
        ))
    }
}

/// The refusal of a full slot, with proposals read on this connection (after the rollback
/// that released the slot's row).
async fn full(ctx: &Ctx, w: &Write, client: &Object, start: Timestamp) -> Error {
    match ctx.alternatives(w.plan.as_ref(), &w.cb.admission) {
        Some(alt) => alt.refuse(client, start, SlotRefusal::Full).await,
        None => Error::internal(anyhow::anyhow!("a slot claim without a plan")),
    }
}

/// An earlier use of the key: a replay commits its mark on the key before it answers, and only
/// while the request still waits (a compensation of the callback then keeps it); a mismatch
/// changed nothing.
async fn replay(
    tx: deadpool_postgres::Transaction<'_>,
    earlier: Idempotent,
    writer: &Writer<Result<Written>>,
) -> Result<Written, TxFail> {
    if matches!(earlier, Idempotent::Mismatch) {
        tx.rollback().await?;
        return Ok(Written::Earlier(earlier));
    }
    if !writer.begin_commit() {
        tx.rollback().await?;
        return Err(TxFail::Api(not_confirmed()));
    }
    match tx.commit().await {
        Ok(()) => Ok(Written::Earlier(earlier)),
        // The mark may have landed: the callback is then kept although this request answers
        // 503 too (docs/bounded-answers.md#a-replay-of-a-create-answered-503).
        Err(e) => Err(TxFail::Api(e.into())),
    }
}

async fn transaction(
    client: &mut Object,
    job: &Job,
    writer: &Writer<Result<Written>>,
    reservation: &mut Option<Reservation>,
) -> Result<Written, TxFail> {
    let (ctx, w) = (&job.ctx, &job.w);
    let tx = client.transaction().await?;
    if let Some(k) = &w.keyed
        && let Some(earlier) =
            db::callbacks::claim_idempotency_key(&tx, &w.cb, &k.key, &k.hash).await?
    {
        return replay(tx, earlier, writer).await;
    }
    *reservation = Some(super::limits::reserve(ctx, &tx, &w.number, &w.cb).await?);
    let dispatch_at = match db::callbacks::insert(&tx, &w.cb).await? {
        Inserted::Stored(at) => at,
        Inserted::SlotFull(claim) => {
            tx.rollback().await?;
            return Err(TxFail::Api(full(ctx, w, client, claim.start).await));
        }
    };
    if !writer.begin_commit() {
        tx.rollback().await?;
        return Err(TxFail::Api(not_confirmed()));
    }
    match tx.commit().await {
        Ok(()) => Ok(Written::Stored(dispatch_at)),
        Err(e) if outcome::in_doubt(&e) => Err(TxFail::InDoubt(e)),
        Err(e) => Err(TxFail::Api(e.into())),
    }
}
