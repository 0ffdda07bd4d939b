//! GMS availability (docs/gms.md#availability): v1
//! `GET /genesys/1/service/callback/{service}/availability` answers `{slot start: places left}`,
//! v2 `GET /genesys/2/service/callback/{service}/availability` answers
//! `{"durationMin","timezone","slots":[{"utcTime","localTime","capacity","total"}]}`.
//!
//! A translation only: the GMS parameter names (`start`, `end`, `number-of-days`,
//! `max-time-slots`, `start-ms`, `end-ms`, `timezone`, `report-busy`) are parsed by the same
//! `AvailabilityQuery` as v3 (errors name them as sent), and the slots come from the same
//! `callbacks::availability::free_slots`, so every surface shows the same numbers. Both
//! versions take every parameter; v1 lists full slots (as 0) only with `report-busy=true`.

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    extract::{Query, State, rejection::QueryRejection},
    routing::get,
};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use shared::{
    http::{AppState, Path},
    model::availability::{Availabilities, AvailabilityQuery, ParamNames},
};

use super::{error::GmsError, tenant::GmsTenant};
use crate::callbacks::availability::free_slots;

/// Routes of both versions.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/genesys/1/service/callback/{service}/availability",
            get(v1),
        )
        .route(
            "/genesys/2/service/callback/{service}/availability",
            get(v2),
        )
}

type Params = Result<Query<BTreeMap<String, String>>, QueryRejection>;

/// The free slots for the request, through the v3 code.
async fn slots(
    state: &AppState,
    tenant: &str,
    service: &str,
    params: Params,
) -> Result<Availabilities, GmsError> {
    let Query(params) = params
        .map_err(|e| GmsError::bad_request(format!("invalid query string: {}", e.body_text())))?;
    let now = Timestamp::now();
    let query = AvailabilityQuery::parse_named(&params, now, &ParamNames::GMS)?;
    if state.service(tenant, service).await?.is_none() {
        return Err(GmsError::not_found(format!(
            "no callback service {service}"
        )));
    }
    Ok(free_slots(state, tenant, service, &query, now).await?)
}

async fn v1(
    State(state): State<AppState>,
    GmsTenant(tenant): GmsTenant,
    Path(service): Path<String>,
    params: Params,
) -> Result<Json<Map<String, Value>>, GmsError> {
    let a = slots(&state, &tenant, &service, params).await?;
    Ok(Json(
        a.slots
            .into_iter()
            .map(|s| (s.utc_time, Value::from(s.capacity)))
            .collect(),
    ))
}

/// The v2 answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct V2 {
    duration_min: u16,
    timezone: String,
    slots: Vec<V2Slot>,
}

/// One v2 slot: `localTime` is the wall-clock time in `timezone`, without an offset.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct V2Slot {
    utc_time: String,
    local_time: String,
    capacity: u32,
    total: u32,
}

/// `2026-03-08T03:00:00.000-04:00` → `2026-03-08T03:00:00.000`.
fn without_offset(local: &str) -> String {
    local.get(..23).unwrap_or(local).to_string()
}

async fn v2(
    State(state): State<AppState>,
    GmsTenant(tenant): GmsTenant,
    Path(service): Path<String>,
    params: Params,
) -> Result<Json<V2>, GmsError> {
    let a = slots(&state, &tenant, &service, params).await?;
    Ok(Json(V2 {
        duration_min: a.duration_min,
        timezone: a.timezone,
        slots: a
            .slots
            .into_iter()
            .map(|s| V2Slot {
                local_time: without_offset(&s.local_time),
                utc_time: s.utc_time,
                capacity: s.capacity,
                total: s.total,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_time_loses_its_offset() {
        assert_eq!(
            super::without_offset("2026-03-08T03:00:00.000-04:00"),
            "2026-03-08T03:00:00.000"
        );
    }
}
