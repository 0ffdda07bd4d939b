//! Query parameters of `GET /callbacks/availability/{service}` and `…/open-for/{service}`
//! (docs/ges-behavior.md#availability, #open-for), and the `Availabilities` response model.
//!
//! - `start` / `end`: a time with an offset (`2026-05-28T15:30:00.000Z`) is that instant; a time
//!   without one (`2026-05-28T15:30:00.000`) or a bare date is local to `timezone` (UTC when
//!   absent). A local time in a spring-forward gap moves to the transition; one in a fall-back
//!   overlap takes the earlier instant.
//! - `startMS` / `endMS`: epoch milliseconds. `start` and `startMS` are exclusive; so are `end`,
//!   `endMS` and `numberOfDays` (calendar days in `timezone`, so a DST day counts 23 or 25 hours).
//!   Without any of them, end = start: the answer is the slot containing `start`.
//! - `timezone`: IANA zone (default UTC); also renders `localTime`.
//! - `maxTimeSlots`: caps the number of slots returned (busy ones included when listed).
//! - `reportBusy`: also list open slots already booked to full capacity (`capacity: 0`).
//!
//! Conflicting or malformed parameters answer 400 naming them.

use std::collections::BTreeMap;

use jiff::{
    Span, Timestamp,
    civil::{Date, DateTime},
    tz::TimeZone,
};
use serde::Serialize;

use super::{callback::wire_time, hours};
use crate::error::Error;

/// Longest window one availability request may span.
pub const MAX_DAYS: i64 = 366;

/// The earliest `start`/`end` accepted (1970-01-01T00:00:00Z), in epoch milliseconds.
pub const EARLIEST_MS: i64 = 0;
/// The latest `start`/`end` accepted (9998-12-31T00:00:00Z), in epoch milliseconds: a window
/// and its slots stay within the years every store and calendar computation handles (a year
/// -9999 start reached PostgreSQL, which refused it, and answered 500).
pub const LATEST_MS: i64 = 253_370_678_400_000;

/// `t`, or a 400 naming `field` when it is outside the accepted years.
fn in_range(field: &str, t: Timestamp) -> Result<Timestamp, Error> {
    let ms = t.as_millisecond();
    if (EARLIEST_MS..=LATEST_MS).contains(&ms) {
        Ok(t)
    } else {
        Err(Error::invalid(format!(
            "{field} must be between 1970-01-01T00:00:00.000Z and 9998-12-31T00:00:00.000Z"
        )))
    }
}

/// The requested zone: its name as given (or `UTC`) and the zone.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Name echoed in the response.
    pub name: String,
    /// The IANA zone `name` resolves to; renders `localTime` and reads local parameters.
    pub tz: TimeZone,
}

impl Zone {
    /// The `timezone` parameter (UTC when absent or empty).
    pub fn from_param(value: Option<&str>) -> Result<Self, Error> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(Self {
                name: "UTC".into(),
                tz: TimeZone::UTC,
            }),
            Some(name) => Ok(Self {
                name: name.to_string(),
                tz: hours::parse_zone("timezone", name)?,
            }),
        }
    }

    /// `t` as local time in this zone with its offset: `2026-03-08T03:00:00.000-04:00`.
    pub fn local_time(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string()
    }
}

/// Parses a `start` / `end` value (see the module doc); the error names `field`.
pub fn parse_time(field: &str, raw: &str, zone: &Zone) -> Result<Timestamp, Error> {
    let mut s = raw.trim().to_string();
    // A `+hh:mm` offset sent unencoded arrives as a space.
    if let Some(i) = s.rfind(' ')
        && i >= 10
        && s[i + 1..].len() == 5
        && s.as_bytes()[i + 3] == b':'
    {
        s.replace_range(i..=i, "+");
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return in_range(field, t);
    }
    if let Ok(dt) = s.parse::<DateTime>() {
        return in_range(field, hours::local_instant(&zone.tz, dt));
    }
    if let Ok(d) = s.parse::<Date>() {
        return in_range(field, hours::local_instant(&zone.tz, d.at(0, 0, 0, 0)));
    }
    Err(Error::invalid(format!(
        "{field} must be a time such as 2026-05-28T15:30:00.000Z, or 2026-05-28T15:30:00.000 local to timezone"
    )))
}

fn parse_ms(field: &str, raw: &str) -> Result<Timestamp, Error> {
    let t = raw
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .ok_or_else(|| Error::invalid(format!("{field} must be epoch milliseconds")))?;
    in_range(field, t)
}

