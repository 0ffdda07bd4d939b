//! Metric names (GES names for existing dashboards) and the Prometheus recorder.
//!
//! Labels are bounded: tenant, route template, service, status code, never ids, numbers or
//! raw paths. Health gauges use 1 = healthy, 0 = down; alert rules match that polarity.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Callbacks created, by tenant.
pub const CALLBACKS_CREATED: &str = "ges_callbacks_created";
/// Every HTTP request, by tenant and route template.
pub const HTTP_REQUESTS: &str = "ges_http_requests_total";
/// 4xx/5xx responses, by tenant, route template and code.
pub const HTTP_FAILED: &str = "ges_http_failed_requests_total";
/// Request latency histogram, seconds.
pub const HTTP_DURATION: &str = "ges_http_request_duration_seconds";
/// Bodies over the port's limit.
pub const INVALID_CONTENT_LENGTH: &str = "INVALID_CONTENT_LENGTH";
/// Panics caught while serving a request.
pub const UNCAUGHT_EXCEPTION: &str = "UNCAUGHT_EXCEPTION";
/// Log lines that could not be written.
pub const LOGGING_FAILURE: &str = "LOGGING_FAILURE";
/// Failed submissions to the voice stream.
pub const CB_SUBMIT_FAILED: &str = "CB_SUBMIT_FAILED";
/// Per-service request throttles hit.
pub const CB_TTL_LIMIT_REACHED: &str = "CB_TTL_LIMIT_REACHED";
/// Per-number throttles hit.
pub const CB_ENQUEUE_LIMIT_REACHED: &str = "CB_ENQUEUE_LIMIT_REACHED";
/// Redis writes that failed after a PostgreSQL commit (repaired by the reconciler).
pub const REDIS_WRITE_FAILED: &str = "engage_redis_write_failed_total";
/// Creates admitted without limits because the service Redis failed (limits fail open).
pub const THROTTLE_FAIL_OPEN: &str = "engage_throttle_fail_open_total";
/// Requests refused by the per-API-key request rate limit of the public port.
pub const API_KEY_RATE_LIMITED: &str = "engage_api_key_rate_limited_total";
/// Build info gauge (= 1), label `version`.
pub const BUILD_INFO: &str = "ges_build_info";
/// Callbacks the dispatcher watches, by `type`.
pub const MONITOR_SIZE: &str = "ges_monitor_size";
/// Due time → voice stream, seconds.
pub const DISPATCH_LATENESS: &str = "engage_dispatch_lateness_seconds";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns the handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // A second install in the same process (tests) keeps the first recorder.
            let _ = metrics::set_global_recorder(recorder);
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}
