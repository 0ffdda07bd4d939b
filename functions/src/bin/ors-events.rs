//! Function `ors-events`: serves `functions::ors::router()` (voice-platform state events) on
//! `$PORT`; internal only (cluster-local Knative service).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "ors-events",
        shared::http::middleware::Exposure::Internal,
        functions::ors::router,
    )
}
