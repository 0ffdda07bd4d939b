//! Capacity rules and the slot grid of a service (docs/decisions.md#capacity-rules).
//!
//! Admin JSON (`PUT …/capacity-rules/{name}`):
//! `{"slot_minutes":15,"weekly":{"1":{"0900":10,"0915":10},…,"7":{}},
//!   "overrides":[{"date":"2026-12-24","slots":{"0900":5}}]}`
//!
//! Day `"1"` is Monday; keys are slot starts (`"HHMM"`, on the rule's grid) in the
//! business-hours zone of the service (a rule has no zone of its own); a slot not listed has
//! capacity 0. An override **replaces** the capacities of its date (slots it does not list have
//! capacity 0 that day), the same way a business-hours exception replaces that day's ranges.
//!
//! [`SlotPlan`] combines a service's business hours with its capacity rule (or its
//! `slot_minutes` / `slot_capacity` columns) into slots: local wall-clock slot starts on the grid,
//! turned into instants with `jiff`. Across DST changes, grid times inside a spring-forward gap
//! do not exist (no slot) and grid times inside a fall-back overlap exist twice (two slots with
//! the same local time and capacity, one per offset). A change by less than a slot (Lord
//! Howe's 30 minutes under an hour grid) leaves part of the changing slot in no slot: a time
//! there is in a closed slot. A slot is open when any part of it lies within business hours;
//! a closed slot has total capacity 0.

use std::collections::BTreeMap;

use jiff::{
    SignedDuration, Timestamp,
    civil::{Date, DateTime},
    tz::{AmbiguousOffset, TimeZone},
};
use serde::{Deserialize, Serialize, Serializer, ser::SerializeMap};
use serde_json::{Number, Value};

use super::{
    ServiceSettings,
    hours::{BusinessHours, DAY_MINUTES, DateKey, OpenSet, by_date, parse_spec},
};
use crate::error::{Error, Result};

/// The largest capacity one slot may have.
pub const MAX_SLOT_CAPACITY: u32 = 1_000_000;

fn bad(path: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{path}: {msg}"))
}

/// Capacities of one day: minute of the day → capacity.
type DayCaps = BTreeMap<u16, u32>;

fn hhmm(m: u16) -> String {
    format!("{:02}{:02}", m / 60, m % 60)
}

/// A validated capacity rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityRule {
    slot_minutes: u16,
    /// Index 0 = Monday (`"1"`).
    weekly: [DayCaps; 7],
    overrides: BTreeMap<Date, DayCaps>,
}

struct Caps<'a>(&'a DayCaps);

impl Serialize for Caps<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (minute, cap) in self.0 {
            m.serialize_entry(&hhmm(*minute), cap)?;
        }
        m.end()
    }
}

impl Serialize for CapacityRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Weekly<'a>(&'a [DayCaps; 7]);
        impl Serialize for Weekly<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(7))?;
                for (i, day) in self.0.iter().enumerate() {
                    m.serialize_entry(&(i + 1).to_string(), &Caps(day))?;
                }
                m.end()
            }
        }
        #[derive(Serialize)]
        struct Override<'a> {
            date: String,
            slots: Caps<'a>,
        }
        let overrides: Vec<Override<'_>> = self
            .overrides
            .iter()
            .map(|(d, caps)| Override {
                date: d.to_string(),
                slots: Caps(caps),
            })
            .collect();
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("slot_minutes", &self.slot_minutes)?;
        m.serialize_entry("weekly", &Weekly(&self.weekly))?;
        m.serialize_entry("overrides", &overrides)?;
        m.end()
    }
}

/// A capacity rule as sent (`PUT …/capacity-rules/{name}`), before the checks that span
/// fields (the grid of `slot_minutes`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    slot_minutes: Option<SlotMinutes>,
    weekly: Option<BTreeMap<DayNumber, SlotCaps>>,
    overrides: Option<Vec<OverrideSpec>>,
}

/// One dated override as sent.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "{\"date\":\"YYYY-MM-DD\",\"slots\":{…}}"
)]
struct OverrideSpec {
    date: Option<DateKey>,
    #[serde(default)]
    slots: SlotCaps,
}

/// The capacities of one day as sent: `"HHMM"` slot start → capacity.
type SlotCaps = BTreeMap<SlotStart, SlotCapacity>;

/// `slot_minutes`: 15, 30 or 60.
#[derive(Clone, Copy, Deserialize)]
#[serde(try_from = "Number")]
struct SlotMinutes(u16);

