//! Business hours: an IANA time zone, weekly open ranges and dated exceptions
//! (docs/decisions.md#business-hours).
//!
//! Admin JSON (`PUT …/business-hours/{name}`):
//! `{"timezone":"America/New_York","weekly":{"mon":[["09:00","17:00"]],…,"sun":[]},
//!   "exceptions":[{"date":"2026-12-25","open":[]},{"date":"2026-12-24","open":[["09:00","12:00"]]}]}`
//!
//! Times are local wall-clock times in the zone; a day may hold several ranges; `"24:00"` is
//! allowed as an end; a day missing from `weekly` is closed; an exception replaces the weekly
//! ranges of its date (`"open":[]` = closed all day).
//!
//! Daylight-saving rules (all zone math goes through `jiff`):
//! - a range edge that falls in a spring-forward gap moves to the transition (the first instant
//!   that exists after it), so `["02:30","05:00"]` on a New York spring-forward day opens at
//!   03:00 EDT and a range lying wholly inside the gap is closed;
//! - a range edge in a fall-back overlap takes the earlier of the two instants, so
//!   `["00:00","03:00"]` on a fall-back day is open four real hours;
//! - ranges that touch across midnight (`mon` until `"24:00"`, `tue` from `"00:00"`) form one
//!   continuous opening for [`BusinessHours::open_for`].

use std::collections::BTreeMap;

use jiff::{
    SignedDuration, Timestamp,
    civil::{Date, DateTime},
    tz::{AmbiguousOffset, TimeZone},
};
use serde::{Deserialize, Serialize, Serializer, de::DeserializeOwned, ser::SerializeMap};
use serde_json::Value;

use crate::error::{Error, Result};

/// Day keys of `weekly`, Monday first.
pub const DAY_KEYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Minutes in a day; also the value of `"24:00"`.
pub const DAY_MINUTES: u16 = 1440;

/// How far [`BusinessHours::open_for`] looks ahead: an office open around the clock reports
/// this many seconds (7 days).
pub const OPEN_FOR_HORIZON: SignedDuration = SignedDuration::from_hours(24 * 7);

/// A local open range `[start, end)` in minutes of the day (`end` may be 1440 = `"24:00"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    /// Opening minute of the day.
    pub start: u16,
    /// Closing minute of the day (exclusive).
    pub end: u16,
}

fn hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

impl Serialize for Range {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [hhmm(self.start), hhmm(self.end)].serialize(s)
    }
}

/// Parses `"HH:MM"` (00:00–24:00) into minutes of the day.
fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(DAY_MINUTES),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

fn bad(path: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{path}: {msg}"))
}

/// Deserialises an admin JSON spec (`what` names it when it is not a JSON object); a failure
/// is invalid input naming the field path (`weekly.mon[1]: …`,
/// docs/admin-objects.md#spec-error-messages).
pub(crate) fn parse_spec<T: DeserializeOwned>(what: &str, value: &Value) -> Result<T> {
    if !value.is_object() {
        return Err(Error::invalid(format!("{what} must be a JSON object")));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        match (path.as_str(), type_hint(&path)) {
            (".", _) => Error::invalid(inner),
            (_, Some(hint)) if inner.starts_with("invalid type") => bad(&path, hint),
            _ => bad(&path, inner),
        }
    })
}

/// What a field must look like, said instead of serde's "invalid type: …, expected …" when a
/// field of a business-hours or capacity spec has the wrong JSON type.
fn type_hint(path: &str) -> Option<&'static str> {
    let leaf = path.rsplit('.').next().unwrap_or(path);
    match leaf {
        "timezone" => Some("must be an IANA time zone such as Europe/Paris"),
        "weekly" => Some("must be an object keyed by mon … sun"),
        "exceptions" => Some("must be a list"),
        "date" => Some("must be a date YYYY-MM-DD"),
        "slot_minutes" => Some("must be 15, 30 or 60"),
        "open" => Some("must be a list of [\"HH:MM\",\"HH:MM\"] ranges"),
        _ if path.starts_with("weekly.") && !path.contains('[') => {
            Some("must be a list of [\"HH:MM\",\"HH:MM\"] ranges")
        }
        _ => None,
    }
}

/// A `["HH:MM","HH:MM"]` pair as sent.
#[derive(Deserialize)]
#[serde(expecting = "a [\"HH:MM\",\"HH:MM\"] pair")]
struct Pair(String, String);

