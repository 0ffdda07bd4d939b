//! Recent API errors by correlation id (the Developer tab). Bounded: pruned to the newest
//! [`KEEP_PER_TENANT`] per tenant and at most 7 days. Never holds bodies or user data.

use deadpool_postgres::GenericClient;
use serde::Serialize;
use uuid::Uuid;

use crate::{error::Error, model::callback::wire_time};

/// How many errors are kept per tenant.
pub const KEEP_PER_TENANT: i64 = 1000;

/// One recorded error.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedCallRecord {
    /// Correlation id of the failed request.
    pub corr_id: Uuid,
    /// Tenant of the API key used.
    #[serde(skip)]
    pub tenant: String,
    /// HTTP method of the failed request (`POST`, `GET`).
    pub method: String,
    /// The matched route template (`/engagement/v3/callbacks/create`), never the raw path, so
    /// no id or user data is stored.
    pub route: String,
    /// The HTTP status answered (4xx or 5xx).
    pub status: i16,
    /// The message returned to the caller.
    pub message: String,
    /// When it happened (filled on read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// Inserts a batch (one statement).
pub async fn insert_batch(
    db: &impl GenericClient,
    batch: &[FailedCallRecord],
) -> Result<(), Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = batch.iter().map(|r| r.corr_id).collect();
    let tenants: Vec<&str> = batch.iter().map(|r| r.tenant.as_str()).collect();
    let methods: Vec<&str> = batch.iter().map(|r| r.method.as_str()).collect();
    let routes: Vec<&str> = batch.iter().map(|r| r.route.as_str()).collect();
    let statuses: Vec<i16> = batch.iter().map(|r| r.status).collect();
    let messages: Vec<&str> = batch.iter().map(|r| r.message.as_str()).collect();
    db.execute(
        "INSERT INTO api_errors (corr_id, tenant_id, method, route, status, message)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::text[])
         ON CONFLICT (corr_id) DO NOTHING",
        &[&ids, &tenants, &methods, &routes, &statuses, &messages],
    )
    .await?;
    Ok(())
}

/// The tenant's errors, newest first, optionally one correlation id.
pub async fn list(
    db: &impl GenericClient,
    tenant: &str,
    corr_id: Option<Uuid>,
    limit: i64,
) -> Result<Vec<FailedCallRecord>, Error> {
    let rows = db
        .query(
            "SELECT corr_id, method, route, status, message, created_at FROM api_errors
             WHERE tenant_id = $1 AND ($2::uuid IS NULL OR corr_id = $2)
             ORDER BY created_at DESC LIMIT $3",
            &[&tenant, &corr_id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| FailedCallRecord {
            corr_id: r.get("corr_id"),
            tenant: tenant.to_string(),
            method: r.get("method"),
            route: r.get("route"),
            status: r.get("status"),
            message: r.get("message"),
            time: Some(wire_time(r.get("created_at"))),
        })
        .collect())
}

/// Drops errors beyond the bounds; returns how many.
pub async fn prune(db: &impl GenericClient) -> Result<u64, Error> {
    let old = db
        .execute(
            "DELETE FROM api_errors WHERE created_at < now() - interval '7 days'",
            &[],
        )
        .await?;
    let over = db
        .execute(
            "DELETE FROM api_errors WHERE corr_id IN (
                SELECT corr_id FROM (
                    SELECT corr_id, row_number() OVER (PARTITION BY tenant_id ORDER BY created_at DESC) AS n
                    FROM api_errors) ranked
                WHERE n > $1)",
            &[&KEEP_PER_TENANT],
        )
        .await?;
    Ok(old + over)
}
