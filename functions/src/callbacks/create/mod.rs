//! `POST /engagement/v3/callbacks/create`: book an immediate or scheduled callback.
//!
//! A pipeline, one step per module (docs/create-fields.md#the-create-pipeline):
//! 1. the body is validated field by field (`shared::model::callback`);
//! 2. [`Ctx`] resolves the service (cached) and fixes the request's time;
//! 3. [`admit`] decides, once and without a database, whether the callback is immediate or
//!    scheduled, with its dispatch time; [`admit::book`] applies business hours and capacity
//!    (the slot place it claims);
//! 4. [`limits`] checks the number against the service's number rule;
//! 5. [`captcha`] verifies `captchaToken` when the service requires it (docs/credentials.md#captcha),
//!    before anything is stored or counted;
//! 6. [`store`] commits the callback (group commit, or a transaction of its own for slot
//!    claims and Idempotency-Keys, [`commit`]), reserving the create-time limits just before
//!    the insert, and indexes what it committed for dispatch.
//!
//! A request takes a PostgreSQL connection from the pool only at the first step that needs one
//! ([`Conn`]); a plain immediate create takes none (its insert goes through the batcher).
//!
//! The answer means durable: PostgreSQL committed. The request waits for the commit only until
//! its deadline, and a 503 leaves nothing stored (docs/bounded-answers.md). Stored times come
//! from the database's clock, not this host's. A failed Redis write does not fail the request:
//! it is logged and counted, and the worker's sweep indexes the callback from PostgreSQL.
//! Refusals are domain errors (`shared::Error`: invalid, limit reached, slot full with
//! proposals), given their HTTP form once, at the edge.

pub mod admit;
pub mod captcha;
pub mod commit;
pub mod limits;
pub mod store;

use std::sync::Arc;

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::{
    ApiError,
    db::{
        self,
        callbacks::{Admission, NewCallback},
        services::Service,
        slots::{Alternatives, SlotRefusal},
    },
    error::{Error, Result},
    http::{
        ApiResult, ApiTenant, AppState, Envelope,
        extract::{RawBody, from_value, parse_json},
    },
    model::{
        ServiceSettings, SlotPlan,
        callback::{CreateCallbackParms, CreateRequest},
    },
};
use uuid::Uuid;

use self::{admit::Booked, captcha::Checked, limits::Number, store::Write};

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route("/engagement/v3/callbacks/create", post(handler))
}

/// `CreateCallbackData`.
#[derive(Debug, Serialize)]
pub struct Created {
    /// The new callback's id (a UUIDv7, time-ordered).
    pub id: String,
}

/// An Idempotency-Key and the SHA-256 of the request body it came with.
#[derive(Debug, Clone)]
pub struct Keyed {
    /// The key as sent (trimmed).
    pub key: String,
    /// Hash of the parsed body (equal bodies hash equally whatever their spacing).
    pub hash: [u8; 32],
}

async fn handler(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Envelope<Created>> {
    let (parms, keyed) = match idempotency_key(&headers)? {
        // The request is compared with an earlier use of the key by a hash of its parsed
        // JSON (serde_json maps are ordered): parsed once into a value for that, then converted.
        Some(key) => {
            let value: Value = parse_json(&body)?;
            let hash = Sha256::digest(serde_json::to_vec(&value).map_err(ApiError::internal)?);
            let keyed = Keyed {
                key,
                hash: hash.into(),
            };
            (from_value(value)?, Some(keyed))
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
    // Surrounding blanks are not part of the key (HTTP strips them before we see the value;
    // on Lambda they may arrive); inside, visible ASCII and spaces, as the OpenAPI pattern says.
    let key = v
        .to_str()
        .map(|s| s.trim_matches([' ', '\t']))
        .unwrap_or("");
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| (b' '..=b'~').contains(&b))
    {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters (inner spaces allowed)",
        ));
    }
    Ok(Some(key.to_string()))
}

