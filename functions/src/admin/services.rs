//! `PUT/GET/DELETE /ges/v1/tenants/{ccid}/services/{name}`, `GET …/services`: one callback
//! service (CALLBACK_SETTINGS row) at a time, through the generic [`versioned`](super::versioned)
//! router. A service may only name rules that exist; a change forgets this replica's cached copy.

use axum::Router;
use serde_json::Value;
use shared::{
    ApiError, db,
    db::services::{Service, Services},
    http::ApiResult,
    http::AppState,
    model::ServiceSettings,
};

use super::versioned::{self, AdminKind};

impl AdminKind for Services {
    const PATH: &'static str = "services";

    fn validate(name: &str, body: Value) -> ApiResult<ServiceSettings> {
        if let Some(n) = body.get("name").and_then(Value::as_str)
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "body name {n:?} differs from the URL's service name {name:?}"
            )));
        }
        Ok(ServiceSettings::parse(body)?)
    }

    async fn check(
        client: &deadpool_postgres::Client,
        tenant: &str,
        settings: &ServiceSettings,
    ) -> ApiResult<()> {
        db::hours::check_refs(client, tenant, settings).await?;
        let Some(rule) = &settings.number_rule else {
            return Ok(());
        };
        if db::number_rules::find(client, tenant, rule)
            .await?
            .is_none()
        {
            return Err(ApiError::bad_request(format!(
                "setting number_rule: no number rule {rule} for tenant {tenant}; \
                 create it first (PUT /ges/v1/tenants/{tenant}/number-rules/{rule})"
            )));
        }
        Ok(())
    }

    async fn changed(state: &AppState, tenant: &str, name: &str) {
        state.cache.forget_service(tenant, name).await;
    }
}

/// `GET …/services` and `PUT|GET|DELETE …/services/{name}` (internal port, admin token).
pub fn router() -> Router<AppState> {
    versioned::router::<Services>()
}

/// Validates and stores one service (shared with the CLI); returns it and whether it is new.
pub async fn put_service(
    state: &AppState,
    tenant: &str,
    name: &str,
    body: Value,
) -> ApiResult<(Service, bool)> {
    versioned::put_object::<Services>(state, tenant, name, body).await
}
