//! Function `call-in`: serves `functions::call_in::router()` (Click-To-Call-In requests) on
//! `$PORT` (Knative, Lambda).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "call-in",
        shared::http::middleware::Exposure::External,
        functions::call_in::router,
    )
}
