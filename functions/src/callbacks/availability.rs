//! `GET /engagement/v3/callbacks/availability/{service}`: free scheduling slots of a service
//! (docs/ges-behavior.md#availability): parameters in `shared::model::availability`, slots
//! from the service's business hours and capacity rule (`shared::model::capacity`), remaining
//! capacity from `slot_bookings` in one query (`shared::db::slots::availability`).

use std::collections::BTreeMap;

use axum::{Router, extract::State, routing::get};
use jiff::Timestamp;
use shared::{
    Error, db,
    http::ApiResult,
    http::{ApiTenant, AppState, Envelope, Path, Query},
    model::availability::{Availabilities, AvailabilityQuery},
};

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/engagement/v3/callbacks/availability/{service}",
        get(handler),
    )
}

async fn handler(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    Path(service): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Envelope<Availabilities>> {
    let now = Timestamp::now();
    let query = AvailabilityQuery::parse(&params, now)?;
    Ok(Envelope::ok(
        free_slots(&state, &tenant, &service, &query, now).await?,
    ))
}

/// The free slots of a service for a parsed request: the one implementation behind v3
/// availability and GMS availability v1/v2 (`functions::gms::availability`). A service that is
/// unknown, disabled or without scheduled callbacks is refused (400), naming it.
pub async fn free_slots(
    state: &AppState,
    tenant: &str,
    service: &str,
    query: &AvailabilityQuery,
    now: Timestamp,
) -> Result<Availabilities, Error> {
    let svc = state
        .service(tenant, service)
        .await?
        .ok_or_else(|| Error::invalid(format!("unknown service {service}")))?;
    let s = &svc.body;
    if !s.enabled {
        return Err(Error::invalid(format!("service {service} is disabled")));
    }
    if !s.scheduled_enabled {
        return Err(Error::invalid(format!(
            "service {service} does not offer scheduled callbacks"
        )));
    }
    let client = state.db.get().await?;
    let plan = db::hours::plan(&client, tenant, service, s).await?;
    db::slots::availability(
        &client,
        tenant,
        service,
        &plan,
        s.max_days_ahead,
        query,
        now,
    )
    .await
}
