//! Function `callbacks-reschedule`: serves `functions::callbacks::reschedule::router()` on `$PORT` (Knative, Lambda).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "callbacks-reschedule",
        shared::http::middleware::Exposure::External,
        functions::callbacks::reschedule::router,
    )
}
