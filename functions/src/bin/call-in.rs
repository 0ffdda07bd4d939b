//! Function `call-in`: serves `functions::call_in::create::router()` (Click-To-Call-In
//! requests) on `$PORT` (Knative, Lambda). The voice platform's match is internal: it is served
//! by `ors-events`.

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "call-in",
        shared::http::middleware::Exposure::External,
        functions::call_in::create::router,
    )
}
