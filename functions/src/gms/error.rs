//! [`GmsError`]: every failure under `/genesys/` in the shape GMS clients parse,
//! `{"message": …, "exception": "<Java class name>"}`, plus `availability` (slot → places left)
//! when a desired time was refused (docs/gms.md#errors).
//!
//! A domain error ([`shared::Error`]) gets its GMS status, class and wording once, in
//! [`GmsError::domain`]. The middleware stack's own answers (unknown routes, a wrong method,
//! oversized bodies, timeouts, panics) are written in the v3 envelope below the routes;
//! [`reshape`], the outermost layer of the internal port, rewrites those under `/genesys/`.

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};
use shared::{
    ApiError, Error,
    http::{envelope::corr_id, errors::ErrorMessage},
    redis::throttle::Limit,
};

/// The package of GMS's callback exception classes.
pub const EXCEPTIONS: &str = "com.genesyslab.gsg.services.callback.exceptions.";

/// A failed `/genesys/` call.
#[derive(Debug)]
pub struct GmsError {
    /// HTTP status.
    pub status: u16,
    /// `message`, written for the integrator.
    pub message: String,
    /// The class name's last part (`CallbackExceptionServiceUnavailable`).
    pub exception: &'static str,
    /// Proposed slots (start → places left) of a refused desired time.
    pub availability: Option<Map<String, Value>>,
    /// `Retry-After` seconds of a throttle.
    pub retry_after_s: Option<u64>,
    /// Answer `WWW-Authenticate: Basic realm="genesys"` (a 401 of the Basic check).
    pub challenge: bool,
}

/// Set on every response [`GmsError`] wrote, so [`reshape`] leaves it alone.
#[derive(Debug, Clone, Copy)]
struct GmsShaped;

/// What a create was about, for the limits GMS words with the service or the number.
#[derive(Debug, Default, Clone, Copy)]
pub struct Subject<'a> {
    /// The service of the request.
    pub service: Option<&'a str>,
    /// The `_customer_number` as sent.
    pub customer_number: Option<&'a str>,
}

impl GmsError {
    /// An error of `status` with the class GMS-style clients expect for it.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            exception: class_of(status),
            availability: None,
            retry_after_s: None,
            challenge: false,
        }
    }

    /// 400: the request is wrong; the message says how.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 401 with the Basic challenge.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            challenge: true,
            ..Self::new(401, message)
        }
    }

    /// 404: no such tenant, service or callback.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// The message with our v3 field names replaced by the GMS keys that carried them.
    pub fn renamed(mut self) -> Self {
        for (v3, gms) in [
            ("phoneNumber", "_customer_number"),
            ("desiredTime", "_desired_time"),
            ("userData", "user data"),
            ("serviceName", "service"),
        ] {
            self.message = self.message.replace(v3, gms);
        }
        self
    }

    /// The one mapping of domain errors onto GMS answers (docs/gms.md#errors).
    pub fn domain(e: Error, about: Subject<'_>) -> Self {
        match e {
            Error::Invalid(m) => Self::bad_request(m),
            Error::NotFound(m) => Self::not_found(m),
            Error::Conflict(m) => Self::new(409, m),
            Error::LimitReached {
                message,
                retry_after_s,
                limit,
                ..
            } => Self {
                retry_after_s,
                ..Self::new(503, limit.map_or(message, |l| limit_message(l, about)))
            },
            Error::SlotFull { message, proposals } => Self {
                exception: "CallbackExceptionDesiredTimeUnavailable",
                availability: Some(places(proposals)),
                ..Self::bad_request(message)
            },
            other => ApiError::from(other).into(),
        }
    }
}

/// Proposed slots with their places as integers, as GMS sends them (ours are texts).
fn places(proposals: Map<String, Value>) -> Map<String, Value> {
    proposals
        .into_iter()
        .map(|(slot, n)| {
            let n = match &n {
                Value::String(s) => s.parse::<i64>().map_or(n, Value::from),
                _ => n,
            };
            (slot, n)
        })
        .collect()
}

