//! Fuzz target `capacity_rule`: a `PUT …/capacity-rules/{name}` body, through the admin
//! handler's parser (`parse_json`) and validator (`AdminKind::validate`: `CapacityRule::parse`
//! and the canonical stored form), then evaluated in a slot plan with New York business hours
//! and without hours (docs/fuzzing.md#capacity_rule).
//!
//! Asserts beyond "no panic": a refusal is a 4xx; the stored form parses back to an equal rule
//! and is stable; every listed slot is on the rule's grid, sorted, and has places only inside
//! open hours, and then exactly the rule's capacity for its local date and minute; the slot a
//! booking would claim is a listed one.
#![no_main]

use functions::admin::versioned::AdminKind;
use fuzzing::{assert_client_error, exercise_plan, instants, instants_of, ny_hours, plan};
use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::{db::hours::CapacityKind, http::extract::parse_json, model::CapacityRule};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = parse_json::<Value>(data) else {
        return;
    };
    let stored = match CapacityKind::validate("fuzz", body) {
        Ok(stored) => stored,
        Err(e) => return assert_client_error(&e),
    };
    let rule = CapacityRule::parse(&Value::Object(stored.clone())).expect("stored form parses");
    let again = CapacityKind::validate("fuzz", Value::Object(stored.clone())).expect("revalidates");
    assert_eq!(again, stored, "stored form is not stable");
    let hours = ny_hours();
    let mut at = instants();
    for o in stored["overrides"].as_array().into_iter().flatten() {
        if let Some(date) = o["date"].as_str().and_then(|d| d.parse().ok()) {
            at.extend(instants_of(date, &hours));
        }
    }
    at.truncate(24);
    for plan in [
        plan(Some(hours), Some(rule.clone())),
        plan(None, Some(rule.clone())),
    ] {
        assert_eq!(plan.slot_minutes(), rule.slot_minutes());
        for &t in &at {
            exercise_plan(&plan, t);
            let to = t
                .saturating_add(SignedDuration::from_hours(24))
                .unwrap_or(Timestamp::MAX);
            for s in plan.slots(t, to).into_iter().filter(|s| s.total > 0) {
                assert_eq!(s.total, rule.capacity(s.date, s.minute), "{s:?}");
            }
        }
    }
});
