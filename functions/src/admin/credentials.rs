//! `PUT|GET|DELETE /ges/v1/tenants/{ccid}/credentials/{fcm|captcha|gws}`: a tenant's
//! third-party credentials (docs/credentials.md#admin-api). Write-only secrets: `PUT` stores
//! the record sealed under `CREDENTIALS_KEY` (503 without it), `GET` shows only its public
//! fields with `configured`, `updatedAt` and `keyId`, `DELETE` removes it. Every bad input is
//! a 400 and stores nothing. Changes reach other replicas within `CACHE_TTL_MS`.

use axum::{Router, extract::State, routing::put};
use serde::Serialize;
use serde_json::{Map, Value};
use shared::{
    ApiError,
    credentials::{CaptchaCredentials, FcmCredentials, GwsCredentials, Kind, Vault},
    db,
    error::Error,
    http::{Admin, ApiResult, AppState, Envelope, Json, Path},
    model::callback::wire_time,
};

/// `PUT|GET|DELETE …/credentials/{kind}` (internal port, admin token).
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/ges/v1/tenants/{ccid}/credentials/{kind}",
        put(set).get(show).delete(remove),
    )
}

/// What every route answers: the public view of the record (never a secret).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    /// The tenant.
    pub tenant: String,
    /// `fcm`, `captcha` or `gws`.
    pub kind: &'static str,
    /// Whether the tenant has a record of this kind.
    pub configured: bool,
    /// When it was stored (absent when not configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Id of the key it is sealed under (absent when not configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The record's non-secret fields (e.g. `projectId`, `clientEmail`, `siteKey`, `clientId`).
    #[serde(flatten)]
    pub public: Map<String, Value>,
}

pub fn kind_of(segment: &str) -> Result<Kind, ApiError> {
    Kind::parse(segment).ok_or_else(|| {
        ApiError::not_found(format!(
            "no credentials kind {:?}: use fcm, captcha or gws",
            segment.chars().take(32).collect::<String>()
        ))
    })
}

async fn set(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, kind)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Envelope<View>> {
    let kind = kind_of(&kind)?;
    if !state.vault.is_configured() {
        return Err(Error::unavailable(shared::credentials::NOT_CONFIGURED).into());
    }
    let client = state.db.get().await?;
    store(&state.vault, &client, &ccid, kind, &body).await?;
    Ok(Envelope::ok(view(&client, &ccid, kind).await?))
}

/// Validates `body` as a record of `kind` and stores it.
pub async fn store(
    vault: &Vault,
    db: &deadpool_postgres::Object,
    tenant: &str,
    kind: Kind,
    body: &Value,
) -> Result<(), Error> {
    match kind {
        Kind::Fcm => {
            let record = FcmCredentials::from_service_account(body)?;
            vault.store(db, tenant, &record).await?
        }
        Kind::Captcha => {
            let record = CaptchaCredentials::from_body(body)?;
            vault.store(db, tenant, &record).await?
        }
        Kind::Gws => {
            let record = GwsCredentials::from_body(body)?;
            vault.store(db, tenant, &record).await?
        }
    };
    Ok(())
}

async fn show(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, kind)): Path<(String, String)>,
) -> ApiResult<Envelope<View>> {
    let kind = kind_of(&kind)?;
    let client = state.db.get().await?;
    Ok(Envelope::ok(view(&client, &ccid, kind).await?))
}

async fn remove(
    State(state): State<AppState>,
    _: Admin,
    Path((ccid, kind)): Path<(String, String)>,
) -> ApiResult<Envelope<View>> {
    let kind = kind_of(&kind)?;
    let client = state.db.get().await?;
    state.vault.remove(&client, &ccid, kind).await?;
    Ok(Envelope::ok(view(&client, &ccid, kind).await?))
}

/// The stored record's public view (404 for an unknown tenant).
pub async fn view(db: &deadpool_postgres::Object, tenant: &str, kind: Kind) -> Result<View, Error> {
    let row = db::credentials::public(db, tenant, kind).await?;
    let mut v = View {
        tenant: tenant.to_string(),
        kind: kind.as_str(),
        configured: row.is_some(),
        updated_at: None,
        key_id: None,
        public: Map::new(),
    };
    if let Some(row) = row {
        v.updated_at = Some(wire_time(row.updated_at));
        v.key_id = Some(row.key_id);
        if let Value::Object(public) = row.public {
            v.public = public;
        }
    }
    Ok(v)
}
