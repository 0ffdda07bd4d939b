//! The admin API's changes, each through the public API's domain functions:
//! `POST …/callbacks/{id}/cancel` and `POST …/callbacks/bulk-cancel` through
//! `callbacks::cancel::cancel` (capacity given back, the settle owed to the voice platform for a
//! handed-off or soon-due callback: docs/voice-platform.md#cancel), `POST …/callbacks/{id}/reschedule`
//! through `callbacks::reschedule::reschedule` (business hours, capacity, the fence of the old
//! time's hand-off).
//!
//! Bulk cancel takes either `{"ids": […]}` (1 to [`MAX_IDS`]) or filters in the query string
//! (those of the listing, at least one); `dryRun=true` answers how many would be cancelled and
//! changes nothing. By filter, one call cancels at most [`MAX_PER_CALL`] callbacks, read in
//! keyset batches, and stops early when its request deadline nears; `more: true` says to call
//! again (a cancelled callback no longer matches, so each call continues where the last one
//! ended): 100,000 matches take 100 calls (docs/admin-queries.md#bulk-cancel). By ids, the ids
//! left when the deadline nears are answered `UNAVAILABLE` (not tried) with `more: true`.

use std::time::Duration;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::{
    ApiError,
    db::admin_query,
    http::{ApiResult, AppState, Envelope, Json, Path, Query, extract::RawBody},
    model::{
        admin_query::{CallbackFilter, Cursor, Sort, SortKey, parse_bulk},
        callback::{parse_time, wire_time},
    },
};
use uuid::Uuid;

use super::{
    access::{Actor, Operation},
    callback_id, known_tenant,
};
use crate::callbacks::{
    cancel::{self, Outcome},
    reschedule,
};

/// Most ids one bulk cancel by ids takes.
pub const MAX_IDS: usize = 1000;
/// Most callbacks one bulk cancel by filter cancels.
pub const MAX_PER_CALL: usize = 1000;
/// Rows read per statement by a bulk cancel by filter.
const BATCH: usize = 250;
/// A bulk cancel by filter stops this long before its request's commit deadline.
const DEADLINE_MARGIN: Duration = Duration::from_secs(4);
/// The message of an id a bulk cancel by ids did not get to before its deadline.
pub const NOT_TRIED: &str = "not tried: the request's time ran out first; send this id again";
/// Most failures listed in a bulk cancel by filter's answer.
const MAX_LISTED: usize = 100;

/// The answer of a one-callback change.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Changed {
    /// The callback's id.
    pub id: String,
    /// Its desired time now, when a reschedule moved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_time: Option<String>,
}

/// `POST …/callbacks/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    actor: Actor,
    Path((ccid, id)): Path<(String, String)>,
) -> ApiResult<Envelope<Changed>> {
    Ok(Envelope::ok(cancel_one(&state, &actor, &ccid, &id).await?))
}

/// Cancels one of `tenant`'s callbacks (`id` as given) as the public cancel does.
pub async fn cancel_one(
    state: &AppState,
    actor: &Actor,
    tenant: &str,
    id: &str,
) -> Result<Changed, ApiError> {
    actor.may(tenant, Operation::Change)?;
    let id = callback_id(id)?;
    cancel::cancel(state, tenant, id, None).await?;
    Ok(Changed {
        id: id.to_string(),
        desired_time: None,
    })
}

/// Body of `POST …/callbacks/{id}/reschedule`: as the v3 extension's, without the id.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RescheduleBody {
    /// The new desired time (RFC 3339 with an offset).
    pub desired_time: Option<String>,
    /// User-data keys to set (any JSON value) or remove (`null`).
    pub user_data: Option<Value>,
}

/// `POST …/callbacks/{id}/reschedule`.
pub async fn reschedule(
    State(state): State<AppState>,
    actor: Actor,
    Path((ccid, id)): Path<(String, String)>,
    Json(body): Json<RescheduleBody>,
) -> ApiResult<Envelope<Changed>> {
    Ok(Envelope::ok(
        reschedule_one(&state, &actor, &ccid, &id, body).await?,
    ))
}

/// Reschedules one of `tenant`'s callbacks (`id` as given) as the v3 extension does.
pub async fn reschedule_one(
    state: &AppState,
    actor: &Actor,
    tenant: &str,
    id: &str,
    body: RescheduleBody,
) -> Result<Changed, ApiError> {
    actor.may(tenant, Operation::Change)?;
    let id = callback_id(id)?;
    let time = body
        .desired_time
        .as_deref()
        .map(|t| parse_time("desiredTime", t.trim()))
        .transpose()?;
    let change = reschedule::Change::from_v3(time, body.user_data)?;
    let done = reschedule::reschedule(state, tenant, id, change).await?;
    Ok(Changed {
        id: id.to_string(),
        desired_time: done.desired_time.map(wire_time),
    })
}

