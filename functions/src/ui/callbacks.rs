//! The Callbacks page (docs/admin-ui.md#callbacks): the grid of a tenant's callbacks with the
//! admin listing's filters, sort and keyset pages of 250, the detail view with the state
//! history, and the CSV export of the filtered set. Every read goes through the admin callback
//! API's domain functions (`admin::callbacks`) with the session as its [`Actor`], so the UI
//! and the API share one rule set (roles, tenant scoping, validation); the changes are in
//! [`super::callback_actions`].

use axum::{
    Router,
    extract::{Path, Query, State},
    response::Response,
    routing::{get, post},
};
use jiff::Timestamp;
use serde::Serialize;
use shared::{
    db::{self, services::Services},
    http::AppState,
    model::{
        admin_query::{FILTER_KEYS, Listing},
        availability::Zone,
    },
};

use super::{
    UiError, callback_actions, page,
    roles::{Permission, Role},
    session::Session,
};
use crate::admin::callbacks::{
    access::Actor,
    export,
    list::{self, Detail},
    view::AdminCallback,
};

/// The Callbacks routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ges/callbacks", get(grid))
        .route("/ges/callbacks.csv", get(csv))
        .route("/ges/callbacks/create", post(callback_actions::create))
        .route("/ges/callbacks/bulk-cancel", post(callback_actions::bulk))
        .route("/ges/callbacks/{id}", get(detail))
        .route("/ges/callbacks/{id}/cancel", post(callback_actions::cancel))
        .route(
            "/ges/callbacks/{id}/reschedule",
            post(callback_actions::reschedule),
        )
}

/// The admin callback API's actor for this session: its one tenant, its role.
pub fn actor(s: &Session) -> Actor {
    Actor::User {
        tenant: s.tenant.clone(),
        role: s.role,
    }
}

/// The parameters of the grid's query string the listing takes: the filters, `sort`,
/// `order`, `tz` and `cursor`, empty form fields dropped (a browser sends every field).
pub const GRID_KEYS: [&str; 4] = ["sort", "order", "tz", "cursor"];

/// The non-empty listing parameters of `pairs` (`cursor` only when `with_cursor`); a
/// `datetime-local` field's value is a local time the listing reads in `tz`.
pub fn listing_pairs(pairs: &[(String, String)], with_cursor: bool) -> Vec<(String, String)> {
    pairs
        .iter()
        .filter(|(k, v)| {
            !v.trim().is_empty()
                && (FILTER_KEYS.contains(&k.as_str())
                    || (GRID_KEYS.contains(&k.as_str()) && (with_cursor || k != "cursor")))
        })
        .cloned()
        .collect()
}

