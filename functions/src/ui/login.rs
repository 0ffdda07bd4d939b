//! `GET|POST /ges/login`, `POST /ges/logout` (docs/admin-ui.md#sessions). The login form
//! carries a double-submit CSRF token (a cookie and a field with the same random value: no
//! session exists yet). A tenant user is checked against its Argon2id hash, with consecutive
//! failures locking it ([`db::ui::MAX_FAILED_LOGINS`]); the user name `@admin` with the admin
//! token opens an Administrator session for any existing tenant, with failures bounded per
//! process (`ADMIN_FAILURES`).

use std::{
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use shared::{
    auth, db,
    db::ui::{LoginStart, SessionRow},
    http::AppState,
};

use super::{
    UiError, page,
    roles::Role,
    session::{self, Posted},
};
use crate::gms::tenant::{hash_password, verify_password};

/// The user name that logs in with the admin token.
pub const ADMIN_USER: &str = "@admin";
/// The login form's double-submit cookie.
const LOGIN_COOKIE: &str = "ges_login_csrf";

/// The login and logout routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ges/login", get(form).post(login))
        .route("/ges/logout", post(logout))
}

#[derive(Deserialize)]
struct FormQuery {
    expired: Option<String>,
}

async fn form(Query(q): Query<FormQuery>) -> Result<Response, UiError> {
    let notice = q
        .expired
        .map(|_| "Please log in (your session ended or you were not logged in).");
    login_page(notice, None, 200)
}

/// The login page with a fresh double-submit token in a cookie and in the form.
fn login_page(notice: Option<&str>, error: Option<&str>, status: u16) -> Result<Response, UiError> {
    let token = session::token();
    let mut response = page(
        "login.html",
        None,
        minijinja::context! { csrf => token, notice => notice, error => error },
    )?;
    *response.status_mut() =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK);
    let cookie = format!("{LOGIN_COOKIE}={token}; Path=/ges/login; HttpOnly; SameSite=Strict");
    if let Ok(v) = cookie.parse() {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    tenant: String,
    username: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let axum::Form(f) = form.map_err(|e| UiError::BadRequest(e.body_text()))?;
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(n, _)| *n == LOGIN_COOKIE)
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    if f.csrf.is_empty() || !auth::secrets_equal(&f.csrf, &cookie) {
        return Err(UiError::Csrf);
    }
    let tenant = f.tenant.trim();
    let user = f.username.trim();
    let (row, checked) = match authenticate(&state, tenant, user, f.password).await? {
        Ok(found) => found,
        Err(why) => return login_page(None, Some(why), 401),
    };
    let Some(set) = session::open(&state, &headers, &row, checked.as_deref()).await? else {
        // The password or role changed while the password was being checked.
        return login_page(None, Some(WRONG), 401);
    };
    Ok(([(header::SET_COOKIE, set)], Redirect::to("/ges/queues")).into_response())
}

/// The refusal of an unknown user and of a wrong password alike.
const WRONG: &str = "Wrong tenant, user name or password.";
/// The refusal of a locked user (and of an unknown name failing as often: [`UNKNOWN_FAILURES`]).
const LOCKED: &str = "Too many failed attempts: this user is locked for a few minutes.";

/// Consecutive failures and the end of the lock they set.
type Failures = (i32, Option<Instant>);

/// Failed logins of unknown user names in this process, counted and locked as
/// `db::ui::begin_login` counts and locks a real user's, so the lock message does not tell
/// which names exist: (tenant, name) → (consecutive failures, locked until).
static UNKNOWN_FAILURES: LazyLock<moka::future::Cache<(String, String), Failures>> =
    LazyLock::new(|| {
        moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_idle(Duration::from_secs(3600))
            .build()
    });

/// Counts a failed login of an unknown name; whether that name is "locked" now (the attempt
/// that reaches [`db::ui::MAX_FAILED_LOGINS`] locks it for [`db::ui::LOCK_SECONDS`]).
async fn unknown_user_locked(tenant: &str, user: &str) -> bool {
    let key = (tenant.to_string(), user.to_string());
    let now = Instant::now();
    let (failures, until) = UNKNOWN_FAILURES.get(&key).await.unwrap_or((0, None));
    if until.is_some_and(|t| t > now) {
        return true;
    }
    let failures = failures + 1;
    let lock = Duration::from_secs(db::ui::LOCK_SECONDS.unsigned_abs().into());
    let entry = if failures >= db::ui::MAX_FAILED_LOGINS {
        (0, Some(now + lock))
    } else {
        (failures, until)
    };
    UNKNOWN_FAILURES.insert(key, entry).await;
    false
}

