//! Function `callbacks-create`: serves `functions::callbacks::create::router()` on `$PORT` (Knative, Lambda).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "callbacks-create",
        shared::http::middleware::Exposure::External,
        functions::callbacks::create::router,
    )
}
