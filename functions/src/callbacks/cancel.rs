//! `POST /engagement/v3/callbacks/cancel`: cancel a callback that is not yet with an agent.
//!
//! The cancel is committed first (with `control_pending` set when the voice platform may have
//! the callback: submitted, or due soon enough to be mid-hand-off); then the callback leaves the
//! schedule index and its queue view (so positions and wait estimates stop counting it), and
//! the owed cancel is settled: a hand-off not yet written is fenced off, a written one gets a
//! control entry asking the voice platform to stop the session (docs/voice-platform.md). A
//! failed write is not lost: the worker's outbox settles every cancel still owed.
//!
//! Bounded (docs/bounded-answers.md): the cancel runs in a transaction of its own task, and the
//! request waits for it until its commit deadline. Given up before the `COMMIT` is sent, the
//! transaction rolls back and the answer is 503 "not cancelled". Given up while the `COMMIT` is
//! in flight (PostgreSQL frozen), the outcome is unknown and the 503 says so; should the
//! cancel land, the task does the follow-ups itself. A `COMMIT` whose connection broke is
//! resolved by re-reading the row under a row lock before answering.

use axum::{Router, extract::State, routing::post};
use serde::Serialize;
use shared::db::outcome::TxFail as Fail;
use shared::{
    db,
    db::outcome::{self, Waited, Writer},
    error::Result,
    http::ApiResult,
    http::{ApiTenant, AppState, Envelope, Json},
    metrics,
    model::callback::CallbackIdParms,
    redis::{queue, schedule, throttle, voice},
};
use uuid::Uuid;

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route("/engagement/v3/callbacks/cancel", post(handler))
}

/// The 200 `data` of cancel (`CancelCallbackData` in the GES clients).
#[derive(Debug, Serialize)]
pub struct CancelledData {
    /// The cancelled callback's id.
    pub id: String,
}

async fn handler(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    Json(body): Json<CallbackIdParms>,
) -> ApiResult<Envelope<CancelledData>> {
    let id = body.parse()?;
    cancel(&state, &tenant, id, None).await?;
    Ok(Envelope::ok(CancelledData { id: id.to_string() }))
}

/// Cancels one callback of `tenant` (also of `service`, when given: another service's callback
/// is not found), within the request's commit deadline; the one cancel of both the v3 and the
/// GMS surface. `Unavailable` means not cancelled, or (its message says so) maybe cancelled.
pub async fn cancel(
    state: &AppState,
    tenant: &str,
    id: Uuid,
    service: Option<&str>,
) -> Result<(), shared::Error> {
    let deadline = shared::http::envelope::commit_deadline();
    // The wait for a connection ends at the commit deadline too: a bulk cancel's answer must
    // arrive with every cancel that landed before it (docs/admin-queries.md#bulk-cancel).
    let client = match deadline {
        Some(d) => tokio::time::timeout_at(d, state.db.get())
            .await
            .map_err(|_| {
                shared::Error::unavailable(
                    "no database connection in time; the callback was not cancelled, retry later",
                )
            })??,
        None => state.db.get().await?,
    };
    shared::http::envelope::committing();
    let (writer, waiter) = outcome::pair();
    let scope = Scope {
        tenant: tenant.to_string(),
        service: service.map(str::to_string),
    };
    tokio::spawn(cancel_task(state.clone(), client, scope, id, writer));
    match waiter.wait(deadline).await {
        Waited::Done(answer) => answer,
        // Cancelled; only its follow-ups (index, control entry) ran late.
        Waited::DoneLate { stored: true } => Ok(()),
        Waited::Abandoned | Waited::DoneLate { stored: false } => Err(shared::Error::unavailable(
            "the database did not answer in time; the callback was not cancelled, retry later",
        )),
        Waited::InDoubt => Err(shared::Error::unavailable(
            "the database did not confirm the cancel in time; it may still apply: retry to \
             learn the outcome",
        )),
    }
}

