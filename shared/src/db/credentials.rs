//! Per-tenant credential rows (`tenant_credentials`): sealed records and their public fields
//! (docs/credentials.md). Only [`crate::credentials::Vault`] seals and opens them.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use serde_json::Value;

use crate::{
    credentials::{Kind, Sealed},
    error::Error,
};

/// The public view of a row (what reads show: never the ciphertext).
#[derive(Debug, Clone)]
pub struct Public {
    /// The non-secret fields.
    pub public: Value,
    /// Id of the key the row is sealed under.
    pub key_id: String,
    /// When it was last written through the admin API.
    pub updated_at: Timestamp,
}

/// Stores (or replaces) a tenant's record of `kind`; 404 for an unknown tenant.
pub async fn put(
    db: &impl GenericClient,
    tenant: &str,
    kind: Kind,
    sealed: &Sealed,
    public: &Value,
) -> Result<Timestamp, Error> {
    db.query_opt(
        "INSERT INTO tenant_credentials (tenant_id, kind, key_id, nonce, ciphertext, public)
         SELECT id, $2, $3, $4, $5, $6 FROM tenants WHERE id = $1
         ON CONFLICT (tenant_id, kind) DO UPDATE
            SET key_id = excluded.key_id, nonce = excluded.nonce,
                ciphertext = excluded.ciphertext, public = excluded.public, updated_at = now()
         RETURNING updated_at",
        &[
            &tenant,
            &kind.as_str(),
            &sealed.key_id,
            &sealed.nonce,
            &sealed.ciphertext,
            public,
        ],
    )
    .await?
    .map(|r| r.get(0))
    .ok_or_else(|| Error::not_found(format!("no tenant {tenant}")))
}

/// The sealed record of a tenant and kind, if any.
pub async fn sealed(
    db: &impl GenericClient,
    tenant: &str,
    kind: Kind,
) -> Result<Option<Sealed>, Error> {
    let row = db
        .query_opt(
            "SELECT key_id, nonce, ciphertext FROM tenant_credentials
             WHERE tenant_id = $1 AND kind = $2",
            &[&tenant, &kind.as_str()],
        )
        .await?;
    Ok(row.map(|r| Sealed {
        key_id: r.get(0),
        nonce: r.get(1),
        ciphertext: r.get(2),
    }))
}

/// The public view of a tenant's record of `kind`: `Ok(None)` when it has none, 404 for an
/// unknown tenant.
pub async fn public(
    db: &impl GenericClient,
    tenant: &str,
    kind: Kind,
) -> Result<Option<Public>, Error> {
    let row = db
        .query_opt(
            "SELECT c.public, c.key_id, c.updated_at FROM tenants t
             LEFT JOIN tenant_credentials c ON c.tenant_id = t.id AND c.kind = $2
             WHERE t.id = $1",
            &[&tenant, &kind.as_str()],
        )
        .await?
        .ok_or_else(|| Error::not_found(format!("no tenant {tenant}")))?;
    Ok(row.get::<_, Option<Value>>(0).map(|public| Public {
        public,
        key_id: row.get(1),
        updated_at: row.get(2),
    }))
}

/// Deletes a tenant's record of `kind`; whether there was one (404 for an unknown tenant).
pub async fn delete(db: &impl GenericClient, tenant: &str, kind: Kind) -> Result<bool, Error> {
    super::tenants::get(db, tenant).await?;
    let n = db
        .execute(
            "DELETE FROM tenant_credentials WHERE tenant_id = $1 AND kind = $2",
            &[&tenant, &kind.as_str()],
        )
        .await?;
    Ok(n > 0)
}

/// Every row not sealed under `key_id`: (tenant, kind, sealed record).
pub async fn not_under(
    db: &impl GenericClient,
    key_id: &str,
) -> Result<Vec<(String, Kind, Sealed)>, Error> {
    let rows = db
        .query(
            "SELECT tenant_id, kind, key_id, nonce, ciphertext FROM tenant_credentials
             WHERE key_id <> $1 ORDER BY tenant_id, kind",
            &[&key_id],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let kind = Kind::parse(r.get(1))?;
            let sealed = Sealed {
                key_id: r.get(2),
                nonce: r.get(3),
                ciphertext: r.get(4),
            };
            Some((r.get(0), kind, sealed))
        })
        .collect())
}

/// Replaces `old` by `new` unless the row changed since `old` was read (a concurrent write
/// wins); whether it was replaced.
pub async fn replace(
    db: &impl GenericClient,
    tenant: &str,
    kind: Kind,
    old: &Sealed,
    new: &Sealed,
) -> Result<bool, Error> {
    let n = db
        .execute(
            "UPDATE tenant_credentials SET key_id = $5, nonce = $6, ciphertext = $7
             WHERE tenant_id = $1 AND kind = $2 AND key_id = $3 AND nonce = $4",
            &[
                &tenant,
                &kind.as_str(),
                &old.key_id,
                &old.nonce,
                &new.key_id,
                &new.nonce,
                &new.ciphertext,
            ],
        )
        .await?;
    Ok(n > 0)
}
