//! GMS admin queue endpoints on the internal port, same `ContactCenterId` tenant
//! (docs/gms.md#admin-endpoints):
//!
//! - `GET /genesys/1/admin/callback/queues` (`target`, `start_time`, `end_time`, `max`,
//!   `states`, and filter keys as in queries): `{service: [records]}` of the callbacks whose
//!   desired time is in the window (default 15 min back to 24 h ahead) and whose state is
//!   listed (default every live state), at most `max` (default 100, at most 1000) in all.
//! - `GET /genesys/1/admin/callback/watermarks[?service_name=]`:
//!   `{service: {"watermark","waiting","executing","scheduled"}}`, `watermark` being waiting
//!   (QUEUED) plus executing (ROUTING, PROCESSING), what Designer's watermark block reads.
//! - `POST /genesys/1/admin/callback/cancel {"reason","ids":[…]}`: each id (at most
//!   [`MAX_IDS`]) through the one cancel of both surfaces (`callbacks::cancel::cancel`), with
//!   an outcome per id.

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};
use shared::{
    Error,
    db::{self, gms_query::QueueListing},
    http::{AppState, extract::RawBody},
    model::{
        CallbackState,
        availability::{Zone, parse_time},
        gms_query::{self, PropertyQuery, complement, parse_max, parse_states},
    },
};
use uuid::Uuid;

use super::{error::GmsError, query, tenant::GmsTenant};
use crate::{admin::callbacks::actions, callbacks::cancel};

/// Most ids one bulk cancel takes.
pub const MAX_IDS: usize = 100;
/// Longest `reason` accepted, in bytes.
pub const MAX_REASON: usize = 255;

/// Routes of the admin endpoints.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/genesys/1/admin/callback/queues", get(queues))
        .route("/genesys/1/admin/callback/watermarks", get(watermarks))
        .route("/genesys/1/admin/callback/cancel", post(bulk_cancel))
}

