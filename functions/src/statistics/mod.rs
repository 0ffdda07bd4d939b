//! The GWS statistics proxy (docs/statistics.md): `POST
//! /engagement/v3/statistics/operations/get-statistic-ex` ([`get_statistic_ex`]) and the
//! statistic source of estimated-wait-time `mode3` ([`ewt`]). Both ask the tenant's GWS through
//! [`fetch`]: the service Redis's shared answer cache first, then [`gws`].

pub mod get_statistic_ex;
pub mod gws;

use axum::Router;
use serde_json::Value;
use shared::{
    credentials::GwsCredentials,
    error::Error,
    http::AppState,
    model::{
        ewt::Unknown,
        statistics::{body_hash, ewt_request, ewt_value},
    },
    redis::statistics::{self as cache, Cached},
};

use gws::GwsError;

/// All statistics routes.
pub fn router() -> Router<AppState> {
    get_statistic_ex::router()
}

/// The tenant's GWS credentials, `None` when none are registered.
pub async fn credentials(state: &AppState, tenant: &str) -> Result<Option<GwsCredentials>, Error> {
    state.vault.gws(&state.db, tenant).await
}

/// GWS's answer to `body` for `tenant`: a cached one when there is one no older than
/// `max_age_s` (any age up to `GWS_CACHE_TTL_S` without it), else a fresh one, then cached.
/// The cache is best effort: a Redis failure is logged and the call goes to GWS.
pub async fn fetch(
    state: &AppState,
    tenant: &str,
    creds: &GwsCredentials,
    body: &Value,
    max_age_s: Option<u64>,
) -> Result<Value, GwsError> {
    let hash = body_hash(&creds.statistics_url, &creds.client_id, body);
    let now = jiff::Timestamp::now().as_millisecond();
    let cached = cache::get(&state.redis, &state.keys, tenant, &hash)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "statistics cache unreadable; asking GWS");
            None
        });
    if let Some(hit) = cached
        && fresh(&hit, now, max_age_s, state.cfg.gws.gws_cache_ttl_s)
    {
        return Ok(hit.answer);
    }
    let answer = gws::client(&state.cfg.gws, state.cfg.http.request_timeout_ms)
        .get_statistic_ex(tenant, creds, body)
        .await?;
    let entry = Cached { at_ms: now, answer };
    let ttl = state.cfg.gws.gws_cache_ttl_s;
    if let Err(e) = cache::put(&state.redis, &state.keys, tenant, &hash, &entry, ttl).await {
        tracing::warn!(error = %e, "statistics cache not written");
    }
    Ok(entry.answer)
}

/// Whether a cached answer may be served: younger than `max_age_s` when given, and than the
/// cache's lifetime (Redis expires it then; a clock step must not stretch it).
fn fresh(hit: &Cached, now_ms: i64, max_age_s: Option<u64>, ttl_s: u64) -> bool {
    let limit_s = max_age_s.map_or(ttl_s, |m| m.min(ttl_s));
    let age_ms = now_ms.saturating_sub(hit.at_ms);
    age_ms >= 0 && age_ms <= i64::try_from(limit_s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Estimated wait time `mode3` for `service`: the service's `ewt_statistic` read from the
/// tenant's GWS (through the same cache), in seconds.
pub async fn ewt(state: &AppState, tenant: &str, service: &str) -> Result<i64, Unknown> {
    let statistic = match state.service(tenant, service).await {
        Ok(Some(s)) => s.body.ewt_statistic.clone(),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "service settings unreadable for mode3");
            return Err(Unknown::StatisticUnavailable);
        }
    };
    let statistic = statistic.ok_or(Unknown::NoStatistic)?;
    let creds = match credentials(state, tenant).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(Unknown::NoStatisticsSource),
        Err(e) => {
            tracing::warn!(error = %e, "GWS credentials unreadable for mode3");
            return Err(Unknown::StatisticUnavailable);
        }
    };
    let answer = fetch(
        state,
        tenant,
        &creds,
        &ewt_request(&statistic, service),
        None,
    )
    .await
    .map_err(|e| {
        tracing::warn!(error = %e, "GWS statistic unavailable for mode3");
        Unknown::StatisticUnavailable
    })?;
    ewt_value(&answer, &statistic, service).ok_or(Unknown::StatisticUnavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_follows_max_age_and_the_cache_lifetime() {
        let hit = Cached {
            at_ms: 100_000,
            answer: Value::Null,
        };
        assert!(fresh(&hit, 100_000 + 299_000, None, 300));
        assert!(!fresh(&hit, 100_000 + 301_000, None, 300));
        assert!(fresh(&hit, 100_000 + 20_000, Some(20), 300));
        assert!(!fresh(&hit, 100_000 + 20_001, Some(20), 300));
        assert!(!fresh(&hit, 100_000 + 301_000, Some(600), 300));
        // A clock that went back: not served.
        assert!(!fresh(&hit, 99_000, None, 300));
    }
}
