//! The Engagement API envelope `{status:{code,message,corrId}, data}` and the one place where
//! an [`ApiError`] becomes an HTTP response.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::ApiError;

/// Per-request context, set by the request middleware for the duration of the request.
#[derive(Debug)]
pub struct RequestCtx {
    /// Correlation id, fresh per request.
    pub corr_id: String,
    /// Tenant, once resolved from the API key (metrics label, API-error log).
    pub tenant: OnceLock<String>,
    /// Set by [`committing`]: the request's write may be committing now.
    pub committing: AtomicBool,
    /// When the request timeout (`REQUEST_TIMEOUT_MS`) runs out.
    pub timeout_at: tokio::time::Instant,
}

/// How long past the request timeout a write already committing may still land before its
/// request gives it up (docs/bounded-answers.md).
pub const COMMIT_GRACE: Duration = Duration::from_millis(1_000);

/// The most a request answers after its timeout: the commit grace, then the time a write that
/// settled just then has to hand over its answer, then [`ANSWER_SLACK`]. Past it the
/// middleware answers 503 whatever the handler is doing; dropping a handler gives its write up
/// safely (`db::outcome`).
pub const ANSWER_MARGIN: Duration = COMMIT_GRACE
    .saturating_add(crate::db::outcome::LATE_VALUE_GRACE)
    .saturating_add(ANSWER_SLACK);

/// Time a handler whose write settled as stored, but whose answer was still late at the end of
/// the late grace, has to answer before the last resort: without it both ended at the same
/// instant and a stored create could lose the race and be answered 503
/// (docs/bounded-answers.md).
pub const ANSWER_SLACK: Duration = Duration::from_millis(250);

tokio::task_local! {
    /// The context of the request this task serves.
    pub static CTX: Arc<RequestCtx>;
}

/// The current request's correlation id (a fresh one outside a request).
pub fn corr_id() -> String {
    CTX.try_with(|c| c.corr_id.clone())
        .unwrap_or_else(|_| new_corr_id())
}

/// A new correlation id.
pub fn new_corr_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Marks the current request as past its point of no return: call it just before handing a
/// write to the code that commits it (`db::outcome`). From then on the request timeout gives
/// the write [`COMMIT_GRACE`] more to land and the handler time to answer, at most
/// [`ANSWER_MARGIN`] in all; the handler's wait ends at [`commit_deadline`], after which the
/// write is given up (never committed, or undone once PostgreSQL answers), so a 503 still
/// means nothing was stored.
pub fn committing() {
    let _ = CTX.try_with(|c| c.committing.store(true, Ordering::Release));
}

/// Until when the current request's write may wait for its commit: the request timeout plus
/// [`COMMIT_GRACE`] (`None` outside a request: no bound).
pub fn commit_deadline() -> Option<tokio::time::Instant> {
    CTX.try_with(|c| c.timeout_at + COMMIT_GRACE).ok()
}

/// Records the tenant of the current request.
pub fn set_tenant(tenant: &str) {
    let _ = CTX.try_with(|c| c.tenant.set(tenant.to_string()));
}

#[derive(Serialize)]
struct Status<'a> {
    code: u16,
    message: &'a str,
    #[serde(rename = "corrId")]
    corr_id: &'a str,
}

#[derive(Serialize)]
struct Body<'a, T> {
    status: Status<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a T>,
}

/// Builds an envelope response with the current correlation id.
pub fn respond<T: Serialize>(code: u16, message: &str, data: Option<&T>) -> Response {
    let corr = corr_id();
    let body = Body {
        status: Status {
            code,
            message,
            corr_id: &corr,
        },
        data,
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match serde_json::to_vec(&body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "response serialisation failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&corr) {
        resp.headers_mut().insert("x-correlation-id", v);
    }
    resp
}

/// A successful response carrying `data`.
#[derive(Debug)]
pub struct Envelope<T> {
    code: u16,
    data: T,
}

impl<T: Serialize> Envelope<T> {
    /// A success: HTTP 200, `status.message` "Successful", `data` = `data`.
    pub fn ok(data: T) -> Self {
        Self { code: 200, data }
    }
    /// 201 "Successful" (admin creations).
    pub fn created(data: T) -> Self {
        Self { code: 201, data }
    }
}

impl<T: Serialize> IntoResponse for Envelope<T> {
    fn into_response(self) -> Response {
        respond(self.code, "Successful", Some(&self.data))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The one place a cause is logged; the caller gets the message and corrId only.
        match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed")
            }
            ApiError::Unavailable {
                cause: Some(cause), ..
            } => tracing::warn!(error = %cause, "dependency unavailable"),
            _ => {}
        }
        let message = self.public_message();
        let mut resp = match &self {
            ApiError::TooManyRequests {
                data: Some(data), ..
            } => respond(self.status_code(), &message, Some(data)),
            _ => respond::<()>(self.status_code(), &message, None),
        };
        if let ApiError::TooManyRequests {
            retry_after_s: Some(s),
            ..
        } = &self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*s));
        }
        // Read by the request middleware for the API-error log.
        resp.extensions_mut()
            .insert(super::errors::ErrorMessage(message));
        resp
    }
}
