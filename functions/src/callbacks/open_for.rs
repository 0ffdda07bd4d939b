//! `GET /engagement/v3/callbacks/open-for/{service}?start=&timezone=`: seconds until the office
//! closes, 0 when closed (docs/ges-behavior.md#open-for).
//!
//! `{service}` may name a callback service (its business hours apply; a service without
//! business hours is always open and reports the look-ahead cap,
//! `shared::model::hours::OPEN_FOR_HORIZON`) or, as the GES tutorial does, business hours
//! directly. A service wins when both exist with the name.

use std::collections::BTreeMap;

use axum::{Router, extract::State, routing::get};
use jiff::Timestamp;
use shared::{
    ApiError, db,
    http::ApiResult,
    http::{ApiTenant, AppState, Envelope, Path, Query},
    model::availability::{OpenFor, Zone, parse_time},
};

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route("/engagement/v3/callbacks/open-for/{service}", get(handler))
}

async fn handler(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    Path(name): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Envelope<OpenFor>> {
    let zone = Zone::from_param(params.get("timezone").map(String::as_str))?;
    let at = match params
        .get("start")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        Some(s) => parse_time("start", s, &zone)?,
        None => Timestamp::now(),
    };
    let service = state.service(&tenant, &name).await?;
    let client = state.db.get().await?;
    let open_for = match service {
        Some(svc) => db::hours::plan(&client, &tenant, &name, &svc.body)
            .await?
            .open_for(at),
        None => db::hours::business_hours(&client, &tenant, &name)
            .await?
            .ok_or_else(|| {
                ApiError::bad_request(format!("unknown service or business hours {name}"))
            })?
            .open_for(at),
    };
    Ok(Envelope::ok(OpenFor {
        open_for: open_for.as_secs(),
    }))
}
