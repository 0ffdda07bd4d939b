//! The web layer every function binary shares: the response envelope, extractors whose
//! rejections use that envelope, the middleware stack, `AppState`, and [`serve()`], which runs a
//! router on AWS Lambda or on `0.0.0.0:$PORT` with graceful SIGTERM shutdown.

pub mod api_error;
pub mod auth_guard;
pub mod client_addr;
pub mod cors;
pub mod envelope;
pub mod errors;
pub mod extract;
pub mod key_rate;
pub mod middleware;
pub mod serve;
pub mod state;

pub use api_error::{ApiError, ApiResult};
pub use envelope::{Envelope, corr_id};
pub use extract::{Admin, ApiTenant, Json, Path, Query};
pub use serve::{serve, serve_listener, shutdown_signal};
pub use state::AppState;
