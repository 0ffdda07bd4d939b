//! Function `statistics`: serves `functions::statistics::router()` (the GWS statistics proxy,
//! docs/statistics.md) on `$PORT` (Knative, Lambda).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "statistics",
        shared::http::middleware::Exposure::External,
        functions::statistics::router,
    )
}