/// The longest Idempotency-Key, in bytes (also in the OpenAPI document).
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Validates, admits, stores and indexes one callback; returns its id (an earlier one's when
/// `keyed` replays a request).
pub async fn create(
    state: &AppState,
    tenant: &str,
    parms: CreateCallbackParms,
    keyed: Option<Keyed>,
) -> Result<Uuid> {
    let req = parms.validate()?;
    let ctx = Ctx::load(state, tenant, &req.service_name).await?;
    let admission = admit::admit(&req, ctx.settings(), ctx.now)?;
    let mut conn = Conn::new(&state.db);
    let (admission, plan) = book(&mut conn, &ctx, &req, admission).await?;
    // Number rule (400); the create-time limits (429) are reserved by the store.
    let number = limits::check_number(&mut conn, &ctx, &req.phone_number).await?;
    if ctx.settings().captcha_required {
        // Not held while siteverify answers (up to CAPTCHA_TIMEOUT_MS).
        conn.release();
        let token = req.captcha_token.as_deref();
        let of = (&number, admission.is_immediate());
        if let Checked::Replayed(id) = captcha::check(&ctx, token, keyed.as_ref(), of).await? {
            return Ok(id);
        }
    }
    let cb = ctx.new_callback(req, admission, &number);
    let write = Write {
        cb,
        keyed,
        number,
        plan,
    };
    store::write(&ctx, conn, write).await
}

/// The request's PostgreSQL connection, taken from the pool at its first use. A plain
/// immediate create (no business-hours plan, no number rule) takes none: its row goes to the
/// group-commit batcher, which draws its own, so 64 or 256 creates in flight no longer queue
/// for the pool's few connections while Redis admits them
/// (docs/costs.md#create-throughput-against-the-postgresql-insert-ceiling).
pub struct Conn<'a> {
    pool: &'a deadpool_postgres::Pool,
    client: Option<deadpool_postgres::Object>,
}

impl<'a> Conn<'a> {
    fn new(pool: &'a deadpool_postgres::Pool) -> Self {
        Self { pool, client: None }
    }

    /// The connection, taken from the pool now if this request holds none.
    pub async fn get(&mut self) -> Result<&deadpool_postgres::Object> {
        let client = match self.client.take() {
            Some(client) => client,
            None => self.pool.get().await?,
        };
        Ok(self.client.insert(client))
    }

    /// The connection, owned (taken from the pool now if this request holds none).
    pub async fn take(mut self) -> Result<deadpool_postgres::Object> {
        self.get().await?;
        Ok(self.client.take().expect("just taken"))
    }

    /// Gives the connection back to the pool, if this request holds one.
    pub fn release(&mut self) {
        self.client = None;
    }
}

/// One create's context, shared by its steps (cheap to clone: the commit task owns one).
#[derive(Clone)]
pub struct Ctx {
    /// Shared resources.
    pub state: AppState,
    /// The tenant of the API key.
    pub tenant: Arc<str>,
    /// The service named by the request.
    pub service: Arc<Service>,
    /// The request's time (the host's clock: admission checks only; stored times are the
    /// database's).
    pub now: Timestamp,
}

impl Ctx {
    /// Resolves the service (cached; 400 when it does not exist).
    async fn load(state: &AppState, tenant: &str, name: &str) -> Result<Self> {
        let service = state
            .service(tenant, name)
            .await?
            .ok_or_else(|| Error::invalid(format!("unknown service {name}")))?;
        Ok(Self {
            state: state.clone(),
            tenant: Arc::from(tenant),
            service,
            now: Timestamp::now(),
        })
    }

    /// The service's settings.
    pub fn settings(&self) -> &ServiceSettings {
        &self.service.body
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.service.name
    }

    /// Where the alternatives to a refused slot of `admission` are searched (`None`: no slot).
    pub fn alternatives<'a>(
        &'a self,
        plan: Option<&'a SlotPlan>,
        admission: &Admission,
    ) -> Option<Alternatives<'a>> {
        let (Some(plan), Admission::Scheduled { desired, .. }) = (plan, admission) else {
            return None;
        };
        Some(Alternatives {
            tenant: &self.tenant,
            service: self.name(),
            plan,
            max_days_ahead: self.settings().max_days_ahead,
            desired: *desired,
            now: self.now,
        })
    }

    fn new_callback(&self, req: CreateRequest, admission: Admission, n: &Number) -> NewCallback {
        NewCallback {
            id: Uuid::now_v7(),
            tenant: self.tenant.to_string(),
            service: req.service_name,
            admission,
            phone_number: req.phone_number,
            phone_e164: n.e164.clone(),
            priority: req.priority.unwrap_or(self.settings().priority),
            attrs: req.attrs,
            user_data: req.user_data,
        }
    }
}

