//! `POST /engagement/v3/callbacks/retrieve`: one callback of the caller's tenant.

use axum::{Router, extract::State, routing::post};
use shared::{
    db,
    error::ApiResult,
    http::{ApiTenant, AppState, Envelope, Json},
    model::callback::{Callback, CallbackIdParms},
};

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route("/engagement/v3/callbacks/retrieve", post(handler))
}

async fn handler(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    Json(body): Json<CallbackIdParms>,
) -> ApiResult<Envelope<Callback>> {
    let id = body.parse()?;
    let client = state.db.get().await?;
    let stored = db::callbacks::get(&client, &tenant, id).await?;
    Ok(Envelope::ok(stored.to_model()))
}
