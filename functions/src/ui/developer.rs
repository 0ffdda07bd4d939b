//! The Developer page (roles with [`Permission::Developer`]): API key validation (paste a key
//! → valid for this tenant / invalid), the tenant's recent API errors searchable by `corrId`,
//! credentials management (`super::credentials`), and "re-read configuration" (this replica forgets its cached keys and settings; the
//! others within `CACHE_TTL_MS`).

use axum::{
    Router,
    extract::{Query, State},
    response::Response,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::{auth, db, http::AppState};

use super::{
    UiError, page,
    roles::Permission,
    session::{Posted, Session},
};

/// The Developer routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ges/developer", get(show))
        .route("/ges/developer/validate-key", post(validate_key))
        .route("/ges/developer/refetch", post(refetch))
}

#[derive(Deserialize)]
struct ErrorSearch {
    #[serde(rename = "corrId")]
    corr_id: Option<String>,
    /// After a credentials form: which kind (`fcm`, `captcha`, `gws`) …
    cred: Option<String>,
    /// … and what was done (`saved`, `deleted`).
    done: Option<String>,
}

async fn show(
    State(state): State<AppState>,
    s: Session,
    Query(q): Query<ErrorSearch>,
) -> Result<Response, UiError> {
    let notice = match (q.cred.as_deref(), q.done.as_deref()) {
        (Some(kind @ ("fcm" | "captcha" | "gws")), Some(what @ ("saved" | "deleted"))) => Some(
            json!({"ok": true, "text": format!("{} credentials {what}.", kind.to_uppercase())}),
        ),
        _ => None,
    };
    render(&state, &s, q.corr_id, notice).await
}

/// The page, with the errors found for `corr_id` (or the newest 50) and an optional notice.
async fn render(
    state: &AppState,
    s: &Session,
    corr_id: Option<String>,
    notice: Option<Value>,
) -> Result<Response, UiError> {
    s.require(Permission::Developer)?;
    let corr = corr_id.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let parsed = corr
        .map(|c| {
            uuid::Uuid::parse_str(c)
                .map_err(|_| UiError::BadRequest("corrId is not a correlation id".into()))
        })
        .transpose()?;
    let client = state.db.get().await?;
    let errors = db::api_errors::list(&client, &s.tenant, parsed, 50).await?;
    drop(client);
    let ctx = minijinja::context! {
        errors => errors, corr_id => corr, notice => notice,
        credentials => super::credentials::views(state, &s.tenant).await?,
        vault => state.vault.is_configured(),
    };
    page("developer.html", Some(s), ctx)
}

#[derive(Deserialize)]
struct KeyForm {
    key: String,
}

/// Whether a pasted key is live; names the tenant only when it is the session's (or the
/// session is the admin token's).
async fn validate_key(
    State(state): State<AppState>,
    posted: Posted<KeyForm>,
) -> Result<Response, UiError> {
    let s = &posted.session;
    s.require(Permission::Developer)?;
    let key = posted.form.key.trim();
    let tenant = if key.is_empty() || key.len() > 256 {
        None
    } else {
        let client = state.db.get().await?;
        db::api_keys::resolve_hash(&client, &auth::hash_key(key)).await?
    };
    let notice = match tenant {
        Some(t) if t == s.tenant || s.admin => {
            json!({"ok": true, "text": format!("Valid Api Key (tenant {t})")})
        }
        Some(_) => json!({"ok": false, "text": "Valid Api Key, but of another tenant"}),
        None => json!({"ok": false, "text": "Invalid Api Key"}),
    };
    render(&state, s, None, Some(notice)).await
}

#[derive(Deserialize)]
struct Empty {}

async fn refetch(
    State(state): State<AppState>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let s = &posted.session;
    s.require(Permission::Developer)?;
    state.cache.forget_services();
    state.cache.forget_keys();
    state.cache.forget_gms();
    let notice = json!({"ok": true, "text": "Configuration re-read on this replica; other replicas follow within the cache lifetime."});
    render(&state, s, None, Some(notice)).await
}
