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

use deadpool_postgres::{GenericClient, Transaction};
use shared::{
    db::{self, callbacks::NewCallback},
    error::{Error, Result},
    http::AppState,
    metrics,
    phone::{self, CompiledRule},
    redis::{
        admission,
        throttle::{self, Field, Limits, Rejection, ThrottleKeys, Verdict},
    },
    telemetry::mask_phone,
};
use uuid::Uuid;

use super::{Conn, Ctx};

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
/// Only a service with a rule takes a connection (`conn`) to read it.
pub async fn check_number(conn: &mut Conn<'_>, ctx: &Ctx, phone_number: &str) -> Result<Number> {
    let rule = match &ctx.settings().number_rule {
        None => None,
        Some(name) => Some(number_rule(conn.get().await?, &ctx.tenant, ctx.name(), name).await?),
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
pub struct Reservation(Option<(ThrottleKeys, Limits, Uuid)>);

impl Reservation {
    /// Whether quota is reserved (not when the limits failed open or the callback was counted
    /// already).
    pub fn holds(&self) -> bool {
        self.0.is_some()
    }

    /// Returns the reserved quota (the callback was not inserted). Best effort: a failure is
    /// logged and left to the next re-seed.
    pub async fn give_back(self, state: &AppState) {
        let Some((tk, limits, id)) = self.0 else {
            return;
        };
        admission::give_back_logged(&state.redis, &tk, &limits, id).await;
    }

    /// What [`Restore`] needs to count the callback again, without giving anything back.
    pub fn into_restore(self) -> Option<Restore> {
        self.0.map(|(tk, limits, id)| Restore(tk, limits, id))
    }

    /// [`Self::give_back`], keeping what [`Restore`] needs to count the callback again.
    pub async fn give_back_restorable(self, state: &AppState) -> Option<Restore> {
        let (tk, limits, id) = self.0?;
        admission::give_back_logged(&state.redis, &tk, &limits, id).await;
        Some(Restore(tk, limits, id))
    }
}

/// A reservation given back by a withdrawal that then kept the callback after all
/// ([`Reservation::give_back_restorable`]).
#[derive(Debug)]
pub struct Restore(ThrottleKeys, Limits, Uuid);

impl Restore {
    /// Gives the reservation back once more (a no-op while it is given back): an attempt that
    /// withdraws the callback after a re-seed counted it again from PostgreSQL frees that
    /// count too.
    pub async fn give_back_again(&self, state: &AppState) {
        let Self(tk, limits, id) = self;
        admission::give_back_logged(&state.redis, tk, limits, *id).await;
    }

    /// Counts the callback (number key `number`) as admitted and active again; best effort.
    /// Call while holding its row locked and seen active (`Withdrawn::kept_active`).
    pub async fn count_again(self, state: &AppState, number: &str) {
        let Self(tk, limits, id) = self;
        admission::restore_logged(&state.redis, &tk, (&limits, id, number)).await;
    }
}

/// How often a create asks again while another caller re-seeds, and how long it waits
/// between asks: a re-seed takes milliseconds; after these the create re-seeds itself.
const BUSY_ROUNDS: u32 = 50;
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(20);
/// How many re-seeds one create may run before it fails open: asked for another right after
/// its own, the state was lost or expired again meanwhile (a flush, a failover, a forced
/// deadline), which a second seed heals; asked for a fourth, Redis keeps losing it.
const SEED_ROUNDS: u32 = 3;

/// Checks every create-time limit of the service and reserves quota for `cb` (a limit
/// reached is [`Error::LimitReached`]). Redis failing: no reservation, the create goes ahead
/// (fail open). PostgreSQL failing while re-seeding fails the create. A re-seed reads
/// PostgreSQL in `tx` when given, else on a connection taken from the pool only then: a plain
/// create holds none while Redis admits it (docs/costs.md#create-throughput-against-the-postgresql-insert-ceiling).
pub async fn reserve(
    ctx: &Ctx,
    tx: Option<&Transaction<'_>>,
    number: &Number,
    cb: &NewCallback,
) -> Result<Reservation> {
    reserve_id(ctx, tx, number, (cb.id, cb.admission.is_immediate())).await
}

/// A replay of callback `id` (immediate or not), inside the transaction `tx` that marks its
/// key, when the callback is active (its row is then locked until `tx` ends) and not counted:
/// - its key is marked given back (`db::callbacks::mark_given_back`, committed by the
///   withdrawal before it gave the reservation back): admitted again, checked like a create,
///   and the mark cleared in `tx`, whatever Redis shows;
/// - its field is the give-back's empty mark (a withdrawal gave its reservation back in an
///   attempt whose `COMMIT` then failed): admitted again, checked like a create, before the
///   answer names it. A create of the number admitted meanwhile may hold the place, and then
///   the replay is refused (429) instead of keeping both, and the withdrawal goes ahead;
/// - its field is missing or a tombstone: counted again, unchecked (`active_again`).
///
/// (docs/bounded-answers.md#a-replay-of-a-create-answered-503). `None`: nothing to give back; a
/// reservation returned is given back by the caller if `tx` does not commit.
pub async fn readmit(
    ctx: &Ctx,
    tx: &Transaction<'_>,
    number: &Number,
    (id, immediate): (Uuid, bool),
) -> Result<Option<Reservation>> {
    let Some(given_back) = db::callbacks::lock_if_active(tx, &ctx.tenant, id).await? else {
        return Ok(None);
    };
    let tk = ThrottleKeys::new(&ctx.state.keys, &ctx.tenant, ctx.name());
    if given_back {
        // Whatever Redis shows now (a re-seed or a lost hash may have dropped the give-back's
        // mark, and a re-seed after the seed grace counts the callback again): its own place
        // is given back (a no-op when it is), then it is admitted like a create, and counted
        // by re-seeds again once this transaction commits.
        let limits = Limits::of(ctx.settings(), immediate);
        admission::give_back_logged(&ctx.state.redis, &tk, &limits, id).await;
        let r = reserve_id(ctx, Some(tx), number, (id, immediate)).await?;
        if let Err(e) = db::callbacks::clear_given_back(tx, &ctx.tenant, id).await {
            r.give_back(&ctx.state).await;
            return Err(e);
        }
        return Ok(Some(r));
    }
    let field = async {
        let mut conn = ctx.state.redis.conn().await?;
        throttle::counted(&mut conn, &tk, id).await
    };
    match field.await {
        // Its window admission went back with its place: admitted like a create.
        Ok(Field::GivenBack) => reserve_id(ctx, Some(tx), number, (id, immediate))
            .await
            .map(Some),
        Ok(Field::Uncounted) => active_again(ctx, &tk, number, (id, immediate)).await,
        Ok(Field::Counted) => Ok(None),
        Err(e) => {
            tracing::warn!(callback.id = %id, error = %e, "throttle state unreadable; a replay keeps its callback uncounted");
            Ok(None)
        }
    }
}

/// [`readmit`] of a callback whose field is missing (a re-seed dropped it, the hash was lost,
/// or it was created while Redis failed open) or a tombstone: nothing says a withdrawal is
/// pending, so it is counted again unchecked, its active place only (its admission is in the
/// windows, or was never counted there): a replay of a callback that stays is never refused.
async fn active_again(
    ctx: &Ctx,
    tk: &ThrottleKeys,
    number: &Number,
    (id, immediate): (Uuid, bool),
) -> Result<Option<Reservation>> {
    let limits = Limits::of(ctx.settings(), immediate);
    admission::restore_logged(&ctx.state.redis, tk, (&limits, id, &number.key)).await;
    Ok(None)
}

/// [`reserve`] for callback `id`, immediate or not.
async fn reserve_id(
    ctx: &Ctx,
    tx: Option<&Transaction<'_>>,
    number: &Number,
    (id, immediate): (Uuid, bool),
) -> Result<Reservation> {
    let tk = ThrottleKeys::new(&ctx.state.keys, &ctx.tenant, ctx.name());
    let limits = Limits::of(ctx.settings(), immediate);
    // At most SEED_ROUNDS re-seeds by this caller: asked again after each, the state
    // vanished meanwhile. While another caller re-seeds, wait for it; when it takes too long,
    // re-seed here and ask again. Asked with the concurrent creates of this process at once.
    let (mut seeds, mut waits) = (0, 0);
    loop {
        let verdict = (ctx.state.admissions)
            .check(&tk, &limits, id, &number.key)
            .await;
        match verdict {
            Err(e) => return Ok(fail_open(ctx, e)),
            Ok(Verdict::Admitted) => return Ok(Reservation(Some((tk, limits, id)))),
            Ok(Verdict::Counted) => return Ok(Reservation(None)),
            Ok(Verdict::Rejected(r)) => return Err(rejected(ctx, &number.key, &r)),
            Ok(Verdict::Busy(_)) if waits < BUSY_ROUNDS => {
                waits += 1;
                tokio::time::sleep(BUSY_WAIT).await;
            }
            Ok(Verdict::NeedsSeed(_) | Verdict::Busy(_)) if seeds >= SEED_ROUNDS => break,
            Ok(Verdict::NeedsSeed(asked) | Verdict::Busy(asked)) => {
                let outcome = match tx {
                    Some(tx) => seed(ctx, tx, &tk, (&limits, asked)).await?,
                    None => seed(ctx, &ctx.state.db.get().await?, &tk, (&limits, asked)).await?,
                };
                if let Err(e) = outcome {
                    return Ok(fail_open(ctx, e));
                }
                seeds += 1;
            }
        }
    }
    let vanished = ::redis::RedisError::from((
        ::redis::ErrorKind::Client,
        "throttle state did not stay seeded",
    ));
    Ok(fail_open(ctx, vanished))
}

/// Re-seeds the throttle state from PostgreSQL (`asked_ms`: the Redis time of the answer that
/// asked for it; an older seed than one applied already changes nothing). Outer error: PostgreSQL failed (the create
/// fails); inner: Redis failed (the create goes ahead without limits).
async fn seed(
    ctx: &Ctx,
    client: &impl GenericClient,
    tk: &ThrottleKeys,
    (limits, asked_ms): (&Limits, i64),
) -> Result<::redis::RedisResult<()>> {
    let (tenant, service) = (&*ctx.tenant, ctx.name());
    let active = db::throttle::active(client, tenant, service).await?;
    let horizon = throttle::recent_horizon_s(limits);
    let recent = db::throttle::recent(client, tenant, service, horizon).await?;
    let cap = db::throttle::SEED_ROW_CAP;
    if active.len() as i64 >= cap || recent.len() as i64 >= cap {
        tracing::warn!(service, "throttle seed capped at {cap} rows");
    }
    let reseed_s = ctx.state.cfg.redis.throttle_reseed_seconds;
    let mut conn = match ctx.state.redis.conn().await {
        Ok(conn) => conn,
        Err(e) => return Ok(Err(e)),
    };
    let seeded = throttle::seed(
        &mut conn,
        tk,
        limits,
        &active,
        &recent,
        (reseed_s, asked_ms),
    )
    .await;
    Ok(seeded.map(|held| tracing::debug!(service, active = held, "throttle state re-seeded")))
}

/// Redis unavailable: the create is admitted without limits (counted and logged).
fn fail_open(ctx: &Ctx, e: ::redis::RedisError) -> Reservation {
    ::metrics::counter!(metrics::THROTTLE_FAIL_OPEN, "tenant" => ctx.tenant.to_string())
        .increment(1);
    let service = ctx.name();
    tracing::warn!(error = %e, service, "throttle unavailable: create admitted without limits (fail open)");
    Reservation(None)
}

/// A limit refused the create: counted, logged (number masked), answered with when it frees.
fn rejected(ctx: &Ctx, number: &str, r: &Rejection) -> Error {
    let service = ctx.name();
    ::metrics::counter!(r.limit.counter(), "tenant" => ctx.tenant.to_string(),
        "limit" => r.limit.name())
    .increment(1);
    tracing::info!(service, limit = r.limit.name(), number = %mask_phone(number), "create throttled");
    // By the Redis node's clock, which decides the retry: this host's clock may be skewed.
    let retry_after_s = r
        .wait_ms
        .map(|ms| u64::try_from(ms).map_or(1, |ms| ms.div_ceil(1_000).max(1)));
    Error::LimitReached {
        message: r.message(service),
        data: None,
        retry_after_s,
        limit: Some(r.limit),
    }
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
            "stored number rule {name} does not compile: {e}"
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