/// GMS's words for a create-time limit (reference wording for the service cap, the service
/// rate and the per-number daily limit; ours for in-queue checking, which GMS does not show).
fn limit_message(limit: Limit, about: Subject<'_>) -> String {
    let svc = about.service.unwrap_or("this service");
    let number = about.customer_number.unwrap_or("");
    match limit {
        Limit::MaxQueued { .. } => format!("Limit of queued callbacks for {svc} is reached."),
        Limit::PerService1 { ttl, .. } | Limit::PerService2 { ttl, .. } => {
            format!("Limit of queued callbacks for {svc} is reached for interval {ttl}s.")
        }
        Limit::PerNumber24h { limit } => format!(
            "Callback for _customer_number={number} rejected because previous callbacks for this \
             parameter were requested for more than {limit} times today."
        ),
        Limit::InQueue { limit } => format!(
            "Callback for _customer_number={number} rejected because {limit} callback(s) for \
             this parameter are already queued."
        ),
    }
}

/// The class for a status (docs/gms.md#errors lists them).
fn class_of(status: u16) -> &'static str {
    match status {
        400 => "CallbackExceptionBadRequest",
        401 => "CallbackExceptionUnauthorized",
        404 => "CallbackExceptionNotFound",
        405 => "CallbackExceptionMethodNotAllowed",
        408 => "CallbackExceptionRequestTimeout",
        409 => "CallbackExceptionConflict",
        413 => "CallbackExceptionPayloadTooLarge",
        415 => "CallbackExceptionUnsupportedMediaType",
        429 | 503 => "CallbackExceptionServiceUnavailable",
        _ => "CallbackException",
    }
}

impl From<Error> for GmsError {
    fn from(e: Error) -> Self {
        Self::domain(e, Subject::default())
    }
}

impl From<ApiError> for GmsError {
    fn from(e: ApiError) -> Self {
        if let ApiError::Internal(cause) = &e {
            // The one log line of an internal cause (never sent).
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        if let ApiError::Unavailable {
            cause: Some(cause), ..
        } = &e
        {
            tracing::warn!(error = %cause, "dependency unavailable");
        }
        let status = match e.status_code() {
            429 => 503,
            s => s,
        };
        let retry_after_s = match &e {
            ApiError::TooManyRequests { retry_after_s, .. } => *retry_after_s,
            _ => None,
        };
        Self {
            retry_after_s,
            ..Self::new(status, e.public_message())
        }
    }
}

impl From<deadpool_postgres::PoolError> for GmsError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::from(e).into()
    }
}

impl From<deadpool_postgres::tokio_postgres::Error> for GmsError {
    fn from(e: deadpool_postgres::tokio_postgres::Error) -> Self {
        Error::from(e).into()
    }
}

impl IntoResponse for GmsError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "message": self.message,
            "exception": format!("{EXCEPTIONS}{}", self.exception),
        });
        if let Some(slots) = self.availability {
            body["availability"] = Value::Object(slots);
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp =
            (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response();
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&corr_id()) {
            headers.insert("x-correlation-id", v);
        }
        if let Some(s) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"genesys\""),
            );
        }
        resp.extensions_mut().insert(ErrorMessage(self.message));
        resp.extensions_mut().insert(GmsShaped);
        resp
    }
}

/// The most of an envelope error body [`reshape`] reads (they are a few hundred bytes).
const ENVELOPE_MAX: usize = 64 * 1024;

/// Outermost layer of the internal port: an error answered in the v3 envelope to a request
/// under `/genesys/` (unknown route, wrong method, body over the limit, timeout, panic, an
/// extractor's refusal) is rewritten in the GMS shape, keeping its status and headers.
pub async fn reshape(req: Request, next: Next) -> Response {
    let gms = req.uri().path().starts_with(super::PREFIX);
    let resp = next.run(req).await;
    if !gms || resp.status().as_u16() < 400 || resp.extensions().get::<GmsShaped>().is_some() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let message = match axum::body::to_bytes(body, ENVELOPE_MAX).await {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["status"]["message"].as_str().map(str::to_string))
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    let status = parts.status.as_u16();
    let message = if message.is_empty() {
        parts
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_string()
    } else {
        message
    };
    let shaped = GmsError::new(status, message).into_response();
    let (new_parts, new_body) = shaped.into_parts();
    for (name, value) in &new_parts.headers {
        if name != header::CONTENT_LENGTH {
            parts.headers.insert(name.clone(), value.clone());
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.extensions.extend(new_parts.extensions);
    Response::from_parts(parts, Body::new(new_body))
}
