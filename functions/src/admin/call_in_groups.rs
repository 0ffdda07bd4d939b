//! `PUT/GET/DELETE /ges/v1/tenants/{ccid}/call-in-groups/{name}`, `GET …/call-in-groups`: the
//! tenant's Click-To-Call-In groups (docs/call-in.md#groups), shown flat so a fetched group
//! can be PUT back. Numbers are normalised to E.164 at PUT; a number already pooled by another
//! group, of this tenant or another, is refused with 409 (the `call_in_numbers` key).

use axum::Router;
use serde_json::Value;
use shared::{
    ApiError,
    db::call_in::CallInGroups,
    http::ApiResult,
    http::{AppState, extract::from_value},
    model::call_in::GroupSpec,
};

use super::{
    rules::without_shown_fields,
    versioned::{self, AdminKind},
};

impl AdminKind for CallInGroups {
    const PATH: &'static str = "call-in-groups";

    fn validate(name: &str, body: Value) -> ApiResult<GroupSpec> {
        let body = without_shown_fields(name, body)?;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "body must be a JSON object: {\"numbers\":[\"+16505550100\"],\"access_codes\":true,\
                 \"code_length\":4,\"lifetime_seconds\":300}",
            ));
        }
        Ok(from_value::<GroupSpec>(body)?.normalised()?)
    }
}

/// `GET …/call-in-groups` and `PUT|GET|DELETE …/call-in-groups/{name}` (internal port, admin).
pub fn router() -> Router<AppState> {
    versioned::router::<CallInGroups>()
}
