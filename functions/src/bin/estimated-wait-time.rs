//! Function `estimated-wait-time`: serves `functions::wait::estimated_wait_time::router()` on `$PORT` (Knative, Lambda).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "estimated-wait-time",
        shared::http::middleware::Exposure::External,
        functions::wait::estimated_wait_time::router,
    )
}
