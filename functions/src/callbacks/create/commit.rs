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

use std::{sync::Arc, time::Instant};

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
    redis::schedule::{self, Due},
};
use uuid::Uuid;

use tokio::sync::Mutex;

use super::{
    Ctx,
    limits::{Reservation, Restore},
    store::Write,
};

/// What the transaction did.
#[derive(Debug)]
enum Written {
    /// The callback is committed, due at this stored time; its insert began at the instant.
    Stored(Due, Instant),
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
        Waited::Done(Ok(Written::Stored(..))) => Ok(id),
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
    let stored_at = match &result {
        Ok(Written::Stored(due, since)) => Some((*due, *since)),
        _ => None,
    };
    if writer.settle(stored_at.is_some()) {
        if let Some(at) = stored_at {
            index(&job.ctx, job.w.cb.id, at).await;
        }
        writer.send(result);
    } else if let Some(at) = stored_at {
        // The request answered 503 meanwhile.
        return withdraw(&job, reservation, at).await;
    }
    if stored_at.is_none()
        && let Some(r) = reservation
    {
        r.give_back(&job.ctx.state).await;
    }
}

/// Counts the create and indexes the committed callback (`at`: when it is due and when its
/// insert began), unless it is due beyond the horizon (docs/derived-state.md#the-horizon).
async fn index(ctx: &Ctx, id: Uuid, (due, since): (Due, Instant)) {
    super::store::created(ctx);
    if due.beyond_horizon(&ctx.state.keys, since) {
        return;
    }
    schedule::index_committed(&ctx.state.redis, &ctx.state.keys, &[due.entry(id)]).await;
}

/// The throttle reservation of a create being withdrawn, across the withdrawal's attempts.
enum Held {
    /// Still counted.
    Reserved(Reservation),
    /// Given back by an attempt (whose commit may have failed).
    Given(Restore),
    /// Nothing left to do.
    Done,
}

/// Withdraws a create committed after its request answered 503, unless a retry with the same
/// Idempotency-Key was answered with it: then it stays, indexed, with its reservation
/// (docs/bounded-answers.md#a-replay-of-a-create-answered-503).
async fn withdraw(job: &Job, reservation: Option<Reservation>, at: (Due, Instant)) {
    let (ctx, id) = (&job.ctx, job.w.cb.id);
    if job.w.keyed.is_some() && reservation.as_ref().is_some_and(Reservation::holds) {
        // Known in PostgreSQL before it is done: a replay then admits the callback again,
        // checked, whatever a re-seed or a lost hash does to the give-back's mark in Redis.
        outcome::mark_given_back(&ctx.state.db, &ctx.tenant, id).await;
    }
    let held = Arc::new(Mutex::new(reservation.map_or(Held::Done, Held::Reserved)));
    let (state, number) = (ctx.state.clone(), job.w.number.key.clone());
    let mut before_commit = |w: &Withdrawn| -> BoxFuture<'static, ()> {
        let (held, state, number) = (held.clone(), state.clone(), number.clone());
        let (spared, active) = (!w.spared.is_empty(), w.kept_active.contains(&id));
        Box::pin(async move {
            let mut held = held.lock().await;
            *held = match std::mem::replace(&mut *held, Held::Done) {
                // Given back while the withdrawal holds the key: a retry that then claims
                // the key anew is counted without this callback.
                Held::Reserved(r) if !spared => r
                    .give_back_restorable(&state)
                    .await
                    .map_or(Held::Done, Held::Given),
                // Kept before this withdrawal gave anything back: the replay that named it
                // gave this place back and admitted it again, and gives that admission back
                // if its commit fails, also one that landed after all (in doubt). Counted
                // again here, a no-op when it is.
                Held::Reserved(r) if spared && active => {
                    if let Some(r) = r.into_restore() {
                        r.count_again(&state, &number).await;
                    }
                    Held::Done
                }
                // An earlier attempt gave it back and its commit failed; a replay has marked
                // the key since. Counted again while the row is locked and active, so that a
                // cancel either came before (nothing to count) or releases it after.
                Held::Given(r) if spared && active => {
                    r.count_again(&state, &number).await;
                    Held::Done
                }
                // Withdrawn after all: a re-seed since the give-back may have counted it again.
                Held::Given(r) if !spared => {
                    r.give_back_again(&state).await;
                    Held::Given(r)
                }
                other => other,
            };
        })
    };
    let w = outcome::compensate_with(&ctx.state.db, &ctx.tenant, &[id], &mut before_commit).await;
    if w.kept_active.contains(&id) {
        index(ctx, id, at).await;
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
        Ok(Written::Stored(Due::UNKNOWN, Instant::now()))
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
/// changed nothing. An active callback that is not counted (a withdrawal gave its reservation
/// back) is admitted again first, checked: refused, the replay answers the limit and marks
/// nothing (`limits::readmit`).
async fn replay(
    tx: deadpool_postgres::Transaction<'_>,
    earlier: Idempotent,
    job: &Job,
    writer: &Writer<Result<Written>>,
) -> Result<Written, TxFail> {
    let Idempotent::Replayed(id) = earlier else {
        tx.rollback().await?;
        return Ok(Written::Earlier(earlier));
    };
    let (ctx, w) = (&job.ctx, &job.w);
    let immediate = w.cb.admission.is_immediate();
    let readmitted = match super::limits::readmit(ctx, &tx, &w.number, (id, immediate)).await {
        Ok(r) => r,
        Err(e) => {
            tx.rollback().await?;
            return Err(TxFail::Api(e));
        }
    };
    let committed = if writer.begin_commit() {
        tx.commit().await.map_err(|e| TxFail::Api(e.into()))
    } else {
        tx.rollback().await?;
        Err(TxFail::Api(not_confirmed()))
    };
    if committed.is_err()
        && let Some(r) = readmitted
    {
        // Not marked (or in doubt: a withdrawal that keeps it then counts it again).
        r.give_back(&ctx.state).await;
    }
    // A commit error: the mark may have landed, and the callback is then kept although this
    // request answers 503 too (docs/bounded-answers.md#a-replay-of-a-create-answered-503).
    committed.map(|()| Written::Earlier(earlier))
}

async fn transaction(
    client: &mut Object,
    job: &Job,
    writer: &Writer<Result<Written>>,
    reservation: &mut Option<Reservation>,
) -> Result<Written, TxFail> {
    let (ctx, w) = (&job.ctx, &job.w);
    let since = Instant::now();
    let tx = client.transaction().await?;
    if let Some(k) = &w.keyed
        && let Some(earlier) =
            db::callbacks::claim_idempotency_key(&tx, &w.cb, &k.key, &k.hash).await?
    {
        return replay(tx, earlier, job, writer).await;
    }
    *reservation = Some(super::limits::reserve(ctx, Some(&tx), &w.number, &w.cb).await?);
    let dispatch_at = match db::callbacks::insert(&tx, &w.cb).await? {
        Inserted::Stored(due) => due,
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
        Ok(()) => Ok(Written::Stored(dispatch_at, since)),
        Err(e) if outcome::in_doubt(&e) => Err(TxFail::InDoubt(e)),
        Err(e) => Err(TxFail::Api(e.into())),
    }
}
