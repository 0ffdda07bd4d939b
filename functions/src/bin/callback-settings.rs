//! Function `callback-settings`: serves `functions::admin::publish::router()` on `$PORT` (Knative, Lambda).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "callback-settings",
        shared::http::middleware::Exposure::Internal,
        functions::admin::publish::router,
    )
}
