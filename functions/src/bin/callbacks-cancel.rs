//! Function `callbacks-cancel`: serves `functions::callbacks::cancel::router()` on `$PORT` (Knative, Lambda).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "callbacks-cancel",
        shared::http::middleware::Exposure::External,
        functions::callbacks::cancel::router,
    )
}