impl TryFrom<Number> for SlotMinutes {
    type Error = &'static str;

    fn try_from(n: Number) -> Result<Self, Self::Error> {
        match n.as_u64() {
            // Matched to 15, 30 or 60, so the cast cannot truncate.
            Some(m @ (15 | 30 | 60)) => Ok(Self(m as u16)),
            _ => Err("must be 15, 30 or 60"),
        }
    }
}

/// A key of `weekly`: `"1"` (Monday) to `"7"` (Sunday).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
struct DayNumber(usize);

impl TryFrom<String> for DayNumber {
    type Error = &'static str;

    fn try_from(key: String) -> Result<Self, Self::Error> {
        match key.as_bytes() {
            [d @ b'1'..=b'7'] => Ok(Self(usize::from(d - b'0'))),
            _ => Err("unknown day (expected \"1\" = Monday … \"7\" = Sunday)"),
        }
    }
}

/// A slot start `"HHMM"` (0000–2359) as minutes of the day.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
struct SlotStart(u16);

impl TryFrom<String> for SlotStart {
    type Error = &'static str;

    fn try_from(key: String) -> Result<Self, Self::Error> {
        let digits = key.len() == 4 && key.bytes().all(|b| b.is_ascii_digit());
        match (digits, key.get(..2), key.get(2..)) {
            (true, Some(h), Some(m)) => match (h.parse::<u16>(), m.parse::<u16>()) {
                (Ok(h), Ok(m)) if h < 24 && m < 60 => Ok(Self(h * 60 + m)),
                _ => Err(SLOT_START),
            },
            _ => Err(SLOT_START),
        }
    }
}

const SLOT_START: &str = "slot start must be \"HHMM\" between 0000 and 2359";

/// One slot's capacity: 0 to [`MAX_SLOT_CAPACITY`].
#[derive(Clone, Copy, Deserialize)]
#[serde(try_from = "Number")]
struct SlotCapacity(u32);

impl TryFrom<Number> for SlotCapacity {
    type Error = String;

    fn try_from(n: Number) -> Result<Self, String> {
        n.as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .filter(|&c| c <= MAX_SLOT_CAPACITY)
            .map(Self)
            .ok_or_else(|| format!("capacity must be an integer from 0 to {MAX_SLOT_CAPACITY}"))
    }
}

/// The day's capacities, each slot start checked against the grid (`{path}.HHMM`).
fn on_grid(path: &str, caps: SlotCaps, slot_minutes: u16) -> Result<DayCaps> {
    caps.into_iter()
        .map(|(SlotStart(minute), SlotCapacity(cap))| {
            if minute % slot_minutes != 0 {
                return Err(bad(
                    &format!("{path}.{}", hhmm(minute)),
                    format!("not a slot start of the {slot_minutes}-minute grid"),
                ));
            }
            Ok((minute, cap))
        })
        .collect()
}

impl CapacityRule {
    /// Parses and validates the admin JSON; errors name the field (`weekly.1.0910`, …).
    pub fn parse(value: &Value) -> Result<Self> {
        let spec: RuleSpec = parse_spec("a capacity rule", value)?;
        let Some(SlotMinutes(slot_minutes)) = spec.slot_minutes else {
            return Err(bad("slot_minutes", "is required (15, 30 or 60)"));
        };
        let mut weekly: [DayCaps; 7] = Default::default();
        for (DayNumber(day), caps) in spec.weekly.unwrap_or_default() {
            weekly[day - 1] = on_grid(&format!("weekly.{day}"), caps, slot_minutes)?;
        }
        let overrides = spec.overrides.unwrap_or_default();
        let overrides = overrides
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                let caps = on_grid(&format!("overrides[{i}].slots"), o.slots, slot_minutes)?;
                Ok((o.date, caps))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slot_minutes,
            weekly,
            overrides: by_date("overrides", overrides)?,
        })
    }

    /// Slot length in minutes.
    pub fn slot_minutes(&self) -> u16 {
        self.slot_minutes
    }

    /// Capacity of the slot starting at `minute` of local `date`.
    pub fn capacity(&self, date: Date, minute: u16) -> u32 {
        let day = match self.overrides.get(&date) {
            Some(caps) => caps,
            None => {
                &self.weekly[usize::from(date.weekday().to_monday_zero_offset().unsigned_abs())]
            }
        };
        day.get(&minute).copied().unwrap_or(0)
    }
}

