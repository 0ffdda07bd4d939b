//! `POST/GET /ges/v1/tenants`, `GET /ges/v1/tenants/{ccid}`.

use axum::{Router, extract::State, routing::get};
use serde::Deserialize;
use shared::{
    ApiError, db,
    db::tenants::Tenant,
    http::ApiResult,
    http::{Admin, AppState, Envelope, Json, Path},
    model::valid_tenant_id,
};

/// `GET|POST /ges/v1/tenants` and `GET /ges/v1/tenants/{ccid}` (internal port, admin token).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ges/v1/tenants", get(list).post(create))
        .route("/ges/v1/tenants/{ccid}", get(show))
}

/// Body of tenant creation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// Contact-center id (ccid): 1–64 of `A-Za-z0-9_.-`, starting with a letter or digit.
    pub id: String,
    /// Human-readable name, for admins only.
    pub name: String,
}

/// Validates and creates a tenant (shared with the CLI).
pub async fn create_tenant(state: &AppState, t: &NewTenant) -> ApiResult<Tenant> {
    if !valid_tenant_id(&t.id) {
        return Err(ApiError::bad_request(
            "id must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit",
        ));
    }
    let name = t.name.trim();
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad_request("name must be 1-255 characters"));
    }
    let client = state.db.get().await?;
    let created = db::tenants::create(&client, &t.id, name).await?;
    // A `ContactCenterId` resolved before (unknown, or another tenant's id in another case)
    // may resolve differently now (docs/gms.md#addressing-and-tenants).
    state.cache.forget_gms();
    Ok(created)
}

async fn create(
    State(state): State<AppState>,
    _: Admin,
    Json(body): Json<NewTenant>,
) -> ApiResult<Envelope<Tenant>> {
    Ok(Envelope::created(create_tenant(&state, &body).await?))
}

async fn list(State(state): State<AppState>, _: Admin) -> ApiResult<Envelope<Vec<Tenant>>> {
    let client = state.db.get().await?;
    Ok(Envelope::ok(db::tenants::list(&client).await?))
}

async fn show(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
) -> ApiResult<Envelope<Tenant>> {
    let client = state.db.get().await?;
    Ok(Envelope::ok(db::tenants::get(&client, &ccid).await?))
}
