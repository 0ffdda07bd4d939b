//! The middleware stack: request context (correlation id, timeout, metrics, access log),
//! panic catching, and the public-port hardening (allowlist is the router itself; here the
//! `ccid` header rejection and the body limit).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::header,
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower_http::catch_panic::CatchPanicLayer;

use super::{
    envelope::{CTX, RequestCtx, new_corr_id},
    errors::{ErrorMessage, ErrorSink},
};
use crate::db::api_errors::ApiErrorRecord;
use crate::{error::ApiError, metrics};

/// Which port a router serves; decides limits and hardening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// The public Engagement API: allowlisted routes, 500 KB bodies, no ccid headers.
    External,
    /// Everything else (admin, UI, voice events, metrics): 10 MB bodies.
    Internal,
}

/// Applies the whole stack to a router; failed calls of known tenants go to `errors`.
pub fn stack(
    router: Router,
    exposure: Exposure,
    http: &crate::config::HttpConfig,
    errors: ErrorSink,
) -> Router {
    let limit = match exposure {
        Exposure::External => http.external_body_limit,
        Exposure::Internal => http.internal_body_limit,
    };
    let timeout = Duration::from_millis(http.request_timeout_ms);
    let mut router = router
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::bad_request("method not allowed on this route")
        })
        .layer(CatchPanicLayer::custom(on_panic))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            content_length_limit(limit, req, next)
        }));
    if exposure == Exposure::External {
        router = router.layer(middleware::from_fn(reject_ccid_headers));
    }
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        request_context(timeout, errors.clone(), req, next)
    }))
}

/// Sets the request context, bounds the request's time, records metrics and the access log.
async fn request_context(
    timeout: Duration,
    errors: ErrorSink,
    req: Request,
    next: Next,
) -> Response {
    let ctx = Arc::new(RequestCtx {
        corr_id: new_corr_id(),
        tenant: Default::default(),
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
    let run = CTX.scope(ctx.clone(), async move {
        match tokio::time::timeout(timeout, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => ApiError::Unavailable("request timed out".into()).into_response(),
        }
    });
    let resp = tracing::Instrument::instrument(run, span.clone()).await;
    let elapsed = started.elapsed();
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
        path.clone()
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
        errors.record(ApiErrorRecord {
            corr_id,
            tenant: tenant.clone(),
            method: method.to_string(),
            route: path.clone(),
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
    resp
}

/// Rejects a declared body size over the limit before reading it.
async fn content_length_limit(limit: usize, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        ::metrics::counter!(metrics::INVALID_CONTENT_LENGTH).increment(1);
        return ApiError::PayloadTooLarge(format!(
            "request body is over this port's limit of {limit} bytes"
        ))
        .into_response();
    }
    next.run(req).await
}

/// The public port never accepts a tenant given by header: only the API key decides it.
async fn reject_ccid_headers(req: Request, next: Next) -> Response {
    let carries = ["ccid", "contactcenterid"].iter().any(|name| {
        req.headers()
            .get_all(*name)
            .iter()
            .any(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
    });
    if carries {
        return ApiError::bad_request(
            "ccid and ContactCenterID headers are not accepted on the public API",
        )
        .into_response();
    }
    next.run(req).await
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
}