/// Applies the service's business hours and capacity (the plan is read only when used); a
/// closed slot is refused with proposals, on this connection.
async fn book(
    conn: &mut Conn<'_>,
    ctx: &Ctx,
    req: &CreateRequest,
    admission: Admission,
) -> Result<(Admission, Option<SlotPlan>)> {
    let s = ctx.settings();
    let plan = match admit::needs_plan(&admission, s) {
        true => Some(db::hours::plan(conn.get().await?, &ctx.tenant, ctx.name(), s).await?),
        false => None,
    };
    match admit::book(admission, req, s, plan.as_ref(), ctx.now)? {
        Booked::Admitted(admission) => Ok((admission, plan)),
        Booked::Closed { start } => Err(match ctx.alternatives(plan.as_ref(), &admission) {
            Some(alt) => match conn.get().await {
                Ok(client) => alt.refuse(client, start, SlotRefusal::Closed).await,
                Err(e) => e,
            },
            None => Error::internal(anyhow::anyhow!("a closed slot without a plan")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;
    use serde_json::Value;

    use super::idempotency_key;
    use shared::model::callback::{
        MAX_CAPTCHA_TOKEN, MAX_PHONE, MAX_PUSH_TARGETS, MAX_PUSH_TOKEN, MAX_SERVICE_NAME, MAX_TEXT,
        MIN_PHONE_DIGITS,
    };

    use super::MAX_IDEMPOTENCY_KEY;

    /// The limits the served OpenAPI document publishes are the validator's constants (whose
    /// own test checks the validator draws its lines there).
    #[test]
    fn openapi_limits_are_the_validators() {
        let doc = crate::openapi::document();
        let schemas = &doc["components"]["schemas"];
        let create = &schemas["CreateCallbackParms"]["properties"];
        let n = |v: &Value| v.as_u64().and_then(|n| usize::try_from(n).ok());
        assert_eq!(
            n(&create["serviceName"]["maxLength"]),
            Some(MAX_SERVICE_NAME)
        );
        assert_eq!(n(&create["phoneNumber"]["maxLength"]), Some(MAX_PHONE));
        assert_eq!(
            n(&create["phoneNumber"]["minLength"]),
            Some(MIN_PHONE_DIGITS)
        );
        assert_eq!(
            n(&create["pushTargets"]["maxItems"]),
            Some(MAX_PUSH_TARGETS)
        );
        for field in ["surveyRP", "routePoint"] {
            assert_eq!(n(&create[field]["maxLength"]), Some(MAX_TEXT), "{field}");
        }
        assert_eq!(
            n(&create["captchaToken"]["maxLength"]),
            Some(MAX_CAPTCHA_TOKEN)
        );
        let target = &schemas["PushTarget"]["properties"]["target"];
        assert_eq!(n(&target["maxLength"]), Some(MAX_PUSH_TOKEN));
        let header = &doc["paths"]["/engagement/v3/callbacks/create"]["post"]["parameters"][0];
        assert_eq!(header["name"], "Idempotency-Key");
        // The key is at most MAX_IDEMPOTENCY_KEY characters between optional blanks: the
        // pattern bounds it (a maxLength would count the blanks HTTP strips).
        let pattern = header["schema"]["pattern"].as_str().unwrap();
        assert!(
            pattern.contains(&format!("{{0,{}}}", MAX_IDEMPOTENCY_KEY - 2)),
            "{pattern}"
        );
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("idempotency-key", v.parse().unwrap());
            h
        };
        let longest = "k".repeat(MAX_IDEMPOTENCY_KEY);
        assert_eq!(
            idempotency_key(&headers(&format!("\t {longest} "))).unwrap(),
            Some(longest.clone())
        );
        for bad in [format!("{longest}k"), "a\tb".into(), " ".into()] {
            assert!(idempotency_key(&headers(&bad)).is_err(), "{bad:?}");
        }
    }
}