/// The open ranges of one day, sorted; as sent, a list of pairs that must not overlap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<RangeSpec>")]
struct DayRanges(Vec<Range>);

/// One range as sent (checked on its own; [`DayRanges`] checks the list).
#[derive(Deserialize)]
#[serde(try_from = "Pair")]
struct RangeSpec(Range);

impl TryFrom<Pair> for RangeSpec {
    type Error = &'static str;

    fn try_from(Pair(start, end): Pair) -> Result<Self, Self::Error> {
        let (Some(start), Some(end)) = (parse_hhmm(&start), parse_hhmm(&end)) else {
            return Err("times must be \"HH:MM\" between 00:00 and 24:00");
        };
        if start == DAY_MINUTES {
            return Err("24:00 is only allowed as an end");
        }
        if end <= start {
            return Err("the end must be after the start (split overnight ranges at 24:00)");
        }
        Ok(Self(Range { start, end }))
    }
}

impl TryFrom<Vec<RangeSpec>> for DayRanges {
    type Error = String;

    fn try_from(ranges: Vec<RangeSpec>) -> Result<Self, String> {
        let mut ranges: Vec<Range> = ranges.into_iter().map(|r| r.0).collect();
        ranges.sort();
        for w in ranges.windows(2) {
            if w[1].start < w[0].end {
                return Err(format!(
                    "ranges {}-{} and {}-{} overlap",
                    hhmm(w[0].start),
                    hhmm(w[0].end),
                    hhmm(w[1].start),
                    hhmm(w[1].end)
                ));
            }
        }
        Ok(Self(ranges))
    }
}

/// A key of `weekly`: the day's index, Monday = 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
struct DayKey(usize);

impl TryFrom<String> for DayKey {
    type Error = &'static str;

    fn try_from(key: String) -> Result<Self, Self::Error> {
        DAY_KEYS
            .iter()
            .position(|d| *d == key)
            .map(Self)
            .ok_or("unknown day (expected mon, tue, wed, thu, fri, sat, sun)")
    }
}

/// A `"YYYY-MM-DD"` date of an exception or an override.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct DateKey(pub(crate) Date);

impl TryFrom<String> for DateKey {
    type Error = &'static str;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse().map(Self).map_err(|_| "must be a date YYYY-MM-DD")
    }
}

/// An IANA zone as sent: its name and the zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct Zone {
    name: String,
    tz: TimeZone,
}

impl TryFrom<String> for Zone {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        let tz = zone(&name)?;
        Ok(Self { name, tz })
    }
}

fn zone(name: &str) -> Result<TimeZone, String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be an IANA time zone such as Europe/Paris".into());
    }
    TimeZone::get(name)
        .map_err(|_| format!("unknown time zone {name:?}; use an IANA name such as Europe/Paris"))
}

/// Parses an IANA zone name; the error names `field`.
pub fn parse_zone(field: &str, name: &str) -> Result<TimeZone> {
    zone(name).map_err(|msg| bad(field, msg))
}

/// Business hours as sent (`PUT …/business-hours/{name}`), before the checks that involve
/// several fields at once.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoursSpec {
    timezone: Option<Zone>,
    weekly: Option<BTreeMap<DayKey, DayRanges>>,
    exceptions: Option<Vec<ExceptionSpec>>,
}

/// One dated exception as sent.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "{\"date\":\"YYYY-MM-DD\",\"open\":[…]}"
)]
struct ExceptionSpec {
    date: Option<DateKey>,
    #[serde(default)]
    open: DayRanges,
}

/// Dated entries keyed by date; a date listed twice is invalid (`{list}[i].date`).
pub(crate) fn by_date<T>(
    list: &str,
    items: impl IntoIterator<Item = (Option<DateKey>, T)>,
) -> Result<BTreeMap<Date, T>> {
    let mut out = BTreeMap::new();
    for (i, (date, item)) in items.into_iter().enumerate() {
        let path = format!("{list}[{i}].date");
        let Some(DateKey(date)) = date else {
            return Err(bad(&path, "must be a date YYYY-MM-DD"));
        };
        if out.insert(date, item).is_some() {
            return Err(bad(&path, format!("{date} is listed twice")));
        }
    }
    Ok(out)
}

