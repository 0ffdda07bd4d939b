//! `PUT/GET/DELETE /ges/v1/tenants/{ccid}/number-rules/{name}`, `GET …/number-rules`: the
//! tenant's number rules (docs/decisions.md#number-rules). Patterns are compiled at PUT time,
//! so a rule that is stored always works at create time.

use axum::Router;
use serde_json::Value;
use shared::{
    ApiError,
    db::number_rules::NumberRules,
    http::ApiResult,
    http::{AppState, extract::from_value},
    phone::NumberRule,
};

use super::versioned::{self, AdminKind};

impl AdminKind for NumberRules {
    const PATH: &'static str = "number-rules";
    const NAME_RULE: &'static str = "1-255 printable characters without '/' or surrounding spaces";

    fn validate(_name: &str, body: Value) -> ApiResult<NumberRule> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "body must be a JSON object: {\"default_country\":\"US\",\"permitted_countries\":[\"US\"],\
                 \"blocked_patterns\":[],\"block_premium\":true}",
            ));
        }
        let rule = from_value::<NumberRule>(body)?.normalised();
        rule.compile()?;
        Ok(rule)
    }
}

/// `GET …/number-rules` and `PUT|GET|DELETE …/number-rules/{name}` (internal port, admin).
pub fn router() -> Router<AppState> {
    versioned::router::<NumberRules>()
}