/// Where a slot's capacity comes from.
#[derive(Debug, Clone)]
enum Capacity {
    /// The service's capacity rule: per-weekday slot capacities and dated overrides.
    Rule(CapacityRule),
    /// The service's `slot_capacity` for every open slot.
    Flat(u32),
}

/// One slot of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The instant the slot starts (local wall-clock start in the business-hours zone).
    pub start: Timestamp,
    /// Local date of the start in the business-hours zone.
    pub date: Date,
    /// Minute of the day of the start (local).
    pub minute: u16,
    /// Configured capacity (0 when closed).
    pub total: u32,
}

/// A service's slot grid: length, zone, hours and capacities.
#[derive(Debug, Clone)]
pub struct SlotPlan {
    slot_minutes: u16,
    hours: Option<BusinessHours>,
    tz: TimeZone,
    capacity: Capacity,
}

impl SlotPlan {
    /// The plan of a service: its business hours (none = always open, grid in UTC) and its
    /// capacity rule (none = the `slot_minutes` / `slot_capacity` columns).
    pub fn new(
        settings: &ServiceSettings,
        hours: Option<BusinessHours>,
        rule: Option<CapacityRule>,
    ) -> Self {
        let tz = hours.as_ref().map_or(TimeZone::UTC, |h| h.tz().clone());
        let (slot_minutes, capacity) = match rule {
            Some(rule) => (rule.slot_minutes, Capacity::Rule(rule)),
            None => (
                settings.slot_minutes,
                Capacity::Flat(settings.slot_capacity),
            ),
        };
        Self {
            slot_minutes: slot_minutes.max(1),
            hours,
            tz,
            capacity,
        }
    }

    /// Slot length in minutes.
    pub fn slot_minutes(&self) -> u16 {
        self.slot_minutes
    }

    /// Slot length as a duration (`slot_minutes` of the rule or the service).
    pub fn slot_len(&self) -> SignedDuration {
        SignedDuration::from_mins(i64::from(self.slot_minutes))
    }

    /// The business hours, if the service has any.
    pub fn hours(&self) -> Option<&BusinessHours> {
        self.hours.as_ref()
    }

    /// Whether the office is open at `t` (always, without business hours).
    pub fn is_open(&self, t: Timestamp) -> bool {
        self.hours.as_ref().is_none_or(|h| h.is_open(t))
    }

    /// Seconds the office stays open from `t` (see [`BusinessHours::open_for`]).
    pub fn open_for(&self, t: Timestamp) -> SignedDuration {
        match &self.hours {
            Some(h) => h.open_for(t),
            None => super::hours::OPEN_FOR_HORIZON,
        }
    }

    fn open_set(&self, from: Timestamp, to: Timestamp) -> Option<OpenSet> {
        self.hours.as_ref().map(|h| h.open_set(from, to))
    }

    fn total(&self, open: Option<&OpenSet>, start: Timestamp, date: Date, minute: u16) -> u32 {
        let end = start
            .saturating_add(self.slot_len())
            .unwrap_or(Timestamp::MAX);
        if open.is_some_and(|o| !o.overlaps(start, end)) {
            return 0;
        }
        match &self.capacity {
            Capacity::Flat(c) => *c,
            Capacity::Rule(rule) => rule.capacity(date, minute),
        }
    }

    /// The slot containing `t`: always one that [`SlotPlan::slots`] lists, so a booking claims
    /// the slot availability shows. When no listed slot contains `t` (a DST change by less than
    /// a slot, such as Lord Howe's 30 minutes under an hour grid, leaves part of the changing
    /// slot in no slot of the grid), the answer is a closed slot (total 0) starting on the
    /// local grid (docs/fuzzing.md#crashes-found).
    pub fn slot_at(&self, t: Timestamp) -> Slot {
        let slot = self.grid_slot_at(t);
        // Same UTC offset at the slot's start as at `t`: the start is the local grid time
        // itself, a listed slot. Otherwise the offset changed inside the slot.
        if self.tz.to_offset(slot.start) == self.tz.to_offset(t) {
            return slot;
        }
        let next = t.saturating_add(SignedDuration::from_nanos(1)).unwrap_or(t);
        if next <= t {
            return slot;
        }
        self.slots(t, next)
            .into_iter()
            .rfind(|s| s.start <= t)
            .unwrap_or(Slot { total: 0, ..slot })
    }

