//! The one store operation of create: commit the callback, index what was committed, answer
//! its id. Plain creates share a commit through the group-commit batcher
//! (`shared::db::batch`), which indexes the rows it commits; slot claims and Idempotency-Key
//! creates run a transaction of their own ([`super::commit`]), which indexes what it
//! committed the same way before it answers. Either way the create-time limits are reserved
//! just before the insert and given back when it does not happen ([`super::limits`]).

use shared::{db::callbacks::NewCallback, error::Result, http::envelope, metrics, model::SlotPlan};
use uuid::Uuid;

use super::{Conn, Ctx, Keyed, commit, limits, limits::Number};

/// What the store needs besides the context.
#[derive(Debug)]
pub struct Write {
    /// The callback to insert.
    pub cb: NewCallback,
    /// The request's Idempotency-Key, if any.
    pub keyed: Option<Keyed>,
    /// The checked phone number (the limits key on it).
    pub number: Number,
    /// The service's slot plan, when the admission read it (alternatives to a full slot).
    pub plan: Option<SlotPlan>,
}

/// Stores `w.cb` (committed and indexed when this returns `Ok`); returns its id, or the
/// earlier callback's id when the Idempotency-Key replays a request. A connection `conn` holds
/// is given back to the pool before a batched create's admission (the batcher draws from the
/// same pool).
pub async fn write(ctx: &Ctx, conn: Conn<'_>, w: Write) -> Result<Uuid> {
    if w.keyed.is_some() || w.cb.admission.slot().is_some() {
        let ctx = ctx.clone();
        return commit::run(conn.take().await?, commit::Job { ctx, w }).await;
    }
    drop(conn);
    let id = w.cb.id;
    batched(ctx, w).await.map(|()| id)
}

/// A plain create through the group-commit batcher.
async fn batched(ctx: &Ctx, w: Write) -> Result<()> {
    let reservation = limits::reserve(ctx, None, &w.number, &w.cb).await?;
    envelope::committing();
    // Given back whenever the row is not kept: a failure answered (a 503 at the deadline), or
    // this request dropped mid-insert (its client went away) while the row is left out or
    // deleted again. Off the request's path: the answer is due now.
    let state = ctx.state.clone();
    let undo = Box::new(move || {
        // A drop outside the runtime (it is shutting down) leaves it to the next re-seed.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { reservation.give_back(&state).await });
        }
    });
    let inserted = ctx
        .state
        .inserts
        .insert(w.cb, envelope::commit_deadline(), Some(undo))
        .await;
    if inserted.is_ok() {
        created(ctx);
    }
    inserted
}

/// Counts a created callback.
pub fn created(ctx: &Ctx) {
    ::metrics::counter!(metrics::CALLBACKS_CREATED, "tenant" => ctx.tenant.to_string())
        .increment(1);
}
