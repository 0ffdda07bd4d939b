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
/// Creates refused by a per-service window (`throttle_per_service_1/2`).
pub const CB_TTL_LIMIT_REACHED: &str = "CB_TTL_LIMIT_REACHED";
/// Creates refused by a per-number or queue limit (`throttle_per_number_24h`,
/// `in_queue_checking`, `max_queued`).
pub const CB_ENQUEUE_LIMIT_REACHED: &str = "CB_ENQUEUE_LIMIT_REACHED";
/// Redis writes that failed after a PostgreSQL commit (repaired by the reconciler).
pub const REDIS_WRITE_FAILED: &str = "engage_redis_write_failed_total";
/// Creates admitted without limits because the service Redis failed (limits fail open).
pub const THROTTLE_FAIL_OPEN: &str = "engage_throttle_fail_open_total";
/// Requests refused by the per-API-key request rate limit of the public port.
pub const API_KEY_RATE_LIMITED: &str = "engage_api_key_rate_limited_total";
/// Requests of keys over their free allowance decided on the replica's own limit because the
/// service Redis failed or was slow (docs/throttling.md#request-rate-per-api-key).
pub const API_KEY_RATE_LOCAL_ONLY: &str = "engage_api_key_rate_local_only_total";
/// API-key lookups in PostgreSQL (key-cache misses; docs/abuse.md).
pub const API_KEY_LOOKUPS: &str = "engage_api_key_lookups_total";
/// Requests refused for an unknown, revoked or malformed API key (401 or 429).
pub const API_KEY_REFUSED: &str = "engage_api_key_refused_total";
/// Failed API-key attempts over a client's `AUTH_FAILURE_LIMIT` (answered 429, no lookup).
pub const AUTH_FAILURE_LIMITED: &str = "engage_auth_failure_limited_total";
/// Requests answered 429 because the process's `AUTH_LOOKUP_BUDGET` was spent (no lookup).
pub const AUTH_LOOKUP_BUDGET_SPENT: &str = "engage_auth_lookup_budget_spent_total";
/// Callbacks stored after their create had answered 503, then deleted (compensated).
pub const CREATES_COMPENSATED: &str = "engage_creates_compensated_total";
/// Build info gauge (= 1), label `version`.
pub const BUILD_INFO: &str = "ges_build_info";
/// Callbacks the dispatcher watches, by `type`.
pub const MONITOR_SIZE: &str = "ges_monitor_size";
/// Due time → voice stream, seconds.
pub const DISPATCH_LATENESS: &str = "engage_dispatch_lateness_seconds";
/// Click-To-Call-In requests created, by tenant.
pub const CALLIN_CREATED: &str = "ges_callin_created";
/// Push notifications sent, by tenant, channel, result.
pub const PUSH_SENT: &str = "ges_push_notifications_sent";
/// Calls to a tenant's GWS that failed: 5xx, timeout, unreachable, an unreadable or oversized
/// answer (docs/statistics.md#errors).
pub const GWS_SERVER_ERROR: &str = "GWS_SERVER_ERROR";
/// GWS refusals of a tenant's client credentials (docs/statistics.md#errors).
pub const GWS_INCORRECT_CLIENT_CREDENTIALS: &str = "GWS_INCORRECT_CLIENT_CREDENTIALS";
/// Failures to reach the push relay (FCM or its token endpoint: unreachable, timed out, 5xx,
/// 429, credentials refused); GES alerts above 30 an hour.
pub const NEXUS_ACCESS_FAILURE: &str = "NEXUS_ACCESS_FAILURE";
/// API-error records dropped because the writer was behind.
pub const API_ERRORS_DROPPED: &str = "engage_api_errors_dropped_total";

/// Composite health gauge: 1 = every dependency up, 0 = something down.
pub const GES_HEALTH: &str = "GES_HEALTH";
/// Service Redis reachable (1) or not (0).
pub const REDIS_CONNECTION: &str = "REDIS_CONNECTION";
/// Voice (ORS) Redis reachable (1) or not (0).
pub const ORS_REDIS_STATUS: &str = "ORS_REDIS_STATUS";
/// PostgreSQL reachable (1) or not (0).
pub const POSTGRES_STATUS: &str = "POSTGRES_STATUS";

