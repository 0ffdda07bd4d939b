//! `POST /ges/v1/tenants/{ccid}/callback-settings`: Designer publishes the whole
//! CALLBACK_SETTINGS table (a JSON array of rows, each `name` plus the settings columns,
//! docs/decisions.md#service-settings). All rows are validated first; then one transaction
//! creates, versions, keeps or disables services (`shared::db::publish`,
//! docs/decisions.md#designer-publish). A bad row answers 400 naming its index, name and column,
//! and nothing changes. The services it created, changed or disabled are forgotten by this
//! process's cache, so the next create, availability or open-for sees them.

use axum::{Router, extract::State, routing::post};
use serde_json::Value;
use shared::{
    db,
    db::publish::PublishReport,
    http::ApiResult,
    http::{Admin, AppState, Envelope, Json, Path},
};

/// `POST …/callback-settings`, the Designer publish (internal port, admin token).
pub fn router() -> Router<AppState> {
    Router::new().route("/ges/v1/tenants/{ccid}/callback-settings", post(handler))
}

async fn handler(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
    Json(table): Json<Value>,
) -> ApiResult<Envelope<PublishReport>> {
    let rows = db::publish::parse_table(table)?;
    let mut client = state.db.get().await?;
    let report = db::publish::publish(&mut client, &ccid, rows).await?;
    tracing::info!(
        tenant = %ccid,
        created = report.created.len(),
        updated = report.updated.len(),
        unchanged = report.unchanged.len(),
        disabled = report.disabled.len(),
        "CALLBACK_SETTINGS published"
    );
    // Availability and open-for read services through the cache (they read them uncached
    // before issue 13): forget every service the publish created, changed or disabled.
    let changed = [&report.created, &report.updated, &report.disabled];
    for name in changed.into_iter().flatten() {
        state.cache.forget_service(&ccid, name).await;
    }
    Ok(Envelope::ok(report))
}