    /// The slot of `t` on the local grid, counted back from `t` by its local time since the
    /// grid time (right unless the UTC offset changes inside the slot).
    fn grid_slot_at(&self, t: Timestamp) -> Slot {
        let local = self.tz.to_datetime(t);
        let minute = (local.hour() as u16) * 60 + local.minute() as u16;
        let floor = minute - minute % self.slot_minutes;
        let into = SignedDuration::from_mins(i64::from(minute - floor))
            + SignedDuration::new(i64::from(local.second()), local.subsec_nanosecond());
        let start = t.saturating_sub(into).unwrap_or(Timestamp::MIN);
        let end = start
            .saturating_add(self.slot_len())
            .unwrap_or(Timestamp::MAX);
        let open = self.open_set(start, end);
        Slot {
            start,
            date: local.date(),
            minute: floor,
            total: self.total(open.as_ref(), start, local.date(), floor),
        }
    }

    /// Every slot that overlaps `[from, to)` (the slot containing `from` when `to <= from`), in
    /// time order, closed ones included with total 0.
    pub fn slots(&self, from: Timestamp, to: Timestamp) -> Vec<Slot> {
        if to <= from {
            return vec![self.slot_at(from)];
        }
        let len = self.slot_len();
        let open = self.open_set(
            from.saturating_sub(len).unwrap_or(from),
            to.saturating_add(len).unwrap_or(to),
        );
        let first = self
            .tz
            .to_datetime(from)
            .date()
            .yesterday()
            .unwrap_or(Date::MIN);
        let last = self
            .tz
            .to_datetime(to)
            .date()
            .tomorrow()
            .unwrap_or(Date::MAX);
        let mut out = Vec::new();
        let mut date = first;
        loop {
            let mut minute = 0;
            while minute < DAY_MINUTES {
                // minute < 1440, so the casts cannot truncate.
                let dt: DateTime = date.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
                let amb = self.tz.to_ambiguous_timestamp(dt);
                let offsets = match amb.offset() {
                    AmbiguousOffset::Unambiguous { offset } => [Some(offset), None],
                    AmbiguousOffset::Gap { .. } => [None, None],
                    AmbiguousOffset::Fold { before, after } => [Some(before), Some(after)],
                };
                for offset in offsets.into_iter().flatten() {
                    let Ok(start) = offset.to_timestamp(dt) else {
                        continue;
                    };
                    let end = start.saturating_add(len).unwrap_or(Timestamp::MAX);
                    if end > from && start < to {
                        out.push(Slot {
                            start,
                            date,
                            minute,
                            total: self.total(open.as_ref(), start, date, minute),
                        });
                    }
                }
                minute += self.slot_minutes;
            }
            match date.tomorrow() {
                Ok(next) if next <= last => date = next,
                _ => break,
            }
        }
        out.sort_by_key(|s| s.start);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn settings(slot_minutes: u16, cap: u32) -> ServiceSettings {
        ServiceSettings::parse(json!({"slot_minutes": slot_minutes, "slot_capacity": cap})).unwrap()
    }

    fn hours(tz: &str, weekly: Value) -> BusinessHours {
        BusinessHours::parse(&json!({"timezone": tz, "weekly": weekly})).unwrap()
    }

    #[test]
    fn rule_parses_serialises_and_overrides_replace_the_day() {
        let v = json!({"slot_minutes":15,"weekly":{"1":{"0900":10,"0915":10},"7":{}},
                       "overrides":[{"date":"2026-12-21","slots":{"0900":5}}]});
        let r = CapacityRule::parse(&v).unwrap();
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["weekly"]["1"], json!({"0900":10,"0915":10}));
        assert_eq!(back["weekly"]["3"], json!({}));
        assert_eq!(CapacityRule::parse(&back).unwrap(), r);
        let monday: Date = "2026-12-14".parse().unwrap();
        assert_eq!(r.capacity(monday, 9 * 60), 10);
        assert_eq!(r.capacity(monday, 9 * 60 + 30), 0);
        let overridden: Date = "2026-12-21".parse().unwrap();
        assert_eq!(r.capacity(overridden, 9 * 60), 5);
        assert_eq!(r.capacity(overridden, 9 * 60 + 15), 0);
    }