/// One callback's outcome in a bulk cancel (the GMS surface's and the admin API's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Cancelled now.
    Cancelled,
    /// Unknown, or another tenant's.
    NotFound(String),
    /// Not a callback id at all.
    InvalidId,
    /// Completed, or with an agent.
    NotCancellable(String),
    /// Not cancelled (or, the message says, maybe): retry.
    Unavailable(String),
    /// An unexpected failure (logged).
    Failed,
}

impl Outcome {
    /// The outcome's name in bulk answers.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cancelled => "CANCELLED",
            Self::NotFound(_) => "NOT_FOUND",
            Self::InvalidId => "INVALID_ID",
            Self::NotCancellable(_) => "NOT_CANCELLABLE",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Failed => "ERROR",
        }
    }

    /// Why it was not cancelled.
    pub fn message(&self) -> Option<String> {
        match self {
            Self::Cancelled => None,
            Self::InvalidId => Some("not a callback id (a UUID)".into()),
            Self::Failed => Some("internal error".into()),
            Self::NotFound(m) | Self::NotCancellable(m) | Self::Unavailable(m) => Some(m.clone()),
        }
    }
}

/// [`cancel`] of one callback of a bulk cancel, its error folded into an [`Outcome`].
pub async fn cancel_counted(state: &AppState, tenant: &str, id: Uuid) -> Outcome {
    match cancel(state, tenant, id, None).await {
        Ok(()) => Outcome::Cancelled,
        Err(shared::Error::NotFound(_)) => Outcome::NotFound(format!("no callback {id}")),
        Err(shared::Error::Invalid(m)) => Outcome::NotCancellable(m),
        Err(shared::Error::Unavailable { message, .. }) => Outcome::Unavailable(message),
        Err(other) => {
            tracing::error!(callback.id = %id, error = %other, "bulk cancel failed");
            Outcome::Failed
        }
    }
}

/// Which callbacks a cancel may touch: the tenant's, and of one service when given.
struct Scope {
    tenant: String,
    service: Option<String>,
}

/// The cancel, committed only while the request waits, then its follow-ups (done here also
/// when the request gave up and the cancel landed after all).
async fn cancel_task(
    state: AppState,
    mut client: deadpool_postgres::Object,
    scope: Scope,
    id: Uuid,
    writer: Writer<Result<()>>,
) {
    let tenant = scope.tenant.as_str();
    let tx = in_tx(&mut client, &scope, id, &writer).await;
    // Back to the pool before the follow-ups, which take connections of their own: a request
    // holds at most one (knative/README.md), or concurrent cancels starve the pool.
    drop(client);
    let result = match tx {
        Err(Fail::InDoubt(e)) => {
            tracing::warn!(callback.id = %id, error = %e, "cancel commit outcome unknown; resolving");
            resolve(&state, tenant, id).await
        }
        Err(Fail::Api(e)) => Err(e),
        Ok(c) => Ok(c),
    };
    let done = result.as_ref().is_ok();
    let answered = writer.settle(done);
    match result {
        Ok(cancelled) => {
            release_throttle(&state, tenant, &cancelled.service, id).await;
            after_cancel(&state, tenant, id, cancelled).await;
            if answered {
                writer.send(Ok(()));
            }
        }
        Err(e) if answered => writer.send(Err(e)),
        Err(_) => {}
    }
}

async fn in_tx(
    client: &mut deadpool_postgres::Object,
    scope: &Scope,
    id: Uuid,
    writer: &Writer<Result<()>>,
) -> Result<db::callbacks::Cancelled, Fail> {
    let tx = client.transaction().await?;
    if let Some(service) = &scope.service {
        // Another service's callback is not found through this service (nothing changes).
        let current = db::callbacks::get(&tx, &scope.tenant, id).await?;
        if &current.service != service {
            return Err(Fail::Api(shared::Error::not_found(format!(
                "no callback {id} in service {service}"
            ))));
        }
    }
    let cancelled = db::callbacks::cancel(&tx, &scope.tenant, id).await?;
    if !writer.begin_commit() {
        tx.rollback().await?;
        return Err(Fail::Api(shared::Error::unavailable("request given up")));
    }
    match tx.commit().await {
        Ok(()) => Ok(cancelled),
        Err(e) if outcome::in_doubt(&e) => Err(Fail::InDoubt(e)),
        Err(e) => Err(e.into()),
    }
}

