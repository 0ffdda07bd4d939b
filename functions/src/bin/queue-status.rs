//! Function `queue-status`: serves `functions::callbacks::queue_status::router()` on `$PORT` (Knative, Lambda).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "queue-status",
        shared::http::middleware::Exposure::External,
        functions::callbacks::queue_status::router,
    )
}
