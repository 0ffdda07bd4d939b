//! Function `gms`: serves `functions::gms::router()`, the GMS-compatible `/genesys/` callback
//! surface of Designer applications (docs/gms.md), on `$PORT` (Knative cluster-local, Lambda).

fn main() -> std::process::ExitCode {
    functions::runtime::run_function(
        "gms",
        shared::http::middleware::Exposure::Internal,
        functions::gms::router,
    )
}
