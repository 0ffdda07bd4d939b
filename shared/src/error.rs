//! The domain error of the stores, the models and the worker: what went wrong, in the
//! service's own terms (invalid input, not found, a conflict, a limit, a dependency down).
//!
//! Nothing here knows HTTP. The web layer maps each variant to a status and an envelope once,
//! in `http::api_error` (`From<Error> for ApiError`); the worker maps them to retry-or-not.
//! Conversions from driver errors only classify; they never log (the edge logs a cause once).

use tokio_postgres::error::SqlState;

/// A failed operation below the HTTP edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is wrong; the message, written for the app developer, says how to fix it.
    #[error("{0}")]
    Invalid(String),
    /// No such object for this tenant; the message names it.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (e.g. an idempotency key reused with
    /// another body, an event for an attempt that was never handed off).
    #[error("{0}")]
    Conflict(String),
    /// A limit was reached (a throttle, a queue cap, a full slot).
    #[error("{message}")]
    LimitReached {
        /// Names the limit and when it frees up.
        message: String,
        /// Alternatives returned to the caller (e.g. `{"slots": {...}}` of proposed slots).
        data: Option<serde_json::Value>,
        /// Seconds until a retry can pass; `None` when waiting alone will not help (a full
        /// slot, an active-callback limit).
        retry_after_s: Option<u64>,
        /// Which create-time limit it was, when it was one (the GMS surface words each its
        /// own way: docs/gms.md#errors).
        limit: Option<crate::redis::throttle::Limit>,
    },
    /// A scheduled callback's slot cannot take it: full, or closed to scheduled callbacks
    /// (capacity 0). Answered like a limit, with the open slots nearest the desired time.
    #[error("{message}")]
    SlotFull {
        /// Names the slot and why it refused.
        message: String,
        /// Proposed slots: start (RFC 3339 UTC) → remaining places (a string), in time order.
        proposals: serde_json::Map<String, serde_json::Value>,
    },
    /// A dependency (PostgreSQL, Redis) is unreachable, busy or restarting; nothing was
    /// changed and a retry may pass.
    #[error("{message}")]
    Unavailable {
        /// What the caller is told.
        message: String,
        /// The underlying failure, for the log only (never sent to a caller).
        cause: Option<String>,
    },
    /// A bug or an unexpected failure; the cause is logged at the edge, never returned.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

/// Result of the domain layer (the error type defaults to [`Error`]).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Short constructors, so call sites read as sentences.
impl Error {
    /// Invalid input, with the message that says how to fix it.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
    /// Not found, naming the object.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }
    /// A conflict with the current state.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::Conflict(msg.into())
    }
    /// A dependency is unavailable; `msg` is what the caller is told.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::Unavailable {
            message: msg.into(),
            cause: None,
        }
    }
    /// Any unexpected failure.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(cause.into())
    }

    /// Whether a retry of the same operation may pass (a dependency was unavailable).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// SQL states that mean "busy or restarting, retry": the statement changed nothing. Class 53
/// (insufficient resources) is the server out of connection slots (`too_many_connections`, a
/// pool reconnecting to a full server), memory or disk: a load condition, not a fault of the
/// request (docs/bounded-answers.md).
const TRANSIENT: [SqlState; 10] = [
    SqlState::ADMIN_SHUTDOWN,
    SqlState::CANNOT_CONNECT_NOW,
    SqlState::T_R_SERIALIZATION_FAILURE,
    SqlState::T_R_DEADLOCK_DETECTED,
    SqlState::LOCK_NOT_AVAILABLE,
    SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
    SqlState::INSUFFICIENT_RESOURCES,
    SqlState::DISK_FULL,
    SqlState::OUT_OF_MEMORY,
    SqlState::TOO_MANY_CONNECTIONS,
];

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() || e.as_db_error().is_none() && e.code().is_none() {
            // Connection-level failure: the database went away mid-call.
            return Self::Unavailable {
                message: "database unavailable, retry later".into(),
                // With its sources: a refused TLS handshake says why (docs/tls.md#errors).
                cause: Some(format!("database connection failure: {}", with_sources(&e))),
            };
        }
        match e.code() {
            Some(code) if TRANSIENT.contains(code) => Self::Unavailable {
                message: "database busy or restarting, retry later".into(),
                cause: Some(e.to_string()),
            },
            // Text PostgreSQL cannot store: in practice a NUL character (`\u0000`, `%00`) in a
            // name, a path segment or a JSON string. The caller's input, so invalid.
            Some(code)
                if code == &SqlState::UNTRANSLATABLE_CHARACTER
                    || code == &SqlState::CHARACTER_NOT_IN_REPERTOIRE =>
            {
                Self::invalid(
                    "text may not contain the NUL character (\\u0000); remove it and retry",
                )
            }
            // Two concurrent PUTs pooling the same number in two groups: the second statement
            // fails on the number's key (docs/call-in.md#groups).
            Some(code)
                if code == &SqlState::UNIQUE_VIOLATION
                    && e.as_db_error().and_then(|d| d.constraint())
                        == Some("call_in_numbers_pkey") =>
            {
                // The detail names the number: `Key (number)=(+1…) already exists.`
                let detail = e.as_db_error().and_then(|d| d.detail()).unwrap_or_default();
                Self::conflict(format!(
                    "an inbound number of this group is already in another Click-To-Call-In \
                     group (a number belongs to one group only): {detail}"
                ))
            }
            _ => Self::Internal(e.into()),
        }
    }
}

/// `e: source: source…`, each message once.
fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text = format!("{text}: {next}");
        }
        source = s.source();
    }
    text
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => Self::Unavailable {
                message: "database unavailable, retry later".into(),
                cause: Some(format!("database pool failure: {other}")),
            },
        }
    }
}