async fn queues(
    State(state): State<AppState>,
    GmsTenant(tenant): GmsTenant,
    params: query::Pairs,
) -> Result<Json<Map<String, Value>>, GmsError> {
    let listing = listing(&query::pairs(params)?, Timestamp::now())?;
    let mut client = state.db.get().await?;
    let found = db::gms_query::queues(&mut client, &tenant, &listing).await?;
    drop(client);
    let records = query::render_all(&state, &tenant, &found).await?;
    let mut out = Map::new();
    for (cb, record) in found.iter().zip(records) {
        let list = out
            .entry(cb.service.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.push(Value::Object(record));
        }
    }
    if let Some(target) = &listing.service {
        out.entry(target.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
    }
    Ok(Json(out))
}

/// Parses the listing's parameters; the rest are filters as in queries (AND).
fn listing(pairs: &[(String, String)], now: Timestamp) -> Result<QueueListing, Error> {
    let utc = Zone::from_param(None)?;
    let mut listing = QueueListing {
        service: None,
        from: now - SignedDuration::from_mins(15),
        to: now + SignedDuration::from_hours(24),
        states: complement(&[CallbackState::Completed]),
        filters: Vec::new(),
        max: gms_query::DEFAULT_MAX,
    };
    let mut rest = Vec::new();
    for (key, value) in pairs {
        match key.as_str() {
            "target" => listing.service = Some(value.clone()).filter(|v| !v.is_empty()),
            "start_time" => listing.from = parse_time("start_time", value, &utc)?,
            "end_time" => listing.to = parse_time("end_time", value, &utc)?,
            "max" => listing.max = parse_max(value)?,
            "states" => listing.states = parse_states(value)?,
            _ => rest.push((key.clone(), value.clone())),
        }
    }
    if listing.to < listing.from {
        return Err(Error::invalid("end_time is before start_time"));
    }
    listing.filters = PropertyQuery::parse(&rest)?.filters;
    Ok(listing)
}

async fn watermarks(
    State(state): State<AppState>,
    GmsTenant(tenant): GmsTenant,
    params: query::Pairs,
) -> Result<Json<Map<String, Value>>, GmsError> {
    let mut service = None;
    for (key, value) in query::pairs(params)? {
        match key.as_str() {
            "service_name" if !value.is_empty() => service = Some(value),
            "service_name" => {}
            _ => {
                return Err(GmsError::bad_request(format!(
                    "unknown parameter {key:?}: watermarks takes service_name"
                )));
            }
        }
    }
    let client = state.db.get().await?;
    let counts = db::gms_query::watermarks(&client, &tenant, service.as_deref()).await?;
    drop(client);
    if let Some(name) = &service
        && counts.is_empty()
    {
        return Err(GmsError::not_found(format!("no callback service {name}")));
    }
    Ok(Json(
        counts
            .into_iter()
            .map(|(name, w)| {
                let v = json!({
                    "watermark": w.waiting + w.executing,
                    "waiting": w.waiting,
                    "executing": w.executing,
                    "scheduled": w.scheduled,
                });
                (name, v)
            })
            .collect(),
    ))
}

/// The ids of a bulk cancel body, each still unparsed (a malformed one gets its own outcome).
fn cancel_ids(body: &[u8]) -> Result<Vec<Value>, GmsError> {
    let parsed: Value = serde_json::from_slice(body)
        .map_err(|e| GmsError::bad_request(format!("body must be JSON: {e}")))?;
    let Value::Object(mut fields) = parsed else {
        return Err(GmsError::bad_request(
            "body must be a JSON object {\"reason\": …, \"ids\": […]}",
        ));
    };
    match fields.get("reason") {
        None | Some(Value::Null) => {}
        Some(Value::String(r)) if r.len() <= MAX_REASON => {}
        Some(_) => {
            return Err(GmsError::bad_request(format!(
                "reason must be a text of at most {MAX_REASON} bytes"
            )));
        }
    }
    match fields.remove("ids") {
        Some(Value::Array(ids)) if !ids.is_empty() && ids.len() <= MAX_IDS => Ok(ids),
        _ => Err(GmsError::bad_request(format!(
            "ids must be an array of 1 to {MAX_IDS} callback ids"
        ))),
    }
}

async fn bulk_cancel(
    State(state): State<AppState>,
    GmsTenant(tenant): GmsTenant,
    RawBody(body): RawBody,
) -> Result<Json<Value>, GmsError> {
    let ids = cancel_ids(&body)?;
    let mut results = Vec::with_capacity(ids.len());
    let (mut stop, mut cancelled) = (actions::Stop::for_request(), 0);
    for given in ids {
        // As the admin API's bulk cancel: the ids left when the deadline nears are not tried,
        // so the answer arrives with every cancel that landed (docs/admin-queries.md#bulk-cancel).
        let outcome = if stop.reached() && parse_id(&given).is_some() {
            not_tried(&given)
        } else {
            stop.tried();
            cancel_one(&state, &tenant, &given).await
        };
        if outcome["outcome"] == "CANCELLED" {
            cancelled += 1;
        }
        results.push(outcome);
    }
    Ok(Json(json!({"cancelled": cancelled, "results": results})))
}

/// A bulk cancel's id as given, when it is one.
fn parse_id(given: &Value) -> Option<Uuid> {
    given.as_str().and_then(|s| Uuid::parse_str(s.trim()).ok())
}

/// An id not tried before the deadline: `UNAVAILABLE` (retry).
fn not_tried(given: &Value) -> Value {
    let shown = match given {
        Value::String(s) => s.chars().take(64).collect(),
        other => other.to_string().chars().take(64).collect::<String>(),
    };
    json!({"id": shown, "outcome": "UNAVAILABLE", "message": actions::NOT_TRIED})
}

/// One id's outcome: `CANCELLED`, `NOT_FOUND` (unknown, or another tenant's), `INVALID_ID`,
/// `NOT_CANCELLABLE` (completed, or with an agent) or `UNAVAILABLE` (retry).
async fn cancel_one(state: &AppState, tenant: &str, given: &Value) -> Value {
    let shown = match given {
        Value::String(s) => Value::String(s.chars().take(64).collect()),
        other => Value::String(other.to_string().chars().take(64).collect()),
    };
    let Some(id) = parse_id(given) else {
        let done = cancel::Outcome::InvalidId;
        return json!({"id": shown, "outcome": done.name(), "message": done.message()});
    };
    let done = cancel::cancel_counted(state, tenant, id).await;
    let mut out = json!({"id": id.to_string(), "outcome": done.name()});
    if let Some(m) = done.message() {
        out["message"] = json!(m);
    }
    if done == cancel::Outcome::Cancelled {
        out["_callback_state"] = json!("COMPLETED");
        out["_callback_reason"] = json!("CANCELLED");
    }
    out
}
