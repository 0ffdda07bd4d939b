//! The middleware stack: request context (correlation id, timeout, metrics, access log),
//! panic catching, and the public-port hardening (allowlist is the router itself; here the
//! `ccid` header rejection, the body limit and the per-API-key request rate; CORS is in
//! `http::cors`).

use std::{
    hash::{BuildHasher, RandomState},
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, HttpBody},
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderMap, Method, Uri, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use shared::redis::{Keys, RedisHandle};
use tower_http::catch_panic::CatchPanicLayer;

use super::{
    envelope::{ANSWER_MARGIN, CTX, RequestCtx, new_corr_id},
    errors::{ErrorMessage, ErrorSink},
    key_rate::{FleetRate, Verdict},
};
use crate::db::api_errors::FailedCallRecord;
use crate::{http::ApiError, metrics};

/// Which port a router serves; decides limits and hardening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// The public Engagement API: allowlisted routes, 500 KB bodies, no ccid headers.
    External,
    /// Everything else (admin, UI, voice events, metrics): 10 MB bodies.
    Internal,
}

/// Applies the whole stack to a router; failed calls of known tenants go to `errors`. The
/// per-API-key rate applies per replica only; see [`stack_with_fleet`].
pub fn stack(
    router: Router,
    exposure: Exposure,
    http: &crate::config::HttpConfig,
    errors: ErrorSink,
) -> Router {
    stack_with_fleet(router, exposure, http, errors, None)
}

/// [`stack`], with the per-API-key rate held across replicas on the service Redis (`fleet`:
/// its handle and key layout; the external port of the serving binaries).
pub fn stack_with_fleet(
    router: Router,
    exposure: Exposure,
    http: &crate::config::HttpConfig,
    errors: ErrorSink,
    fleet: Option<(RedisHandle, Keys)>,
) -> Router {
    let limit = match exposure {
        Exposure::External => http.external_body_limit,
        Exposure::Internal => http.internal_body_limit,
    };
    let edge = Arc::new(Edge {
        timeout: Duration::from_millis(http.request_timeout_ms),
        errors,
        limit,
        external: exposure == Exposure::External,
        key_rate: (exposure == Exposure::External)
            .then(|| KeyRate::new(http, fleet))
            .flatten(),
    });
    // One layer of the router (each costs every request a boxed service and a boxed future,
    // docs/costs.md#create-throughput-against-the-postgresql-insert-ceiling): the edge's
    // middleware outermost, then the body limit, then panic catching around the handler.
    let layers = tower::ServiceBuilder::new()
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            request_context(edge.clone(), req, next)
        }))
        .layer(DefaultBodyLimit::max(limit))
        .layer(CatchPanicLayer::custom(on_panic));
    router
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::not_found(format!("no such route: {method} {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::MethodNotAllowed(format!("method {method} is not allowed on {}", uri.path()))
        })
        .layer(layers)
}

/// What the edge middleware of a port applies.
struct Edge {
    timeout: Duration,
    errors: ErrorSink,
    /// This port's body limit.
    limit: usize,
    /// The public port: no `ccid` headers.
    external: bool,
    /// The per-API-key request rate (public port, when configured).
    key_rate: Option<KeyRate>,
}

/// Sets the request context, bounds the request's time, records metrics and the access log;
/// within them, [`screen`]s the request before the handler.
async fn request_context(edge: Arc<Edge>, req: Request, next: Next) -> Response {
    let timeout = edge.timeout;
    let ctx = Arc::new(RequestCtx {
        corr_id: new_corr_id(),
        tenant: Default::default(),
        committing: Default::default(),
        timeout_at: tokio::time::Instant::now() + timeout,
    });
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let started = Instant::now();
    let span =
        tracing::info_span!("request", corrId = %ctx.corr_id, route = %path, method = %method);
    let (req, awaiting_client) = track_body(req);
    let run = CTX.scope(
        ctx.clone(),
        bounded(
            ctx.clone(),
            timeout,
            awaiting_client,
            screen(&edge, req, next),
        ),
    );
    let resp = tracing::Instrument::instrument(run, span.clone()).await;
    observe(
        &ctx,
        &edge.errors,
        &span,
        &path,
        &method,
        started.elapsed(),
        &resp,
    );
    resp
}

