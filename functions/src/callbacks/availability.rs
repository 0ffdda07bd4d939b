//! `GET /engagement/v3/callbacks/availability/{service}`: free scheduling slots of a service
//! (docs/ges-behavior.md#availability): parameters in `shared::model::availability`, slots
//! from the service's business hours and capacity rule (`shared::model::capacity`), remaining
//! capacity from `slot_bookings` in one query (`shared::db::slots::availability`).

use std::collections::BTreeMap;

use axum::{Router, extract::State, routing::get};
use jiff::Timestamp;
use shared::{
    ApiError, db,
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
    let svc = state
        .service(&tenant, &service)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("unknown service {service}")))?;
    let s = &svc.body;
    if !s.enabled {
        return Err(ApiError::bad_request(format!(
            "service {service} is disabled"
        )));
    }
    if !s.scheduled_enabled {
        return Err(ApiError::bad_request(format!(
            "service {service} does not offer scheduled callbacks"
        )));
    }
    let client = state.db.get().await?;
    let plan = db::hours::plan(&client, &tenant, &service, s).await?;
    let answer = db::slots::availability(
        &client,
        &tenant,
        &service,
        &plan,
        s.max_days_ahead,
        &query,
        now,
    )
    .await?;
    Ok(Envelope::ok(answer))
}
