//! `POST/GET /ges/v1/tenants/{ccid}/api-keys`, `DELETE …/api-keys/{keyId}`.

use axum::{
    Router,
    extract::State,
    routing::{delete, get},
};
use bytes_body::OptionalJson;
use serde::{Deserialize, Serialize};
use shared::{
    ApiError, db,
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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// Free label (e.g. the app using the key).
    #[serde(default)]
    pub label: String,
}

/// Creates a key for a tenant (shared with the CLI).
pub async fn create_key(state: &AppState, tenant: &str, label: &str) -> ApiResult<NewApiKey> {
    if label.len() > 255 {
        return Err(ApiError::bad_request(
            "label must be at most 255 characters",
        ));
    }
    let client = state.db.get().await?;
    Ok(db::api_keys::create(&client, tenant, label).await?)
}

async fn create(
    State(state): State<AppState>,
    _: Admin,
    Path(ccid): Path<String>,
    OptionalJson(body): OptionalJson<KeyRequest>,
) -> ApiResult<Envelope<NewApiKey>> {
    let label = body.unwrap_or_default().label;
    Ok(Envelope::created(create_key(&state, &ccid, &label).await?))
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
