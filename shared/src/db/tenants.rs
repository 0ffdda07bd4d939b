//! Tenants (contact centers).

use deadpool_postgres::GenericClient;
use serde::Serialize;

use crate::{error::ApiError, model::callback::wire_time};

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// Contact-center id (ccid).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: String,
}

fn from_row(row: &tokio_postgres::Row) -> Tenant {
    Tenant {
        id: row.get("id"),
        name: row.get("name"),
        created_at: wire_time(row.get::<_, jiff::Timestamp>("created_at")),
    }
}

/// Creates a tenant; 409 when the id exists.
pub async fn create(db: &impl GenericClient, id: &str, name: &str) -> Result<Tenant, ApiError> {
    let row = db
        .query_opt(
            "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING
             RETURNING id, name, created_at",
            &[&id, &name],
        )
        .await?;
    row.map(|r| from_row(&r))
        .ok_or_else(|| ApiError::conflict(format!("tenant {id} already exists")))
}

/// One tenant, or 404.
pub async fn get(db: &impl GenericClient, id: &str) -> Result<Tenant, ApiError> {
    db.query_opt(
        "SELECT id, name, created_at FROM tenants WHERE id = $1",
        &[&id],
    )
    .await?
    .map(|r| from_row(&r))
    .ok_or_else(|| ApiError::not_found(format!("no tenant {id}")))
}

/// All tenants, by id.
pub async fn list(db: &impl GenericClient) -> Result<Vec<Tenant>, ApiError> {
    let rows = db
        .query("SELECT id, name, created_at FROM tenants ORDER BY id", &[])
        .await?;
    Ok(rows.iter().map(from_row).collect())
}
