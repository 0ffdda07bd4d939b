//! What create checks between service validation and the insert: the phone number (number
//! rule, normalisation) and the create-time limits (`shared::redis::throttle`).
//!
//! Order: limits are reserved in Redis just **before** the PostgreSQL insert, and given back
//! when the insert fails. Counting after the commit instead would need a separate check
//! before it, and two replicas could both pass the check at N − 1: only a reservation taken
//! atomically with the check keeps the limits exact. A process dying between reservation and
//! insert leaves a reservation behind: window entries expire with their window, the active
//! entry is dropped at the next re-seed. With an `Idempotency-Key`, create claims the key
//! first, so concurrent retries wait for the first one and never reserve quota themselves.
//!
//! Redis down or slow: the create goes ahead without limits (fail open), counted in
//! `engage_throttle_fail_open_total` and logged (docs/throttling.md).

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use deadpool_postgres::GenericClient;
use shared::{
    Error, db,
    error::Result,
    http::AppState,
    metrics,
    model::ServiceSettings,
    phone::{self, CompiledRule},
    redis::throttle::{self, Limits, ThrottleKeys, Verdict},
    telemetry::mask_phone,
};
use uuid::Uuid;

/// A phone number that passed the service's number rule.
#[derive(Debug, Clone)]
pub struct Number {
    /// E.164 without `+`, `None` when the number did not normalise (no rule): stored in
    /// `phone_e164`.
    pub e164: Option<String>,
    /// What the per-number limits key on (E.164 digits, else the digits as given).
    pub key: String,
}

/// Checks the number against the service's number rule (400 when refused) and normalises it.
pub async fn check_number(
    client: &impl GenericClient,
    tenant: &str,
    service: &str,
    settings: &ServiceSettings,
    phone_number: &str,
) -> Result<Number> {
    let rule = match &settings.number_rule {
        None => None,
        Some(name) => Some(number_rule(client, tenant, service, name).await?),
    };
    let checked = phone::check(phone_number, rule.as_deref())?;
    let key = phone::number_key(checked.e164.as_deref(), phone_number);
    Ok(Number {
        e164: checked.e164,
        key,
    })
}

/// Quota reserved for one callback; give it back when the callback is not inserted after all.
#[derive(Debug)]
#[must_use = "give the reservation back when the insert does not happen"]
pub struct Reservation(Option<(ThrottleKeys, Uuid)>);

impl Reservation {
    /// Returns the reserved quota (the callback was not inserted). Best effort: a failure is
    /// logged and left to the next re-seed.
    pub async fn give_back(self, state: &AppState) {
        let Some((tk, id)) = self.0 else {
            return;
        };
        let result = async {
            let mut conn = state.redis.conn().await?;
            throttle::give_back(&mut conn, &tk, id).await
        }
        .await;
        if let Err(e) = result {
            ::metrics::counter!(metrics::REDIS_WRITE_FAILED, "op" => "throttle_give_back")
                .increment(1);
            tracing::warn!(callback.id = %id, error = %e, "throttle give-back failed; the next re-seed repairs it");
        }
    }
}

/// Checks every create-time limit of the service and reserves quota for callback `id` (429
/// when a limit is reached). Redis failing: no reservation, the create goes ahead (fail open).
#[allow(
    clippy::too_many_arguments,
    reason = "the create handler's values, passed as they are"
)]
pub async fn reserve(
    state: &AppState,
    client: &impl GenericClient,
    tenant: &str,
    service: &str,
    settings: &ServiceSettings,
    number: &Number,
    immediate: bool,
    id: Uuid,
) -> Result<Reservation> {
    let tk = ThrottleKeys::new(&state.keys, tenant, service);
    let limits = Limits::of(settings, immediate);
    match run_script(
        state,
        client,
        tenant,
        service,
        &tk,
        id,
        &number.key,
        &limits,
    )
    .await
    {
        Ok(()) => Ok(Reservation(Some((tk, id)))),
        Err(Fail::Api(e)) => Err(e),
        Err(Fail::Redis(e)) => {
            ::metrics::counter!(metrics::THROTTLE_FAIL_OPEN, "tenant" => tenant.to_string())
                .increment(1);
            tracing::warn!(error = %e, service, "throttle unavailable: create admitted without limits (fail open)");
            Ok(Reservation(None))
        }
    }
}