fn param<'a>(params: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// A validated availability request.
#[derive(Debug, Clone)]
pub struct AvailabilityQuery {
    /// First instant asked about (`start`/`startMS`, default now); the slot containing it is
    /// the first listed.
    pub start: Timestamp,
    /// Window end (equal to `start` for "the slot containing start").
    pub end: Timestamp,
    /// Zone of `localTime` and of local `start`/`end`/`numberOfDays`.
    pub zone: Zone,
    /// Cap on the slots returned.
    pub max_time_slots: Option<usize>,
    /// List full slots too.
    pub report_busy: bool,
}

/// The spelling of the availability parameters on one surface (errors name them as sent).
#[derive(Debug, Clone, Copy)]
pub struct ParamNames {
    /// Window start (a time).
    pub start: &'static str,
    /// Window start (epoch ms).
    pub start_ms: &'static str,
    /// Window end (a time).
    pub end: &'static str,
    /// Window end (epoch ms).
    pub end_ms: &'static str,
    /// Window length in local days.
    pub number_of_days: &'static str,
    /// Zone of local times.
    pub timezone: &'static str,
    /// Cap on the slots returned.
    pub max_time_slots: &'static str,
    /// List full slots too.
    pub report_busy: &'static str,
}

impl ParamNames {
    /// Engagement API v3 (`startMS`, `numberOfDays`, …).
    pub const V3: Self = Self {
        start: "start",
        start_ms: "startMS",
        end: "end",
        end_ms: "endMS",
        number_of_days: "numberOfDays",
        timezone: "timezone",
        max_time_slots: "maxTimeSlots",
        report_busy: "reportBusy",
    };
    /// GMS availability v1/v2 (`start-ms`, `number-of-days`, …; docs/gms.md#availability).
    pub const GMS: Self = Self {
        start: "start",
        start_ms: "start-ms",
        end: "end",
        end_ms: "end-ms",
        number_of_days: "number-of-days",
        timezone: "timezone",
        max_time_slots: "max-time-slots",
        report_busy: "report-busy",
    };
}

impl AvailabilityQuery {
    /// Parses the v3 query parameters; `now` is the default start.
    pub fn parse(params: &BTreeMap<String, String>, now: Timestamp) -> Result<Self, Error> {
        Self::parse_named(params, now, &ParamNames::V3)
    }

    /// Parses the query parameters as spelled by `names`; `now` is the default start.
    pub fn parse_named(
        params: &BTreeMap<String, String>,
        now: Timestamp,
        names: &ParamNames,
    ) -> Result<Self, Error> {
        let zone = Zone::from_param(params.get(names.timezone).map(String::as_str))?;
        let start = window_start(params, &zone, now, names)?;
        let end = window_end(params, &zone, start, names)?;
        if end < start {
            return Err(Error::invalid(format!(
                "the window ends ({}) before it starts ({})",
                wire_time(end),
                wire_time(start)
            )));
        }
        if end.duration_since(start).as_hours() > MAX_DAYS * 24 + 1 {
            return Err(Error::invalid(format!(
                "the window may span at most {MAX_DAYS} days"
            )));
        }
        Ok(Self {
            start,
            end,
            zone,
            max_time_slots: max_time_slots(params, names)?,
            report_busy: report_busy(params, names)?,
        })
    }
}

fn max_time_slots(
    params: &BTreeMap<String, String>,
    names: &ParamNames,
) -> Result<Option<usize>, Error> {
    let Some(v) = param(params, names.max_time_slots) else {
        return Ok(None);
    };
    v.parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .map(Some)
        .ok_or_else(|| {
            Error::invalid(format!(
                "{} must be a positive integer",
                names.max_time_slots
            ))
        })
}

fn report_busy(params: &BTreeMap<String, String>, names: &ParamNames) -> Result<bool, Error> {
    match param(params, names.report_busy).map(str::to_ascii_lowercase) {
        None => Ok(false),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(_) => Err(Error::invalid(format!(
            "{} must be true or false",
            names.report_busy
        ))),
    }
}

/// The window's start: `start` (local or with an offset) or `startMS`, else `now`.
fn window_start(
    params: &BTreeMap<String, String>,
    zone: &Zone,
    now: Timestamp,
    n: &ParamNames,
) -> Result<Timestamp, Error> {
    match (param(params, n.start), param(params, n.start_ms)) {
        (Some(_), Some(_)) => Err(Error::invalid(format!(
            "{} and {} conflict: give only one of them",
            n.start, n.start_ms
        ))),
        (Some(s), None) => parse_time(n.start, s, zone),
        (None, Some(ms)) => parse_ms(n.start_ms, ms),
        (None, None) => Ok(now),
    }
}

