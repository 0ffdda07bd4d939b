//! One renderer of a stored callback as a GMS record (docs/gms.md#records): a flat JSON
//! object whose values are all strings. Always the system keys `_id`, `_desired_time`,
//! `_service_name`, `_callback_state`, `_expiration_time`, `_customer_number`, `_url`, and
//! `_callback_reason` once the callback has one; then the user data, each value as text
//! (strings as they are, anything else as its JSON). A user key never hides a system key.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};
use shared::{
    db::callbacks::StoredCallback,
    model::{CallbackState, callback::wire_time},
};

/// The record keys every answer carries (besides `_callback_reason`, only when set).
pub const SYSTEM_KEYS: [&str; 8] = [
    "_id",
    "_desired_time",
    "_service_name",
    "_callback_state",
    "_expiration_time",
    "_customer_number",
    "_url",
    "_callback_reason",
];

/// GMS's state of one of ours: ROUTING (an agent is being reserved) is still QUEUED for GMS,
/// which has no such state.
pub fn gms_state(state: CallbackState) -> &'static str {
    match state {
        CallbackState::Scheduled => "SCHEDULED",
        CallbackState::Queued | CallbackState::Routing => "QUEUED",
        CallbackState::Processing => "PROCESSING",
        CallbackState::Completed => "COMPLETED",
    }
}

/// A time as GMS writes it: ISO-8601 UTC with milliseconds (`2013-05-28T15:30:00.000Z`).
pub fn gms_time(t: Timestamp) -> String {
    wire_time(t)
}

/// The path of a callback on this surface (the record's `_url`).
pub fn url_of(service: &str, id: &str) -> String {
    format!("/genesys/1/service/callback/{service}/{id}")
}

/// Renders a callback; `ttl_seconds` is its service's `ttl_seconds` (the expiration is the
/// desired time plus it).
pub fn render(cb: &StoredCallback, ttl_seconds: u32) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(Value::Object(user)) = &cb.user_data {
        for (k, v) in user {
            if !SYSTEM_KEYS.contains(&k.as_str()) {
                out.insert(k.clone(), Value::String(text(v)));
            }
        }
    }
    let id = cb.id.to_string();
    let expires = cb
        .desired_time
        .checked_add(SignedDuration::from_secs(i64::from(ttl_seconds)))
        .unwrap_or(cb.desired_time);
    let mut put = |k: &str, v: String| {
        out.insert(k.to_string(), Value::String(v));
    };
    put("_id", id.clone());
    put("_desired_time", gms_time(cb.desired_time));
    put("_service_name", cb.service.clone());
    put("_callback_state", gms_state(cb.state).to_string());
    put("_expiration_time", gms_time(expires));
    put("_customer_number", cb.phone_number.clone());
    put("_url", url_of(&cb.service, &id));
    if cb.state == CallbackState::Completed
        && let Some(reason) = cb.reason
    {
        put("_callback_reason", reason.as_str().to_string());
    }
    out
}

/// A user-data value as text: strings as they are, other JSON as its text.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shared::model::CompletionReason;

    fn stored(state: CallbackState, reason: Option<CompletionReason>) -> StoredCallback {
        let t: Timestamp = "2013-05-28T15:30:00Z".parse().expect("time");
        StoredCallback {
            id: uuid::Uuid::nil(),
            tenant: "acme".into(),
            service: "sales".into(),
            state,
            reason,
            phone_number: "01822256".into(),
            phone_e164: None,
            desired_time: t,
            dispatch_at: t,
            priority: 0,
            attempt: 1,
            submitted_at: None,
            created_at: t,
            attrs: Map::new(),
            user_data: Some(json!({"my_token": "Stat_Server1", "n": 5, "_id": "forged"})),
        }
    }

    #[test]
    fn a_record_is_flat_strings_with_the_system_keys() {
        let r = render(&stored(CallbackState::Routing, None), 3600);
        assert_eq!(r["_id"], "00000000-0000-0000-0000-000000000000");
        assert_eq!(r["_desired_time"], "2013-05-28T15:30:00.000Z");
        assert_eq!(r["_expiration_time"], "2013-05-28T16:30:00.000Z");
        assert_eq!(r["_callback_state"], "QUEUED");
        assert_eq!(r["_customer_number"], "01822256");
        assert_eq!(r["_service_name"], "sales");
        assert_eq!(
            r["_url"],
            "/genesys/1/service/callback/sales/00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(r["my_token"], "Stat_Server1");
        assert_eq!(r["n"], "5");
        assert!(!r.contains_key("_callback_reason"));
        assert!(r.values().all(Value::is_string));
        let done = render(
            &stored(CallbackState::Completed, Some(CompletionReason::Cancelled)),
            0,
        );
        assert_eq!(done["_callback_reason"], "CANCELLED");
        assert_eq!(done["_callback_state"], "COMPLETED");
    }
}