enum Fail {
    Api(Error),
    Redis(redis::RedisError),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Self::Api(e)
    }
}

impl From<redis::RedisError> for Fail {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}

/// Runs the check-and-count script (re-seeding first when it asks); `Ok` = reserved.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
async fn run_script(
    state: &AppState,
    client: &impl GenericClient,
    tenant: &str,
    service: &str,
    tk: &ThrottleKeys,
    id: Uuid,
    number: &str,
    limits: &Limits,
) -> Result<(), Fail> {
    let mut conn = state.redis.conn().await?;
    for _ in 0..2 {
        match throttle::check_and_count(&mut conn, tk, id, number, limits).await? {
            Verdict::Admitted => return Ok(()),
            Verdict::Rejected(r) => {
                ::metrics::counter!(r.limit.counter(), "tenant" => tenant.to_string(),
                    "limit" => r.limit.name())
                .increment(1);
                tracing::info!(service, limit = r.limit.name(), number = %mask_phone(number), "create throttled");
                let retry_after_s = r.frees_at.map(|t| {
                    let s = t
                        .duration_since(jiff::Timestamp::now())
                        .as_secs_f64()
                        .ceil();
                    s.max(1.0) as u64
                });
                return Err(Error::LimitReached {
                    message: r.message(service),
                    data: None,
                    retry_after_s,
                }
                .into());
            }
            Verdict::NeedsSeed => {
                let active = db::throttle::active(client, tenant, service).await?;
                let horizon = throttle::recent_horizon_s(limits);
                let recent = db::throttle::recent(client, tenant, service, horizon).await?;
                if active.len() as i64 >= db::throttle::SEED_ROW_CAP
                    || recent.len() as i64 >= db::throttle::SEED_ROW_CAP
                {
                    tracing::warn!(
                        service,
                        "throttle seed capped at {} rows",
                        db::throttle::SEED_ROW_CAP
                    );
                }
                let held = throttle::seed(
                    &mut conn,
                    tk,
                    limits,
                    &active,
                    &recent,
                    state.cfg.redis.throttle_reseed_seconds,
                )
                .await?;
                tracing::debug!(service, active = held, "throttle state re-seeded");
            }
        }
    }
    // Asked to seed twice in a row: only possible if the state vanished meanwhile.
    Err(Fail::Redis(redis::RedisError::from((
        redis::ErrorKind::Client,
        "throttle state did not stay seeded",
    ))))
}

/// Compiled rules by (tenant, name), with the version they were compiled from.
type RuleCache = HashMap<(String, String), (i32, Arc<CompiledRule>)>;
static RULES: LazyLock<Mutex<RuleCache>> = LazyLock::new(Default::default);
const RULE_CACHE_MAX: usize = 1024;

/// The service's number rule, compiled (cached per rule version).
async fn number_rule(
    client: &impl GenericClient,
    tenant: &str,
    service: &str,
    name: &str,
) -> Result<Arc<CompiledRule>> {
    let stored = db::number_rules::find(client, tenant, name)
        .await?
        .ok_or_else(|| {
            Error::invalid(format!(
                "service {service} is misconfigured: its number rule {name} does not exist; \
                 contact the administrator"
            ))
        })?;
    let key = (tenant.to_string(), name.to_string());
    if let Some((version, rule)) = RULES.lock().map_err(poisoned)?.get(&key)
        && *version == stored.version
    {
        return Ok(rule.clone());
    }
    // Stored rules were validated at PUT; a failure here means the stored JSON was edited.
    let compiled = Arc::new(stored.body.compile().map_err(|e| {
        Error::internal(anyhow::anyhow!(
            "stored number rule {name} does not compile: {}",
            e
        ))
    })?);
    let mut cache = RULES.lock().map_err(poisoned)?;
    if cache.len() >= RULE_CACHE_MAX {
        cache.clear();
    }
    cache.insert(key, (stored.version, compiled.clone()));
    Ok(compiled)
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> Error {
    Error::internal(anyhow::anyhow!("number-rule cache lock poisoned"))
}