/// One id's outcome in a bulk cancel.
#[derive(Debug, Serialize)]
pub struct IdOutcome {
    /// The id as given (at most 64 characters).
    pub id: String,
    /// CANCELLED, NOT_FOUND, INVALID_ID, NOT_CANCELLABLE, UNAVAILABLE or ERROR.
    pub outcome: &'static str,
    /// Why, when not cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The answer of a bulk cancel.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkAnswer {
    /// A dry run: nothing changed.
    pub dry_run: bool,
    /// Dry run: how many would be cancelled now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<i64>,
    /// How many this call cancelled.
    pub cancelled: usize,
    /// By ids: every id's outcome; by filter: the ones not cancelled (at most 100).
    pub results: Vec<IdOutcome>,
    /// By filter: more callbacks may match; call again. By ids: some ids were not tried
    /// (`UNAVAILABLE`, the deadline came first); send those again.
    pub more: bool,
}

/// Body of a bulk cancel by ids.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ByIds {
    ids: Vec<Value>,
}

/// `POST …/callbacks/bulk-cancel[?filters][&dryRun=true]` with `{"ids": […]}` or no body.
pub async fn bulk_cancel(
    State(state): State<AppState>,
    actor: Actor,
    Path(ccid): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
    RawBody(body): RawBody,
) -> ApiResult<Envelope<BulkAnswer>> {
    let ids = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let ByIds { ids } = shared::http::extract::parse_json(&body)?;
        Some(ids)
    };
    Ok(Envelope::ok(
        bulk(&state, &actor, &ccid, &pairs, ids).await?,
    ))
}

/// A bulk cancel of `tenant`'s callbacks: by `ids` when given, else by the filters of `pairs`
/// (at least one); `dryRun=true` in `pairs` counts and changes nothing.
pub async fn bulk(
    state: &AppState,
    actor: &Actor,
    tenant: &str,
    pairs: &[(String, String)],
    ids: Option<Vec<Value>>,
) -> Result<BulkAnswer, ApiError> {
    actor.may(tenant, Operation::Change)?;
    let (filter, dry_run) = parse_bulk(pairs)?;
    known_tenant(state, tenant).await?;
    let Some(ids) = ids else {
        if filter.is_empty() {
            return Err(ApiError::bad_request(
                "bulk cancel needs {\"ids\": [...]} or at least one filter parameter",
            ));
        }
        return by_filter(state, tenant, &filter, dry_run).await;
    };
    if !filter.is_empty() {
        return Err(ApiError::bad_request(
            "bulk cancel takes ids or filters, not both",
        ));
    }
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(ApiError::bad_request(format!(
            "ids must be an array of 1 to {MAX_IDS} callback ids"
        )));
    }
    by_ids(state, tenant, &ids, dry_run).await
}

async fn by_ids(
    state: &AppState,
    tenant: &str,
    ids: &[Value],
    dry_run: bool,
) -> Result<BulkAnswer, ApiError> {
    let parsed: Vec<Option<Uuid>> = ids
        .iter()
        .map(|v| v.as_str().and_then(|s| Uuid::parse_str(s.trim()).ok()))
        .collect();
    if dry_run {
        let mut valid: Vec<Uuid> = parsed.iter().flatten().copied().collect();
        valid.sort();
        valid.dedup();
        let mut client = state.db.get().await?;
        let matched = admin_query::count_ids(&mut client, tenant, &valid).await?;
        return Ok(dry(matched));
    }
    let mut stop = Stop::for_request();
    let mut answer = BulkAnswer::default();
    for (given, id) in ids.iter().zip(parsed) {
        let shown = match given {
            Value::String(s) => s.chars().take(64).collect(),
            other => other.to_string().chars().take(64).collect(),
        };
        // As by filter: at least one, then only while the deadline is not near, so the
        // answer (each id's outcome) always arrives.
        let outcome = match id {
            Some(_) if stop.reached() => {
                answer.more = true;
                Outcome::Unavailable(NOT_TRIED.into())
            }
            Some(id) => {
                stop.tried();
                cancel::cancel_counted(state, tenant, id).await
            }
            None => Outcome::InvalidId,
        };
        answer.record(shown, outcome, true);
    }
    Ok(answer)
}

