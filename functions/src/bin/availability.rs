//! Function `availability`: serves `functions::callbacks::availability::router()` on `$PORT` (Knative, Lambda).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "availability",
        shared::http::middleware::Exposure::External,
        functions::callbacks::availability::router,
    )
}