/// The window's end: at most one of `end`, `endMS` and `numberOfDays` (local days from
/// `start`), else `start` itself.
fn window_end(
    params: &BTreeMap<String, String>,
    zone: &Zone,
    start: Timestamp,
    n: &ParamNames,
) -> Result<Timestamp, Error> {
    let given: Vec<&str> = [n.end, n.end_ms, n.number_of_days]
        .into_iter()
        .filter(|p| param(params, p).is_some())
        .collect();
    if given.len() > 1 {
        return Err(Error::invalid(format!(
            "{} conflict: give only one of {}, {}, {}",
            given.join(" and "),
            n.end,
            n.end_ms,
            n.number_of_days
        )));
    }
    let value = |name| param(params, name).unwrap_or_default();
    match given.first().copied() {
        None => Ok(start),
        Some(p) if p == n.end => parse_time(n.end, value(n.end), zone),
        Some(p) if p == n.end_ms => parse_ms(n.end_ms, value(n.end_ms)),
        Some(_) => {
            let days = value(n.number_of_days)
                .parse::<i64>()
                .ok()
                .filter(|d| (0..=MAX_DAYS).contains(d))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "{} must be an integer from 0 to {MAX_DAYS}",
                        n.number_of_days
                    ))
                })?;
            start
                .to_zoned(zone.tz.clone())
                .checked_add(Span::new().days(days))
                .map(|z| z.timestamp())
                .map_err(|_| {
                    Error::invalid(format!("{} goes past the year 9999", n.number_of_days))
                })
        }
    }
}

/// One slot of the answer (`Slot`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SlotOut {
    /// Slot start in UTC (`2026-05-28T15:30:00.000Z`).
    pub utc_time: String,
    /// Slot start in the requested zone, with its offset.
    pub local_time: String,
    /// Places still free in the slot (configured places minus live bookings, never below 0).
    pub capacity: u32,
    /// Places the slot has (capacity rule or `slot_capacity`).
    pub total: u32,
}

/// `Availabilities`: the answer of `GET /callbacks/availability/{service}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Availabilities {
    /// Slots in time order.
    pub slots: Vec<SlotOut>,
    /// Slot length in minutes.
    pub duration_min: u16,
    /// The requested `timezone` as given (`UTC` when absent).
    pub timezone: String,
}