    #[test]
    fn rule_errors_name_the_field() {
        let msg = |v: Value| CapacityRule::parse(&v).unwrap_err().to_string();
        assert!(msg(json!({"weekly":{}})).starts_with("slot_minutes"));
        assert!(msg(json!({"slot_minutes":20})).contains("15, 30 or 60"));
        assert!(msg(json!({"slot_minutes":15,"weekly":{"8":{}}})).contains("weekly.8"));
        assert!(
            msg(json!({"slot_minutes":15,"weekly":{"1":{"0910":1}}})).contains("weekly.1.0910")
        );
        assert!(
            msg(json!({"slot_minutes":15,"weekly":{"1":{"2400":1}}})).contains("weekly.1.2400")
        );
        assert!(msg(json!({"slot_minutes":15,"weekly":{"1":{"0900":-1}}})).contains("capacity"));
        assert!(
            msg(json!({"slot_minutes":30,"overrides":[{"date":"x"}]}))
                .contains("overrides[0].date")
        );
    }

    #[test]
    fn serde_errors_start_with_the_field_path() {
        let msg = |v: Value| CapacityRule::parse(&v).unwrap_err().to_string();
        for (v, want) in [
            (json!([]), "a capacity rule must be a JSON object"),
            (
                json!({"slot_minutes":15,"weekly":{"8":{}}}),
                "weekly.8: unknown day (expected \"1\" = Monday … \"7\" = Sunday)",
            ),
            (
                json!({"slot_minutes":15,"weekly":{"1":{"0900":1.5}}}),
                "weekly.1.0900: capacity must be an integer from 0 to 1000000",
            ),
            (
                json!({"slot_minutes":15,"weekly":{"1":{"930":1}}}),
                "weekly.1.930: slot start must be \"HHMM\" between 0000 and 2359",
            ),
            (
                json!({"slot_minutes":30,"overrides":[{"date":"2026-01-01","slots":{"0915":1}}]}),
                "overrides[0].slots.0915: not a slot start of the 30-minute grid",
            ),
            (
                json!({"slot_minutes":15,"overrides":[{"date":"2026-01-01"},{"date":"2026-01-01"}]}),
                "overrides[1].date: 2026-01-01 is listed twice",
            ),
            (
                json!({"slot_minutes":15,"wekly":{}}),
                "wekly: unknown field `wekly`, expected one of `slot_minutes`, `weekly`, `overrides`",
            ),
            (
                json!({"slot_minutes":null}),
                "slot_minutes: is required (15, 30 or 60)",
            ),
        ] {
            assert_eq!(msg(v), want);
        }
    }

    #[test]
    fn flat_capacity_within_hours() {
        // 2026-06-01 Monday, Paris is UTC+2.
        let plan = SlotPlan::new(
            &settings(30, 7),
            Some(hours("Europe/Paris", json!({"mon":[["09:00","10:00"]]}))),
            None,
        );
        let slots = plan.slots(ts("2026-06-01T06:00:00Z"), ts("2026-06-01T09:00:00Z"));
        let open: Vec<_> = slots
            .iter()
            .filter(|s| s.total > 0)
            .map(|s| s.start)
            .collect();
        assert_eq!(
            open,
            vec![ts("2026-06-01T07:00:00Z"), ts("2026-06-01T07:30:00Z")]
        );
        assert_eq!(slots.len(), 6);
        assert!(slots.iter().all(|s| s.total == 0 || s.total == 7));
        let s = plan.slot_at(ts("2026-06-01T07:44:59.5Z"));
        assert_eq!(
            (s.start, s.minute, s.total),
            (ts("2026-06-01T07:30:00Z"), 9 * 60 + 30, 7)
        );
    }

    #[test]
    fn window_equal_bounds_give_the_containing_slot() {
        let plan = SlotPlan::new(&settings(15, 3), None, None);
        let slots = plan.slots(ts("2026-06-01T07:20:00Z"), ts("2026-06-01T07:20:00Z"));
        assert_eq!(slots.len(), 1);
        assert_eq!(slots[0].start, ts("2026-06-01T07:15:00Z"));
    }

    #[test]
    fn spring_forward_has_no_slots_in_the_gap() {
        // New York 2026-03-08: 02:00 EST → 03:00 EDT; 23 hourly slots that day.
        let plan = SlotPlan::new(
            &settings(60, 1),
            Some(hours(
                "America/New_York",
                json!({"sun":[["00:00","24:00"]]}),
            )),
            None,
        );
        let slots: Vec<_> = plan
            .slots(ts("2026-03-08T05:00:00Z"), ts("2026-03-09T04:00:00Z"))
            .into_iter()
            .filter(|s| s.total > 0)
            .collect();
        assert_eq!(slots.len(), 23);
        assert!(slots.iter().all(|s| s.minute != 120));
        assert_eq!(slots[1].start, ts("2026-03-08T06:00:00Z"));
        assert_eq!(slots[2].start, ts("2026-03-08T07:00:00Z"));
        assert_eq!(slots[2].minute, 180);
    }

