//! The worker's error: which dependency failed, in the worker's own terms. Every loop logs it
//! and tries again on its own cadence; nothing here has an HTTP meaning. A dispatch pass has a
//! finer [`PassError`](crate::dispatch::pass::PassError), because where it failed decides
//! what happens to its claims.

/// A failed step of one of the worker's loops.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PostgreSQL (a store call or the pool) failed.
    #[error("database: {}", Cause(.0))]
    Db(#[from] shared::Error),
    /// The service Redis (schedule index, queue views, counters) failed.
    #[error("service redis: {0}")]
    ServiceRedis(#[from] redis::RedisError),
    /// The voice Redis (voice and control streams) failed.
    #[error("voice redis: {0}")]
    VoiceRedis(redis::RedisError),
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Db(e.into())
    }
}

/// Result of the worker's loops.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A store error with its cause: the operator reading the worker's log wants the driver's
/// words, which `shared::Error` keeps out of its message (that one is written for callers).
pub(crate) struct Cause<'a>(pub(crate) &'a shared::Error);

impl std::fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            shared::Error::Unavailable {
                message,
                cause: Some(cause),
            } => write!(f, "{message} ({cause})"),
            e => write!(f, "{e}"),
        }
    }
}
