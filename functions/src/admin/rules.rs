//! `PUT/GET/DELETE /ges/v1/tenants/{ccid}/business-hours/{name}`, `GET …/business-hours`, and
//! the same under `…/capacity-rules`: named business hours and capacity rules (JSON shapes
//! in docs/decisions.md#business-hours and #capacity-rules, validated by
//! `shared::model::{hours, capacity}`).
//!
//! GET answers the stored spec with `name`, `version` and `updatedAt` beside its fields, so a
//! fetched rule can be PUT back unchanged. DELETE is refused (409) while a live service uses
//! the rule.

use axum::{Router, extract::State, routing::get};
use serde::Serialize;
use serde_json::Value;
use shared::{
    ApiError, db,
    db::hours::{Kind, StoredRule},
    http::ApiResult,
    http::{Admin, AppState, Envelope, Json, Path},
    model::valid_name,
};

/// Routes of both kinds.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/ges/v1/tenants/{ccid}/business-hours",
            get(|s, a, p| list(s, a, p, Kind::BusinessHours)),
        )
        .route(
            "/ges/v1/tenants/{ccid}/business-hours/{name}",
            get(|s, a, p| show(s, a, p, Kind::BusinessHours))
                .put(|s, a, p, b| put(s, a, p, b, Kind::BusinessHours))
                .delete(|s, a, p| remove(s, a, p, Kind::BusinessHours)),
        )
        .route(
            "/ges/v1/tenants/{ccid}/capacity-rules",
            get(|s, a, p| list(s, a, p, Kind::CapacityRule)),
        )
        .route(
            "/ges/v1/tenants/{ccid}/capacity-rules/{name}",
            get(|s, a, p| show(s, a, p, Kind::CapacityRule))
                .put(|s, a, p, b| put(s, a, p, b, Kind::CapacityRule))
                .delete(|s, a, p| remove(s, a, p, Kind::CapacityRule)),
        )
}

/// Validates and stores one rule (shared with the CLI); returns it and whether it is new.
pub async fn put_rule(
    state: &AppState,
    kind: Kind,
    tenant: &str,
    name: &str,
    mut body: Value,
) -> ApiResult<(StoredRule, bool)> {
    if !valid_name(name) {
        return Err(ApiError::bad_request(format!(
            "{} name must be 1-255 printable characters without '/'",
            kind.noun()
        )));
    }
    if let Some(obj) = body.as_object_mut() {
        // Fields a GET adds; accepted back so a fetched rule can be PUT unchanged.
        if let Some(n) = obj.remove("name")
            && n.as_str() != Some(name)
        {
            return Err(ApiError::bad_request(format!(
                "body name {n} differs from the URL's name {name:?}"
            )));
        }
        obj.remove("version");
        obj.remove("updatedAt");
    }
    let spec = kind.validate(&body)?;
    let client = state.db.get().await?;
    Ok(db::hours::put(&client, kind, tenant, name, &spec).await?)
}

async fn put(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, name)): Path<(String, String)>,
    Json(body): Json<Value>,
    kind: Kind,
) -> ApiResult<Envelope<StoredRule>> {
    let (rule, created) = put_rule(&state, kind, &ccid, &name, body).await?;
    Ok(if created {
        Envelope::created(rule)
    } else {
        Envelope::ok(rule)
    })
}

async fn show(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, name)): Path<(String, String)>,
    kind: Kind,
) -> ApiResult<Envelope<StoredRule>> {
    let client = state.db.get().await?;
    Ok(Envelope::ok(
        db::hours::get(&client, kind, &ccid, &name).await?,
    ))
}

async fn list(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
    kind: Kind,
) -> ApiResult<Envelope<Vec<StoredRule>>> {
    let client = state.db.get().await?;
    db::tenants::get(&client, &ccid).await?;
    Ok(Envelope::ok(db::hours::list(&client, kind, &ccid).await?))
}

/// Result of a deletion.
#[derive(Debug, Serialize)]
pub struct Deleted {
    /// The deleted rule's name.
    pub name: String,
}

async fn remove(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, name)): Path<(String, String)>,
    kind: Kind,
) -> ApiResult<Envelope<Deleted>> {
    let client = state.db.get().await?;
    db::hours::delete(&client, kind, &ccid, &name).await?;
    Ok(Envelope::ok(Deleted { name }))
}