/// Alert counters, registered at 0 at start so `increase()` sees their first occurrence.
pub const ALERT_COUNTERS: &[&str] = &[
    INVALID_CONTENT_LENGTH,
    UNCAUGHT_EXCEPTION,
    LOGGING_FAILURE,
    CB_SUBMIT_FAILED,
    CB_TTL_LIMIT_REACHED,
    CB_ENQUEUE_LIMIT_REACHED,
    GWS_SERVER_ERROR,
    GWS_INCORRECT_CLIENT_CREDENTIALS,
    NEXUS_ACCESS_FAILURE,
];

/// Callbacks handed to the voice stream (first submissions only).
pub const DISPATCHED: &str = "engage_dispatched_total";
/// Submissions the dedupe key turned away (a retried or taken-over submission).
pub const DISPATCH_DUPLICATES: &str = "engage_dispatch_duplicates_total";
/// Callbacks handed back to the schedule by pacing (`governor`).
pub const DISPATCH_PACED: &str = "engage_dispatch_paced_total";
/// Schedule-index rebuilds from PostgreSQL, by `cause`.
pub const RECONCILE_REBUILDS: &str = "engage_reconcile_rebuilds_total";
/// Control entries written to the control stream, by `via` (api, outbox).
pub const CONTROL_SENT: &str = "engage_control_sent_total";
/// Callbacks completed with FAIL_TIMEOUT_TTL.
pub const EXPIRED: &str = "engage_callbacks_expired_total";
/// Callbacks deleted by retention.
pub const PURGED: &str = "engage_callbacks_purged_total";
/// Voice-platform events, by `outcome` (applied, ignored, retry).
pub const ORS_EVENTS: &str = "engage_ors_events_total";
/// Due, unsubmitted callbacks the PostgreSQL sweep re-added to the schedule index.
pub const INDEX_REPAIRED: &str = "engage_index_repaired_total";
/// Callbacks the horizon loader put into the schedule index as their time came within reach.
pub const INDEX_LOADED: &str = "engage_index_loaded_total";
/// Queue-view members added or removed by the honesty check, by action.
pub const QUEUE_VIEW_REPAIRED: &str = "engage_queue_view_repaired_total";

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
            describe();
            for name in ALERT_COUNTERS {
                metrics::counter!(*name).absolute(0);
            }
            metrics_process::Collector::default().describe();
            handle
        })
        .clone()
}