    #[test]
    fn fall_back_repeats_the_slots_of_the_overlap() {
        // New York 2026-11-01: 02:00 EDT → 01:00 EST; 25 hourly slots, 01:00 twice.
        let rule = CapacityRule::parse(
            &json!({"slot_minutes":60,"weekly":{"7":{"0000":1,"0100":4,"0200":2}}}),
        )
        .unwrap();
        let plan = SlotPlan::new(
            &settings(15, 1),
            Some(hours(
                "America/New_York",
                json!({"sun":[["00:00","24:00"]]}),
            )),
            Some(rule),
        );
        let all = plan.slots(ts("2026-11-01T04:00:00Z"), ts("2026-11-02T05:00:00Z"));
        assert_eq!(all.len(), 25);
        let ones: Vec<_> = all.iter().filter(|s| s.minute == 60).collect();
        assert_eq!(ones.len(), 2);
        assert_eq!(ones[0].start, ts("2026-11-01T05:00:00Z"));
        assert_eq!(ones[1].start, ts("2026-11-01T06:00:00Z"));
        assert!(ones.iter().all(|s| s.total == 4));
        // 01:30 EST (second pass) belongs to the second 01:00 slot.
        assert_eq!(
            plan.slot_at(ts("2026-11-01T06:30:00Z")).start,
            ts("2026-11-01T06:00:00Z")
        );
        assert_eq!(
            plan.slot_at(ts("2026-11-01T05:30:00Z")).start,
            ts("2026-11-01T05:00:00Z")
        );
    }

    /// Found by the `business_hours` fuzz target: Lord Howe moves its clocks by 30 minutes,
    /// so under an hour grid part of the changing hour is in no listed slot, and `slot_at`
    /// answered a slot that availability never lists (its counter invisible to it).
    #[test]
    fn slot_at_is_a_listed_slot_across_half_hour_changes() {
        let plan = SlotPlan::new(
            &settings(60, 1),
            Some(hours(
                "Australia/Lord_Howe",
                json!({"sun":[["00:00","24:00"]]}),
            )),
            None,
        );
        // 2030-10-06 02:00 +10:30 → 02:30 +11:00; 2030-04-07 02:00 +11:00 → 01:30 +10:30.
        for t in [
            "2030-10-05T15:40:00Z", // 02:40 +11:00: in no listed slot
            "2030-10-05T16:10:00Z", // 03:10 +11:00: the 03:00 slot
            "2030-10-05T15:00:00Z", // 01:30 +10:30: the 01:00 slot
            "2030-04-06T15:10:00Z", // 01:40 +10:30, second pass: in no listed slot
            "2030-04-06T14:40:00Z", // 01:40 +11:00, first pass: the 01:00 slot
        ] {
            let t = ts(t);
            let slot = plan.slot_at(t);
            let listed = plan.slots(t, t + SignedDuration::from_secs(1));
            match listed.first() {
                Some(s) => assert_eq!(*s, slot, "{t}"),
                None => assert_eq!(slot.total, 0, "{t}: {slot:?}"),
            }
        }
        let s = plan.slot_at(ts("2030-10-05T16:10:00Z"));
        assert_eq!((s.start, s.minute), (ts("2030-10-05T16:00:00Z"), 180));
    }

    #[test]
    fn paris_quarter_hours_across_both_changes() {
        let plan = SlotPlan::new(
            &settings(15, 1),
            Some(hours("Europe/Paris", json!({"sun":[["00:00","24:00"]]}))),
            None,
        );
        // 2026-03-29: 92 quarter hours; 2026-10-25: 100.
        let spring = plan.slots(ts("2026-03-28T23:00:00Z"), ts("2026-03-29T22:00:00Z"));
        assert_eq!(spring.iter().filter(|s| s.total > 0).count(), 92);
        let fall = plan.slots(ts("2026-10-24T22:00:00Z"), ts("2026-10-25T23:00:00Z"));
        assert_eq!(fall.iter().filter(|s| s.total > 0).count(), 100);
        // Slots are contiguous: each starts where the previous one ends.
        for w in fall.windows(2) {
            assert_eq!(w[1].start.duration_since(w[0].start).as_mins(), 15);
        }
    }
}
