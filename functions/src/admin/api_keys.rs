//! `POST/GET /ges/v1/tenants/{ccid}/api-keys`, `DELETE …/api-keys/{keyId}`. A POST generates a
//! key, or imports an existing one given as `key` (docs/abuse.md#importing-existing-keys).

use axum::{
    Router,
    extract::State,
    routing::{delete, get},
};
use bytes_body::OptionalJson;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use shared::{
    ApiError, auth, db,
    db::api_keys::{ApiKeyInfo, NewApiKey},
    http::ApiResult,
    http::{Admin, AppState, Envelope, Path},
};
use uuid::Uuid;

/// `GET|POST …/api-keys` and `DELETE …/api-keys/{key_id}` (internal port, admin token).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ges/v1/tenants/{ccid}/api-keys", get(list).post(create))
        .route("/ges/v1/tenants/{ccid}/api-keys/{key_id}", delete(revoke))
}

/// Optional body of key creation.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// Free label (e.g. the app using the key).
    #[serde(default)]
    pub label: String,
    /// An existing key to import (e.g. a GES key built into apps) instead of generating one.
    #[serde(default)]
    pub key: Option<SecretString>,
}

impl std::fmt::Debug for KeyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRequest")
            .field("label", &self.label)
            .field("key", &self.key.as_ref().map(|_| "[imported]"))
            .finish()
    }
}

/// Creates a key for a tenant (shared with the CLI): generated, or `existing` imported after
/// validation (docs/abuse.md#importing-existing-keys). The serving replica forgets whatever it
/// cached about the key's hash, so an imported key tried before works at once here.
pub async fn create_key(
    state: &AppState,
    tenant: &str,
    label: &str,
    existing: Option<&str>,
) -> ApiResult<NewApiKey> {
    if label.len() > 255 {
        return Err(ApiError::bad_request(
            "label must be at most 255 characters",
        ));
    }
    if let Some(key) = existing {
        auth::validate_import(key)?;
    }
    let client = state.db.get().await?;
    let created = db::api_keys::create(&client, tenant, label, existing).await?;
    if let Some(key) = existing {
        state.cache.forget_key(&auth::hash_key(key)).await;
    }
    Ok(created)
}

async fn create(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
    OptionalJson(body): OptionalJson<KeyRequest>,
) -> ApiResult<Envelope<NewApiKey>> {
    let body = body.unwrap_or_default();
    let existing = body.key.as_ref().map(ExposeSecret::expose_secret);
    Ok(Envelope::created(
        create_key(&state, &ccid, &body.label, existing).await?,
    ))
}

async fn list(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
) -> ApiResult<Envelope<Vec<ApiKeyInfo>>> {
    let client = state.db.get().await?;
    db::tenants::get(&client, &ccid).await?;
    Ok(Envelope::ok(db::api_keys::list(&client, &ccid).await?))
}

/// Result of a revocation.
#[derive(Debug, Serialize)]
pub struct Revoked {
    /// The revoked key's id.
    pub id: Uuid,
}

async fn revoke(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, key_id)): Path<(String, String)>,
) -> ApiResult<Envelope<Revoked>> {
    let id = Uuid::parse_str(&key_id)
        .map_err(|_| ApiError::not_found(format!("no API key {key_id} for tenant {ccid}")))?;
    let client = state.db.get().await?;
    db::api_keys::revoke(&client, &ccid, id).await?;
    // Only the key's id is known here, not its hash: forget every cached key.
    state.cache.forget_keys();
    Ok(Envelope::ok(Revoked { id }))
}

mod bytes_body {
    //! A JSON body that may be absent.

    use axum::extract::{FromRequest, Request};
    use serde::de::DeserializeOwned;
    use shared::{ApiError, http::Json};

    /// `None` for an empty body, else the parsed JSON.
    pub(super) struct OptionalJson<T>(pub(super) Option<T>);

    impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJson<T> {
        type Rejection = ApiError;

        async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
            let empty = req
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() == b"0");
            if empty {
                return Ok(Self(None));
            }
            match Json::<serde_json::Value>::from_request(req, state).await {
                Ok(Json(v)) => shared::http::extract::from_value(v).map(|v| Self(Some(v))),
                Err(ApiError::BadRequest(m)) if m.starts_with("request body must be") => {
                    Ok(Self(None))
                }
                Err(e) => Err(e),
            }
        }
    }
}
