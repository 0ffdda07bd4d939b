//! `POST /genesys/1/service/callback/{service}`: GMS's start (immediate) or schedule
//! (`_desired_time`), through the same `callbacks::create::create` as the v3 API, so every
//! rule (hours, capacity, number rule, throttles, queue caps) has one implementation
//! (docs/gms.md#create).
//!
//! Keys: `_customer_number` (mandatory) is the number, `_desired_time` (ISO-8601) makes it
//! scheduled; GMS control keys that have no meaning here ([`IGNORED`]) are accepted and
//! dropped; every other key, including other `_` keys (`_customer_id`), is user data, kept
//! under the v3 `userData` rule (keys that are identifiers) and returned as record keys.
//! The 200 answer is the stored record, with `_text` for an immediate callback as GMS sends.

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use serde_json::{Map, Value};
use shared::{
    db,
    http::{AppState, Path, extract::RawBody},
    model::callback::CreateCallbackParms,
};
use uuid::Uuid;

use super::{
    body::{self, Fields},
    error::{GmsError, Subject},
    record,
    tenant::GmsTenant,
};
use crate::callbacks::create;

/// GMS request keys accepted and not used (the callback's state and service come from us;
/// ORS/URS routing options are the service's).
pub const IGNORED: [&str; 14] = [
    "_callback_state",
    "_service_name",
    "_urs_virtual_queue",
    "_request_queue_time_stat",
    "_request_ewt_service",
    "_overwritable_options",
    "_ors",
    "_target",
    "_redirect",
    "_vq",
    "_id",
    "_callback_reason",
    "_expiration_time",
    "_url",
];

/// What GMS says to the customer of an immediate callback.
pub const IMMEDIATE_TEXT: &str = "You will receive the call shortly";

/// Route of this operation.
pub fn router() -> Router<AppState> {
    Router::new().route("/genesys/1/service/callback/{service}", post(handler))
}

async fn handler(
    State(state): State<AppState>,
    GmsTenant(tenant): GmsTenant,
    Path(service): Path<String>,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Result<axum::Json<Map<String, Value>>, GmsError> {
    let fields = body::parse(&headers, &bytes)?;
    let settings = state
        .service(&tenant, &service)
        .await?
        .ok_or_else(|| GmsError::not_found(format!("no callback service {service}")))?;
    let number = fields.get("_customer_number").cloned();
    let (parms, immediate) = translate(&service, fields)?;
    let about = Subject {
        service: Some(&service),
        customer_number: number.as_deref(),
    };
    let id = create::create(&state, &tenant, parms, None)
        .await
        .map_err(|e| GmsError::domain(e, about).renamed())?;
    let mut answer = read_back(&state, &tenant, id, settings.body.ttl_seconds).await;
    if immediate {
        answer.insert("_text".into(), Value::String(IMMEDIATE_TEXT.into()));
    }
    Ok(axum::Json(answer))
}

/// The request's keys onto the v3 create; `true` when immediate. 400 without
/// `_customer_number`.
pub fn translate(
    service: &str,
    mut fields: Fields,
) -> Result<(CreateCallbackParms, bool), GmsError> {
    let number = fields
        .remove("_customer_number")
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| {
            GmsError::bad_request("invalid option: _customer_number is mandatory and was not given")
        })?;
    let desired = fields
        .remove("_desired_time")
        .filter(|t| !t.trim().is_empty());
    let immediate = desired.is_none();
    let user: Map<String, Value> = fields
        .into_iter()
        .filter(|(k, _)| !IGNORED.contains(&k.as_str()))
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let parms = CreateCallbackParms {
        service_name: Some(service.to_string()),
        phone_number: Some(number),
        desired_time: desired.map(|t| t.trim().to_string()),
        user_data: (!user.is_empty()).then_some(Value::Object(user)),
        ..Default::default()
    };
    Ok((parms, immediate))
}

/// The stored record of a new callback; only `_id` when it cannot be read back (the callback
/// is committed: the create has succeeded whatever this read does).
async fn read_back(state: &AppState, tenant: &str, id: Uuid, ttl: u32) -> Map<String, Value> {
    let read = async {
        let client = state.db.get().await?;
        db::callbacks::get(&client, tenant, id).await
    }
    .await;
    match read {
        Ok(cb) => record::render(&cb, ttl),
        Err(e) => {
            tracing::warn!(callback.id = %id, error = %e, "created callback not read back");
            Map::from_iter([("_id".to_string(), Value::String(id.to_string()))])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_translate_onto_the_v3_create() {
        let (p, immediate) = translate(
            "sales",
            fields(&[
                ("_customer_number", "01822256"),
                ("my_token", "Stat_Server1"),
                ("_callback_state", "QUEUED"),
                ("_customer_id", "c-7"),
            ]),
        )
        .expect("translated");
        assert!(immediate);
        assert_eq!(p.phone_number.as_deref(), Some("01822256"));
        assert_eq!(p.service_name.as_deref(), Some("sales"));
        let user = p.user_data.expect("user data");
        assert_eq!(user["my_token"], "Stat_Server1");
        assert_eq!(user["_customer_id"], "c-7");
        assert!(user.get("_callback_state").is_none());
        let (p, immediate) = translate(
            "sales",
            fields(&[
                ("_customer_number", "5115"),
                ("_desired_time", "2013-05-28T15:30:00.000Z"),
            ]),
        )
        .expect("translated");
        assert!(!immediate && p.user_data.is_none());
        assert_eq!(p.desired_time.as_deref(), Some("2013-05-28T15:30:00.000Z"));
    }

    #[test]
    fn the_customer_number_is_mandatory() {
        for f in [fields(&[("a", "1")]), fields(&[("_customer_number", " ")])] {
            let e = translate("sales", f).expect_err("refused");
            assert_eq!(e.status, 400);
            assert!(e.message.contains("_customer_number"), "{}", e.message);
        }
    }
}
