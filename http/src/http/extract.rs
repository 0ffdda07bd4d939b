//! Extractors whose every rejection is an [`ApiError`] in the envelope: JSON bodies with the
//! failing field named, query and path parameters, the tenant behind `x-api-key`, and the
//! admin bearer token.

use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    http::{StatusCode, header, request::Parts},
};
use bytes::Bytes;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

use super::{
    auth_guard::{self, KeyOutcome},
    client_addr::ClientAddr,
    envelope,
    state::AppState,
};
use crate::{auth, http::ApiError, metrics};

/// A JSON body. Any content type is read as JSON (GES clients differ); errors name the field.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(Json)
    }
}

/// The body as sent, for handlers that parse it themselves (with [`parse_json`]); the size
/// limit and read errors are answered as for [`Json`].
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ::metrics::counter!(metrics::INVALID_CONTENT_LENGTH).increment(1);
                ApiError::PayloadTooLarge("request body is over this port's size limit".into())
            } else {
                ApiError::bad_request(format!("could not read the request body: {rejection}"))
            }
        })?;
        Ok(Self(bytes))
    }
}

/// Parses a JSON body; the error says where and why it failed.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("request body must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(describe)
}

/// Converts an already parsed JSON value; the error names the field.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(describe)
}

fn describe(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::bad_request(format!("malformed JSON: {inner}"));
    }
    let path = e.path().to_string();
    if path.starts_with('[') {
        // serde reads an array as a struct's fields in order; every body here is an object.
        return ApiError::bad_request("request body must be a JSON object, not an array");
    }
    if inner.to_string().starts_with("unknown field") {
        // The path ends with the unknown field itself: name the object that has it.
        let parent = match path.rfind('.') {
            Some(i) if i > 0 => &path[..i],
            _ => "request body",
        };
        return ApiError::bad_request(format!("{parent}: {inner}"));
    }
    if path == "." {
        // "must be a JSON object" only when it is not one; a missing or unknown field of an
        // object is named as such.
        if inner.to_string().starts_with("missing field") {
            ApiError::bad_request(format!("request body: {inner}"))
        } else {
            ApiError::bad_request(format!("request body must be a JSON object: {inner}"))
        }
    } else {
        ApiError::bad_request(format!("invalid value for {path}: {inner}"))
    }
}

/// Query parameters deserialized into `T`; a failure is a 400 in the envelope that names the
/// problem (axum's own extractor would answer plain text).
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| {
                ApiError::bad_request(format!("invalid query parameters: {}", e.body_text()))
            })
    }
}

/// Path parameters deserialized into `T`; a failure is a 400 in the envelope.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))
    }
}

/// The tenant resolved from the `x-api-key` header (401 when missing, unknown or revoked).
#[derive(Debug, Clone)]
pub struct ApiTenant(pub String);

impl FromRequestParts<AppState> for ApiTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Already resolved from the same header by the CORS check, else resolved here.
        let outcome = match parts.extensions.get::<KeyOutcome>() {
            Some(outcome) => Some(outcome.clone()),
            None => {
                let client = parts.extensions.get::<ClientAddr>();
                auth_guard::resolve(state, &parts.headers, client).await?
            }
        };
        let tenant = outcome
            .ok_or_else(|| ApiError::unauthorized("x-api-key header is required"))?
            .tenant()?;
        envelope::set_tenant(&tenant);
        Ok(ApiTenant(tenant.to_string()))
    }
}

/// An admin caller, authenticated by `Authorization: Bearer $ADMIN_TOKEN`.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &state.cfg.http.admin_token else {
            return Err(ApiError::unauthorized(
                "the admin API is disabled: set ADMIN_TOKEN to enable it",
            ));
        };
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("Authorization: Bearer <admin token> is required")
            })?;
        if !auth::secrets_equal(given.trim(), expected.expose_secret()) {
            return Err(ApiError::unauthorized("invalid admin token"));
        }
        Ok(Admin)
    }
}
