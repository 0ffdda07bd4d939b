//! The voice-stream entry of one dispatch: what the voice platform needs to start a session,
//! and where to post its state events. The field list is a contract with the voice platform
//! (docs/voice-platform.md#stream-entries). Request-level overrides (route point, language,
//! survey routing point) win over the service's settings.

use serde_json::Value;
use shared::{
    db::dispatch::DueCallback,
    model::{ServiceSettings, attrs::CallbackAttrs, callback::wire_time, service::CallDirection},
    redis::voice::Entry,
};

/// Builds the entry of `cb` for the voice stream.
pub fn build(cb: &DueCallback, settings: &ServiceSettings, ges_url: &str) -> Entry {
    let attrs = CallbackAttrs::from_map(&cb.attrs);
    let dial_number = shared::phone::dial_number(
        &settings.dial_prefix,
        cb.phone_e164.as_deref(),
        &cb.phone_number,
    );
    let call_direction = match settings.call_direction {
        CallDirection::UserTerminated => "USERTERMINATED",
        CallDirection::UserOriginated => "USERORIGINATED",
    };
    let user_data = cb
        .user_data
        .as_ref()
        .map_or_else(|| "{}".to_string(), Value::to_string);
    let events_url = format!(
        "{}/ges/v1/ors/callbacks/{}/events",
        ges_url.trim_end_matches('/'),
        cb.id
    );
    Entry {
        id: cb.id,
        attempt: cb.attempt,
        fields: vec![
            ("callback_id", cb.id.to_string()),
            ("tenant", cb.tenant.clone()),
            ("service", cb.service.clone()),
            ("phone_number", cb.phone_number.clone()),
            ("dial_number", dial_number),
            ("desired_time", wire_time(cb.desired_time)),
            ("priority", cb.priority.to_string()),
            (
                "route_point",
                attrs
                    .route_point
                    .or_else(|| settings.route_point.clone())
                    .unwrap_or_default(),
            ),
            (
                "language",
                attrs.language.unwrap_or_else(|| settings.language.clone()),
            ),
            (
                "survey_rp",
                attrs
                    .survey_rp
                    .or_else(|| settings.survey_rp.clone())
                    .unwrap_or_default(),
            ),
            ("call_direction", call_direction.to_string()),
            ("user_data", user_data),
            ("events_url", events_url),
            ("attempt", cb.attempt.to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use serde_json::json;
    use shared::{db::callbacks::StoredCallback, model::CallbackState};

    #[test]
    fn overrides_win_and_every_field_is_there() {
        let overrides = CallbackAttrs {
            route_point: Some("7001".into()),
            ..Default::default()
        };
        let Some(Value::Object(attrs)) = overrides.to_json() else {
            panic!("attrs are an object");
        };
        let cb = DueCallback {
            callback: StoredCallback {
                id: uuid::Uuid::nil(),
                tenant: "t".into(),
                service: "s".into(),
                state: CallbackState::Queued,
                reason: None,
                phone_number: "+1 (212) 555-0100".into(),
                phone_e164: Some("12125550100".into()),
                desired_time: Timestamp::UNIX_EPOCH,
                dispatch_at: Timestamp::UNIX_EPOCH,
                priority: 3,
                attempt: 2,
                submitted_at: None,
                created_at: Timestamp::UNIX_EPOCH,
                attrs,
                user_data: Some(json!({"a": 1})),
            },
            settings: None,
        };
        let settings = ServiceSettings::parse(json!({"dial_prefix": "9", "route_point": "5000"}))
            .expect("valid settings");
        let e = build(&cb, &settings, "http://ges:3050/");
        let get = |k: &str| {
            e.fields
                .iter()
                .find(|(f, _)| *f == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(e.fields.len(), 14);
        assert_eq!(
            get("dial_number"),
            Some("912125550100"),
            "prefix + normalised number"
        );
        assert_eq!(
            get("phone_number"),
            Some("+1 (212) 555-0100"),
            "the number as given"
        );
        assert_eq!(get("route_point"), Some("7001"));
        assert_eq!(get("language"), Some("en-US"));
        assert_eq!(get("user_data"), Some(r#"{"a":1}"#));
        assert_eq!(get("attempt"), Some("2"));
        assert_eq!(
            get("events_url"),
            Some(
                "http://ges:3050/ges/v1/ors/callbacks/00000000-0000-0000-0000-000000000000/events"
            )
        );
        assert_eq!(get("desired_time"), Some("1970-01-01T00:00:00.000Z"));
    }
}
