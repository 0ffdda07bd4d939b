//! The stream-entry contract as the voice platform checks it (docs/voice-platform.md#stream-entries):
//! every required field present and each field, required or optional, of its type. An entry
//! that breaks it is rejected by the simulator: logged, counted, acknowledged and never played.

use std::collections::HashMap;

/// Fields every submission carries.
pub(crate) const REQUIRED: &[&str] = &[
    "callback_id",
    "tenant",
    "service",
    "phone_number",
    "desired_time",
    "priority",
    "language",
    "call_direction",
    "events_url",
    "attempt",
];

/// What a field's value must be.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Uuid,
    Time,
    Int,
    PositiveInt,
    Number,
    Url,
    Direction,
    JsonObject,
}

/// Every field of the contract with its kind; fields not listed are tolerated (a newer
/// Engage may add optional ones).
const KINDS: &[(&str, Kind)] = &[
    ("callback_id", Kind::Uuid),
    ("tenant", Kind::Text),
    ("service", Kind::Text),
    ("phone_number", Kind::Text),
    ("desired_time", Kind::Time),
    ("priority", Kind::Int),
    ("language", Kind::Text),
    ("call_direction", Kind::Direction),
    ("events_url", Kind::Url),
    ("attempt", Kind::PositiveInt),
    ("dial_number", Kind::Text),
    ("route_point", Kind::Text),
    ("survey_rp", Kind::Text),
    ("display_number", Kind::Text),
    ("display_name", Kind::Text),
    ("callback_application", Kind::Text),
    ("application_stream", Kind::Text),
    ("priority_increment", Kind::Int),
    ("priority_interval_seconds", Kind::PositiveInt),
    ("priority_limit", Kind::Int),
    ("cb_offer_type", Kind::Text),
    ("offer_timing", Kind::Text),
    ("inbound_vq", Kind::Text),
    ("channel", Kind::Text),
    ("cb_origination_ixn_id", Kind::Text),
    ("offer_threshold", Kind::Number),
    ("user_data", Kind::JsonObject),
];

/// Checks one entry; the error names the first field at fault.
pub(crate) fn check(fields: &HashMap<String, String>) -> Result<(), String> {
    for name in REQUIRED {
        if !fields.contains_key(*name) {
            return Err(format!("missing required field {name}"));
        }
    }
    let user_terminated =
        fields.get("call_direction").map(String::as_str) == Some("USERTERMINATED");
    if user_terminated && !fields.contains_key("dial_number") {
        return Err("missing dial_number (required when USERTERMINATED)".into());
    }
    for (name, kind) in KINDS {
        if let Some(value) = fields.get(*name)
            && !fits(*kind, value)
        {
            return Err(format!("field {name} is not {kind:?}"));
        }
    }
    Ok(())
}

fn fits(kind: Kind, v: &str) -> bool {
    match kind {
        Kind::Text => !v.trim().is_empty(),
        Kind::Uuid => is_uuid(v),
        Kind::Time => v.parse::<jiff::Timestamp>().is_ok(),
        Kind::Int => v.parse::<i32>().is_ok(),
        Kind::PositiveInt => v.parse::<i32>().is_ok_and(|n| n > 0),
        Kind::Number => v.parse::<f64>().is_ok_and(f64::is_finite),
        Kind::Url => ["http://", "https://"].iter().any(|s| {
            v.strip_prefix(s)
                .is_some_and(|h| !h.is_empty() && !h.starts_with('/'))
        }),
        Kind::Direction => matches!(v, "USERTERMINATED" | "USERORIGINATED"),
        Kind::JsonObject => {
            serde_json::from_str::<serde_json::Value>(v).is_ok_and(|j| j.is_object())
        }
    }
}

/// The 8-4-4-4-12 hexadecimal form of a UUID.
fn is_uuid(v: &str) -> bool {
    let groups: Vec<&str> = v.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> HashMap<String, String> {
        [
            ("callback_id", "00000000-0000-0000-0000-000000000000"),
            ("tenant", "t"),
            ("service", "s"),
            ("phone_number", "+15550100"),
            ("desired_time", "2026-12-01T15:30:00.000Z"),
            ("priority", "-2"),
            ("language", "en-US"),
            ("call_direction", "USERTERMINATED"),
            ("dial_number", "15550100"),
            ("events_url", "http://ges/x"),
            ("attempt", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn a_complete_entry_passes_and_each_missing_field_is_named() {
        assert_eq!(check(&good()), Ok(()));
        for name in REQUIRED.iter().chain(&["dial_number"]) {
            let mut e = good();
            e.remove(*name);
            let err = check(&e).unwrap_err();
            assert!(err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn wrong_types_are_rejected() {
        for (k, v) in [
            ("priority", "high"),
            ("attempt", "0"),
            ("desired_time", "tomorrow"),
            ("call_direction", "SIDEWAYS"),
            ("user_data", "[1]"),
            ("offer_threshold", "soon"),
            // Shapes a looser check let through (session 21's attack review).
            ("callback_id", "------------------------------------"),
            ("callback_id", "00000000000000000000000000000000----"),
            ("language", "  "),
            ("channel", " "),
            ("priority", "99999999999"),
            ("events_url", "http://"),
        ] {
            let mut e = good();
            e.insert(k.into(), v.into());
            assert!(check(&e).is_err(), "{k}={v}");
        }
        let mut e = good();
        e.insert("call_direction".into(), "USERORIGINATED".into());
        e.remove("dial_number");
        assert_eq!(check(&e), Ok(()), "the customer calls in: nothing to dial");
    }
}