/// `{openFor}`: seconds until the office closes (0 when closed).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenFor {
    /// Seconds from `start` until the office closes (0 when closed; at most 7 days,
    /// `hours::OPEN_FOR_HORIZON`).
    pub open_for: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<AvailabilityQuery, Error> {
        let m = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AvailabilityQuery::parse(&m, "2026-06-01T10:00:00Z".parse().unwrap())
    }

    fn msg(pairs: &[(&str, &str)]) -> String {
        q(pairs).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let a = q(&[]).unwrap();
        assert_eq!(a.start, a.end);
        assert_eq!(wire_time(a.start), "2026-06-01T10:00:00.000Z");
        assert_eq!(a.zone.name, "UTC");
        assert!(!a.report_busy && a.max_time_slots.is_none());
    }

    #[test]
    fn start_forms() {
        let utc = q(&[("start", "2026-06-02T09:00:00.000Z")]).unwrap();
        assert_eq!(wire_time(utc.start), "2026-06-02T09:00:00.000Z");
        let local = q(&[
            ("start", "2026-06-02T09:00:00.000"),
            ("timezone", "Europe/Paris"),
        ])
        .unwrap();
        assert_eq!(wire_time(local.start), "2026-06-02T07:00:00.000Z");
        let no_tz = q(&[("start", "2026-06-02T09:00:00.000")]).unwrap();
        assert_eq!(wire_time(no_tz.start), "2026-06-02T09:00:00.000Z");
        let spaced = q(&[("start", "2026-06-02T09:00:00.000 02:00")]).unwrap();
        assert_eq!(wire_time(spaced.start), "2026-06-02T07:00:00.000Z");
        let ms = q(&[("startMS", "1780390800000")]).unwrap();
        assert_eq!(ms.start.as_millisecond(), 1_780_390_800_000);
        let date = q(&[("start", "2026-06-02"), ("timezone", "America/New_York")]).unwrap();
        assert_eq!(wire_time(date.start), "2026-06-02T04:00:00.000Z");
    }

    #[test]
    fn end_forms() {
        let a = q(&[
            ("start", "2026-06-02T00:00:00Z"),
            ("end", "2026-06-03T00:00:00Z"),
        ])
        .unwrap();
        assert_eq!(a.end.duration_since(a.start).as_hours(), 24);
        let a = q(&[("startMS", "1780358400000"), ("endMS", "1780362000000")]).unwrap();
        assert_eq!(a.end.duration_since(a.start).as_hours(), 1);
        // numberOfDays counts calendar days of the zone: the NY spring-forward day has 23 hours.
        let a = q(&[
            ("start", "2026-03-08T00:00:00.000"),
            ("timezone", "America/New_York"),
            ("numberOfDays", "1"),
        ])
        .unwrap();
        assert_eq!(a.end.duration_since(a.start).as_hours(), 23);
        let a = q(&[
            ("start", "2026-10-25T00:00:00.000"),
            ("timezone", "Europe/Paris"),
            ("numberOfDays", "1"),
        ])
        .unwrap();
        assert_eq!(a.end.duration_since(a.start).as_hours(), 25);
    }

    #[test]
    fn local_start_in_gap_and_fold() {
        let gap = q(&[
            ("start", "2026-03-08T02:30:00.000"),
            ("timezone", "America/New_York"),
        ])
        .unwrap();
        assert_eq!(wire_time(gap.start), "2026-03-08T07:00:00.000Z");
        let fold = q(&[
            ("start", "2026-11-01T01:30:00.000"),
            ("timezone", "America/New_York"),
        ])
        .unwrap();
        assert_eq!(wire_time(fold.start), "2026-11-01T05:30:00.000Z");
    }

    #[test]
    fn conflicts_and_bad_values_are_named() {
        assert!(
            msg(&[("start", "2026-06-02T00:00:00Z"), ("startMS", "1")])
                .contains("start and startMS")
        );
        assert!(msg(&[("end", "2026-06-02T00:00:00Z"), ("endMS", "1")]).contains("end and endMS"));
        assert!(
            msg(&[("end", "2026-06-02T00:00:00Z"), ("numberOfDays", "1")])
                .contains("end and numberOfDays")
        );
        assert!(msg(&[("endMS", "1"), ("numberOfDays", "1")]).contains("endMS and numberOfDays"));
        assert!(msg(&[("start", "soon")]).starts_with("start"));
        assert!(msg(&[("end", "later")]).starts_with("end"));
        assert!(msg(&[("startMS", "x")]).starts_with("startMS"));
        assert!(msg(&[("endMS", "1.5")]).starts_with("endMS"));
        assert!(msg(&[("numberOfDays", "-1")]).starts_with("numberOfDays"));
        assert!(msg(&[("numberOfDays", "400")]).starts_with("numberOfDays"));
        assert!(msg(&[("timezone", "Nowhere/Else")]).starts_with("timezone"));
        assert!(msg(&[("maxTimeSlots", "0")]).starts_with("maxTimeSlots"));
        assert!(msg(&[("reportBusy", "yes")]).starts_with("reportBusy"));
        assert!(
            msg(&[
                ("start", "2026-06-02T00:00:00Z"),
                ("end", "2026-06-01T00:00:00Z")
            ])
            .contains("before")
        );
    }

    /// Times outside 1970..9998 are refused by name (a year -9999 `startMS` once reached
    /// PostgreSQL and answered 500); the limits themselves are accepted.
    #[test]
    fn times_outside_the_accepted_years_are_refused() {
        assert!(msg(&[("startMS", "-377705023201000")]).starts_with("startMS must be between"));
        assert!(msg(&[("startMS", "-1")]).starts_with("startMS must be between"));
        assert!(msg(&[("endMS", &(LATEST_MS + 1).to_string())]).starts_with("endMS must be"));
        assert!(msg(&[("start", "-009999-01-02T01:59:59Z")]).starts_with("start must be between"));
        assert!(msg(&[("start", "9999-06-01")]).starts_with("start must be between"));
        assert!(q(&[("startMS", &EARLIEST_MS.to_string())]).is_ok());
        assert!(q(&[("startMS", &LATEST_MS.to_string())]).is_ok());
        let latest = Timestamp::from_millisecond(LATEST_MS).unwrap();
        assert_eq!(wire_time(latest), "9998-12-31T00:00:00.000Z");
    }

    #[test]
    fn local_time_has_the_offset() {
        let z = Zone::from_param(Some("America/New_York")).unwrap();
        assert_eq!(
            z.local_time("2026-11-01T06:30:00Z".parse().unwrap()),
            "2026-11-01T01:30:00.000-05:00"
        );
    }
}