fn dry(matched: i64) -> BulkAnswer {
    BulkAnswer {
        dry_run: true,
        matched: Some(matched),
        ..BulkAnswer::default()
    }
}

impl BulkAnswer {
    /// Counts `outcome`; lists it when `all` or when it is a failure (up to [`MAX_LISTED`]).
    fn record(&mut self, id: String, outcome: Outcome, all: bool) {
        let ok = matches!(outcome, Outcome::Cancelled);
        if ok {
            self.cancelled += 1;
        }
        if all || (!ok && self.results.len() < MAX_LISTED) {
            self.results.push(IdOutcome {
                id,
                outcome: outcome.name(),
                message: outcome.message(),
            });
        }
    }
}

async fn by_filter(
    state: &AppState,
    tenant: &str,
    filter: &CallbackFilter,
    dry_run: bool,
) -> Result<BulkAnswer, ApiError> {
    let Some(filter) = admin_query::cancellable(filter) else {
        return Ok(if dry_run {
            dry(0)
        } else {
            BulkAnswer::default()
        });
    };
    let mut client = state.db.get().await?;
    if dry_run {
        return Ok(dry(admin_query::count(&mut client, tenant, &filter).await?));
    }
    drop(client);
    let mut stop = Stop::for_request();
    let sort = Sort {
        key: SortKey::DesiredTime,
        desc: false,
    };
    let (mut answer, mut cursor, mut done) = (BulkAnswer::default(), None, 0);
    loop {
        // A full call stops before reading: a batch of 0 rows would look like the end.
        if done >= MAX_PER_CALL {
            answer.more = true;
            return Ok(answer);
        }
        let want = BATCH.min(MAX_PER_CALL - done);
        let batch = match next_page(state, tenant, &filter, sort, cursor.as_ref(), want).await {
            Ok(batch) => batch,
            // Cancels that landed are named whatever fails next: the answer stops here with
            // `more`, and the next call goes on (helper-72: a page read failing after some
            // cancels answered 503 without them).
            Err(e) if done > 0 => {
                tracing::warn!(error = %e, "bulk cancel stopped early: next page not read");
                answer.more = true;
                return Ok(answer);
            }
            Err(e) => return Err(e),
        };
        if batch.is_empty() {
            return Ok(answer);
        }
        cursor = batch.last().copied();
        for cb in &batch {
            // At least one per call, whatever the deadline: each call makes progress.
            if done >= MAX_PER_CALL || stop.reached() {
                answer.more = true;
                return Ok(answer);
            }
            stop.tried();
            let outcome = cancel::cancel_counted(state, tenant, cb.id).await;
            answer.record(cb.id.to_string(), outcome, false);
            done += 1;
        }
    }
}

/// The next page of cancellable callbacks after `cursor`: ids and sort values only, the rows'
/// user data is not read (docs/admin-queries.md#memory).
async fn next_page(
    state: &AppState,
    tenant: &str,
    filter: &CallbackFilter,
    sort: Sort,
    cursor: Option<&Cursor>,
    want: usize,
) -> Result<Vec<Cursor>, ApiError> {
    let mut client = state.db.get().await?;
    Ok(admin_query::keys_page(&mut client, tenant, filter, sort, cursor, want).await?)
}

/// When a bulk cancel stops: `DEADLINE_MARGIN` (4 s) before the request's commit
/// deadline, or halfway to it when less than twice the margin is left (a short
/// `REQUEST_TIMEOUT_MS`), so every call has time to cancel something.
fn stop_at() -> Option<tokio::time::Instant> {
    let deadline = shared::http::envelope::commit_deadline()?
        .checked_sub(shared::http::envelope::COMMIT_GRACE)?;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    Some(deadline - DEADLINE_MARGIN.min(left / 2))
}

/// Where a bulk cancel stops trying: at `stop_at`, but only after one try, so every call
/// makes progress and its answer (each outcome) arrives before the request's deadline.
pub struct Stop {
    at: Option<tokio::time::Instant>,
    tried: bool,
}

impl Stop {
    /// The stop point of the current request.
    pub fn for_request() -> Self {
        Self {
            at: stop_at(),
            tried: false,
        }
    }

    /// Whether to stop now: something was tried and the stop point has come.
    pub fn reached(&self) -> bool {
        self.tried && self.at.is_some_and(|t| tokio::time::Instant::now() >= t)
    }

    /// Records a try.
    pub fn tried(&mut self) {
        self.tried = true;
    }
}
