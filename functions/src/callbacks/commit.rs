//! The transactional writes of create (slot claims and Idempotency-Key creates), run in a task
//! of their own so that the request answers by its deadline whatever PostgreSQL does
//! (docs/bounded-answers.md).
//!
//! The task owns the connection and the write's [`Writer`]: it claims the key (when there is
//! one), reserves the create-time limits, inserts, and commits only if the request still
//! waits ([`Writer::begin_commit`]); a request that gave up before the `COMMIT` is sent gets a
//! rollback. A `COMMIT` whose connection broke is resolved on a fresh connection
//! ([`outcome::resolve_stored`]). A commit that lands after the request gave up is undone:
//! the callback, its slot place and its key are deleted in one statement and the throttle
//! reservation is given back.

use deadpool_postgres::Object;
use jiff::Timestamp;
use shared::db::outcome::TxFail as Fail;
use shared::{
    ApiError,
    db::{
        self,
        callbacks::{Idempotent, NewCallback},
        outcome::{self, Waited, Writer},
    },
    http::ApiResult,
    http::AppState,
    model::ServiceSettings,
};

use super::limits::{self, Number, Reservation};

/// What the transaction did.
#[derive(Debug)]
pub enum Written {
    /// The callback is committed, due at this stored time.
    Stored(Timestamp),
    /// The Idempotency-Key was used before: nothing written.
    Earlier(Idempotent),
}

/// Everything the task needs, owned.
pub struct Job {
    /// Shared resources.
    pub state: AppState,
    /// The callback to insert.
    pub cb: NewCallback,
    /// Idempotency-Key and the hash of the request body.
    pub keyed: Option<(String, [u8; 32])>,
    /// The checked phone number (limits key).
    pub number: Number,
    /// The service's settings.
    pub settings: ServiceSettings,
}

/// Runs `job` on `client` in its own task and waits for it until the request's commit
/// deadline; a write given up there is never left stored.
pub async fn run(client: Object, job: Job) -> ApiResult<Written> {
    shared::http::envelope::committing();
    let deadline = shared::http::envelope::commit_deadline();
    let (writer, waiter) = outcome::pair();
    tokio::spawn(write(client, job, writer));
    match waiter.wait(deadline).await {
        Waited::Done(answer) => answer,
        // Committed, answer late: indexed as due now (the worker re-reads the row's time).
        Waited::DoneLate { stored: true } => Ok(Written::Stored(Timestamp::UNIX_EPOCH)),
        Waited::DoneLate { stored: false } | Waited::Abandoned | Waited::InDoubt => {
            Err(db::batch::not_confirmed().into())
        }
    }
}

async fn write(mut client: Object, job: Job, writer: Writer<ApiResult<Written>>) {
    let mut reservation = None;
    let result = transaction(&mut client, &job, &writer, &mut reservation).await;
    let result = match result {
        Err(Fail::InDoubt(e)) => {
            tracing::warn!(callback.id = %job.cb.id, error = %e, "create commit outcome unknown; resolving");
            drop(client);
            let stored = outcome::resolve_stored(&job.state.db, std::slice::from_ref(&job.cb));
            if stored.await.contains(&job.cb.id) {
                // Indexed as due at once: the worker re-reads the row and moves a scheduled
                // callback to its stored time (the host's time may be off).
                Ok(Written::Stored(Timestamp::UNIX_EPOCH))
            } else {
                Err(ApiError::unavailable(
                    "database connection lost; nothing was stored, retry later",
                ))
            }
        }
        Err(Fail::Api(e)) => Err(e.into()),
        Ok(w) => Ok(w),
    };
    let stored = matches!(result, Ok(Written::Stored(_)));
    if writer.settle(stored) {
        writer.send(result);
        if !stored && let Some(r) = reservation.take() {
            r.give_back(&job.state).await;
        }
        return;
    }
    // The request answered 503 meanwhile.
    if stored {
        outcome::compensate(&job.state.db, &job.cb.tenant, &[job.cb.id]).await;
    }
    if let Some(r) = reservation.take() {
        r.give_back(&job.state).await;
    }
}

async fn transaction(
    client: &mut Object,
    job: &Job,
    writer: &Writer<ApiResult<Written>>,
    reservation: &mut Option<Reservation>,
) -> Result<Written, Fail> {
    let cb = &job.cb;
    let tx = client.transaction().await?;
    if let Some((key, hash)) = &job.keyed
        && let Some(earlier) = db::callbacks::claim_idempotency_key(&tx, cb, key, hash).await?
    {
        tx.rollback().await?;
        return Ok(Written::Earlier(earlier));
    }
    let immediate = !cb.scheduled;
    *reservation = Some(
        limits::reserve(
            &job.state,
            &tx,
            &cb.tenant,
            &cb.service,
            &job.settings,
            &job.number,
            immediate,
            cb.id,
        )
        .await?,
    );
    let dispatch_at = db::callbacks::insert(&tx, cb).await?;
    if !writer.begin_commit() {
        tx.rollback().await?;
        return Err(Fail::Api(db::batch::not_confirmed()));
    }
    match tx.commit().await {
        Ok(()) => Ok(Written::Stored(dispatch_at)),
        Err(e) if outcome::in_doubt(&e) => Err(Fail::InDoubt(e)),
        Err(e) => Err(e.into()),
    }
}
