//! What the fuzz targets share (docs/fuzzing.md): the fixed instants they evaluate at, the
//! services and hours they evaluate against, and the invariants of open sets and slot lists.
//!
//! Every check panics with a message naming the broken invariant, so libFuzzer reports it as
//! a crash and keeps the input in `tests/fuzz/artifacts/<target>/`.

use jiff::{SignedDuration, Timestamp, civil::Date};
use serde_json::{Value, json};
use shared::model::{BusinessHours, CapacityRule, ServiceSettings, Slot, SlotPlan, hours::OpenSet};

/// The request time of every target: a Monday morning in UTC.
pub const NOW: &str = "2030-01-07T10:00:00Z";

/// [`NOW`] as an instant.
pub fn now() -> Timestamp {
    NOW.parse().expect("NOW is a valid instant")
}

/// Instants where time arithmetic is most fragile: the request time, both sides of DST
/// changes in the zones the fixtures use, and the ends of the representable range.
pub fn instants() -> Vec<Timestamp> {
    let mut out: Vec<Timestamp> = [
        NOW,
        "2030-03-10T06:59:59Z", // New York, one second before spring-forward
        "2030-03-10T07:00:00Z",
        "2030-11-03T05:30:00Z", // New York, inside the fall-back hour (first pass)
        "2030-11-03T06:30:00Z", // … second pass
        "2030-03-31T01:00:00Z", // Paris spring-forward
        "2030-10-27T00:30:00Z", // Paris fall-back
        "2030-10-05T15:40:00Z", // Lord Howe, 10 minutes into its 30-minute spring-forward
        "2030-02-28T23:59:59.999999999Z",
    ]
    .iter()
    .map(|s| s.parse().expect("fixed instants parse"))
    .collect();
    out.push(Timestamp::MIN);
    out.push(Timestamp::MAX);
    out.push(Timestamp::MIN + SignedDuration::from_hours(36));
    out.push(Timestamp::MAX - SignedDuration::from_hours(36));
    out
}

/// The instants of a local date that a spec names (an exception or an override date): its
/// start, noon and last minute in `tz`, where the date exists.
pub fn instants_of(date: Date, hours: &BusinessHours) -> Vec<Timestamp> {
    [(0, 0), (12, 0), (23, 59)]
        .iter()
        .filter_map(|&(h, m)| hours.tz().to_timestamp(date.at(h, m, 0, 0)).ok())
        .collect()
}

/// Service settings as the admin API stores them.
pub fn settings(v: Value) -> ServiceSettings {
    ServiceSettings::parse(v).expect("fixture settings are valid")
}

/// New York hours, weekdays 09:00–17:00 with a split Friday, a holiday and a short day.
pub fn ny_hours() -> BusinessHours {
    BusinessHours::parse(&json!({
        "timezone": "America/New_York",
        "weekly": {"mon": [["09:00","17:00"]], "tue": [["09:00","17:00"]],
                   "wed": [["00:00","24:00"]], "thu": [["09:00","17:00"]],
                   "fri": [["09:00","12:00"],["13:00","17:00"]], "sat": [], "sun": []},
        "exceptions": [{"date":"2030-12-25","open":[]},
                       {"date":"2030-12-24","open":[["09:00","12:00"]]}]
    }))
    .expect("fixture hours are valid")
}

/// Every check of an open set over `[from, to]`: intervals non-empty, sorted, disjoint and
/// not touching (touching ones are merged), each reaching into the window.
pub fn check_open_set(set: &OpenSet, from: Timestamp, to: Timestamp) {
    for &(s, e) in set.intervals() {
        assert!(s < e, "empty open interval {s}..{e}");
        assert!(
            e >= from && s <= to,
            "interval {s}..{e} outside {from}..{to}"
        );
    }
    for w in set.intervals().windows(2) {
        assert!(w[0].1 < w[1].0, "open intervals overlap or touch: {w:?}");
    }
}