/// The instant of a local wall-clock time used as a range edge or a window bound: a time in a
/// spring-forward gap moves to the transition, a time in a fall-back overlap takes the
/// earlier instant.
pub fn local_instant(tz: &TimeZone, dt: DateTime) -> Timestamp {
    let amb = tz.to_ambiguous_timestamp(dt);
    let via = |offset: jiff::tz::Offset| offset.to_timestamp(dt).ok();
    let found = match amb.offset() {
        AmbiguousOffset::Unambiguous { offset } => via(offset),
        AmbiguousOffset::Fold { before, .. } => via(before),
        AmbiguousOffset::Gap { before, .. } => via(before).and_then(|later| {
            // `later` lies at or after the transition; the transition is the latest one at or
            // before it (`preceding` is exclusive, hence the nanosecond).
            let probe = later.checked_add(SignedDuration::from_nanos(1)).ok()?;
            tz.preceding(probe).next().map(|t| t.timestamp())
        }),
    };
    // Only out-of-range dates (year ±9999) get here; the compatible reading is as good as any.
    found.unwrap_or_else(|| {
        tz.to_timestamp(dt).unwrap_or(if dt.year() < 0 {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        })
    })
}

/// Business hours as validated from the admin JSON (docs/decisions.md#business-hours): a zone,
/// weekly ranges and dated exceptions, ready to answer "open at t?" and "open until when?".
#[derive(Debug, Clone)]
pub struct BusinessHours {
    timezone: String,
    tz: TimeZone,
    /// Index 0 = Monday.
    weekly: [Vec<Range>; 7],
    exceptions: BTreeMap<Date, Vec<Range>>,
}

impl PartialEq for BusinessHours {
    fn eq(&self, other: &Self) -> bool {
        self.timezone == other.timezone
            && self.weekly == other.weekly
            && self.exceptions == other.exceptions
    }
}

impl Serialize for BusinessHours {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Exception<'a> {
            date: String,
            open: &'a [Range],
        }
        struct Weekly<'a>(&'a [Vec<Range>; 7]);
        impl Serialize for Weekly<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(7))?;
                for (key, ranges) in DAY_KEYS.iter().zip(self.0) {
                    m.serialize_entry(key, ranges)?;
                }
                m.end()
            }
        }
        let exceptions: Vec<Exception<'_>> = self
            .exceptions
            .iter()
            .map(|(d, r)| Exception {
                date: d.to_string(),
                open: r,
            })
            .collect();
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("timezone", &self.timezone)?;
        m.serialize_entry("weekly", &Weekly(&self.weekly))?;
        m.serialize_entry("exceptions", &exceptions)?;
        m.end()
    }
}

/// A sorted list of disjoint open intervals `[start, end)` in UTC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenSet(Vec<(Timestamp, Timestamp)>);

impl OpenSet {
    /// The intervals, in order.
    pub fn intervals(&self) -> &[(Timestamp, Timestamp)] {
        &self.0
    }

    /// The interval containing `t`, if any.
    pub fn containing(&self, t: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let i = self.0.partition_point(|&(_, end)| end <= t);
        self.0.get(i).copied().filter(|&(start, _)| start <= t)
    }

    /// Whether `t` is inside an open interval.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.containing(t).is_some()
    }

    /// Whether any part of `[start, end)` is open.
    pub fn overlaps(&self, start: Timestamp, end: Timestamp) -> bool {
        let i = self.0.partition_point(|&(_, e)| e <= start);
        self.0.get(i).is_some_and(|&(s, _)| s < end)
    }
}

impl BusinessHours {
    /// Parses and validates the admin JSON; errors name the field (`weekly.mon[1]`, …).
    pub fn parse(value: &Value) -> Result<Self> {
        let spec: HoursSpec = parse_spec("business hours", value)?;
        let Some(Zone { name, tz }) = spec.timezone else {
            return Err(bad(
                "timezone",
                "is required (an IANA name such as Europe/Paris)",
            ));
        };
        let mut weekly: [Vec<Range>; 7] = Default::default();
        for (DayKey(day), DayRanges(ranges)) in spec.weekly.unwrap_or_default() {
            weekly[day] = ranges;
        }
        let exceptions = spec.exceptions.unwrap_or_default();
        let exceptions = by_date(
            "exceptions",
            exceptions.into_iter().map(|e| (e.date, e.open.0)),
        )?;
        Ok(Self {
            timezone: name,
            tz,
            weekly,
            exceptions,
        })
    }