/// `pairs` as a query string (each part percent-encoded).
pub fn query_string(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `wire` (a UTC wire time) in the viewer's zone, `2026-07-01 10:00:00 CEST`.
pub fn local(wire: &str, zone: &Zone) -> String {
    wire.parse::<Timestamp>().map_or_else(
        |_| wire.to_string(),
        |t| {
            t.to_zoned(zone.tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        },
    )
}

/// The viewer's zone: `tz` of the query (validated by the listing), else UTC.
fn zone_of(listing: &Listing) -> Zone {
    listing.zone.clone().unwrap_or(Zone {
        name: "UTC".into(),
        tz: jiff::tz::TimeZone::UTC,
    })
}

/// One grid row.
#[derive(Serialize)]
struct Row {
    id: String,
    state: &'static str,
    reason: Option<&'static str>,
    desired: String,
    phone: String,
    service: String,
    created: String,
    attempt: i16,
}

fn row(cb: &AdminCallback, zone: &Zone) -> Row {
    Row {
        id: cb.id.clone(),
        state: cb.state,
        reason: cb.reason,
        desired: local(&cb.desired_time, zone),
        phone: cb.phone_number.clone(),
        service: cb.service_name.clone(),
        created: local(&cb.created_time, zone),
        attempt: cb.attempt,
    }
}

async fn grid(
    State(state): State<AppState>,
    s: Session,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    s.require(Permission::ListCallbacks)?;
    let notice = pairs
        .iter()
        .find(|(k, _)| k == "done")
        .and_then(|(_, v)| notice_text(v));
    let given = listing_pairs(&pairs, true);
    let listing = Listing::parse(&given)?;
    let found = list::page(&state, &actor(&s), &s.tenant, &listing).await?;
    let zone = zone_of(&listing);
    let filters = listing_pairs(&pairs, false);
    let next = found.next_cursor.as_ref().map(|c| {
        let mut q = filters.clone();
        q.push(("cursor".into(), c.clone()));
        query_string(&q)
    });
    let value = |k: &str| given.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    let ctx = minijinja::context! {
        rows => found.callbacks.iter().map(|cb| row(cb, &zone)).collect::<Vec<_>>(),
        f => minijinja::Value::from_iter(FILTER_KEYS.iter().chain(&GRID_KEYS).map(|k| (*k, value(k)))),
        filter_pairs => filters,
        filtered => !listing.filter.is_empty(),
        query => query_string(&filters),
        next => next,
        paged => listing.cursor.is_some(),
        zone => zone.name,
        services => service_names(&state, &s.tenant).await?,
        manage => s.may(Permission::ManageCallbacks),
        export => s.may(Permission::ExportCallbacks),
        notice => notice,
    };
    page("callbacks.html", Some(&s), ctx)
}

/// The message of a `done=` code an action redirected with (fixed texts, no user data).
pub fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "created" => "Callback created.",
        "rescheduled" => "Callback rescheduled.",
        "cancelled" => "Callback cancelled.",
        _ => return None,
    })
}

/// The tenant's service names (the create form's choices).
pub async fn service_names(state: &AppState, tenant: &str) -> Result<Vec<String>, UiError> {
    let client = state.db.get().await?;
    let services = db::versioned::list::<Services>(&client, tenant).await?;
    Ok(services.into_iter().map(|x| x.name).collect())
}

/// The export of the grid's filtered set, streamed by the admin API's export.
async fn csv(
    State(state): State<AppState>,
    s: Session,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    s.require(Permission::ExportCallbacks)?;
    let listing = Listing::parse(&listing_pairs(&pairs, false))?;
    let tenant = s.tenant.clone();
    Ok(export::respond(state, actor(&s), tenant, listing).await?)
}

async fn detail(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    s.require(Permission::ListCallbacks)?;
    let zone_pairs: Vec<_> = pairs.iter().filter(|(k, _)| k == "tz").cloned().collect();
    let zone = zone_of(&Listing::parse(&listing_pairs(&zone_pairs, false))?);
    let d = list::detail_of(&state, &actor(&s), &s.tenant, &id).await?;
    let notice = pairs
        .iter()
        .find(|(k, _)| k == "done")
        .and_then(|(_, v)| notice_text(v));
    let ctx = detail_context(&s, &d, &zone, notice);
    page("callback.html", Some(&s), ctx)
}

fn detail_context(s: &Session, d: &Detail, zone: &Zone, notice: Option<&str>) -> minijinja::Value {
    let cb = &d.callback;
    let history: Vec<_> = d
        .history
        .iter()
        .map(|h| {
            let at = shared::model::callback::wire_time(h.at);
            minijinja::context! { at => local(&at, zone), state => h.state, reason => h.reason,
            source => h.source, attempt => h.attempt }
        })
        .collect();
    let open = cb.state != "COMPLETED";
    minijinja::context! {
        cb => cb,
        user_data => cb.user_data.as_ref().and_then(|v| serde_json::to_string_pretty(v).ok()),
        desired => local(&cb.desired_time, zone),
        created => local(&cb.created_time, zone),
        dispatch => local(&cb.dispatch_time, zone),
        history => history,
        zone => zone.name,
        manage => s.may(Permission::ManageCallbacks) && open,
        monitor => s.role == Role::Monitor,
        notice => notice,
    }
}
