//! The one error type of the API, and how store errors turn into it.
//!
//! Every failure a handler can meet ends up as an [`ApiError`]; its HTTP status and envelope
//! are decided once, in `http::envelope`. Client errors carry a message written for the app
//! developer; internal errors carry the cause for the log only and answer a generic message
//! (the cause is logged once, at the edge, never sent to the caller).

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or unknown credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 404: no such resource for this tenant.
    #[error("{0}")]
    NotFound(String),
    /// 409: conflicts with the current state (e.g. an idempotency key reused with another body).
    #[error("{0}")]
    Conflict(String),
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
    #[error("{0}")]
    Unavailable(String),
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
    /// 409 with a message.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::Conflict(msg.into())
    }
    /// 401 with a message.
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::Unauthorized(msg.into())
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
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            Self::PayloadTooLarge(_) => 413,
            Self::TooManyRequests { .. } => 429,
            Self::Unavailable(_) => 503,
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

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() || e.as_db_error().is_none() && e.code().is_none() {
            // Connection-level failure: the database went away mid-call.
            tracing::warn!(error = %e, "database connection failure");
            return Self::Unavailable("database unavailable, retry later".into());
        }
        if let Some(code) = e.code()
            && (code == &tokio_postgres::error::SqlState::ADMIN_SHUTDOWN
                || code == &tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW
                || code == &tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                || code == &tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE
                || code == &tokio_postgres::error::SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT)
        {
            return Self::Unavailable("database busy or restarting, retry later".into());
        }
        if let Some(code) = e.code()
            && (code == &tokio_postgres::error::SqlState::UNTRANSLATABLE_CHARACTER
                || code == &tokio_postgres::error::SqlState::CHARACTER_NOT_IN_REPERTOIRE)
        {
            // Text PostgreSQL cannot store: in practice a NUL character (`\u0000`, `%00`) in a
            // name, a path segment or a JSON string. The caller's input, so a 400.
            return Self::bad_request(
                "text may not contain the NUL character (\\u0000); remove it and retry",
            );
        }
        Self::Internal(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => {
                tracing::warn!(error = %other, "database pool failure");
                Self::Unavailable("database unavailable, retry later".into())
            }
        }
    }
}

/// Result alias used by every API path.
pub type ApiResult<T> = Result<T, ApiError>;
