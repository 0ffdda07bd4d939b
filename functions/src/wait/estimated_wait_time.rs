//! `GET /engagement/v3/estimated-wait-time?virtual-queues=a,b&mode=mode1|mode2|mode3`: one
//! estimate per virtual queue (docs/ges-behavior.md#estimated-wait-time). Per-queue problems
//! are in-band (`-1` and a `message`: unknown service, no history yet, no agent activity, no
//! statistics source); a missing `virtual-queues` or an unknown `mode` is 400.
//! Each item carries `resultCode` (0 valid, -1 unknown, -2 no agent serving the queue).
//! `include-calls-on-hold` must be `true` or `false` when given, and changes nothing: Engage's
//! queues hold callbacks only, and a callback is never on hold (docs/decisions.md#estimated-wait-time).

use std::collections::BTreeMap;

use axum::{Router, extract::State, routing::get};
use futures::future::join_all;
use shared::{
    ApiError,
    http::ApiResult,
    http::{ApiTenant, AppState, Envelope, Query},
    model::ewt::{EstimatedWaitTime, Mode},
};

/// Most virtual queues in one request.
pub const MAX_QUEUES: usize = 50;

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route("/engagement/v3/estimated-wait-time", get(handler))
}

/// The queue names of `virtual-queues` (comma-separated, blanks dropped).
fn queues(params: &BTreeMap<String, String>) -> ApiResult<Vec<String>> {
    let names: Vec<String> = params
        .get("virtual-queues")
        .map(String::as_str)
        .map(shared::config::comma_list)
        .unwrap_or_default();
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "virtual-queues is required: comma-separated virtual queue names",
        ));
    }
    if names.len() > MAX_QUEUES {
        return Err(ApiError::bad_request(format!(
            "virtual-queues names at most {MAX_QUEUES} queues"
        )));
    }
    Ok(names)
}

/// `include-calls-on-hold`, when given, must be a boolean; it has no effect (module doc).
fn on_hold(params: &BTreeMap<String, String>) -> ApiResult<()> {
    match params.get("include-calls-on-hold").map(|v| v.trim()) {
        None | Some("") => Ok(()),
        Some(v) if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "include-calls-on-hold must be true or false",
        )),
    }
}

async fn handler(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Envelope<Vec<EstimatedWaitTime>>> {
    let mode = Mode::parse(params.get("mode").map(String::as_str))
        .ok_or_else(|| ApiError::bad_request("mode must be one of mode1, mode2, mode3"))?;
    on_hold(&params)?;
    let names = queues(&params)?;
    // The queues are estimated together, not one after the other: a mode3 estimate may wait
    // for GWS up to its timeout, and one such wait per queue in a row would outlast the
    // request's deadline (docs/statistics.md#ewt-mode3).
    let items = join_all(
        names
            .into_iter()
            .map(|name| item(&state, &tenant, name, mode)),
    )
    .await;
    Ok(Envelope::ok(items.into_iter().collect::<ApiResult<_>>()?))
}

/// The answer's item for one queue.
async fn item(
    state: &AppState,
    tenant: &str,
    name: String,
    mode: Mode,
) -> ApiResult<EstimatedWaitTime> {
    let known = state.service(tenant, &name).await?.is_some();
    let estimate = if known {
        super::for_service(state, tenant, &name, mode)
            .await
            .map_err(|m| (m.message(), m.result_code()))
    } else {
        Err(("unknown service".to_string(), -1))
    };
    Ok(match estimate {
        Ok(secs) => EstimatedWaitTime {
            virtual_queue: name,
            estimated_wait_time: secs,
            message: None,
            result_code: 0,
        },
        Err((message, result_code)) => EstimatedWaitTime {
            virtual_queue: name,
            estimated_wait_time: -1,
            message: Some(message),
            result_code,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("virtual-queues".to_string(), v.to_string())])
    }

    #[test]
    fn include_calls_on_hold_is_a_boolean() {
        let with = |v: &str| BTreeMap::from([("include-calls-on-hold".into(), v.into())]);
        assert!(on_hold(&BTreeMap::new()).is_ok());
        assert!(on_hold(&with("TRUE")).is_ok());
        assert!(on_hold(&with("false")).is_ok());
        assert!(on_hold(&with("yes")).is_err());
    }

    #[test]
    fn queue_names_are_required_and_trimmed() {
        assert_eq!(queues(&params(" a, b ,,c")).unwrap(), ["a", "b", "c"]);
        assert!(queues(&params(" , ")).is_err());
        assert!(queues(&BTreeMap::new()).is_err());
        let many = vec!["q"; MAX_QUEUES + 1].join(",");
        assert!(queues(&params(&many)).is_err());
    }
}
