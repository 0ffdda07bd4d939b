//! `DELETE /genesys/1/service/callback/{service}/{id}`: GMS's cancel, through the same
//! `callbacks::cancel::cancel` as the v3 API (bounded answer, in-doubt semantics, the owed
//! settle with the voice platform), limited to the service in the path: another service's
//! callback, an unknown id or one that is not an id at all is 404 (docs/gms.md#cancel).
//! `discard_ors_failure=true|false` is accepted: a cancel here never waits on the voice
//! platform (a settle it owes is retried by the worker), so there is no ORS failure to discard.

use axum::{
    Router,
    extract::{RawQuery, State},
    routing::delete,
};
use serde_json::{Value, json};
use shared::http::{AppState, Path};
use uuid::Uuid;

use super::{body, error::GmsError, tenant::GmsTenant};
use crate::callbacks::cancel;

/// Route of this operation.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/genesys/1/service/callback/{service}/{id}",
        delete(handler),
    )
}

async fn handler(
    State(state): State<AppState>,
    GmsTenant(tenant): GmsTenant,
    Path((service, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<axum::Json<Value>, GmsError> {
    discard_ors_failure(query.as_deref())?;
    if state.service(&tenant, &service).await?.is_none() {
        return Err(GmsError::not_found(format!(
            "no callback service {service}"
        )));
    }
    let uuid = Uuid::parse_str(&id)
        .map_err(|_| GmsError::not_found(format!("no callback {id} in service {service}")))?;
    cancel::cancel(&state, &tenant, uuid, Some(&service)).await?;
    Ok(axum::Json(json!({
        "_id": uuid.to_string(),
        "_callback_state": "COMPLETED",
        "_callback_reason": "CANCELLED",
    })))
}

/// Checks the optional `discard_ors_failure` query parameter (`true` or `false`).
fn discard_ors_failure(query: Option<&str>) -> Result<bool, GmsError> {
    let fields = body::form(query.unwrap_or("").as_bytes())?;
    match fields
        .get("discard_ors_failure")
        .map(|v| v.to_ascii_lowercase())
    {
        None => Ok(false),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(_) => Err(GmsError::bad_request(
            "discard_ors_failure must be true or false",
        )),
    }
}