/// The session to open for these credentials and, for a tenant user, the hash its password
/// was checked against; or why not (the same words for an unknown user and a wrong password).
async fn authenticate(
    state: &AppState,
    tenant: &str,
    user: &str,
    password: String,
) -> Result<Result<(SessionRow, Option<String>), &'static str>, UiError> {
    if tenant.is_empty()
        || tenant.len() > 64
        || user.is_empty()
        || user.len() > 255
        || password.len() > 255
    {
        return Ok(Err(WRONG));
    }
    let client = state.db.get().await?;
    if db::tenants::get(&client, tenant).await.is_err() {
        return Ok(Err(WRONG));
    }
    if user == ADMIN_USER {
        return Ok(admin_login(state, tenant, &password).map(|row| (row, None)));
    }
    let start = db::ui::begin_login(&client, tenant, user).await?;
    // No pooled connection is held through the (slow, queued) Argon2 check: a burst of
    // logins would otherwise hold the whole pool and stall every other request.
    drop(client);
    let login = match start {
        LoginStart::Check(login) => login,
        LoginStart::Locked => return Ok(Err(LOCKED)),
        LoginStart::Unknown => {
            if unknown_user_locked(tenant, user).await {
                return Ok(Err(LOCKED));
            }
            // The same work as a real check, so timing does not tell which users exist.
            let _ = verify_password(DUMMY_HASH.clone(), password).await;
            return Ok(Err(WRONG));
        }
    };
    // The attempt is already counted as a failure (so concurrent guesses find the lock).
    if !verify_password(login.password_hash.clone(), password).await {
        return Ok(Err(WRONG));
    }
    let client = state.db.get().await?;
    db::ui::login_succeeded(&client, tenant, user).await?;
    let row = SessionRow {
        tenant: tenant.to_string(),
        username: user.to_string(),
        role: login.role,
        csrf: session::token(),
    };
    Ok(Ok((row, Some(login.password_hash))))
}

/// A hash no password matches in practice, verified for unknown users.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password(&session::token()).unwrap_or_default());

/// Failed admin-token logins of this process: the start of the current minute and the count
/// in it (at most [`ADMIN_FAILURES_PER_MINUTE`]; then every admin-token login is refused until
/// the minute ends, so the token cannot be guessed at speed).
static ADMIN_FAILURES: Mutex<Option<(Instant, u32)>> = Mutex::new(None);

const ADMIN_FAILURES_PER_MINUTE: u32 = 10;

fn admin_login(state: &AppState, tenant: &str, password: &str) -> Result<SessionRow, &'static str> {
    const BUSY: &str = "Too many failed attempts: admin-token logins are paused for a minute.";
    let mut failures = ADMIN_FAILURES.lock().map_err(|_| BUSY)?;
    let now = Instant::now();
    if failures.is_some_and(|(since, _)| now.duration_since(since) > Duration::from_secs(60)) {
        *failures = None;
    }
    if failures.is_some_and(|(_, n)| n >= ADMIN_FAILURES_PER_MINUTE) {
        return Err(BUSY);
    }
    let valid = state
        .cfg
        .http
        .admin_token
        .as_ref()
        .is_some_and(|t| auth::secrets_equal(password, t.expose_secret()));
    if !valid {
        let (since, n) = failures.unwrap_or((now, 0));
        *failures = Some((since, n + 1));
        return Err(WRONG);
    }
    Ok(SessionRow {
        tenant: tenant.to_string(),
        username: session::admin_user(state).unwrap_or_default(),
        role: Role::Administrator.name().to_string(),
        csrf: session::token(),
    })
}

#[derive(Deserialize)]
struct Empty {}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    _: Posted<Empty>,
) -> Result<Response, UiError> {
    let set = session::close(&state, &headers).await?;
    Ok(([(header::SET_COOKIE, set)], Redirect::to("/ges/login")).into_response())
}