/// Every check of a slot list `plan.slots(from, to)`: sorted by start, each on the grid, each
/// overlapping the window, closed ones (outside business hours) with total 0, open ones with
/// the configured capacity.
pub fn check_slots(plan: &SlotPlan, slots: &[Slot], from: Timestamp, to: Timestamp) {
    let len = plan.slot_len();
    assert!(
        slots.windows(2).all(|w| w[0].start <= w[1].start),
        "slots out of order"
    );
    if to <= from {
        assert_eq!(slots.len(), 1, "the slot containing {from}");
        check_slot_at(plan, from, slots[0]);
        return;
    }
    let open = plan.hours().map(|h| {
        let (wide_from, wide_to) = (
            from.saturating_sub(len).unwrap_or(from),
            to.saturating_add(len).unwrap_or(to),
        );
        let set = h.open_set(wide_from, wide_to);
        check_open_set(&set, wide_from, wide_to);
        set
    });
    for s in slots {
        assert_eq!(
            s.minute % plan.slot_minutes(),
            0,
            "slot off the grid: {s:?}"
        );
        let end = s.start.saturating_add(len).unwrap_or(Timestamp::MAX);
        assert!(
            end > from && s.start < to,
            "slot {s:?} outside {from}..{to}"
        );
        if let Some(open) = &open
            && s.total > 0
        {
            assert!(open.overlaps(s.start, end), "slot {s:?} outside open hours");
        }
    }
}

/// `plan.slot_at(t)`: the slot contains `t`, starts on the grid and agrees with the hours.
pub fn check_slot_at(plan: &SlotPlan, t: Timestamp, slot: Slot) {
    let end = slot
        .start
        .saturating_add(plan.slot_len())
        .unwrap_or(Timestamp::MAX);
    assert!(
        slot.start <= t && (t < end || end == Timestamp::MAX),
        "{t} not in {slot:?}"
    );
    assert_eq!(
        slot.minute % plan.slot_minutes(),
        0,
        "slot off the grid: {slot:?}"
    );
    if plan.is_open(t) {
        return;
    }
    if let Some(h) = plan.hours()
        && slot.total > 0
    {
        assert!(
            h.open_set(slot.start, end).overlaps(slot.start, end),
            "slot {slot:?} has places but no open hours"
        );
    }
}

/// Evaluates `plan` around `t` the way the handlers do: open-for, the slot of `t`, and the
/// slots of the day after it.
pub fn exercise_plan(plan: &SlotPlan, t: Timestamp) {
    let open_for = plan.open_for(t);
    assert!(
        open_for >= SignedDuration::ZERO && open_for <= shared::model::hours::OPEN_FOR_HORIZON,
        "open_for {open_for:?} at {t}"
    );
    assert_eq!(
        open_for > SignedDuration::ZERO,
        plan.is_open(t),
        "open_for and is_open disagree at {t}"
    );
    let at = plan.slot_at(t);
    check_slot_at(plan, t, at);
    // The slot a booking claims is the slot availability lists for that time.
    // (Except where the slot's start is before the first representable instant: the grid
    // time does not exist there, and the slot is clamped to it.)
    let next = t.saturating_add(SignedDuration::from_secs(1)).unwrap_or(t);
    if next > t && at.start > Timestamp::MIN {
        let listed = plan.slots(t, next);
        assert!(
            listed.iter().any(|s| *s == at) || (listed.is_empty() && at.total == 0),
            "slot_at({t}) = {at:?} is not a listed slot: {listed:?}"
        );
    }
    let to = t
        .saturating_add(SignedDuration::from_hours(24))
        .unwrap_or(Timestamp::MAX);
    check_slots(plan, &plan.slots(t, to), t, to);
}

/// A plan of the given hours and capacity rule over default settings.
pub fn plan(hours: Option<BusinessHours>, rule: Option<CapacityRule>) -> SlotPlan {
    SlotPlan::new(&ServiceSettings::default(), hours, rule)
}

/// A refusal of untrusted input must be a 4xx: a 5xx is a bug the fuzzer reports.
pub fn assert_client_error(e: &shared::ApiError) {
    let status = e.status_code();
    assert!(
        (400..500).contains(&status),
        "input answered {status}: {e:?}"
    );
}
