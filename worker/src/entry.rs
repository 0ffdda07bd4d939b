//! The voice-stream entry of one dispatch: what the voice platform needs to start a session,
//! and where to post its state events. The field list is a contract with the voice platform
//! (docs/voice-platform.md#stream-entries): the fields every entry carries, then the optional
//! ones, left out when absent (no empty values). Request-level overrides (route point,
//! language, survey routing point) win over the service's settings. Every entry is built here
//! and only here.

use serde_json::Value;
use shared::{
    db::dispatch::DueCallback,
    model::{ServiceSettings, attrs::CallbackAttrs, callback::wire_time, service::CallDirection},
    redis::voice::Entry,
};

/// Builds the entry of `cb` for the voice stream; `now_ms` (the claim's Redis time) is the
/// hand-off time the priority is escalated to.
pub fn build(cb: &DueCallback, settings: &ServiceSettings, ges_url: &str, now_ms: i64) -> Entry {
    let attrs = CallbackAttrs::from_map(&cb.attrs);
    let waited_ms = now_ms - cb.desired_time.as_millisecond();
    let priority = settings.escalated_priority(cb.priority, waited_ms);
    let events_url = format!(
        "{}/ges/v1/ors/callbacks/{}/events",
        ges_url.trim_end_matches('/'),
        cb.id
    );
    // A blank language (a service stored before it was validated) would make the voice
    // platform refuse the entry: the request's, else the service's, else en-US.
    let language = [attrs.language.as_deref(), Some(settings.language.as_str())]
        .into_iter()
        .flatten()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("en-US")
        .to_string();
    let mut fields = vec![
        ("callback_id", cb.id.to_string()),
        ("tenant", cb.tenant.clone()),
        ("service", cb.service.clone()),
        ("phone_number", cb.phone_number.clone()),
        ("desired_time", wire_time(cb.desired_time)),
        ("priority", priority.to_string()),
        ("language", language),
        ("events_url", events_url),
        ("attempt", cb.attempt.to_string()),
    ];
    direction_fields(cb, settings, &mut fields);
    routing_fields(settings, &attrs, &mut fields);
    reporting_fields(cb, &attrs, &mut fields);
    Entry {
        id: cb.id,
        attempt: cb.attempt,
        epoch: cb.handoff_epoch,
        fields,
    }
}

