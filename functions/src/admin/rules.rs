//! `PUT/GET/DELETE /ges/v1/tenants/{ccid}/business-hours/{name}`, `GET …/business-hours`, and
//! the same under `…/capacity-rules`: named business hours and capacity rules (JSON shapes
//! in docs/decisions.md#business-hours and #capacity-rules, validated by
//! `shared::model::{hours, capacity}`).
//!
//! GET answers the stored spec with `name`, `version` and `updatedAt` beside its fields, so a
//! fetched rule can be PUT back unchanged. DELETE is refused (409) while a live service uses
//! the rule.

use axum::Router;
use serde::Serialize;
use serde_json::{Map, Value};
use shared::{
    ApiError,
    db::hours::{CapacityKind, HoursKind},
    http::ApiResult,
    http::AppState,
    model::{BusinessHours, CapacityRule},
};

use super::versioned::{self, AdminKind};

impl AdminKind for HoursKind {
    const PATH: &'static str = "business-hours";

    fn validate(name: &str, body: Value) -> ApiResult<Map<String, Value>> {
        let body = without_shown_fields(name, body)?;
        canonical(&BusinessHours::parse(&body)?)
    }
}

impl AdminKind for CapacityKind {
    const PATH: &'static str = "capacity-rules";

    fn validate(name: &str, body: Value) -> ApiResult<Map<String, Value>> {
        let body = without_shown_fields(name, body)?;
        canonical(&CapacityRule::parse(&body)?)
    }
}

/// The body without the fields a GET adds (`name`, `version`, `updatedAt`), so a fetched rule
/// can be PUT back unchanged; a `name` other than the URL's is refused.
pub(crate) fn without_shown_fields(name: &str, mut body: Value) -> ApiResult<Value> {
    if let Some(obj) = body.as_object_mut() {
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
    Ok(body)
}

/// The canonical JSON of a validated rule (what is stored and shown).
fn canonical(rule: &impl Serialize) -> ApiResult<Map<String, Value>> {
    match serde_json::to_value(rule).map_err(ApiError::internal)? {
        Value::Object(spec) => Ok(spec),
        other => Err(ApiError::internal(anyhow::anyhow!(
            "a rule serialised to {other}, not an object"
        ))),
    }
}

/// Routes of both kinds.
pub fn router() -> Router<AppState> {
    versioned::router::<HoursKind>().merge(versioned::router::<CapacityKind>())
}
