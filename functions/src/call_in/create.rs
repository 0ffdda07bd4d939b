//! `POST /engagement/v3/call-in/requests/create`: hands out an inbound number (and an access
//! code when the group issues them) that the customer dials before `expirationTime`.
//!
//! Body `CallInRequestsParms` `{groupName, fromPhoneNumber?, userData?, callbackServiceId?}`;
//! answer `CallInRequest` as the published clients read it: `expirationTime` in epoch
//! milliseconds, `accessCode` a number. An unknown group or callback is a 400 (the clients
//! document only 400 and 500 for this operation); a group without a free pair is a 429. The
//! pair is taken atomically in PostgreSQL (`shared::db::call_in::allocate`).

use axum::{Router, extract::State, routing::post};
use serde::Serialize;
use shared::{
    db::{
        call_in::{self, Allocated, Allocation, CallInGroups},
        versioned,
    },
    error::{Error, Result},
    http::{ApiResult, ApiTenant, AppState, Envelope, extract::RawBody, extract::parse_json},
    metrics,
    model::call_in::{CallInRequestsParms, GroupSpec, NewCallIn},
};
use uuid::Uuid;

/// Route of this function.
pub fn router() -> Router<AppState> {
    Router::new().route("/engagement/v3/call-in/requests/create", post(handler))
}

/// `CallInRequest` of the published clients.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallInRequest {
    /// The request's id (a UUIDv7).
    pub id: String,
    /// The number to dial (E.164).
    pub to_phone_number: String,
    /// The group the number came from.
    pub group_name: String,
    /// When the request stops matching, epoch milliseconds.
    pub expiration_time: i64,
    /// The code to key in, when the group issues codes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_code: Option<i32>,
    /// The caller's number, when the request named one (E.164).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_phone_number: Option<String>,
    /// The linked callback, when the request named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_service_id: Option<String>,
}

async fn handler(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    RawBody(body): RawBody,
) -> ApiResult<Envelope<CallInRequest>> {
    let parms: CallInRequestsParms = parse_json(&body)?;
    Ok(Envelope::ok(create(&state, &tenant, parms).await?))
}

/// Validates the request, takes a free pair of the group and stores the request.
pub async fn create(
    state: &AppState,
    tenant: &str,
    parms: CallInRequestsParms,
) -> Result<CallInRequest> {
    let req = parms.validate()?;
    let client = state.db.get().await?;
    let group = versioned::find::<CallInGroups>(&client, tenant, &req.group_name)
        .await?
        .ok_or_else(|| {
            Error::invalid(format!("unknown Click-To-Call-In group {}", req.group_name))
        })?;
    if let Some(id) = req.callback_id
        && !call_in::callback_exists(&client, tenant, id).await?
    {
        return Err(Error::invalid(
            "callbackServiceId: you have no callback with this id",
        ));
    }
    drop(client);
    let id = Uuid::now_v7();
    let spec = group.body;
    let got = allocate(state, id, tenant, &req, &spec)
        .await?
        .ok_or_else(|| exhausted(&req.group_name, &spec))?;
    ::metrics::counter!(metrics::CALLIN_CREATED, "tenant" => tenant.to_string()).increment(1);
    Ok(answer(id, req, got))
}

/// The allocation, owned by a task: when the request gives up at its deadline while the insert
/// is in flight, the stored request finds nobody to answer and the task withdraws it, so it
/// holds no pair that nobody was told about (docs/call-in.md#allocation).
async fn allocate(
    state: &AppState,
    id: Uuid,
    tenant: &str,
    req: &NewCallIn,
    spec: &GroupSpec,
) -> Result<Option<Allocated>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let db = state.db.clone();
    let (tenant, req, spec) = (tenant.to_string(), req.clone(), spec.clone());
    tokio::spawn(async move {
        let a = Allocation {
            id,
            tenant: &tenant,
            group: &req.group_name,
            numbers: &spec.numbers,
            from_number: req.from_number.as_deref(),
            user_data: req.user_data.as_ref(),
            callback_id: req.callback_id,
            lifetime_s: spec.lifetime_seconds,
        };
        let got = async { call_in::allocate(&db.get().await?, &a, spec.code_range()).await };
        if let Err(Ok(Some(_))) = tx.send(got.await) {
            match async { call_in::withdraw(&db.get().await?, id).await }.await {
                Ok(_) => {
                    tracing::warn!(request = %id, "call-in create stored after its request gave up: withdrawn")
                }
                Err(e) => tracing::error!(request = %id, error = %e,
                    "call-in create stored after its request gave up; not withdrawn"),
            }
        }
    });
    rx.await
        .map_err(|_| Error::internal(anyhow::anyhow!("call-in allocation task ended")))?
}

fn exhausted(group: &str, spec: &GroupSpec) -> Error {
    let what = if spec.access_codes {
        "number and access code"
    } else {
        "number"
    };
    Error::LimitReached {
        message: format!(
            "Click-To-Call-In group {group} has no free {what} right now: every one is held by \
             a live request; retry when one is used or expires (requests live {} s)",
            spec.lifetime_seconds
        ),
        data: None,
        retry_after_s: Some(u64::from(spec.lifetime_seconds.min(60))),
        limit: None,
    }
}

fn answer(id: Uuid, req: NewCallIn, got: Allocated) -> CallInRequest {
    CallInRequest {
        id: id.to_string(),
        to_phone_number: got.to_number,
        group_name: req.group_name,
        expiration_time: got.expires_at.as_millisecond(),
        access_code: got.access_code,
        from_phone_number: req.from_number,
        callback_service_id: req.callback_id.map(|c| c.to_string()),
    }
}
