//! `POST /ges/v1/tenants/{ccid}/callback-settings`: Designer publishes the whole
//! CALLBACK_SETTINGS table: our JSON form (an array of rows, each `name` plus the settings
//! columns, docs/decisions.md#service-settings) or Designer's own (rows keyed by its column
//! titles, as JSON, or as its CSV export with `Content-Type: text/csv`:
//! docs/designer-publish.md). All rows are validated first; then one transaction creates,
//! versions, keeps or disables services (`shared::db::publish`,
//! docs/decisions.md#designer-publish). A bad row answers 400 naming its index, name and column
//! (as titled in the table), and nothing changes. The services it created, changed or disabled
//! are forgotten by this process's cache, so the next create, availability or open-for sees
//! them.

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, header::CONTENT_TYPE},
    routing::post,
};
use serde_json::Value;
use shared::{
    db,
    db::publish::{PublishReport, Table},
    http::{
        Admin, ApiError, ApiResult, AppState, Envelope, Path,
        extract::{RawBody, parse_json},
    },
};

/// `POST …/callback-settings`, the Designer publish (internal port, admin token).
pub fn router() -> Router<AppState> {
    Router::new().route("/ges/v1/tenants/{ccid}/callback-settings", post(handler))
}

async fn handler(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Envelope<PublishReport>> {
    let table = read_table(&headers, &body)?;
    let mut client = state.db.get().await?;
    let report = db::publish::publish(&mut client, &ccid, table).await?;
    tracing::info!(
        tenant = %ccid,
        created = report.created.len(),
        updated = report.updated.len(),
        unchanged = report.unchanged.len(),
        disabled = report.disabled.len(),
        unknown_columns = report.unknown_columns.len(),
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

/// The validated table of a body: CSV when the content type says so, JSON otherwise (any
/// other content type is read as JSON, as on every route).
fn read_table(headers: &HeaderMap, body: &[u8]) -> ApiResult<Table> {
    if is_csv(headers) {
        return Ok(db::publish::parse_csv(body)?);
    }
    let table: Value = parse_json(body).map_err(|e| match e {
        ApiError::BadRequest(m) if !looks_like_json(body) => {
            ApiError::bad_request(format!("{m} (a CSV table needs Content-Type: text/csv)"))
        }
        other => other,
    })?;
    Ok(db::publish::parse_table(table)?)
}

/// `text/csv` and its aliases (parameters such as `charset` aside).
fn is_csv(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or_default().trim();
    ["text/csv", "application/csv", "text/comma-separated-values"]
        .iter()
        .any(|m| mime.eq_ignore_ascii_case(m))
}

fn looks_like_json(body: &[u8]) -> bool {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    matches!(first, Some(b'[' | b'{'))
}
