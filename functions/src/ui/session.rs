//! Admin-UI sessions (docs/admin-ui.md#sessions): a random cookie value whose SHA-256 keys a
//! row of `ui_sessions` in PostgreSQL (so every replica sees every session and its idle
//! clock), `HttpOnly; SameSite=Strict; Path=/ges` (+ `Secure` over TLS), a per-session CSRF
//! token every POST must echo, and the extractors [`Session`] and [`Posted`] that every
//! page and action goes through.

use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderMap, header, request::Parts},
};
use rand::{Rng, distr::Alphanumeric};
use serde::{Deserialize, de::DeserializeOwned};
use shared::{auth, db, db::ui::SessionRow, http::AppState};

use super::{
    UiError,
    roles::{Permission, Role},
};

/// Name of the session cookie.
pub const COOKIE: &str = "ges_session";

/// A logged-in caller, its session refreshed (404 → login page when there is none).
#[derive(Debug, Clone)]
pub struct Session {
    /// The tenant every page and action of this session is scoped to.
    pub tenant: String,
    /// The user name (`admin token` for an admin-token session).
    pub username: String,
    /// The role the permission table is read with.
    pub role: Role,
    /// The CSRF token forms carry.
    pub csrf: String,
    /// Opened with the admin token (may act for any tenant).
    pub admin: bool,
}

impl Session {
    /// `Ok` when the role may do `p`, else 403.
    pub fn require(&self, p: Permission) -> Result<(), UiError> {
        if self.role.may(p) {
            Ok(())
        } else {
            Err(UiError::Forbidden)
        }
    }

    /// Whether the role may do `p` (what the templates show).
    pub fn may(&self, p: Permission) -> bool {
        self.role.may(p)
    }
}

/// A random token of 43 alphanumeric characters (~256 bits; `rand`'s CSPRNG).
pub fn token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(43)
        .map(char::from)
        .collect()
}

/// The stored user name of an admin-token session: `@admin:` and a fingerprint of the token
/// that opened it (a tenant user's name never starts with `@`), so rotating `ADMIN_TOKEN` ends
/// every session the old token opened (docs/admin-ui.md#sessions). `None` without a token.
pub fn admin_user(state: &AppState) -> Option<String> {
    let token = state.cfg.http.admin_token.as_ref()?;
    let digest = auth::hash_key(secrecy::ExposeSecret::expose_secret(token));
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("@admin:{hex}"))
}

/// The session cookie's value, if the request carries one.
fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// Opens a session for `row` and answers the `Set-Cookie` value; `None` when the user's
/// password or role changed since `checked` (the hash its password was checked against) was
/// read ([`db::ui::create_session`]).
pub async fn open(
    state: &AppState,
    headers: &HeaderMap,
    row: &SessionRow,
    checked: Option<&str>,
) -> Result<Option<String>, UiError> {
    let id = token();
    let client = state.db.get().await?;
    let idle = idle_seconds(state);
    db::ui::purge_idle(&client, idle).await?;
    let stored = db::ui::create_session(&client, &auth::hash_key(&id), row, checked).await?;
    Ok(stored.then(|| set_cookie(state, headers, &id, None)))
}

/// Ends the request's session (if any) and answers the `Set-Cookie` that clears it.
pub async fn close(state: &AppState, headers: &HeaderMap) -> Result<String, UiError> {
    if let Some(id) = cookie_value(headers) {
        let client = state.db.get().await?;
        db::ui::end_session(&client, &auth::hash_key(&id)).await?;
    }
    Ok(set_cookie(state, headers, "", Some(0)))
}

fn idle_seconds(state: &AppState) -> i64 {
    i64::try_from(state.cfg.http.ui_session_idle_s).unwrap_or(i64::MAX / 2)
}

/// The cookie: HttpOnly, SameSite=Strict, Path=/ges, Secure when configured or when the
/// request came over TLS through a proxy (`X-Forwarded-Proto: https`).
fn set_cookie(state: &AppState, headers: &HeaderMap, value: &str, max_age: Option<u32>) -> String {
    let tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let mut cookie = format!("{COOKIE}={value}; Path=/ges; HttpOnly; SameSite=Strict");
    if state.cfg.http.ui_cookie_secure || tls {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    cookie
}

impl FromRequestParts<AppState> for Session {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, UiError> {
        let id = cookie_value(&parts.headers).ok_or(UiError::Login)?;
        let client = state.db.get().await?;
        let row = db::ui::touch_session(&client, &auth::hash_key(&id), idle_seconds(state))
            .await?
            .ok_or(UiError::Login)?;
        let role = Role::parse(&row.role).ok_or(UiError::Login)?;
        // An admin-token session (or a former one, empty name) lives only with its token.
        let admin = row.username.is_empty() || row.username.starts_with('@');
        if admin && admin_user(state).as_deref() != Some(row.username.as_str()) {
            db::ui::end_session(&client, &auth::hash_key(&id)).await?;
            return Err(UiError::Login);
        }
        shared::http::envelope::set_tenant(&row.tenant);
        Ok(Session {
            admin,
            username: if admin {
                "admin token".into()
            } else {
                row.username
            },
            tenant: row.tenant,
            role,
            csrf: row.csrf,
        })
    }
}

/// A form posted by a logged-in caller, its CSRF token checked (403 without the session's
/// token: the one check every UI POST goes through).
#[derive(Debug)]
pub struct Posted<T> {
    /// The caller.
    pub session: Session,
    /// The form's other fields.
    pub form: T,
}

#[derive(Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    inner: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Posted<T> {
    type Rejection = UiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, UiError> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let req = Request::from_parts(parts, body);
        let axum::Form(posted) = axum::Form::<WithCsrf<T>>::from_request(req, state)
            .await
            .map_err(|e| UiError::BadRequest(e.body_text()))?;
        if posted.csrf.is_empty() || !auth::secrets_equal(&posted.csrf, &session.csrf) {
            return Err(UiError::Csrf);
        }
        Ok(Posted {
            session,
            form: posted.inner,
        })
    }
}
