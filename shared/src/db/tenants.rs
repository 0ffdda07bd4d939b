//! Tenants (contact centers).

use deadpool_postgres::GenericClient;
use serde::Serialize;

use crate::{error::Error, model::callback::wire_time};

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// Contact-center id (ccid): the tenant's key in every admin path and every row.
    pub id: String,
    /// Human-readable name, for admins only.
    pub name: String,
    /// When the tenant was created (`2026-05-28T15:30:00.000Z`).
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
pub async fn create(db: &impl GenericClient, id: &str, name: &str) -> Result<Tenant, Error> {
    let row = db
        .query_opt(
            "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING
             RETURNING id, name, created_at",
            &[&id, &name],
        )
        .await?;
    row.map(|r| from_row(&r))
        .ok_or_else(|| Error::conflict(format!("tenant {id} already exists")))
}

/// One tenant, or 404.
pub async fn get(db: &impl GenericClient, id: &str) -> Result<Tenant, Error> {
    db.query_opt(
        "SELECT id, name, created_at FROM tenants WHERE id = $1",
        &[&id],
    )
    .await?
    .map(|r| from_row(&r))
    .ok_or_else(|| Error::not_found(format!("no tenant {id}")))
}

/// All tenants, by id.
pub async fn list(db: &impl GenericClient) -> Result<Vec<Tenant>, Error> {
    let rows = db
        .query("SELECT id, name, created_at FROM tenants ORDER BY id", &[])
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Sets the browser origins allowed to call the public API with this tenant's keys; 404 for
/// an unknown tenant.
pub async fn set_cors_origins(
    db: &impl GenericClient,
    id: &str,
    origins: &[String],
) -> Result<Vec<String>, Error> {
    db.query_opt(
        "UPDATE tenants SET cors_origins = $2 WHERE id = $1 RETURNING cors_origins",
        &[&id, &origins],
    )
    .await?
    .map(|r| r.get(0))
    .ok_or_else(|| Error::not_found(format!("no tenant {id}")))
}

/// The browser origins of one tenant; 404 for an unknown tenant.
pub async fn cors_origins(db: &impl GenericClient, id: &str) -> Result<Vec<String>, Error> {
    db.query_opt("SELECT cors_origins FROM tenants WHERE id = $1", &[&id])
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| Error::not_found(format!("no tenant {id}")))
}

/// Every tenant that allows at least one origin, with its origins (the CORS cache's source).
pub async fn all_cors_origins(
    db: &impl GenericClient,
) -> Result<Vec<(String, Vec<String>)>, Error> {
    let rows = db
        .query(
            "SELECT id, cors_origins FROM tenants WHERE cardinality(cors_origins) > 0",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
