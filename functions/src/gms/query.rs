//! Queries of the GMS surface (docs/gms.md#queries): `GET /genesys/1/service/callback?…`
//! across the tenant's services (`?_id=…` is the query by id) and
//! `GET /genesys/1/service/callback/{service}?…` within one service. Both answer a JSON array
//! of records (`[]` when nothing matches, an unknown or another tenant's id included), newest
//! desired time first, at most `max` (default 100, at most 1000).
//!
//! Parameters are parsed by `shared::model::gms_query`, read by `shared::db::gms_query`
//! (tenant-scoped, bound parameters, bounded), rendered by [`super::record`].

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Query, State, rejection::QueryRejection},
    routing::get,
};
use serde_json::{Map, Value};
use shared::{
    db::{self, callbacks::StoredCallback},
    http::{AppState, Path},
    model::{ServiceSettings, gms_query::PropertyQuery},
};

use super::{error::GmsError, record, tenant::GmsTenant};

/// Routes of the queries.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/genesys/1/service/callback", get(across))
        .route("/genesys/1/service/callback/{service}", get(within))
}

/// The query string as ordered pairs (repeated keys kept); a malformed one is a 400.
pub type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The pairs of [`Pairs`], or the 400 naming the problem.
pub fn pairs(query: Pairs) -> Result<Vec<(String, String)>, GmsError> {
    query
        .map(|Query(p)| p)
        .map_err(|e| GmsError::bad_request(format!("invalid query string: {}", e.body_text())))
}

async fn across(
    State(state): State<AppState>,
    GmsTenant(tenant): GmsTenant,
    query: Pairs,
) -> Result<Json<Vec<Map<String, Value>>>, GmsError> {
    let query = PropertyQuery::parse(&pairs(query)?)?;
    let mut client = state.db.get().await?;
    let found = db::gms_query::find(&mut client, &tenant, None, &query).await?;
    drop(client);
    Ok(Json(render_all(&state, &tenant, &found).await?))
}

async fn within(
    State(state): State<AppState>,
    GmsTenant(tenant): GmsTenant,
    Path(service): Path<String>,
    query: Pairs,
) -> Result<Json<Vec<Map<String, Value>>>, GmsError> {
    let query = PropertyQuery::parse(&pairs(query)?)?;
    if state.service(&tenant, &service).await?.is_none() {
        return Err(GmsError::not_found(format!(
            "no callback service {service}"
        )));
    }
    let mut client = state.db.get().await?;
    let found = db::gms_query::find(&mut client, &tenant, Some(&service), &query).await?;
    drop(client);
    Ok(Json(render_all(&state, &tenant, &found).await?))
}

/// Renders callbacks as records, each with its service's `ttl_seconds` (one cached lookup per
/// service; a deleted service's callbacks with the default).
pub async fn render_all(
    state: &AppState,
    tenant: &str,
    found: &[StoredCallback],
) -> Result<Vec<Map<String, Value>>, GmsError> {
    let mut ttl: HashMap<&str, u32> = HashMap::new();
    for cb in found {
        if !ttl.contains_key(cb.service.as_str()) {
            let seconds = match state.service(tenant, &cb.service).await? {
                Some(s) => s.body.ttl_seconds,
                None => ServiceSettings::default().ttl_seconds,
            };
            ttl.insert(&cb.service, seconds);
        }
    }
    Ok(found
        .iter()
        .map(|cb| record::render(cb, ttl[cb.service.as_str()]))
        .collect())
}
