//! API keys: stored as SHA-256 hashes; one tenant has many keys.

use deadpool_postgres::GenericClient;
use serde::Serialize;
use uuid::Uuid;

use crate::{auth, error::Error, model::callback::wire_time};

/// A key as listed (never the key itself).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    /// Key id (used to revoke).
    pub id: Uuid,
    /// The admin's free-text note on what the key is for.
    pub label: String,
    /// When the key was created (`2026-05-28T15:30:00.000Z`).
    pub created_at: String,
    /// Revocation time, if revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// A newly created key: the only time a generated key is shown (an imported one is not
/// echoed: the admin already has it).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewApiKey {
    /// Key id (used to list and revoke; not a secret).
    pub id: Uuid,
    /// The generated key (store it now; it cannot be shown again); absent for an import.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The admin's free-text note on what the key is for.
    pub label: String,
    /// Whether the key was imported (an existing value) rather than generated.
    pub imported: bool,
}

/// Creates a key for an existing tenant (404 otherwise): a generated one, or `existing` (an
/// imported value, already validated with [`auth::validate_import`]). A value already stored,
/// for any tenant, is a conflict that names no tenant.
pub async fn create(
    db: &impl GenericClient,
    tenant: &str,
    label: &str,
    existing: Option<&str>,
) -> Result<NewApiKey, Error> {
    let key = existing.map_or_else(auth::generate_key, str::to_string);
    let id = Uuid::now_v7();
    let inserted = db
        .execute(
            "INSERT INTO api_keys (id, tenant_id, key_hash, label)
             SELECT $1, id, $3, $4 FROM tenants WHERE id = $2",
            &[&id, &tenant, &auth::hash_key(&key).as_slice(), &label],
        )
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                Error::conflict("this API key value is already in use; import another value")
            } else {
                e.into()
            }
        })?;
    if inserted == 0 {
        return Err(Error::not_found(format!("no tenant {tenant}")));
    }
    Ok(NewApiKey {
        id,
        key: existing.is_none().then_some(key),
        label: label.to_string(),
        imported: existing.is_some(),
    })
}

/// The tenant's keys, newest first.
pub async fn list(db: &impl GenericClient, tenant: &str) -> Result<Vec<ApiKeyInfo>, Error> {
    let rows = db
        .query(
            "SELECT id, label, created_at, revoked_at FROM api_keys WHERE tenant_id = $1
             ORDER BY created_at DESC",
            &[&tenant],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ApiKeyInfo {
            id: r.get("id"),
            label: r.get("label"),
            created_at: wire_time(r.get("created_at")),
            revoked_at: r
                .get::<_, Option<jiff::Timestamp>>("revoked_at")
                .map(wire_time),
        })
        .collect())
}

/// Revokes a key of the tenant; 404 when it is not the tenant's.
pub async fn revoke(db: &impl GenericClient, tenant: &str, id: Uuid) -> Result<(), Error> {
    let n = db
        .execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
             WHERE tenant_id = $1 AND id = $2",
            &[&tenant, &id],
        )
        .await?;
    if n == 0 {
        return Err(Error::not_found(format!(
            "no API key {id} for tenant {tenant}"
        )));
    }
    Ok(())
}

/// The tenant of a live key, by the key's hash.
pub async fn resolve_hash(
    db: &impl GenericClient,
    hash: &[u8; 32],
) -> Result<Option<String>, Error> {
    Ok(db
        .query_opt(
            "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            &[&hash.as_slice()],
        )
        .await?
        .map(|r| r.get(0)))
}
