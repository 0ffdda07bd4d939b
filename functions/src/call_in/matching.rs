//! `POST /ges/v1/call-in/match`: the voice platform asks which request an inbound call
//! answers, `{toPhoneNumber, accessCode?, fromPhoneNumber?}`, and consumes it.
//!
//! Internal only, with `Authorization: Bearer $ORS_EVENTS_TOKEN` like the voice-platform
//! events (it is served by the `ors-events` function too). A live, unexpired request of the
//! dialled number and code matches once: the answer carries its tenant, linked callback and
//! user data; a second match, an expired request, a wrong code, or a caller's number other
//! than the one the request named are 404 (docs/call-in.md#match). `accessCode` may be a
//! number or a string of digits (keyed-in DTMF).

use axum::{Router, extract::State, routing::post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::{
    ApiError,
    db::call_in::{self, Matched},
    http::{ApiResult, AppState, Envelope, Json},
    model::call_in::e164,
};

use crate::ors::events::OrsCaller;

/// Route of the match.
pub fn router() -> Router<AppState> {
    Router::new().route("/ges/v1/call-in/match", post(handler))
}

/// The voice platform's question.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchBody {
    /// The number the customer dialled (required).
    #[serde(default)]
    pub to_phone_number: Option<String>,
    /// The code the customer keyed in.
    #[serde(default)]
    pub access_code: Option<Value>,
    /// The caller's number (ANI), when known.
    #[serde(default)]
    pub from_phone_number: Option<String>,
}

/// The request the call answers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchedRequest {
    /// The request's id.
    pub id: String,
    /// The tenant (contact center id) that made it.
    pub ccid: String,
    /// Its group.
    pub group_name: String,
    /// The number dialled (E.164).
    pub to_phone_number: String,
    /// The code keyed in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_code: Option<i32>,
    /// The caller's number the request named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_phone_number: Option<String>,
    /// The linked callback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_service_id: Option<String>,
    /// The request's user data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<Value>,
    /// When it would have expired, epoch milliseconds.
    pub expiration_time: i64,
}

async fn handler(
    _: OrsCaller,
    State(state): State<AppState>,
    Json(body): Json<MatchBody>,
) -> ApiResult<Envelope<MatchedRequest>> {
    let to = number("toPhoneNumber", body.to_phone_number.as_deref())?
        .ok_or_else(|| ApiError::bad_request("toPhoneNumber is required"))?;
    let code = access_code(body.access_code)?;
    let from = number("fromPhoneNumber", body.from_phone_number.as_deref())?;
    let found = consume(&state, to, code, from).await?.ok_or_else(|| {
        ApiError::not_found(
            "no live Click-To-Call-In request for this number and access code \
                 (unknown, expired, already matched, or another caller)",
        )
    })?;
    Ok(Envelope::ok(shown(found)))
}

/// The consume, owned by a task: when the request gives up at its deadline while the
/// `UPDATE` is in flight, the answer finds nobody to take it and the task gives the request
/// back, so the voice platform's retry matches it instead of finding it consumed by a match
/// whose answer was lost (docs/call-in.md#match).
async fn consume(
    state: &AppState,
    to: String,
    code: Option<i32>,
    from: Option<String>,
) -> shared::error::Result<Option<Matched>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let db = state.db.clone();
    tokio::spawn(async move {
        let got = async {
            let client = db.get().await?;
            call_in::consume(&client, &to, code, from.as_deref()).await
        }
        .await;
        if let Err(Ok(Some(lost))) = tx.send(got) {
            let back = async { call_in::unconsume(&db.get().await?, lost.id).await }.await;
            match back {
                Ok(given_back) => tracing::warn!(
                    request = %lost.id, given_back,
                    "call-in match answered after its request gave up: request given back"
                ),
                Err(e) => tracing::error!(request = %lost.id, error = %e,
                    "call-in match answered after its request gave up; not given back"),
            }
        }
    });
    rx.await
        .map_err(|_| shared::error::Error::internal(anyhow::anyhow!("call-in match task ended")))?
}

fn number(field: &str, n: Option<&str>) -> ApiResult<Option<String>> {
    match n.map(str::trim) {
        None | Some("") => Ok(None),
        Some(n) => e164(n)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{field} is not a valid phone number"))),
    }
}

fn access_code(v: Option<Value>) -> ApiResult<Option<i32>> {
    let bad = || ApiError::bad_request("accessCode must be a number or a string of 1 to 9 digits");
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(bad),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse().map(Some).map_err(|_| bad())
        }
        Some(_) => Err(bad()),
    }
}

fn shown(m: Matched) -> MatchedRequest {
    MatchedRequest {
        id: m.id.to_string(),
        ccid: m.tenant,
        group_name: m.group,
        to_phone_number: m.to_number,
        access_code: m.access_code,
        from_phone_number: m.from_number,
        callback_service_id: m.callback_id.map(|c| c.to_string()),
        user_data: m.user_data,
        expiration_time: m.expires_at.as_millisecond(),
    }
}
