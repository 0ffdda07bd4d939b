//! [`GmsTenant`]: the tenant of a `/genesys/` request, from its `ContactCenterId` header, and
//! the tenant's optional HTTP Basic credentials (docs/gms.md#addressing-and-tenants).
//!
//! The header's name is case-insensitive (HTTP); its value is matched against tenant ids
//! ignoring case. Missing or blank: 400. No tenant, or several equal to it ignoring case and
//! none spelled exactly so: 404, never a guess. A tenant with credentials (set through
//! `PUT /ges/v1/tenants/{ccid}/gms-credentials`) requires `Authorization: Basic`; without it or
//! with a wrong one: 401 with `WWW-Authenticate: Basic realm="genesys"`.
//!
//! Both lookups are cached for `CACHE_TTL_MS` (the admin API forgets them on a change), and a
//! login's outcome by a digest of (tenant, stored hash, header), so a Designer burst costs
//! neither a query nor an Argon2 check per request.

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::{extract::FromRequestParts, http::request::Parts};
use base64::Engine;
use sha2::{Digest, Sha256};
use shared::{
    auth, db,
    db::gms::{GmsLogin, Resolved},
    http::{AppState, envelope},
};

use super::error::GmsError;

/// The header naming the tenant.
pub const HEADER: &str = "contactcenterid";

/// The longest `ContactCenterId` value looked up (tenant ids are at most 64 characters).
const MAX_CCID: usize = 64;

/// The tenant (its id as stored) a `/genesys/` request is for.
#[derive(Debug, Clone)]
pub struct GmsTenant(pub String);

impl FromRequestParts<AppState> for GmsTenant {
    type Rejection = GmsError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, GmsError> {
        let ccid = header_value(parts)?;
        let resolved = state
            .cache
            .gms_tenant(&ccid, async {
                let client = state.db.get().await?;
                db::gms::resolve(&client, &ccid).await
            })
            .await?;
        let tenant = match &*resolved {
            Resolved::Found(t) => t,
            Resolved::Unknown => {
                return Err(GmsError::not_found(
                    "no contact center has the ContactCenterId given",
                ));
            }
            Resolved::Ambiguous => {
                return Err(GmsError::not_found(
                    "the ContactCenterId given matches several contact centers when case is \
                     ignored; send it exactly as configured",
                ));
            }
        };
        if let Some(login) = &tenant.login {
            check_login(state, &tenant.id, login, parts).await?;
        }
        // Only now: a refused login is not the tenant's failed call (as an unknown API key).
        envelope::set_tenant(&tenant.id);
        Ok(GmsTenant(tenant.id.clone()))
    }
}

/// The one `ContactCenterId` value, trimmed (400 when missing, blank, repeated or unusable).
fn header_value(parts: &Parts) -> Result<String, GmsError> {
    let mut values = parts.headers.get_all(HEADER).iter();
    let Some(first) = values.next() else {
        return Err(GmsError::bad_request(
            "the ContactCenterId header is required: it names the contact center (tenant)",
        ));
    };
    if values.next().is_some() {
        return Err(GmsError::bad_request(
            "the ContactCenterId header was given more than once; send it once",
        ));
    }
    let value = first
        .to_str()
        .map(str::trim)
        .map_err(|_| GmsError::bad_request("the ContactCenterId header must be ASCII text"))?;
    if value.is_empty() {
        return Err(GmsError::bad_request(
            "the ContactCenterId header is blank: it must name the contact center (tenant)",
        ));
    }
    if value.len() > MAX_CCID {
        // No tenant id is that long: unknown, without a query.
        return Err(GmsError::not_found(
            "no contact center has the ContactCenterId given",
        ));
    }
    Ok(value.to_string())
}

/// Checks `Authorization: Basic` against the tenant's credentials (401 when absent or wrong).
async fn check_login(
    state: &AppState,
    tenant: &str,
    login: &GmsLogin,
    parts: &Parts,
) -> Result<(), GmsError> {
    let Some(given) = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
    else {
        return Err(GmsError::unauthorized(
            "this contact center requires HTTP Basic authentication",
        ));
    };
    let digest: [u8; 32] = Sha256::new()
        .chain_update(tenant.as_bytes())
        .chain_update([0])
        .chain_update(login.password_hash.as_bytes())
        .chain_update([0])
        .chain_update(given)
        .finalize()
        .into();
    let matched = match state.cache.gms_login(&digest).await {
        Some(matched) => matched,
        None => {
            let matched = verify(login.clone(), given.to_vec()).await;
            state.cache.remember_gms_login(digest, matched).await;
            matched
        }
    };
    match matched {
        true => Ok(()),
        false => Err(GmsError::unauthorized(
            "wrong or malformed HTTP Basic credentials for this contact center",
        )),
    }
}

/// Argon2 checks running at once, at most (each holds its ~19 MiB of memory cost).
const ARGON2_AT_ONCE: usize = 4;

/// The places of [`ARGON2_AT_ONCE`].
static ARGON2_PLACES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(ARGON2_AT_ONCE);

/// Whether an `Authorization` value carries the login's user name and password (the Argon2
/// check runs off the async threads).
async fn verify(login: GmsLogin, header: Vec<u8>) -> bool {
    let Some((user, password)) = basic_pair(&header) else {
        return false;
    };
    if !auth::secrets_equal(&user, &login.username) {
        return false;
    }
    verify_password(login.password_hash, password).await
}

/// Whether `password` matches the Argon2 PHC string `hash`: off the async threads, at most
/// `ARGON2_AT_ONCE` at a time in the process (GMS Basic credentials and admin-UI logins).
pub async fn verify_password(hash: String, password: String) -> bool {
    // One check holds ~19 MiB while it runs: a burst of wrong passwords waits for a place
    // instead of taking that much each at once (docs/gms.md#addressing-and-tenants).
    let Ok(_place) = ARGON2_PLACES.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// `Basic <base64(user:password)>` → (user, password).
fn basic_pair(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    let (user, password) = pair.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Hashes a password for storage (Argon2id, random salt, the crate's default cost).
pub fn hash_password(password: &str) -> Result<String, shared::Error> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| shared::Error::internal(anyhow::anyhow!("password hashing failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_pairs_parse_strictly() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            basic_pair(format!("Basic {}", enc("designer:s3cr:et")).as_bytes()),
            Some(("designer".into(), "s3cr:et".into()))
        );
        assert_eq!(
            basic_pair(format!("basic  {}", enc("u:")).as_bytes()),
            Some(("u".into(), String::new()))
        );
        for bad in [
            "Basic".to_string(),
            format!("Bearer {}", enc("u:p")),
            "Basic !!!".into(),
            format!("Basic {}", enc("no-colon")),
        ] {
            assert_eq!(basic_pair(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn stored_hashes_verify_the_password_only() {
        let hash = hash_password("pa ss").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let parsed = PasswordHash::new(&hash).expect("phc");
        let argon = Argon2::default();
        assert!(argon.verify_password(b"pa ss", &parsed).is_ok());
        assert!(argon.verify_password(b"pa sS", &parsed).is_err());
    }
}
