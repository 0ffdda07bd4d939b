//! Credentials management on the Developer page (docs/admin-ui.md#credentials, docs/credentials.md):
//! write-only forms for the tenant's FCM service account, CAPTCHA secret and GWS client. A form
//! is turned into the admin API's body and stored through the same validation and vault
//! (`admin::credentials::store`); the page shows only each record's public fields and when it
//! was set, never a secret; delete removes the record.

use std::collections::HashMap;

use axum::{
    Router,
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
    routing::post,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use shared::{
    credentials::{Kind, NOT_CONFIGURED},
    error::Error,
    http::AppState,
};

use super::{UiError, roles::Permission, session::Posted};
use crate::admin::credentials::{self, View, kind_of};

/// The credentials routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ges/developer/credentials/{kind}", post(set))
        .route("/ges/developer/credentials/{kind}/delete", post(remove))
}

/// The public view of each kind for `tenant` (what the Developer page shows).
pub async fn views(state: &AppState, tenant: &str) -> Result<Vec<View>, UiError> {
    let client = state.db.get().await?;
    let mut out = Vec::new();
    for kind in Kind::ALL {
        out.push(credentials::view(&client, tenant, kind).await?);
    }
    Ok(out)
}

/// The form fields each kind takes, as the admin API's body keys; the FCM form has one field,
/// the service-account JSON file's text.
fn body_of(kind: Kind, form: &HashMap<String, String>) -> Result<Value, UiError> {
    if kind == Kind::Fcm {
        let text = form.get("service_account").map_or("", |t| t.trim());
        return serde_json::from_str::<Value>(text).map_err(|_| {
            UiError::BadRequest(
                "service account: paste the JSON file downloaded from the Firebase console".into(),
            )
        });
    }
    let keys: &[&str] = match kind {
        Kind::Captcha => &["secret", "siteKey"],
        _ => &["clientId", "clientSecret", "authUrl", "statisticsUrl"],
    };
    let body: Map<String, Value> = keys
        .iter()
        .filter_map(|k| {
            let v = form.get(*k).map(|v| v.trim()).filter(|v| !v.is_empty())?;
            Some(((*k).to_string(), Value::from(v)))
        })
        .collect();
    Ok(Value::Object(body))
}

/// `POST /ges/developer/credentials/{kind}`: stores the record (replacing the stored one).
async fn set(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    posted: Posted<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = &posted.session;
    s.require(Permission::Developer)?;
    let kind = kind_of(&kind)?;
    if !state.vault.is_configured() {
        return Err(Error::unavailable(NOT_CONFIGURED).into());
    }
    let body = body_of(kind, &posted.form)?;
    let client = state.db.get().await?;
    credentials::store(&state.vault, &client, &s.tenant, kind, &body).await?;
    Ok(done(kind, "saved"))
}

#[derive(Deserialize)]
struct Empty {}

/// `POST /ges/developer/credentials/{kind}/delete`.
async fn remove(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let s = &posted.session;
    s.require(Permission::Developer)?;
    let kind = kind_of(&kind)?;
    let client = state.db.get().await?;
    state.vault.remove(&client, &s.tenant, kind).await?;
    Ok(done(kind, "deleted"))
}

fn done(kind: Kind, what: &str) -> Response {
    Redirect::to(&format!(
        "/ges/developer?cred={}&done={what}#cred-h",
        kind.as_str()
    ))
    .into_response()
}
