//! `PUT/GET/DELETE /ges/v1/tenants/{ccid}/services/{name}`, `GET …/services`: one callback
//! service (CALLBACK_SETTINGS row) at a time.

use axum::{Router, extract::State, routing::get};
use serde::Serialize;
use serde_json::Value;
use shared::{
    ApiError, db,
    db::services::Service,
    http::ApiResult,
    http::{Admin, AppState, Envelope, Json, Path},
    model::{ServiceSettings, valid_name},
};

/// `GET …/services` and `PUT|GET|DELETE …/services/{name}` (internal port, admin token).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ges/v1/tenants/{ccid}/services", get(list))
        .route(
            "/ges/v1/tenants/{ccid}/services/{name}",
            get(show).put(put).delete(remove),
        )
}

/// Validates and stores one service (shared with the CLI); returns it and whether it is new.
pub async fn put_service(
    state: &AppState,
    tenant: &str,
    name: &str,
    body: Value,
) -> ApiResult<(Service, bool)> {
    if !valid_name(name) {
        return Err(ApiError::bad_request(
            "service name must be 1-255 printable characters without '/'",
        ));
    }
    if let Some(n) = body.get("name").and_then(Value::as_str)
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "body name {n:?} differs from the URL's service name {name:?}"
        )));
    }
    let settings = ServiceSettings::parse(body)?;
    let client = state.db.get().await?;
    db::hours::check_refs(&client, tenant, &settings).await?;
    if let Some(rule) = &settings.number_rule
        && db::number_rules::find(&client, tenant, rule)
            .await?
            .is_none()
    {
        return Err(ApiError::bad_request(format!(
            "setting number_rule: no number rule {rule} for tenant {tenant}; \
             create it first (PUT /ges/v1/tenants/{tenant}/number-rules/{rule})"
        )));
    }
    let stored = db::services::put(&client, tenant, name, &settings).await?;
    state.cache.forget_service(tenant, name).await;
    Ok(stored)
}

async fn put(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Envelope<Service>> {
    let (service, created) = put_service(&state, &ccid, &name, body).await?;
    Ok(if created {
        Envelope::created(service)
    } else {
        Envelope::ok(service)
    })
}

async fn show(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, name)): Path<(String, String)>,
) -> ApiResult<Envelope<Service>> {
    let client = state.db.get().await?;
    Ok(Envelope::ok(
        db::services::get(&client, &ccid, &name).await?,
    ))
}

async fn list(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
) -> ApiResult<Envelope<Vec<Service>>> {
    let client = state.db.get().await?;
    db::tenants::get(&client, &ccid).await?;
    Ok(Envelope::ok(db::services::list(&client, &ccid).await?))
}

/// Result of a deletion.
#[derive(Debug, Serialize)]
pub struct Deleted {
    /// The deleted service's name.
    pub name: String,
}

async fn remove(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, name)): Path<(String, String)>,
) -> ApiResult<Envelope<Deleted>> {
    let client = state.db.get().await?;
    db::services::delete(&client, &ccid, &name).await?;
    state.cache.forget_service(&ccid, &name).await;
    Ok(Envelope::ok(Deleted { name }))
}
