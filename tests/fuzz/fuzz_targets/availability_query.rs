//! Fuzz target `availability_query`: the query string of `GET /callbacks/availability/{service}`
//! (docs/fuzzing.md#availability_query), decoded as the handler's `Query` extractor does
//! (`serde_urlencoded` into a map), parsed by `AvailabilityQuery::parse` at a fixed time, cut to
//! the bookable window by `db::slots::query_window`, and listed by `SlotPlan::slots` over New
//! York hours with a capacity rule.
//!
//! Asserts beyond "no panic": a parsed window never ends before it starts nor spans more than
//! the limit; its start renders (`wire_time`, `localTime`) and a rendered start parses back to
//! the same millisecond; the listed slots are sorted, on the grid, inside the window and, when
//! they have places, inside open hours.
#![no_main]

use std::{collections::BTreeMap, sync::LazyLock};

use fuzzing::{check_slots, now, ny_hours, plan};
use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use shared::{
    db::slots::query_window,
    model::{
        CapacityRule, SlotPlan,
        availability::{AvailabilityQuery, MAX_DAYS},
        callback::wire_time,
    },
};

static PLANS: LazyLock<[SlotPlan; 2]> = LazyLock::new(|| {
    let rule = CapacityRule::parse(&json!({
        "slot_minutes": 30,
        "weekly": {"1": {"0900": 2, "0930": 0}, "3": {"0000": 1, "0130": 3, "2330": 1}},
        "overrides": [{"date": "2030-12-24", "slots": {"0900": 1}}]
    }))
    .expect("fixture rule is valid");
    [plan(None, None), plan(Some(ny_hours()), Some(rule))]
});

/// Slots listed per input at most (a year of 15-minute slots would make each run slow
/// without reaching new code).
const LIST_SPAN: SignedDuration = SignedDuration::from_hours(72);

fn check_query(q: &AvailabilityQuery) {
    assert!(q.end >= q.start, "window ends before it starts");
    assert!(
        q.end.duration_since(q.start).as_hours() <= MAX_DAYS * 24 + 1,
        "window longer than {MAX_DAYS} days"
    );
    assert!(q.max_time_slots.is_none_or(|n| n >= 1));
    let shown = wire_time(q.start);
    let _ = q.zone.local_time(q.start);
    // What a client reads from `utcTime` it can send back as `start`.
    if (0..=9999).contains(&q.start.to_zoned(jiff::tz::TimeZone::UTC).year()) {
        let again = AvailabilityQuery::parse(
            &BTreeMap::from([("start".to_string(), shown.clone())]),
            now(),
        )
        .unwrap_or_else(|e| panic!("rendered start {shown} does not parse: {e}"));
        assert_eq!(
            wire_time(again.start),
            shown,
            "rendered start parses to another time"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(params) = serde_urlencoded::from_str::<BTreeMap<String, String>>(query) else {
        return;
    };
    let Ok(q) = AvailabilityQuery::parse(&params, now()) else {
        return;
    };
    check_query(&q);
    for plan in PLANS.iter() {
        let Some((from, to)) = query_window(&q, now(), 366) else {
            continue;
        };
        assert!(
            from <= to && from >= q.start.min(now()),
            "window {from}..{to}"
        );
        let to = to.min(from.saturating_add(LIST_SPAN).unwrap_or(Timestamp::MAX));
        check_slots(plan, &plan.slots(from, to), from, to);
    }
});