/// The checks before the handler, in this order: the per-API-key rate, the `ccid` headers
/// (public port), the declared body size; then the handler.
async fn screen(edge: &Edge, req: Request, next: Next) -> Response {
    if let Some(limits) = &edge.key_rate
        && let Some(refused) = api_key_rate(limits, req.headers()).await
    {
        return refused;
    }
    if edge.external && carries_ccid(&req) {
        return ApiError::bad_request(
            "ccid and ContactCenterID headers are not accepted on the public API",
        )
        .into_response();
    }
    if let Some(n) = declared_length(&req).filter(|n| *n > edge.limit as u64) {
        return too_large(edge.limit, n, req).await;
    }
    next.run(req).await
}

/// Runs the handler within the request's time; a write that may be committing gets its grace:
/// the handler gives the write up at its commit deadline and answers; past the margin the
/// handler is dropped, which gives its write up too (see `envelope::committing`).
async fn bounded(
    ctx: Arc<RequestCtx>,
    timeout: Duration,
    awaiting_client: Arc<AtomicBool>,
    handler: impl Future<Output = Response>,
) -> Response {
    tokio::pin!(handler);
    match tokio::time::timeout(timeout, &mut handler).await {
        Ok(resp) => resp,
        Err(_) if ctx.committing.load(Ordering::Acquire) => {
            tracing::warn!("request past its timeout while committing; waiting for the outcome");
            match tokio::time::timeout(ANSWER_MARGIN, &mut handler).await {
                Ok(resp) => resp,
                Err(_) => ApiError::unavailable("request timed out").into_response(),
            }
        }
        // The handler waits for a body the client is still sending: the client's delay, and
        // nothing was done with the request yet (docs/http-server.md#header-read-timeout).
        Err(_) if awaiting_client.load(Ordering::Acquire) => ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} ms",
            timeout.as_millis()
        ))
        .into_response(),
        Err(_) => ApiError::unavailable("request timed out").into_response(),
    }
}

/// Wraps the request body so that the deadline can tell a handler waiting for the client's
/// body (408) from a slow answer (503): the flag is up while the last read of the body is
/// pending on the client. A body the handler has not started reading (e.g. still checking the
/// API key) counts as the server's delay.
fn track_body(req: Request) -> (Request, Arc<AtomicBool>) {
    let awaiting_client = Arc::new(AtomicBool::new(false));
    if req.body().is_end_stream() {
        return (req, awaiting_client);
    }
    let flag = awaiting_client.clone();
    let (parts, body) = req.into_parts();
    let mut inner = body.into_data_stream();
    let tracked = futures::stream::poll_fn(move |cx| {
        let polled = futures::StreamExt::poll_next_unpin(&mut inner, cx);
        flag.store(polled.is_pending(), Ordering::Release);
        polled
    });
    (
        Request::from_parts(parts, Body::from_stream(tracked)),
        awaiting_client,
    )
}

/// After the answer: request metrics (route templates only), the failed-call record of a
/// known tenant, and the access log line.
fn observe(
    ctx: &RequestCtx,
    errors: &ErrorSink,
    span: &tracing::Span,
    path: &str,
    method: &Method,
    elapsed: Duration,
    resp: &Response,
) {
    let code = resp.status().as_u16();
    let tenant = ctx
        .tenant
        .get()
        .cloned()
        .unwrap_or_else(|| "Unknown Tenant".into());
    // Route templates only: raw paths would make the label set unbounded.
    let path_label = if path.starts_with("/ges/") && !path.starts_with("/ges/v1/health") {
        "Private API Endpoint".to_string()
    } else {
        path.to_string()
    };
    ::metrics::counter!(metrics::HTTP_REQUESTS, "tenant" => tenant.clone(), "path" => path_label.clone())
        .increment(1);
    if code >= 400 {
        ::metrics::counter!(metrics::HTTP_FAILED, "tenant" => tenant.clone(), "path" => path_label.clone(),
            "httpCode" => code.to_string())
        .increment(1);
    }
    ::metrics::histogram!(metrics::HTTP_DURATION, "path" => path_label)
        .record(elapsed.as_secs_f64());
    if code >= 400
        && let Some(tenant) = ctx.tenant.get()
        && let Ok(corr_id) = uuid::Uuid::parse_str(&ctx.corr_id)
    {
        errors.record(FailedCallRecord {
            corr_id,
            tenant: tenant.clone(),
            method: method.to_string(),
            route: path.to_string(),
            status: i16::try_from(code).unwrap_or(i16::MAX),
            message: resp
                .extensions()
                .get::<ErrorMessage>()
                .map(|m| m.0.clone())
                .unwrap_or_default(),
            time: None,
        });
    }
    span.in_scope(|| {
        tracing::info!(tenant = %tenant, status = code, latency_ms = elapsed.as_secs_f64() * 1e3, "request");
    });
}