type Fields = Vec<(&'static str, String)>;

/// Who dials: USERTERMINATED carries `dial_number` (the platform calls the customer);
/// USERORIGINATED carries neither (the customer calls in, nothing is dialled).
fn direction_fields(cb: &DueCallback, settings: &ServiceSettings, fields: &mut Fields) {
    match settings.call_direction {
        CallDirection::UserTerminated => {
            let dial = shared::phone::dial_number(
                &settings.dial_prefix,
                cb.phone_e164.as_deref(),
                &cb.phone_number,
            );
            fields.push(("call_direction", "USERTERMINATED".into()));
            fields.push(("dial_number", dial));
        }
        // Nothing dialled, and no push targets: Engage itself tells the customer it is their
        // turn (docs/push.md); device tokens never travel through the voice stream.
        CallDirection::UserOriginated => {
            fields.push(("call_direction", "USERORIGINATED".into()));
        }
    }
}

/// What the voice platform runs and shows: routing points, caller id, the Designer
/// application, and the escalation it continues; each only when set.
fn routing_fields(settings: &ServiceSettings, attrs: &CallbackAttrs, fields: &mut Fields) {
    // A blank override (`"routePoint": ""`) is no override: the service's value stays.
    let set = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
    let or_service =
        |own: &Option<String>, service: &Option<String>| set(own).or_else(|| set(service));
    let texts = [
        (
            "route_point",
            or_service(&attrs.route_point, &settings.route_point),
        ),
        (
            "survey_rp",
            or_service(&attrs.survey_rp, &settings.survey_rp),
        ),
        (
            "display_number",
            or_service(&None, &settings.display_number),
        ),
        ("display_name", or_service(&None, &settings.display_name)),
        (
            "callback_application",
            or_service(&None, &settings.callback_application),
        ),
        (
            "application_stream",
            or_service(&None, &settings.application_stream),
        ),
    ];
    fields.extend(texts.into_iter().filter_map(|(k, v)| Some((k, v?))));
    if settings.priority_increment > 0 {
        fields.push((
            "priority_increment",
            settings.priority_increment.to_string(),
        ));
        let interval = settings.priority_interval_seconds.to_string();
        fields.push(("priority_interval_seconds", interval));
        if settings.priority_limit != 0 {
            fields.push(("priority_limit", settings.priority_limit.to_string()));
        }
    }
}

/// The create's reporting fields (usable values only; raw texts stay in PostgreSQL) and the
/// user data, each only when present.
fn reporting_fields(cb: &DueCallback, attrs: &CallbackAttrs, fields: &mut Fields) {
    let texts = [
        ("cb_offer_type", attrs.offer_type.clone()),
        ("offer_timing", attrs.offer_timing.clone()),
        ("inbound_vq", attrs.inbound_vq.clone()),
        ("channel", attrs.channel.clone()),
        ("cb_origination_ixn_id", attrs.origination_ixn_id.clone()),
        (
            "offer_threshold",
            attrs.offer_threshold.as_ref().map(ToString::to_string),
        ),
    ];
    // A blank text is no value: left out rather than sent (the platform refuses it).
    let set = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    fields.extend(texts.into_iter().filter_map(|(k, v)| Some((k, set(v)?))));
    if let Some(data) = cb.user_data.as_ref().filter(|d| !is_empty(d)) {
        fields.push(("user_data", data.to_string()));
    }
}

fn is_empty(v: &Value) -> bool {
    v.is_null() || v.as_object().is_some_and(serde_json::Map::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use serde_json::json;
    use shared::{db::callbacks::StoredCallback, model::CallbackState};

    fn due(attrs: CallbackAttrs, user_data: Option<Value>) -> DueCallback {
        let Some(Value::Object(attrs)) = attrs.to_json().or(Some(json!({}))) else {
            panic!("attrs are an object");
        };
        DueCallback {
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
                handoff_epoch: 0,
                submitted_at: None,
                created_at: Timestamp::UNIX_EPOCH,
                attrs,
                user_data,
            },
            settings: None,
        }
    }

    fn get<'a>(e: &'a Entry, k: &str) -> Option<&'a str> {
        e.fields
            .iter()
            .find(|(f, _)| *f == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn overrides_win_and_absent_optional_fields_are_left_out() {
        let overrides = CallbackAttrs {
            route_point: Some("7001".into()),
            ..Default::default()
        };
        let cb = due(overrides, Some(json!({"a": 1})));
        let settings = ServiceSettings::parse(json!({"dial_prefix": "9", "route_point": "5000"}))
            .expect("valid settings");
        let e = build(&cb, &settings, "http://ges:3050/", 0);
        let names: Vec<&str> = e.fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "callback_id",
                "tenant",
                "service",
                "phone_number",
                "desired_time",
                "priority",
                "language",
                "events_url",
                "attempt",
                "call_direction",
                "dial_number",
                "route_point",
                "user_data"
            ]
        );
        assert_eq!(get(&e, "dial_number"), Some("912125550100"));
        assert_eq!(get(&e, "phone_number"), Some("+1 (212) 555-0100"));
        assert_eq!(get(&e, "route_point"), Some("7001"));
        assert_eq!(get(&e, "language"), Some("en-US"));
        assert_eq!(get(&e, "user_data"), Some(r#"{"a":1}"#));
        assert_eq!(get(&e, "attempt"), Some("2"));
        assert_eq!(
            get(&e, "events_url"),
            Some(
                "http://ges:3050/ges/v1/ors/callbacks/00000000-0000-0000-0000-000000000000/events"
            )
        );
        assert_eq!(get(&e, "desired_time"), Some("1970-01-01T00:00:00.000Z"));
    }

    #[test]
    fn a_blank_override_leaves_the_services_routing_point() {
        let blank = CallbackAttrs {
            route_point: Some(String::new()),
            survey_rp: Some(" ".into()),
            ..Default::default()
        };
        let settings = ServiceSettings::parse(json!({"route_point": "5000", "survey_rp": "6000"}))
            .expect("valid settings");
        let e = build(&due(blank, None), &settings, "http://g", 0);
        assert_eq!(get(&e, "route_point"), Some("5000"));
        assert_eq!(get(&e, "survey_rp"), Some("6000"));
    }

    #[test]
    fn a_blank_stored_language_falls_back_to_en_us() {
        // A row stored before `language` was validated: read without validation.
        let settings = ServiceSettings {
            language: " ".into(),
            ..ServiceSettings::default()
        };
        let e = build(
            &due(CallbackAttrs::default(), None),
            &settings,
            "http://g",
            0,
        );
        assert_eq!(get(&e, "language"), Some("en-US"));
    }

    #[test]
    fn every_setting_and_reporting_field_reaches_the_entry() {
        let attrs = CallbackAttrs {
            offer_type: Some("ASAP".into()),
            offer_timing: Some("ON-HOURS".into()),
            inbound_vq: Some("VQ_in".into()),
            channel: Some("web".into()),
            origination_ixn_id: Some("ixn-1".into()),
            offer_threshold: Some(90.into()),
            ..Default::default()
        };
        let settings = ServiceSettings::parse(json!({
            "display_number": "+18005550100", "display_name": "Acme",
            "callback_application": "CB_App", "application_stream": "Development",
            "priority_increment": 2, "priority_interval_seconds": 10, "priority_limit": 8,
            "survey_rp": "6000"
        }))
        .unwrap();
        // Waited 25 s past its desired time: two steps, 3 + 2 × 2.
        let e = build(&due(attrs, None), &settings, "http://ges", 25_000);
        for (k, v) in [
            ("priority", "7"),
            ("display_number", "+18005550100"),
            ("display_name", "Acme"),
            ("callback_application", "CB_App"),
            ("application_stream", "Development"),
            ("priority_increment", "2"),
            ("priority_interval_seconds", "10"),
            ("priority_limit", "8"),
            ("survey_rp", "6000"),
            ("cb_offer_type", "ASAP"),
            ("offer_timing", "ON-HOURS"),
            ("inbound_vq", "VQ_in"),
            ("channel", "web"),
            ("cb_origination_ixn_id", "ixn-1"),
            ("offer_threshold", "90"),
        ] {
            assert_eq!(get(&e, k), Some(v), "{k}");
        }
        assert_eq!(get(&e, "user_data"), None, "no user data, no field");
        let later = build(
            &due(CallbackAttrs::default(), None),
            &settings,
            "",
            3_600_000,
        );
        assert_eq!(get(&later, "priority"), Some("8"), "capped at the limit");
    }

    #[test]
    fn user_originated_dials_nothing_and_carries_no_push_token() {
        let attrs = CallbackAttrs {
            push_targets: vec![shared::model::callback::PushTarget {
                channel: "FCM".into(),
                target: "tok".into(),
            }],
            ..Default::default()
        };
        let settings = ServiceSettings::parse(json!({"call_direction": "USERORIGINATED"})).unwrap();
        let e = build(&due(attrs, None), &settings, "", 0);
        assert_eq!(get(&e, "call_direction"), Some("USERORIGINATED"));
        assert_eq!(get(&e, "dial_number"), None);
        assert_eq!(get(&e, "push_targets"), None);
    }
}
