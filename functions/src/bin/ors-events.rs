//! Function `ors-events`: serves `functions::ors::router()` (voice-platform state events) on
//! `$PORT`; internal only (cluster-local Knative service). Refuses to start without
//! `ORS_EVENTS_TOKEN`.

fn main() -> std::process::ExitCode {
    functions::runtime::run_function_checked(
        "ors-events",
        shared::http::middleware::Exposure::Internal,
        functions::ors::router,
        shared::Config::require_ors_events_token,
    )
}