/// The body size the request declares (`Content-Length`), if it declares one.
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// 413 for a declared body size `n` over `limit`, answered before the body is read.
async fn too_large(limit: usize, n: u64, req: Request) -> Response {
    ::metrics::counter!(metrics::INVALID_CONTENT_LENGTH).increment(1);
    // Read (and drop) a moderately oversized body before answering: a client still
    // sending when the connection closes never sees the 413, only a reset.
    if n <= (limit + DRAIN_MAX) as u64 {
        let mut body = req.into_body().into_data_stream();
        let drain = async { while let Some(Ok(_)) = futures::StreamExt::next(&mut body).await {} };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    }
    let mut resp = ApiError::PayloadTooLarge(format!(
        "request body is over this port's limit of {limit} bytes"
    ))
    .into_response();
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}

/// Most bytes past the limit read and dropped so that the client receives its 413.
const DRAIN_MAX: usize = 2 * 1024 * 1024;
/// Longest time spent draining an oversized body.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the request names a tenant by header, which the public port never accepts: only
/// the API key decides it.
fn carries_ccid(req: &Request) -> bool {
    ["ccid", "contactcenterid"].iter().any(|name| {
        req.headers()
            .get_all(*name)
            .iter()
            .any(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
    })
}

/// The per-API-key request rate of the public port (`API_KEY_RATE_PER_SECOND`,
/// `API_KEY_BURST`): each replica applies it on its own (`limiter`), and with `fleet` the
/// replicas together hold it too, with a bounded overshoot (docs/throttling.md).
struct KeyRate {
    limiter: DefaultKeyedRateLimiter<u64>,
    fleet: Option<FleetRate>,
    /// Keys are hashed with a per-process random key: fixed-size entries, no raw keys kept.
    hasher: RandomState,
    rate: u32,
    burst: u32,
    calls: AtomicU64,
}

/// Idle keys are dropped from the limiter every this many requests.
const KEY_RATE_SWEEP_EVERY: u64 = 4096;

impl KeyRate {
    fn new(http: &crate::config::HttpConfig, fleet: Option<(RedisHandle, Keys)>) -> Option<Self> {
        let rate = NonZeroU32::new(http.api_key_rate_per_second)?;
        let burst = NonZeroU32::new(http.api_key_burst).unwrap_or(rate);
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            fleet: fleet.map(|(redis, keys)| FleetRate::new(redis, keys, rate, burst)),
            hasher: RandomState::new(),
            rate: rate.get(),
            burst: burst.get(),
            calls: AtomicU64::new(0),
        })
    }
}

/// The 429 of an API key over its request rate; requests without a key pass (they get 401).
async fn api_key_rate(limits: &KeyRate, headers: &HeaderMap) -> Option<Response> {
    if let Some(key) = headers.get("x-api-key") {
        if limits
            .calls
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(KEY_RATE_SWEEP_EVERY)
        {
            limits.limiter.retain_recent();
            if let Some(f) = &limits.fleet {
                f.sweep();
            }
        }
        let hashed = limits.hasher.hash_one(key.as_bytes());
        if let Err(not_until) = limits.limiter.check_key(&hashed) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Some(limits.refuse(wait));
        }
        if let Some(f) = &limits.fleet
            && let Verdict::Wait(wait) = f.check(hashed, key.as_bytes()).await
        {
            return Some(limits.refuse(wait));
        }
    }
    None
}