/// After a broken `COMMIT`: whether the cancel landed, read under the row lock (which waits
/// for a transaction still holding it). Retries until PostgreSQL answers.
async fn resolve(state: &AppState, tenant: &str, id: Uuid) -> Result<db::callbacks::Cancelled> {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        let read = async {
            let mut client = state.db.get().await?;
            let tx = client.transaction().await?;
            let found = db::callbacks::cancel_outcome(&tx, tenant, id).await;
            tx.rollback().await?;
            found
        }
        .await;
        match read {
            Ok(Some(c)) => return Ok(c),
            Ok(None) => {
                return Err(shared::Error::unavailable(
                    "database connection lost; the callback was not cancelled, retry later",
                ));
            }
            Err(e) => {
                tracing::warn!(callback.id = %id, error = %e, "cancel outcome not resolved yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(2));
            }
        }
    }
}

/// Frees the callback's place in its service's active counts (`in_queue_checking`,
/// `max_queued`). Best effort: the next re-seed from PostgreSQL repairs a miss.
async fn release_throttle(state: &AppState, tenant: &str, service: &str, id: Uuid) {
    let released = async {
        let mut conn = state.redis.conn().await?;
        throttle::release(&mut conn, &state.keys, tenant, service, id).await
    }
    .await;
    if let Err(e) = released {
        ::metrics::counter!(metrics::REDIS_WRITE_FAILED, "op" => "throttle_release").increment(1);
        tracing::warn!(callback.id = %id, error = %e, "throttle release failed; the next re-seed repairs it");
    }
}

/// Best-effort follow-ups of a committed cancel.
async fn after_cancel(
    state: &AppState,
    tenant: &str,
    id: Uuid,
    cancelled: db::callbacks::Cancelled,
) {
    let unindexed = async {
        let mut conn = state.redis.conn().await?;
        schedule::unindex(&mut conn, &state.keys, id).await?;
        if cancelled.submitted {
            // Not served: no dequeue time is recorded.
            let view = (tenant, cancelled.service.as_str());
            queue::dequeue(&mut conn, &state.keys, view, id, None).await?;
        }
        Ok::<(), redis::RedisError>(())
    }
    .await;
    if let Err(e) = unindexed {
        // The worker re-reads the row before submitting and skips cancelled callbacks.
        ::metrics::counter!(metrics::REDIS_WRITE_FAILED, "op" => "unindex").increment(1);
        tracing::warn!(callback.id = %id, error = %e, "schedule index removal failed");
    }
    if cancelled.owes_control {
        settle(state, id, &cancelled).await;
    }
}

/// Settles the owed cancel now (fence the hand-off, or a control entry after a submission that
/// is in the stream). Owed durably (`control_pending` was set with the cancel): if this fails,
/// the worker's outbox settles it; both paths are deduplicated.
async fn settle(state: &AppState, id: Uuid, cancelled: &db::callbacks::Cancelled) {
    let owed = voice::OwedCancel {
        id,
        attempt: cancelled.attempt,
        epoch: cancelled.epoch,
        submitted: cancelled.submitted,
    };
    let sent = async {
        let v = &state.cfg.voice;
        let mut conn = voice::writer(&state.voice, v).await?;
        voice::settle_cancels(&mut conn, v, &[owed]).await
    }
    .await;
    match sent {
        Ok(added) => {
            if added > 0 {
                ::metrics::counter!(metrics::CONTROL_SENT, "via" => "api").increment(1);
            }
            let cleared = async {
                let client = state.db.get().await?;
                db::dispatch::clear_control(&client, &[id]).await
            }
            .await;
            if let Err(e) = cleared {
                tracing::warn!(callback.id = %id, error = %e, "clearing the control debt failed; the outbox re-settles it (deduplicated)");
            }
        }
        Err(e) => {
            ::metrics::counter!(metrics::REDIS_WRITE_FAILED, "op" => "control").increment(1);
            tracing::warn!(callback.id = %id, error = %e, "settling the cancel with the voice platform failed; the worker's outbox retries it");
        }
    }
}
