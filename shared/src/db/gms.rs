//! The tenant behind a GMS `ContactCenterId` header and its optional HTTP Basic credentials
//! (docs/gms.md#addressing-and-tenants).

use deadpool_postgres::GenericClient;

use crate::error::Error;

/// A tenant as the GMS surface resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GmsTenant {
    /// The tenant's id as stored (the header may spell it in another case).
    pub id: String,
    /// HTTP Basic credentials the tenant requires, when configured.
    pub login: Option<GmsLogin>,
}

/// A tenant's Basic credentials: the user name and the Argon2id PHC string of the password.
#[derive(Clone, PartialEq, Eq)]
pub struct GmsLogin {
    /// The expected user name (compared exactly).
    pub username: String,
    /// The password's PHC string (`$argon2id$…`); the password itself is never stored.
    pub password_hash: String,
}

impl std::fmt::Debug for GmsLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GmsLogin").finish_non_exhaustive()
    }
}

/// How a `ContactCenterId` value resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Exactly one tenant: the one spelled exactly so, else the only one equal ignoring case.
    Found(GmsTenant),
    /// No tenant has that id, in any case.
    Unknown,
    /// Several tenants equal it ignoring case and none exactly: refused, never guessed.
    Ambiguous,
}

/// Resolves a `ContactCenterId` value (case-insensitively) with the tenant's credentials.
pub async fn resolve(db: &impl GenericClient, ccid: &str) -> Result<Resolved, Error> {
    let rows = db
        .query(
            "SELECT t.id, c.username, c.password_hash
             FROM tenants t LEFT JOIN gms_credentials c ON c.tenant_id = t.id
             WHERE lower(t.id) = lower($1) ORDER BY t.id LIMIT 20",
            &[&ccid],
        )
        .await?;
    let found: Vec<GmsTenant> = rows
        .iter()
        .map(|r| GmsTenant {
            id: r.get(0),
            login: r
                .get::<_, Option<String>>(1)
                .zip(r.get::<_, Option<String>>(2))
                .map(|(username, password_hash)| GmsLogin {
                    username,
                    password_hash,
                }),
        })
        .collect();
    if let Some(exact) = found.iter().find(|t| t.id == ccid) {
        return Ok(Resolved::Found(exact.clone()));
    }
    Ok(match found.len() {
        0 => Resolved::Unknown,
        1 => Resolved::Found(found.into_iter().next().expect("one row")),
        _ => Resolved::Ambiguous,
    })
}

/// Sets (or replaces) a tenant's credentials; 404 for an unknown tenant.
pub async fn set_login(
    db: &impl GenericClient,
    tenant: &str,
    username: &str,
    password_hash: &str,
) -> Result<(), Error> {
    let n = db
        .execute(
            "INSERT INTO gms_credentials (tenant_id, username, password_hash)
             SELECT id, $2, $3 FROM tenants WHERE id = $1
             ON CONFLICT (tenant_id) DO UPDATE
                SET username = excluded.username, password_hash = excluded.password_hash,
                    updated_at = now()",
            &[&tenant, &username, &password_hash],
        )
        .await?;
    match n {
        0 => Err(Error::not_found(format!("no tenant {tenant}"))),
        _ => Ok(()),
    }
}

/// Removes a tenant's credentials (the surface then answers without Basic auth); 404 for an
/// unknown tenant, success when it had none.
pub async fn delete_login(db: &impl GenericClient, tenant: &str) -> Result<(), Error> {
    super::tenants::get(db, tenant).await?;
    db.execute(
        "DELETE FROM gms_credentials WHERE tenant_id = $1",
        &[&tenant],
    )
    .await?;
    Ok(())
}