impl KeyRate {
    /// 429 with the wait in the message and in `Retry-After` (whole seconds, rounded up).
    fn refuse(&self, wait: Duration) -> Response {
        ::metrics::counter!(metrics::API_KEY_RATE_LIMITED).increment(1);
        ApiError::TooManyRequests {
            message: format!(
                "request rate limit reached: {} requests per second per API key (bursts of {}); \
                 retry after {} ms",
                self.rate,
                self.burst,
                wait.as_millis().max(1)
            ),
            data: None,
            retry_after_s: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
        }
        .into_response()
    }
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ::metrics::counter!(metrics::UNCAUGHT_EXCEPTION).increment(1);
    ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request as HttpRequest, routing::get};
    use tower::ServiceExt;

    use super::*;

    fn http_config() -> crate::config::HttpConfig {
        crate::Config::from_vars([("DATABASE_URL".to_string(), "postgres://u@h/d".to_string())])
            .expect("valid config")
            .http
    }

    async fn call(app: Router, req: HttpRequest<Body>) -> (u16, serde_json::Value) {
        let resp = app.oneshot(req).await.expect("infallible");
        let code = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (code, serde_json::from_slice(&bytes).expect("envelope JSON"))
    }

    #[tokio::test]
    async fn panics_answer_500_in_the_envelope_and_are_counted() {
        let handle = metrics::install();
        let router = Router::new().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("handler bug");
                }
                "unreachable"
            }),
        );
        let app = stack(
            router,
            Exposure::Internal,
            &http_config(),
            ErrorSink::disabled(),
        );
        let req = HttpRequest::get("/boom")
            .body(Body::empty())
            .expect("request");
        let (code, body) = call(app, req).await;
        assert_eq!(code, 500);
        assert_eq!(body["status"]["code"], 500);
        assert!(
            body["status"]["message"]
                .as_str()
                .unwrap()
                .contains("corrId")
        );
        assert!(
            !body.to_string().contains("handler bug"),
            "the cause is not sent"
        );
        assert!(handle.render().lines().any(|l| l == "UNCAUGHT_EXCEPTION 1"));
    }

    #[tokio::test]
    async fn oversize_declared_length_is_413_before_reading() {
        let router = Router::new().route("/x", axum::routing::post(|| async { "ok" }));
        let app = stack(
            router,
            Exposure::External,
            &http_config(),
            ErrorSink::disabled(),
        );
        let req = HttpRequest::post("/x")
            .header(header::CONTENT_LENGTH, "600000")
            .body(Body::from(vec![b' '; 600_000]))
            .expect("request");
        let (code, body) = call(app, req).await;
        assert_eq!(code, 413);
        assert_eq!(body["status"]["code"], 413);
    }

    /// A deadline passed while the handler waits for the client's body is the client's: 408;
    /// one passed before the handler reads the body (a slow backend) stays 503.
    #[tokio::test]
    async fn a_body_still_arriving_at_the_deadline_is_408_a_slow_handler_503() {
        let mut http = http_config();
        http.request_timeout_ms = 200;
        let router = Router::new()
            .route(
                "/reads",
                axum::routing::post(|body: Body| async move {
                    let _ = axum::body::to_bytes(body, 1024).await;
                    "read"
                }),
            )
            .route(
                "/stalls",
                axum::routing::post(|_body: Body| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late"
                }),
            );
        let app = stack(router, Exposure::Internal, &http, ErrorSink::disabled());
        let never_ends = || {
            let chunks = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("{"))]);
            Body::from_stream(futures::StreamExt::chain(
                chunks,
                futures::stream::pending(),
            ))
        };
        for (path, code) in [("/reads", 408), ("/stalls", 503)] {
            let req = HttpRequest::post(path).body(never_ends()).expect("request");
            let (got, body) = call(app.clone(), req).await;
            assert_eq!(got, code, "{path}: {body}");
            assert_eq!(body["status"]["code"], code);
        }
    }
}
