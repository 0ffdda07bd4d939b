//! The HTTP-shaped error of the API, and the one place a domain [`Error`] gets its HTTP
//! meaning.
//!
//! Every failure a handler can meet ends up as an [`ApiError`]; its HTTP status and envelope
//! are decided once, in `http::envelope`. Client errors carry a message written for the app
//! developer; internal errors carry the cause for the log only and answer a generic message
//! (the cause is logged once, at the edge, never sent to the caller).

use crate::error::Error;

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or unknown credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: known credentials without the right to this operation (a role's limits).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource for this tenant.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, not with this method (axum adds the `Allow` header).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: conflicts with the current state (e.g. an idempotency key reused with another body).
    #[error("{0}")]
    Conflict(String),
    /// 408: the request body did not arrive within the request's deadline (a slow client;
    /// nothing was read, so nothing was changed).
    #[error("{0}")]
    RequestTimeout(String),
    /// 413: the body is over the port's limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 429: a limit was reached; `data` may carry alternatives (proposed slots).
    #[error("{message}")]
    TooManyRequests {
        /// Names the limit and when it frees up.
        message: String,
        /// Extra data returned in the envelope (e.g. `{"slots": {...}}`).
        data: Option<serde_json::Value>,
        /// Seconds until a retry can pass, sent as `Retry-After` (none when waiting alone
        /// will not help, e.g. a full slot or an active-callback limit).
        retry_after_s: Option<u64>,
    },
    /// 503: a dependency is unreachable; nothing was changed.
    #[error("{message}")]
    Unavailable {
        /// What the caller is told.
        message: String,
        /// The underlying failure, logged once at the edge (never sent).
        cause: Option<String>,
    },
    /// 500: a bug or an unexpected failure; the cause is logged, not returned.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

/// Short constructors, so call sites read as sentences.
impl ApiError {
    /// 400 with a message.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }
    /// 404 with a message.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }
    /// 403 with a message.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::Forbidden(msg.into())
    }
    /// 409 with a message.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::Conflict(msg.into())
    }
    /// 401 with a message.
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::Unauthorized(msg.into())
    }
    /// 503 with a message.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::Unavailable {
            message: msg.into(),
            cause: None,
        }
    }
    /// 500 from any cause.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(cause.into())
    }

    /// The HTTP status code (also the envelope's `status.code`).
    pub fn status_code(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::MethodNotAllowed(_) => 405,
            Self::Conflict(_) => 409,
            Self::RequestTimeout(_) => 408,
            Self::PayloadTooLarge(_) => 413,
            Self::TooManyRequests { .. } => 429,
            Self::Unavailable { .. } => 503,
            Self::Internal(_) => 500,
        }
    }

    /// The message sent to the caller (never the cause of a 500).
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "internal error; quote the corrId when reporting it".into(),
            other => other.to_string(),
        }
    }
}

/// The one mapping of domain errors to HTTP.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(m) => Self::BadRequest(m),
            Error::NotFound(m) => Self::NotFound(m),
            Error::Conflict(m) => Self::Conflict(m),
            Error::LimitReached {
                message,
                data,
                retry_after_s,
                ..
            } => Self::TooManyRequests {
                message,
                data,
                retry_after_s,
            },
            Error::SlotFull { message, proposals } => Self::TooManyRequests {
                message,
                data: Some(serde_json::json!({ "slots": proposals })),
                retry_after_s: None,
            },
            Error::Unavailable { message, cause } => Self::Unavailable { message, cause },
            Error::Internal(cause) => Self::Internal(cause),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::from(e).into()
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::from(e).into()
    }
}

/// Result alias used by every API path.
pub type ApiResult<T> = Result<T, ApiError>;
