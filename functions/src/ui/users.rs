//! `POST|GET /ges/v1/tenants/{ccid}/users`, `DELETE …/users/{username}`: the admin UI's local
//! users (admin token; the CLI twin is `engage user create`). Passwords are stored as Argon2id
//! hashes and never shown; creating an existing user replaces its password and role and ends
//! its sessions.

use axum::{
    Router,
    extract::State,
    routing::{delete, post},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use shared::{
    ApiError, db,
    db::ui::UserInfo,
    http::{Admin, ApiResult, AppState, Envelope, Json, Path},
};

use super::roles::Role;
use crate::gms::tenant::hash_password;

/// The users routes (internal port, admin token).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ges/v1/tenants/{ccid}/users", post(create).get(list))
        .route("/ges/v1/tenants/{ccid}/users/{username}", delete(remove))
}

/// Body of `POST …/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 1–64 characters of `A-Za-z0-9_.@-`, not starting with `@` (reserved).
    pub username: String,
    /// 8–255 bytes.
    pub password: SecretString,
    /// `Administrator`, `Supervisor`, `Monitor` or `Developer`.
    pub role: String,
}

/// Validates, hashes and stores a user (the admin API and the CLI).
pub async fn create_user(state: &AppState, tenant: &str, u: NewUser) -> Result<UserInfo, ApiError> {
    let name = u.username.as_str();
    let name_ok = (1..=64).contains(&name.len())
        && !name.starts_with('@')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c));
    if !name_ok {
        return Err(ApiError::bad_request(
            "username must be 1-64 characters of A-Z a-z 0-9 _ . @ -, not starting with @",
        ));
    }
    let role = Role::parse(&u.role).ok_or_else(|| {
        ApiError::bad_request("role must be Administrator, Supervisor, Monitor or Developer")
    })?;
    let password = u.password.expose_secret().to_string();
    if !(8..=255).contains(&password.len()) || password.contains('\0') {
        return Err(ApiError::bad_request(
            "password must be 8-255 bytes, without the NUL character",
        ));
    }
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(ApiError::internal)??;
    let client = state.db.get().await?;
    db::tenants::get(&client, tenant).await?;
    db::ui::put_user(&client, tenant, name, &hash, role.name()).await?;
    Ok(UserInfo {
        username: name.to_string(),
        role: role.name().to_string(),
    })
}

async fn create(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
    Json(body): Json<NewUser>,
) -> ApiResult<Envelope<UserInfo>> {
    Ok(Envelope::ok(create_user(&state, &ccid, body).await?))
}

async fn list(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
) -> ApiResult<Envelope<Vec<UserInfo>>> {
    let client = state.db.get().await?;
    db::tenants::get(&client, &ccid).await?;
    Ok(Envelope::ok(db::ui::list_users(&client, &ccid).await?))
}

async fn remove(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, username)): Path<(String, String)>,
) -> ApiResult<Envelope<UserInfo>> {
    let client = state.db.get().await?;
    db::ui::delete_user(&client, &ccid, &username).await?;
    Ok(Envelope::ok(UserInfo {
        username,
        role: String::new(),
    }))
}
