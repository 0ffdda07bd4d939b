//! Callback services (CALLBACK_SETTINGS rows), versioned, soft-deleted.

use deadpool_postgres::GenericClient;
use serde::Serialize;
use serde_json::Value;

use crate::{error::Error, model::ServiceSettings, model::callback::wire_time};

/// A service as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// Service (virtual queue) name.
    pub name: String,
    /// Settings incl. defaults and unknown columns.
    pub settings: ServiceSettings,
    /// Change counter.
    pub version: i32,
    /// Last change.
    pub updated_at: String,
}

fn from_row(row: &tokio_postgres::Row) -> Result<Service, Error> {
    let settings: Value = row.get("settings");
    Ok(Service {
        name: row.get("name"),
        settings: serde_json::from_value(settings).map_err(Error::internal)?,
        version: row.get("version"),
        updated_at: wire_time(row.get("updated_at")),
    })
}

/// Creates or replaces a service; returns it with its new version. 404 for an unknown tenant.
pub async fn put(
    db: &impl GenericClient,
    tenant: &str,
    name: &str,
    settings: &ServiceSettings,
) -> Result<(Service, bool), Error> {
    let json = serde_json::to_value(settings).map_err(Error::internal)?;
    let row = db
        .query_opt(
            "INSERT INTO services (tenant_id, name, settings)
             SELECT id, $2, $3 FROM tenants WHERE id = $1
             ON CONFLICT (tenant_id, name) DO UPDATE
                SET settings = EXCLUDED.settings,
                    version = services.version + 1,
                    updated_at = now(),
                    deleted_at = NULL
             RETURNING name, settings, version, updated_at, (xmax = 0) AS created",
            &[&tenant, &name, &json],
        )
        .await?
        .ok_or_else(|| Error::not_found(format!("no tenant {tenant}")))?;
    Ok((from_row(&row)?, row.get("created")))
}

/// One live service, or `None`.
pub async fn find(
    db: &impl GenericClient,
    tenant: &str,
    name: &str,
) -> Result<Option<Service>, Error> {
    db.query_opt(
        "SELECT name, settings, version, updated_at FROM services
         WHERE tenant_id = $1 AND name = $2 AND deleted_at IS NULL",
        &[&tenant, &name],
    )
    .await?
    .map(|r| from_row(&r))
    .transpose()
}

/// One live service, or 404.
pub async fn get(db: &impl GenericClient, tenant: &str, name: &str) -> Result<Service, Error> {
    find(db, tenant, name)
        .await?
        .ok_or_else(|| Error::not_found(format!("no service {name} for tenant {tenant}")))
}

/// The tenant's live services, by name.
pub async fn list(db: &impl GenericClient, tenant: &str) -> Result<Vec<Service>, Error> {
    let rows = db
        .query(
            "SELECT name, settings, version, updated_at FROM services
             WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY name",
            &[&tenant],
        )
        .await?;
    rows.iter().map(from_row).collect()
}

/// Soft-deletes a service: it disappears from the API; callbacks already booked keep running
/// with the settings they were booked under.
pub async fn delete(db: &impl GenericClient, tenant: &str, name: &str) -> Result<(), Error> {
    let n = db
        .execute(
            "UPDATE services SET deleted_at = now(), version = version + 1, updated_at = now()
             WHERE tenant_id = $1 AND name = $2 AND deleted_at IS NULL",
            &[&tenant, &name],
        )
        .await?;
    if n == 0 {
        return Err(Error::not_found(format!(
            "no service {name} for tenant {tenant}"
        )));
    }
    Ok(())
}

/// Settings of a service including soft-deleted ones (the worker dispatches booked callbacks
/// of a deleted service with the settings it last had).
pub async fn settings_any(
    db: &impl GenericClient,
    tenant: &str,
    name: &str,
) -> Result<Option<ServiceSettings>, Error> {
    db.query_opt(
        "SELECT settings FROM services WHERE tenant_id = $1 AND name = $2",
        &[&tenant, &name],
    )
    .await?
    .map(|r| serde_json::from_value(r.get(0)).map_err(Error::internal))
    .transpose()
}