/// Help texts (Prometheus `# HELP`), one per metric.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(CALLBACKS_CREATED, "Callbacks created, by tenant.");
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests, by tenant and route template."
    );
    describe_counter!(
        HTTP_FAILED,
        "HTTP responses with status 400 or more, by tenant, route template and code."
    );
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency.");
    describe_counter!(
        INVALID_CONTENT_LENGTH,
        "Requests whose body was over the port's limit."
    );
    describe_counter!(
        UNCAUGHT_EXCEPTION,
        "Panics caught while serving a request (answered 500)."
    );
    describe_counter!(LOGGING_FAILURE, "Log lines that could not be written.");
    describe_counter!(
        CB_SUBMIT_FAILED,
        "Failed submissions to the voice stream (retried)."
    );
    describe_counter!(
        CB_TTL_LIMIT_REACHED,
        "Creates refused by a per-service request throttle."
    );
    describe_counter!(
        CB_ENQUEUE_LIMIT_REACHED,
        "Creates refused by a per-number throttle."
    );
    describe_counter!(
        REDIS_WRITE_FAILED,
        "Redis writes that failed after a PostgreSQL commit (repaired by the reconciler), by operation."
    );
    describe_counter!(
        CREATES_COMPENSATED,
        "Callbacks stored after their create had answered 503, deleted again (docs/bounded-answers.md)."
    );
    describe_counter!(
        API_KEY_LOOKUPS,
        "API-key lookups in PostgreSQL (key-cache misses; docs/abuse.md)."
    );
    describe_counter!(
        API_KEY_REFUSED,
        "Requests refused for an unknown, revoked or malformed API key (401 or 429)."
    );
    describe_counter!(
        AUTH_FAILURE_LIMITED,
        "Failed API-key attempts over a client's AUTH_FAILURE_LIMIT (answered 429, no lookup)."
    );
    describe_counter!(
        AUTH_LOOKUP_BUDGET_SPENT,
        "Requests answered 429 because AUTH_LOOKUP_BUDGET was spent (no lookup)."
    );
    describe_gauge!(BUILD_INFO, "Build information (always 1), by version.");
    describe_gauge!(MONITOR_SIZE, "Callbacks the dispatcher watches, by type.");
    describe_histogram!(
        DISPATCH_LATENESS,
        Unit::Seconds,
        "Due time to voice-stream entry."
    );
    describe_counter!(
        CALLIN_CREATED,
        "Click-To-Call-In requests created, by tenant."
    );
    describe_counter!(
        PUSH_SENT,
        "Push notifications sent, by tenant, channel and result."
    );
    describe_counter!(
        GWS_SERVER_ERROR,
        "Calls to a tenant's GWS that failed (5xx, timeout, unreachable, unreadable answer)."
    );
    describe_counter!(
        GWS_INCORRECT_CLIENT_CREDENTIALS,
        "GWS refusals of a tenant's GWS client credentials."
    );
    describe_counter!(
        NEXUS_ACCESS_FAILURE,
        "Push notification tries that could not use FCM (unreachable, timeout, 5xx, 429, credentials refused)."
    );
    describe_counter!(
        API_ERRORS_DROPPED,
        "API-error records dropped because the writer was behind."
    );
    describe_gauge!(GES_HEALTH, "1 when every dependency is up, 0 otherwise.");
    describe_gauge!(
        REDIS_CONNECTION,
        "1 when the service Redis answers, 0 otherwise."
    );
    describe_gauge!(
        ORS_REDIS_STATUS,
        "1 when the voice (ORS) Redis answers, 0 otherwise."
    );
    describe_gauge!(POSTGRES_STATUS, "1 when PostgreSQL answers, 0 otherwise.");
    describe_worker();
}

/// Help texts of the dispatcher's metrics: described here, once per process, so they carry
/// them whether the worker runs alone or inside `engage serve --with-worker`.
fn describe_worker() {
    use metrics::describe_counter;
    describe_counter!(
        DISPATCHED,
        "Callback attempts written to the voice stream for the first time."
    );
    describe_counter!(
        DISPATCH_DUPLICATES,
        "Submissions the dedupe key turned into no-ops (already in the voice stream)."
    );
    describe_counter!(
        DISPATCH_PACED,
        "Due callbacks handed back to the schedule by dispatch pacing."
    );
    describe_counter!(
        RECONCILE_REBUILDS,
        "Rebuilds of the schedule index and queue views from PostgreSQL, by cause."
    );
    describe_counter!(
        INDEX_REPAIRED,
        "Due, unsubmitted callbacks the PostgreSQL sweep found missing from the schedule index."
    );
    describe_counter!(
        INDEX_LOADED,
        "Callbacks the horizon loader indexed as their time came within REDIS_SCHEDULE_HORIZON_S."
    );
    describe_counter!(
        QUEUE_VIEW_REPAIRED,
        "Queue-view members added or removed to match PostgreSQL, by action."
    );
    describe_counter!(
        CONTROL_SENT,
        "Control (cancel) entries written to the control stream, by path (api, outbox)."
    );
    describe_counter!(
        EXPIRED,
        "Callbacks ended by the worker (FAIL_TIMEOUT_TTL), by cause."
    );
    describe_counter!(PURGED, "Finished callbacks deleted by the retention purge.");
    describe_counter!(
        ORS_EVENTS,
        "Voice-platform events received, by outcome (applied, ignored, retry)."
    );
}

/// Renders the Prometheus text, refreshing the process metrics (CPU, memory, fds) first.
pub fn render() -> String {
    let handle = install();
    metrics_process::Collector::default().collect();
    handle.render()
}

/// Records one dependency check in its health gauge (1 = up).
pub fn set_health(gauge: &'static str, up: bool) {
    metrics::gauge!(gauge, "version" => env!("CARGO_PKG_VERSION")).set(if up { 1.0 } else { 0.0 });
}
