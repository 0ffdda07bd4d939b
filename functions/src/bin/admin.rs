//! Function `admin`: serves `functions::admin::router()` on `$PORT` (Knative, Lambda).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "admin",
        shared::http::middleware::Exposure::Internal,
        functions::admin::router,
    )
}
