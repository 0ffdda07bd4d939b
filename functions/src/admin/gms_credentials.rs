//! `PUT/DELETE /ges/v1/tenants/{ccid}/gms-credentials`: the HTTP Basic credentials the
//! tenant's GMS surface (`/genesys/`) requires (`{"username","password"}`); without any, the
//! surface needs only the `ContactCenterId` header (docs/gms.md#addressing-and-tenants). The
//! password is stored as an Argon2id hash and never shown; changes reach other replicas
//! within `CACHE_TTL_MS`.

use axum::{Router, extract::State, routing::put};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use shared::{
    ApiError, db,
    http::ApiResult,
    http::{Admin, AppState, Envelope, Json, Path},
};

use crate::gms::tenant::hash_password;

/// `PUT|DELETE …/gms-credentials` (internal port, admin token).
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/ges/v1/tenants/{ccid}/gms-credentials",
        put(set).delete(remove),
    )
}

/// The longest user name and password, in bytes.
pub const MAX_CREDENTIAL: usize = 255;

/// Body of `PUT`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// User name: 1–255 visible characters, no `:` (Basic cannot carry one).
    pub username: String,
    /// Password: 1–255 bytes.
    pub password: SecretString,
}

/// What `PUT` answers (never the password).
#[derive(Debug, Serialize)]
pub struct Configured {
    /// The tenant.
    pub tenant: String,
    /// The user name now required.
    pub username: String,
}

async fn set(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
    Json(body): Json<Credentials>,
) -> ApiResult<Envelope<Configured>> {
    let user = body.username.as_str();
    if user.is_empty()
        || user.len() > MAX_CREDENTIAL
        || user.contains(':')
        || user.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "username must be 1-255 characters, without ':' or control characters",
        ));
    }
    let password = body.password.expose_secret();
    if password.is_empty() || password.len() > MAX_CREDENTIAL || password.contains('\0') {
        return Err(ApiError::bad_request(
            "password must be 1-255 bytes, without the NUL character",
        ));
    }
    let owned = password.to_string();
    let hash = tokio::task::spawn_blocking(move || hash_password(&owned))
        .await
        .map_err(ApiError::internal)??;
    let client = state.db.get().await?;
    db::gms::set_login(&client, &ccid, user, &hash).await?;
    state.cache.forget_gms();
    Ok(Envelope::ok(Configured {
        tenant: ccid,
        username: user.to_string(),
    }))
}

async fn remove(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
) -> ApiResult<Envelope<Configured>> {
    let client = state.db.get().await?;
    db::gms::delete_login(&client, &ccid).await?;
    state.cache.forget_gms();
    Ok(Envelope::ok(Configured {
        tenant: ccid,
        username: String::new(),
    }))
}