    /// Around-the-clock hours in `tz` (for services without business hours).
    pub fn always_open(timezone: &str) -> Result<Self> {
        let tz = parse_zone("timezone", timezone)?;
        Ok(Self {
            timezone: timezone.to_string(),
            tz,
            weekly: std::array::from_fn(|_| {
                vec![Range {
                    start: 0,
                    end: DAY_MINUTES,
                }]
            }),
            exceptions: BTreeMap::new(),
        })
    }

    /// The IANA zone name.
    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    /// The IANA zone of the hours; every range and the slot grid are local to it.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// The local ranges of one date (its exception, else its weekday's ranges).
    pub fn day_ranges(&self, date: Date) -> &[Range] {
        match self.exceptions.get(&date) {
            Some(r) => r,
            None => {
                &self.weekly[usize::from(date.weekday().to_monday_zero_offset().unsigned_abs())]
            }
        }
    }

    /// Open intervals (UTC, merged) that intersect `[from, to]`.
    pub fn open_set(&self, from: Timestamp, to: Timestamp) -> OpenSet {
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
        let mut out: Vec<(Timestamp, Timestamp)> = Vec::new();
        let mut date = first;
        loop {
            for r in self.day_ranges(date) {
                let at = |m: u16| {
                    let dt = if m == DAY_MINUTES {
                        date.tomorrow().unwrap_or(Date::MAX).at(0, 0, 0, 0)
                    } else {
                        // m < 1440, so the casts cannot truncate.
                        date.at((m / 60) as i8, (m % 60) as i8, 0, 0)
                    };
                    local_instant(&self.tz, dt)
                };
                let (s, e) = (at(r.start), at(r.end));
                if e <= s || e < from || s > to {
                    continue;
                }
                match out.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => out.push((s, e)),
                }
            }
            match date.tomorrow() {
                Ok(next) if next <= last => date = next,
                _ => break,
            }
        }
        OpenSet(out)
    }

    /// Whether the office is open at `t`.
    pub fn is_open(&self, t: Timestamp) -> bool {
        self.open_set(t, t).contains(t)
    }

    /// How long the office stays open from `t` (zero when closed), counting openings that touch
    /// across midnight or exceptions as one, capped at [`OPEN_FOR_HORIZON`].
    pub fn open_for(&self, t: Timestamp) -> SignedDuration {
        let limit = t.saturating_add(OPEN_FOR_HORIZON).unwrap_or(Timestamp::MAX);
        let set = self.open_set(t, limit);
        let Some((_, mut end)) = set.containing(t) else {
            return SignedDuration::ZERO;
        };
        for &(s, e) in set.intervals() {
            if s <= end && e > end {
                end = e;
            }
        }
        (end.min(limit)).duration_since(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ny(weekly: Value, exceptions: Value) -> BusinessHours {
        BusinessHours::parse(
            &json!({"timezone":"America/New_York","weekly":weekly,"exceptions":exceptions}),
        )
        .unwrap()
    }

    #[test]
    fn parses_and_serialises_the_design_shape() {
        let v = json!({"timezone":"America/New_York",
            "weekly":{"mon":[["09:00","17:00"]],"tue":[["13:00","17:00"],["08:00","12:00"]],"sun":[]},
            "exceptions":[{"date":"2026-12-25","open":[]},{"date":"2026-12-24","open":[["09:00","12:00"]]}]});
        let h = BusinessHours::parse(&v).unwrap();
        let back = serde_json::to_value(&h).unwrap();
        assert_eq!(
            back["weekly"]["tue"],
            json!([["08:00", "12:00"], ["13:00", "17:00"]])
        );
        assert_eq!(back["weekly"]["wed"], json!([]));
        assert_eq!(back["exceptions"][0]["date"], "2026-12-24");
        assert_eq!(BusinessHours::parse(&back).unwrap(), h);
    }

    #[test]
    fn errors_name_the_field() {
        let msg = |v: Value| BusinessHours::parse(&v).unwrap_err().to_string();
        assert!(msg(json!({"weekly":{}})).starts_with("timezone"));
        assert!(msg(json!({"timezone":"Mars/Base"})).contains("Mars/Base"));
        assert!(msg(json!({"timezone":"UTC","weekly":{"monday":[]}})).contains("weekly.monday"));
        assert!(
            msg(json!({"timezone":"UTC","weekly":{"mon":[["10:00","09:00"]]}}))
                .contains("weekly.mon[0]")
        );
        assert!(
            msg(json!({"timezone":"UTC","weekly":{"mon":[["24:00","24:00"]]}})).contains("24:00")
        );
        assert!(
            msg(json!({"timezone":"UTC","weekly":{"mon":[["09:00","12:00"],["11:00","13:00"]]}}))
                .contains("overlap")
        );
        assert!(
            msg(json!({"timezone":"UTC","weekly":{"mon":[["9:00","12:00"]]}})).contains("HH:MM")
        );
        assert!(
            msg(json!({"timezone":"UTC","exceptions":[{"date":"2026-02-30"}]}))
                .contains("exceptions[0].date")
        );
        assert!(
            msg(
                json!({"timezone":"UTC","exceptions":[{"date":"2026-02-03"},{"date":"2026-02-03"}]})
            )
            .contains("twice")
        );
        assert!(msg(json!({"timezone":"UTC","weeky":{}})).contains("weeky"));
    }

    #[test]
    fn serde_errors_start_with_the_field_path() {
        let msg = |v: Value| BusinessHours::parse(&v).unwrap_err().to_string();
        for (v, want) in [
            (json!([]), "business hours must be a JSON object"),
            (
                json!({"timezone":"UTC","weekly":{"funday":[]}}),
                "weekly.funday: unknown day (expected mon, tue, wed, thu, fri, sat, sun)",
            ),
            (
                json!({"timezone":"UTC","weekly":{"mon":[["09:00"]]}}),
                "weekly.mon[0]: invalid length 1, expected a [\"HH:MM\",\"HH:MM\"] pair",
            ),
            (
                json!({"timezone":"UTC","weekly":{"mon":[["09:00",17]]}}),
                "weekly.mon[0][1]: invalid type: integer `17`, expected a string",
            ),
            (
                json!({"timezone":"UTC","weekly":{"tue":[["09:00","12:00"],["11:00","13:00"]]}}),
                "weekly.tue: ranges 09:00-12:00 and 11:00-13:00 overlap",
            ),
            (
                json!({"timezone":"UTC","exceptions":[{"date":"2026-01-01","x":1}]}),
                "exceptions[0].x: unknown field `x`, expected `date` or `open`",
            ),
            (
                json!({"timezone":"UTC","exceptions":[{"open":[]}]}),
                "exceptions[0].date: must be a date YYYY-MM-DD",
            ),
            (
                json!({"timezone":"UTC","exceptions":[{"date":"2026-01-01"},{"date":"2026-01-01"}]}),
                "exceptions[1].date: 2026-01-01 is listed twice",
            ),
            (
                json!({"timezone":null}),
                "timezone: is required (an IANA name such as Europe/Paris)",
            ),
        ] {
            assert_eq!(msg(v), want);
        }
    }

    #[test]
    fn open_and_open_for_on_a_plain_day() {
        // 2026-06-01 is a Monday; New York is UTC-4 in June.
        let h = ny(json!({"mon":[["09:00","17:00"]]}), json!([]));
        assert!(!h.is_open(ts("2026-06-01T12:59:59Z")));
        assert!(h.is_open(ts("2026-06-01T13:00:00Z")));
        assert!(!h.is_open(ts("2026-06-01T21:00:00Z")));
        assert_eq!(h.open_for(ts("2026-06-01T20:00:00Z")).as_secs(), 3600);
        assert_eq!(h.open_for(ts("2026-06-01T22:00:00Z")).as_secs(), 0);
    }

    #[test]
    fn missing_day_is_closed_and_exceptions_replace_the_day() {
        let h = ny(
            json!({"mon":[["09:00","17:00"]],"tue":[["09:00","17:00"]]}),
            json!([{"date":"2026-06-01","open":[]},{"date":"2026-06-02","open":[["09:00","12:00"]]},
                   {"date":"2026-06-03","open":[["10:00","11:00"]]}]),
        );
        assert!(!h.is_open(ts("2026-06-01T14:00:00Z")));
        assert_eq!(h.open_for(ts("2026-06-02T14:00:00Z")).as_secs(), 2 * 3600);
        // Wednesday is closed weekly but open by exception.
        assert!(h.is_open(ts("2026-06-03T14:30:00Z")));
        assert!(!h.is_open(ts("2026-06-04T14:30:00Z")));
    }

    #[test]
    fn ranges_touching_at_midnight_are_one_opening() {
        let h = ny(
            json!({"mon":[["20:00","24:00"]],"tue":[["00:00","02:00"]]}),
            json!([]),
        );
        // Monday 23:00 EDT = 03:00Z Tuesday; closes Tuesday 02:00 EDT = 06:00Z.
        assert_eq!(h.open_for(ts("2026-06-02T03:00:00Z")).as_secs(), 3 * 3600);
    }

    #[test]
    fn around_the_clock_is_capped() {
        let h = BusinessHours::always_open("UTC").unwrap();
        assert_eq!(h.open_for(ts("2026-06-02T03:00:00Z")), OPEN_FOR_HORIZON);
    }

    #[test]
    fn spring_forward_gap() {
        // New York 2026-03-08 (Sunday): 02:00 EST jumps to 03:00 EDT (07:00Z).
        let h = ny(json!({"sun":[["00:00","03:30"]]}), json!([]));
        // From midnight EST (05:00Z) to 03:30 EDT (07:30Z): 2.5 real hours.
        assert_eq!(h.open_for(ts("2026-03-08T05:00:00Z")).as_secs(), 9000);
        // A range starting in the gap opens at the transition; one inside the gap never opens.
        let h = ny(json!({"sun":[["02:30","05:00"]]}), json!([]));
        assert!(!h.is_open(ts("2026-03-08T06:59:59Z")));
        assert!(h.is_open(ts("2026-03-08T07:00:00Z")));
        let h = ny(json!({"sun":[["02:00","02:30"]]}), json!([]));
        assert!(
            h.open_set(ts("2026-03-08T00:00:00Z"), ts("2026-03-09T00:00:00Z"))
                .intervals()
                .is_empty()
        );
    }

    #[test]
    fn fall_back_overlap() {
        // New York 2026-11-01 (Sunday): 02:00 EDT falls back to 01:00 EST (06:00Z).
        let h = ny(json!({"sun":[["00:00","03:00"]]}), json!([]));
        // From midnight EDT (04:00Z) to 03:00 EST (08:00Z): four real hours.
        assert_eq!(h.open_for(ts("2026-11-01T04:00:00Z")).as_secs(), 4 * 3600);
        // An edge inside the repeated hour takes the earlier instant (01:30 EDT = 05:30Z).
        let h = ny(json!({"sun":[["01:30","04:00"]]}), json!([]));
        assert!(h.is_open(ts("2026-11-01T05:30:00Z")));
        assert!(!h.is_open(ts("2026-11-01T05:29:59Z")));
    }

    #[test]
    fn paris_transitions() {
        let paris = |w: Value| {
            BusinessHours::parse(&json!({"timezone":"Europe/Paris","weekly":w})).unwrap()
        };
        // 2026-03-29: 02:00 CET → 03:00 CEST (01:00Z). 2026-10-25: 03:00 CEST → 02:00 CET (01:00Z).
        let h = paris(json!({"sun":[["00:00","04:00"]]}));
        assert_eq!(h.open_for(ts("2026-03-28T23:00:00Z")).as_secs(), 3 * 3600);
        assert_eq!(h.open_for(ts("2026-10-24T22:00:00Z")).as_secs(), 5 * 3600);
    }

    #[test]
    fn wrong_json_types_say_what_the_field_must_be() {
        let msg = |v: Value| match BusinessHours::parse(&v) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted {v}"),
        };
        assert_eq!(
            msg(serde_json::json!({"timezone": 5, "weekly": {}})),
            "timezone: must be an IANA time zone such as Europe/Paris"
        );
        assert_eq!(
            msg(serde_json::json!({"timezone": "UTC", "weekly": {"mon": "09:00-17:00"}})),
            "weekly.mon: must be a list of [\"HH:MM\",\"HH:MM\"] ranges"
        );
        assert_eq!(
            msg(serde_json::json!({"timezone": "UTC", "weekly": []})),
            "weekly: must be an object keyed by mon … sun"
        );
    }
}
