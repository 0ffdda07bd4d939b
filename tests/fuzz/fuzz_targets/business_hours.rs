//! Fuzz target `business_hours`: a `PUT …/business-hours/{name}` body, through the admin
//! handler's parser (`parse_json`) and validator (`AdminKind::validate`: `BusinessHours::parse`
//! and the canonical stored form), then evaluated (docs/fuzzing.md#business_hours).
//!
//! Asserts beyond "no panic": a refusal is a 4xx; the stored form parses back to equal hours
//! and is stable (validating it again stores the same JSON); at fixed instants (DST changes,
//! the ends of time) and on the dates the spec names, the open set is sorted and disjoint,
//! `open_for` is within its horizon and positive exactly when `is_open`, and the slot grid
//! (15- and 60-minute slots, flat capacity) lists sorted slots with places only inside open hours.
#![no_main]

use functions::admin::versioned::AdminKind;
use fuzzing::{assert_client_error, exercise_plan, instants, instants_of, plan, settings};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use shared::{
    db::hours::HoursKind,
    http::extract::parse_json,
    model::{BusinessHours, SlotPlan},
};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = parse_json::<Value>(data) else {
        return;
    };
    let stored = match HoursKind::validate("fuzz", body) {
        Ok(stored) => stored,
        Err(e) => return assert_client_error(&e),
    };
    let hours = BusinessHours::parse(&Value::Object(stored.clone())).expect("stored form parses");
    let again = HoursKind::validate("fuzz", Value::Object(stored.clone())).expect("revalidates");
    assert_eq!(again, stored, "stored form is not stable");
    let mut at = instants();
    for key in stored["exceptions"].as_array().into_iter().flatten() {
        if let Some(date) = key["date"].as_str().and_then(|d| d.parse().ok()) {
            at.extend(instants_of(date, &hours));
        }
    }
    at.truncate(20);
    // The default 15-minute grid, and an hour grid (which a 30-minute DST change splits).
    let hourly = SlotPlan::new(
        &settings(json!({"slot_minutes": 60})),
        Some(hours.clone()),
        None,
    );
    for plan in [plan(Some(hours), None), hourly] {
        for &t in &at {
            exercise_plan(&plan, t);
        }
    }
});
