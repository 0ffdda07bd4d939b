//! `PUT /genesys/1/service/callback/{service}/{id}`: GMS's reschedule and property update,
//! through the same `callbacks::reschedule::reschedule` as the v3 extension
//! (docs/gms.md#reschedule-and-update): `_new_desired_time` (or `_desired_time`) moves the
//! callback through the create's checks, other keys set a property and `""` removes one. A
//! full or closed slot answers with `availability`; another service's callback, an unknown id
//! or one that is not an id at all is 404.

use axum::{Router, extract::State, http::HeaderMap, routing::put};
use serde_json::{Map, Value, json};
use shared::{
    db,
    http::{AppState, Path, extract::RawBody},
    model::callback::wire_time,
};
use uuid::Uuid;

use super::{body, error::GmsError, tenant::GmsTenant};
use crate::callbacks::reschedule::{self, Change};

/// Route of this operation.
pub fn router() -> Router<AppState> {
    Router::new().route("/genesys/1/service/callback/{service}/{id}", put(handler))
}

async fn handler(
    State(state): State<AppState>,
    GmsTenant(tenant): GmsTenant,
    Path((service, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawBody(raw): RawBody,
) -> Result<axum::Json<Value>, GmsError> {
    let fields = body::parse(&headers, &raw)?;
    let not_found = || GmsError::not_found(format!("no callback {id} in service {service}"));
    let uuid = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let client = state.db.get().await?;
    // Only "not found" is a 404: a failed read is the database's (503), never "no callback".
    let stored = match db::callbacks::get(&client, &tenant, uuid).await {
        Ok(cb) => Some(cb),
        Err(shared::Error::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    drop(client);
    if stored.is_none_or(|cb| cb.service != service) {
        return Err(not_found());
    }
    let map: Map<String, Value> = fields
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let change = Change::from_gms(&map)?;
    let done = reschedule::reschedule(&state, &tenant, uuid, change).await?;
    let mut answer = json!({"_id": uuid.to_string()});
    if let Some(t) = done.desired_time {
        answer["_desired_time"] = json!(wire_time(t));
    }
    Ok(axum::Json(answer))
}
