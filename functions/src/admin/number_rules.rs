//! `PUT/GET/DELETE /ges/v1/tenants/{ccid}/number-rules/{name}`, `GET …/number-rules`: the
//! tenant's number rules (docs/decisions.md#number-rules). Patterns are compiled at PUT time,
//! so a rule that is stored always works at create time.

use axum::{Router, extract::State, routing::get};
use serde::Serialize;
use serde_json::Value;
use shared::{
    ApiError, db,
    db::number_rules::StoredRule,
    http::ApiResult,
    http::{Admin, AppState, Envelope, Json, Path, extract::from_value},
    model::valid_name,
    phone::NumberRule,
};

/// `GET …/number-rules` and `PUT|GET|DELETE …/number-rules/{name}` (internal port, admin).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ges/v1/tenants/{ccid}/number-rules", get(list))
        .route(
            "/ges/v1/tenants/{ccid}/number-rules/{name}",
            get(show).put(put).delete(remove),
        )
}

/// Validates, compiles and stores one rule; returns it and whether it is new.
pub async fn put_rule(
    state: &AppState,
    tenant: &str,
    name: &str,
    body: Value,
) -> ApiResult<(StoredRule, bool)> {
    if !valid_name(name) {
        return Err(ApiError::bad_request(
            "number rule name must be 1-255 printable characters without '/' or surrounding spaces",
        ));
    }
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "body must be a JSON object: {\"default_country\":\"US\",\"permitted_countries\":[\"US\"],\
             \"blocked_patterns\":[],\"block_premium\":true}",
        ));
    }
    let rule: NumberRule = from_value(body)?;
    let rule = rule.normalised();
    rule.compile()?;
    let client = state.db.get().await?;
    Ok(db::number_rules::put(&client, tenant, name, &rule).await?)
}

async fn put(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Envelope<StoredRule>> {
    let (rule, created) = put_rule(&state, &ccid, &name, body).await?;
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
) -> ApiResult<Envelope<StoredRule>> {
    let client = state.db.get().await?;
    db::number_rules::find(&client, &ccid, &name)
        .await?
        .map(Envelope::ok)
        .ok_or_else(|| ApiError::not_found(format!("no number rule {name} for tenant {ccid}")))
}

async fn list(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
) -> ApiResult<Envelope<Vec<StoredRule>>> {
    let client = state.db.get().await?;
    db::tenants::get(&client, &ccid).await?;
    Ok(Envelope::ok(db::number_rules::list(&client, &ccid).await?))
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
) -> ApiResult<Envelope<Deleted>> {
    let client = state.db.get().await?;
    db::number_rules::delete(&client, &ccid, &name).await?;
    Ok(Envelope::ok(Deleted { name }))
}
