//! `engage demo`: the demo tenant with an immediate and a scheduled service and a fresh API
//! key, printed as JSON (`just up` reads the key from it). Idempotent: the tenant and services
//! are upserted; each run makes a new key.

use serde_json::json;
use shared::{ApiError, http::AppState};

use crate::cli::{api, print};
use functions::admin::{
    api_keys::create_key,
    services::put_service,
    tenants::{NewTenant, create_tenant},
};

/// Upserts the demo tenant and its two services, creates a key and prints them.
pub(crate) async fn provision(state: &AppState, tenant: &str) -> anyhow::Result<()> {
    let new = NewTenant {
        id: tenant.into(),
        name: "Demo contact center".into(),
    };
    match create_tenant(state, &new).await {
        Ok(_) | Err(ApiError::Conflict(_)) => {}
        Err(e) => return Err(api(e)),
    }
    put_service(
        state,
        tenant,
        "demo-immediate",
        json!({"scheduled_enabled": false, "route_point": "5000", "reject_out_of_hours": false}),
    )
    .await
    .map_err(api)?;
    put_service(
        state,
        tenant,
        "demo-scheduled",
        json!({"immediate_enabled": false, "route_point": "5001", "reject_out_of_hours": false,
               "slot_minutes": 15, "slot_capacity": 10}),
    )
    .await
    .map_err(api)?;
    let key = create_key(state, tenant, "demo", None).await.map_err(api)?;
    print(
        &json!({"tenant": tenant, "apiKey": key.key, "services": ["demo-immediate", "demo-scheduled"]}),
    )
}
