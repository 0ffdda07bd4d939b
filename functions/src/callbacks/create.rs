//! `POST /engagement/v3/callbacks/create`: book an immediate or scheduled callback.
//!
//! The callback is committed to PostgreSQL first (the answer means durable), then indexed in
//! Redis for dispatch (plain creates by the group-commit batcher, one round trip per batch and
//! shard; slot claims and Idempotency-Key creates here, after their transaction in
//! [`super::commit`]). Either way the request waits for the commit only until its deadline,
//! and a 503 leaves nothing stored (docs/bounded-answers.md). Stored times come from the
//! database's clock, not this host's. A failed Redis write does not fail the request: it is
//! logged and counted, and the worker's reconciler indexes the callback from PostgreSQL.
//! Business hours and slot capacity are checked in [`super::capacity`]; a scheduled
//! callback's slot place is claimed in the statement that inserts it.

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::{
    ApiError,
    db::{
        self,
        callbacks::{Idempotent, NewCallback},
    },
    http::ApiResult,
    http::{
        ApiTenant, AppState, Envelope,
        extract::{RawBody, from_value, parse_json},
    },
    metrics,
    model::{
        CallbackState, ServiceSettings, callback::CreateCallbackParms, service::CallDirection,
    },
    redis::schedule,
};
use uuid::Uuid;

use super::{capacity, commit, limits};

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route("/engagement/v3/callbacks/create", post(handler))
}

/// `CreateCallbackData`.
#[derive(Debug, Serialize)]
pub struct Created {
    /// The new callback's id.
    pub id: String,
}

/// How far in the past a desired time may be (clock skew of callers).
const PAST_TOLERANCE: SignedDuration = SignedDuration::from_secs(60);

