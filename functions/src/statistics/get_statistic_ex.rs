//! `POST /engagement/v3/statistics/operations/get-statistic-ex` (docs/statistics.md): the body
//! (GWS's get-statistic-ex body, a JSON object) goes to the tenant's GWS; `data` is GWS's answer
//! as sent. `cache-control: max-age=N` (N ≥ 15) refuses cached answers older than N seconds.
//!
//! Checks in order: `cache-control` (400), the tenant's GWS credentials (401 when none), the
//! body (400 when absent or not a JSON object, 413 over `GWS_MAX_BODY_BYTES`). GWS rejecting the
//! credentials is 401, refusing the body 400, failing or not answering in time 503.

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use serde_json::Value;
use shared::{
    ApiError,
    http::{
        ApiResult, ApiTenant, AppState, Envelope,
        extract::{RawBody, parse_json},
    },
    model::statistics::max_age,
};

use super::gws::GwsError;

/// What a tenant without GWS credentials is told.
pub const NO_CREDENTIALS: &str = "no GWS credentials are registered for this tenant: an \
     administrator registers them with PUT /ges/v1/tenants/{ccid}/credentials/gws";

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/engagement/v3/statistics/operations/get-statistic-ex",
        post(handler),
    )
}

async fn handler(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> ApiResult<Envelope<Value>> {
    let cache_control = match headers.get("cache-control") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("cache-control must be visible ASCII"))?,
        ),
        None => None,
    };
    let max_age_s = max_age(cache_control)?;
    let creds = super::credentials(&state, &tenant)
        .await?
        .ok_or_else(|| ApiError::unauthorized(NO_CREDENTIALS))?;
    let body = request_body(&bytes, state.cfg.gws.gws_max_body_bytes)?;
    let answer = super::fetch(&state, &tenant, &creds, &body, max_age_s)
        .await
        .map_err(to_api)?;
    Ok(Envelope::ok(answer))
}

/// The body as a JSON object, at most `limit` bytes.
fn request_body(bytes: &[u8], limit: usize) -> ApiResult<Value> {
    if bytes.len() > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "the statistics request body is over {limit} bytes (GWS_MAX_BODY_BYTES)"
        )));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is required: GWS's get-statistic-ex body, e.g. {\"data\":{\"statistics\":\
             [{\"name\":\"…\",\"objectId\":\"…\",\"objectType\":\"Queue\"}]}}",
        ));
    }
    let map: serde_json::Map<String, Value> = parse_json(bytes)?;
    Ok(Value::Object(map))
}

/// The one mapping of GWS failures onto the API's answers.
fn to_api(e: GwsError) -> ApiError {
    match e {
        GwsError::Rejected => ApiError::unauthorized(
            "GWS rejected this tenant's GWS client credentials; an administrator must correct \
             them (PUT /ges/v1/tenants/{ccid}/credentials/gws)",
        ),
        GwsError::Refused(message) => {
            ApiError::bad_request(format!("GWS refused the statistics request: {message}"))
        }
        GwsError::Server(cause) => ApiError::Unavailable {
            message: "GWS statistics unavailable, retry later".into(),
            cause: Some(cause),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_objects_within_the_limit() {
        assert!(request_body(b"{\"data\":{}}", 100).is_ok());
        for bad in [&b""[..], b"  ", b"[]", b"1", b"{", b"null"] {
            let e = request_body(bad, 100).unwrap_err();
            assert_eq!(e.status_code(), 400, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            request_body(&[b' '; 101], 100).unwrap_err().status_code(),
            413
        );
    }

    #[test]
    fn gws_failures_map_once() {
        assert_eq!(to_api(GwsError::Rejected).status_code(), 401);
        assert_eq!(to_api(GwsError::Refused("x".into())).status_code(), 400);
        assert_eq!(to_api(GwsError::Server("x".into())).status_code(), 503);
    }
}
