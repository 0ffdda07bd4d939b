//! `GET …/callbacks` (a keyset page, or with `format=csv` the export) and
//! `GET …/callbacks/{id}` (one callback with its state history and attempts).

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use shared::{
    ApiError,
    db::{
        self,
        admin_query::{self, HistoryEntry},
    },
    http::{ApiResult, AppState, Envelope, Path, Query},
    model::admin_query::{Format, Listing},
};

use super::{
    access::{Actor, Operation},
    callback_id, export, known_tenant,
    view::AdminCallback,
};

/// One page of the listing.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// The callbacks, in the requested order.
    pub callbacks: Vec<AdminCallback>,
    /// Pass as `cursor` (with the same filters and sort) for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// `GET …/callbacks`: a page of the tenant's callbacks matching the filters.
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Path(ccid): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let listing = Listing::parse(&pairs)?;
    if listing.format == Format::Csv {
        return export::respond(state, actor, ccid, listing).await;
    }
    let page = page(&state, &actor, &ccid, &listing).await?;
    Ok(Envelope::ok(page).into_response())
}

/// A page of `tenant`'s callbacks matching `listing` (JSON listing and the UI's grid).
pub async fn page(
    state: &AppState,
    actor: &Actor,
    tenant: &str,
    listing: &Listing,
) -> Result<Page, ApiError> {
    actor.may(tenant, Operation::View)?;
    known_tenant(state, tenant).await?;
    let mut client = state.db.get().await?;
    let (mut rows, cut) = admin_query::page_bounded(
        &mut client,
        tenant,
        &listing.filter,
        listing.sort,
        listing.cursor.as_ref(),
        listing.limit + 1,
    )
    .await?;
    drop(client);
    // A page cut short by its byte budget has more after it too.
    let more = rows.len() > listing.limit || cut;
    rows.truncate(listing.limit);
    let next_cursor = more
        .then(|| admin_query::cursor_after(&rows, listing.sort))
        .flatten()
        .map(|c| c.encode(listing.sort));
    Ok(Page {
        callbacks: rows.iter().map(AdminCallback::of).collect(),
        next_cursor,
    })
}

/// One callback with its history.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    /// The callback now.
    pub callback: AdminCallback,
    /// Every recorded state change, oldest first.
    pub history: Vec<HistoryEntry>,
    /// The dial attempts, from the history's per-attempt entries.
    pub attempts: Vec<Attempt>,
}

/// One dial attempt, summarised from its history entries.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1 for the first.
    pub attempt: i16,
    /// Its first entry's time.
    pub first_at: String,
    /// Its last entry's time.
    pub last_at: String,
    /// The state its last entry recorded.
    pub last_state: String,
    /// That entry's reason.
    pub last_reason: Option<String>,
}

/// `GET …/callbacks/{id}`: another tenant's id is 404.
pub async fn detail(
    State(state): State<AppState>,
    actor: Actor,
    Path((ccid, id)): Path<(String, String)>,
) -> ApiResult<Envelope<Detail>> {
    Ok(Envelope::ok(detail_of(&state, &actor, &ccid, &id).await?))
}

/// One of `tenant`'s callbacks (`id` as given) with its history; another tenant's is 404.
pub async fn detail_of(
    state: &AppState,
    actor: &Actor,
    tenant: &str,
    id: &str,
) -> Result<Detail, ApiError> {
    actor.may(tenant, Operation::View)?;
    let id = callback_id(id)?;
    let client = state.db.get().await?;
    let cb = db::callbacks::get(&client, tenant, id).await?;
    let history = admin_query::history(&client, tenant, id).await?;
    Ok(Detail {
        callback: AdminCallback::of(&cb),
        attempts: attempts(&history),
        history,
    })
}

/// The attempts the history names, in attempt order.
fn attempts(history: &[HistoryEntry]) -> Vec<Attempt> {
    let mut out: Vec<Attempt> = Vec::new();
    for e in history {
        let Some(n) = e.attempt else { continue };
        let at = shared::model::callback::wire_time(e.at);
        match out.iter_mut().find(|a| a.attempt == n) {
            Some(a) => {
                a.last_at = at;
                a.last_state = e.state.clone();
                a.last_reason = e.reason.clone();
            }
            None => out.push(Attempt {
                attempt: n,
                first_at: at.clone(),
                last_at: at,
                last_state: e.state.clone(),
                last_reason: e.reason.clone(),
            }),
        }
    }
    out.sort_by_key(|a| a.attempt);
    out
}