async fn handler(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Envelope<Created>> {
    let key = idempotency_key(&headers)?;
    let (parms, keyed) = match key {
        // The request is compared with an earlier use of the key by a hash of its parsed
        // JSON (serde_json maps are ordered, so equal bodies hash equally whatever their
        // spacing): parsed once into a value for that, then converted.
        Some(key) => {
            let value: Value = parse_json(&body)?;
            let hash = Sha256::digest(serde_json::to_vec(&value).map_err(ApiError::internal)?);
            (from_value(value)?, Some((key, hash.into())))
        }
        None => (parse_json(&body)?, None),
    };
    let id = create(&state, &tenant, parms, keyed).await?;
    Ok(Envelope::ok(Created { id: id.to_string() }))
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.trim().is_empty() && s.len() <= 255 => Ok(Some(s.trim().to_string())),
        _ => Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// Validates, stores and indexes one callback; returns its id. `keyed`: the request's
/// Idempotency-Key and the hash of its body.
pub async fn create(
    state: &AppState,
    tenant: &str,
    parms: CreateCallbackParms,
    keyed: Option<(String, [u8; 32])>,
) -> ApiResult<Uuid> {
    let req = parms.validate()?;

    let service = state
        .cache
        .service(tenant, &req.service_name, async {
            let client = state.db.get().await?;
            db::services::find(&client, tenant, &req.service_name).await
        })
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("unknown service {}", req.service_name)))?;
    let s = &service.body;
    if !s.enabled {
        return Err(ApiError::bad_request(format!(
            "service {} is disabled",
            req.service_name
        )));
    }
    if s.call_direction == CallDirection::UserOriginated && req.push_targets.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pushTargets is required: service {} is USERORIGINATED",
            req.service_name
        )));
    }
    if s.captcha_required && req.captcha_token.is_none() {
        return Err(ApiError::bad_request(format!(
            "captchaToken is required by service {}",
            req.service_name
        )));
    }

    let now = Timestamp::now();
    let (state_, desired, dispatch_at) = match req.desired_time {
        None => {
            if !s.immediate_enabled {
                return Err(ApiError::bad_request(format!(
                    "service {} does not offer immediate callbacks",
                    req.service_name
                )));
            }
            (CallbackState::Queued, now, now)
        }
        Some(t) => {
            if !s.scheduled_enabled {
                return Err(ApiError::bad_request(format!(
                    "service {} does not offer scheduled callbacks",
                    req.service_name
                )));
            }
            if t < now - PAST_TOLERANCE {
                return Err(ApiError::bad_request("desiredTime is in the past"));
            }
            let horizon = now + SignedDuration::from_hours(24 * i64::from(s.max_days_ahead));
            if t > horizon {
                return Err(ApiError::bad_request(format!(
                    "desiredTime is more than {} days ahead (max_days_ahead of service {})",
                    s.max_days_ahead, req.service_name
                )));
            }
            // Not before the database's now(), applied by the insert (one clock).
            let lead = SignedDuration::from_secs(i64::from(s.lead_time_seconds));
            (CallbackState::Scheduled, t, t - lead)
        }
    };
    let client = state.db.get().await?;
    let booking = capacity::check(
        &client,
        tenant,
        &req.service_name,
        s,
        req.desired_time,
        req.always_check_capacity,
        now,
    )
    .await?;

    // Number rule (400), then create-time limits (429): reserved just before the insert,
    // given back when it does not happen (see `limits`).
    let number =
        limits::check_number(&client, tenant, &req.service_name, s, &req.phone_number).await?;
    let cb = NewCallback {
        id: Uuid::now_v7(),
        tenant: tenant.to_string(),
        service: req.service_name.clone(),
        state: state_,
        phone_number: req.phone_number,
        phone_e164: number.e164.clone(),
        desired_time: desired,
        dispatch_at,
        scheduled: req.desired_time.is_some(),
        priority: req.priority.unwrap_or(s.priority),
        attrs: req.attrs,
        user_data: req.user_data,
        slot: booking.claim,
    };
    let id = cb.id;
    // Some(at): stored, to be indexed at `at`; None: stored and already indexed (batcher).
    let result: ApiResult<Option<Timestamp>> = if keyed.is_none() && cb.slot.is_none() {
        batched(state, client, cb, s, &number).await
    } else {
        let job = commit::Job {
            state: state.clone(),
            cb,
            keyed,
            number,
            settings: s.clone(),
        };
        match commit::run(client, job).await {
            Ok(commit::Written::Stored(at)) => Ok(Some(at)),
            Ok(commit::Written::Earlier(earlier)) => return earlier_result(earlier),
            Err(e) => Err(e),
        }
    };
    let index_at = match result {
        Ok(at) => at,
        // Only a full slot needs the database again (the 429 proposes open slots).
        Err(e @ ApiError::TooManyRequests { data: None, .. }) if booking.claim.is_some() => {
            let client = state.db.get().await?;
            return Err(booking
                .explain(&client, tenant, &req.service_name, s, now, e)
                .await);
        }
        Err(e) => return Err(e),
    };
    ::metrics::counter!(metrics::CALLBACKS_CREATED, "tenant" => tenant.to_string()).increment(1);
    if let Some(at) = index_at {
        let entry = (id, at.as_millisecond());
        schedule::index_committed(&state.redis, &state.keys, &[entry]).await;
    }
    Ok(id)
}

/// A plain create through the group-commit batcher (which indexes what it commits). The
/// connection is given back first: the batcher draws from the same pool.
async fn batched(
    state: &AppState,
    client: deadpool_postgres::Object,
    cb: NewCallback,
    s: &ServiceSettings,
    number: &limits::Number,
) -> ApiResult<Option<Timestamp>> {
    let immediate = !cb.scheduled;
    let reservation = limits::reserve(
        state,
        &client,
        &cb.tenant,
        &cb.service,
        s,
        number,
        immediate,
        cb.id,
    )
    .await?;
    drop(client);
    shared::http::envelope::committing();
    let deadline = shared::http::envelope::commit_deadline();
    let inserted = state.inserts.insert(cb, deadline).await;
    if inserted.is_err() {
        // Off the request's path: the answer is due now (a 503 at the deadline).
        let state = state.clone();
        tokio::spawn(async move { reservation.give_back(&state).await });
    }
    Ok(inserted.map(|()| None)?)
}

/// The answer to a request whose Idempotency-Key was used before.
fn earlier_result(earlier: Idempotent) -> ApiResult<Uuid> {
    match earlier {
        Idempotent::Replayed(id) => Ok(id),
        _ => Err(ApiError::conflict(
            "Idempotency-Key was already used with a different request body",
        )),
    }
}
