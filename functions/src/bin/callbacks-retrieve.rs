//! Function `callbacks-retrieve`: serves `functions::callbacks::retrieve::router()` on `$PORT` (Knative, Lambda).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "callbacks-retrieve",
        shared::http::middleware::Exposure::External,
        functions::callbacks::retrieve::router,
    )
}
