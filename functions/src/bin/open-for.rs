//! Function `open-for`: serves `functions::callbacks::open_for::router()` on `$PORT` (Knative, Lambda).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "open-for",
        shared::http::middleware::Exposure::External,
        functions::callbacks::open_for::router,
    )
}
