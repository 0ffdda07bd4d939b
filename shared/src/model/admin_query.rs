//! The admin callback listing's parameters (docs/admin-queries.md#parameters), parsed from the
//! query string into a validated [`Listing`]: the filters ([`CallbackFilter`], shared by the
//! listing, the CSV export and bulk cancel by filter), the sort and the keyset page.
//!
//! Every parameter is optional; an unknown one, a repeated one or a bad value is a 400 whose
//! message starts with the parameter's name. Times are RFC 3339 (`2026-05-28T15:30:00Z`), or
//! local times and dates read in the `tz` zone (UTC when absent). The phone filter matches the
//! normalised E.164 number (`shared::phone::check`, national numbers read as US), or, for a
//! value that does not normalise, the number exactly as the create gave it.

use jiff::Timestamp;
use uuid::Uuid;

use super::{
    CallbackState, CompletionReason,
    availability::{Zone, parse_time},
    hours::parse_zone,
};
use crate::{error::Error, phone};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 250;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;
/// Longest text value (service, phone), in bytes.
pub const MAX_VALUE: usize = 255;

/// How the phone filter compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneMatch {
    /// The stored normalised number (E.164 digits without `+`).
    E164(String),
    /// The number as given at create, exactly (a value that does not normalise).
    AsGiven(String),
}

/// Which callbacks (every part optional, all parts ANDed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackFilter {
    /// Desired time from (inclusive).
    pub desired_from: Option<Timestamp>,
    /// Desired time before (exclusive).
    pub desired_to: Option<Timestamp>,
    /// Created from (inclusive).
    pub created_from: Option<Timestamp>,
    /// Created before (exclusive).
    pub created_to: Option<Timestamp>,
    /// One of these states (empty: any).
    pub states: Vec<CallbackState>,
    /// One of these completion reasons (empty: any).
    pub reasons: Vec<CompletionReason>,
    /// This service.
    pub service: Option<String>,
    /// This customer number.
    pub phone: Option<PhoneMatch>,
}

impl CallbackFilter {
    /// Whether no part is set (the whole tenant).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// The column a listing is ordered by (then by id, so the order is total).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// `desiredTime` (the default).
    DesiredTime,
    /// `created`.
    Created,
}

/// The order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    /// The column.
    pub key: SortKey,
    /// Newest first.
    pub desc: bool,
}

/// Where a page starts: after the row with this sort value and id (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last row's sort value.
    pub at: Timestamp,
    /// The last row's id.
    pub id: Uuid,
}

impl Cursor {
    /// The opaque form handed to clients (hex, URL-safe); bound to the sort it was made for.
    pub fn encode(&self, sort: Sort) -> String {
        let raw = format!(
            "1|{}|{}|{}|{}",
            sort_name(sort.key),
            u8::from(sort.desc),
            self.at.as_microsecond(),
            self.id
        );
        hex::encode(raw)
    }

    /// Reads a cursor made for `sort`; anything else is a 400 naming `cursor`.
    pub fn decode(value: &str, sort: Sort) -> Result<Self, Error> {
        let bad = || Error::invalid("cursor is not a cursor of this listing and sort order");
        let bytes = hex::decode(value.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let parts: Vec<&str> = text.split('|').collect();
        let [version, key, desc, micros, id] = parts.as_slice() else {
            return Err(bad());
        };
        let desc_flag = u8::from(sort.desc).to_string();
        if *version != "1" || *key != sort_name(sort.key) || *desc != desc_flag {
            return Err(bad());
        }
        let at = micros
            .parse::<i64>()
            .ok()
            .and_then(|m| Timestamp::from_microsecond(m).ok())
            .ok_or_else(bad)?;
        let id = Uuid::parse_str(id).map_err(|_| bad())?;
        Ok(Self { at, id })
    }
}

fn sort_name(key: SortKey) -> &'static str {
    match key {
        SortKey::DesiredTime => "desiredTime",
        SortKey::Created => "created",
    }
}

/// Output of the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The envelope with a page (default).
    Json,
    /// CSV of the whole filtered set, streamed.
    Csv,
}

/// A validated listing request.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Which callbacks.
    pub filter: CallbackFilter,
    /// Their order.
    pub sort: Sort,
    /// Where the page starts (none: the first page).
    pub cursor: Option<Cursor>,
    /// Rows per page (the JSON listing; the export writes every row).
    pub limit: usize,
    /// JSON page or CSV export.
    pub format: Format,
    /// The zone of local times given and of the CSV's times (`tz`; `None`: UTC, written `Z`).
    pub zone: Option<Zone>,
}

/// The parameters of the listing besides the filters.
const LISTING_KEYS: [&str; 6] = ["sort", "order", "cursor", "limit", "format", "tz"];
/// The parameters of bulk cancel by filter besides the filters.
const BULK_KEYS: [&str; 2] = ["dryRun", "tz"];

impl Listing {
    /// Parses the listing's query string (`GET …/callbacks`, `…/callbacks.csv`).
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, Error> {
        let zone = checked(pairs, &LISTING_KEYS)?;
        let get = |k: &str| value_of(pairs, k);
        let sort = Sort {
            key: match get("sort") {
                None | Some("desiredTime") => SortKey::DesiredTime,
                Some("created") => SortKey::Created,
                Some(_) => return Err(Error::invalid("sort must be desiredTime or created")),
            },
            desc: match get("order") {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(_) => return Err(Error::invalid("order must be asc or desc")),
            },
        };
        let utc = Zone::from_param(None)?;
        Ok(Self {
            filter: CallbackFilter::parse(pairs, zone.as_ref().unwrap_or(&utc))?,
            cursor: get("cursor").map(|c| Cursor::decode(c, sort)).transpose()?,
            limit: get("limit").map_or(Ok(DEFAULT_LIMIT), parse_limit)?,
            format: match get("format") {
                None | Some("json") => Format::Json,
                Some("csv") => Format::Csv,
                Some(_) => return Err(Error::invalid("format must be json or csv")),
            },
            sort,
            zone,
        })
    }
}

/// Parses bulk cancel's query string: the filter and `dryRun`.
pub fn parse_bulk(pairs: &[(String, String)]) -> Result<(CallbackFilter, bool), Error> {
    let zone = checked(pairs, &BULK_KEYS)?;
    let dry_run = match value_of(pairs, "dryRun") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Error::invalid("dryRun must be true or false")),
    };
    let utc = Zone::from_param(None)?;
    let filter = CallbackFilter::parse(pairs, zone.as_ref().unwrap_or(&utc))?;
    Ok((filter, dry_run))
}

fn value_of<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim())
}

/// Refuses repeated, unknown (not a filter, not in `extra`) and NUL-carrying parameters;
/// answers the `tz` zone when given.
fn checked(pairs: &[(String, String)], extra: &[&str]) -> Result<Option<Zone>, Error> {
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in pairs {
        if !FILTER_KEYS.contains(&key.as_str()) && !extra.contains(&key.as_str()) {
            return Err(Error::invalid(format!(
                "{} is not a parameter here; use {}, {}",
                shown(key),
                FILTER_KEYS.join(", "),
                extra.join(", ")
            )));
        }
        if seen.contains(&key.as_str()) {
            return Err(Error::invalid(format!("{key} is given more than once")));
        }
        seen.push(key);
        if value.contains('\0') {
            return Err(Error::invalid(format!(
                "{key} may not contain the NUL character"
            )));
        }
    }
    match value_of(pairs, "tz") {
        None => Ok(None),
        Some("") => Err(Error::invalid(
            "tz needs a value (an IANA zone such as Europe/Paris)",
        )),
        Some(name) => Ok(Some(Zone {
            name: name.to_string(),
            tz: parse_zone("tz", name)?,
        })),
    }
}

fn parse_limit(value: &str) -> Result<usize, Error> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| Error::invalid(format!("limit must be an integer from 1 to {MAX_LIMIT}")))
}

/// The filter parameters.
pub const FILTER_KEYS: [&str; 8] = [
    "desiredFrom",
    "desiredTo",
    "createdFrom",
    "createdTo",
    "state",
    "reason",
    "service",
    "phone",
];

impl CallbackFilter {
    /// The filter parameters among `pairs` (other keys are the caller's to check).
    pub fn parse(pairs: &[(String, String)], zone: &Zone) -> Result<Self, Error> {
        let mut f = Self::default();
        for (key, raw) in pairs {
            let value = raw.trim();
            if FILTER_KEYS.contains(&key.as_str()) && value.is_empty() {
                return Err(Error::invalid(format!("{key} needs a value")));
            }
            match key.as_str() {
                "desiredFrom" => f.desired_from = Some(parse_time(key, value, zone)?),
                "desiredTo" => f.desired_to = Some(parse_time(key, value, zone)?),
                "createdFrom" => f.created_from = Some(parse_time(key, value, zone)?),
                "createdTo" => f.created_to = Some(parse_time(key, value, zone)?),
                "state" => f.states = list(key, value, CallbackState::parse)?,
                "reason" => f.reasons = list(key, value, CompletionReason::parse)?,
                "service" => f.service = Some(text(key, value)?.to_string()),
                "phone" => f.phone = Some(phone_match(text(key, value)?)),
                _ => {}
            }
        }
        ordered("desiredFrom", f.desired_from, "desiredTo", f.desired_to)?;
        ordered("createdFrom", f.created_from, "createdTo", f.created_to)?;
        Ok(f)
    }
}

fn ordered(
    from_name: &str,
    from: Option<Timestamp>,
    to_name: &str,
    to: Option<Timestamp>,
) -> Result<(), Error> {
    match (from, to) {
        (Some(a), Some(b)) if b < a => {
            Err(Error::invalid(format!("{to_name} is before {from_name}")))
        }
        _ => Ok(()),
    }
}

fn text<'a>(key: &str, value: &'a str) -> Result<&'a str, Error> {
    if value.len() > MAX_VALUE {
        return Err(Error::invalid(format!(
            "{key} is longer than {MAX_VALUE} bytes"
        )));
    }
    Ok(value)
}

/// A comma list of wire names (`SCHEDULED,QUEUED`), deduplicated.
fn list<T: PartialEq + Copy>(
    key: &str,
    value: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    for name in value.split(',') {
        let name = name.trim().to_ascii_uppercase();
        let v = parse(&name).ok_or_else(|| {
            Error::invalid(format!("{key} has an unknown value {}", shown(&name)))
        })?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

/// The phone filter: the normalised number when the value normalises (any format of the same
/// number matches), else the value exactly as a create would have stored it.
fn phone_match(value: &str) -> PhoneMatch {
    match phone::check(value, None).ok().and_then(|c| c.e164) {
        Some(e164) => PhoneMatch::E164(e164),
        None => PhoneMatch::AsGiven(value.to_string()),
    }
}

/// A value quoted for a message: at most 64 characters, control characters escaped.
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(64).collect();
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn listing(p: &[(&str, &str)]) -> Result<Listing, Error> {
        Listing::parse(&pairs(p))
    }

    fn msg(p: &[(&str, &str)]) -> String {
        listing(p).unwrap_err().to_string()
    }

    #[test]
    fn cursors_round_trip_and_stay_with_their_sort() {
        let sort = Sort {
            key: SortKey::Created,
            desc: true,
        };
        let c = Cursor {
            at: Timestamp::from_microsecond(1_780_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        let text = c.encode(sort);
        assert_eq!(Cursor::decode(&text, sort).unwrap(), c);
        let asc = Sort {
            desc: false,
            ..sort
        };
        assert!(Cursor::decode(&text, asc).is_err());
        for bad in ["", "zz", "00", &hex::encode("1|created|1|x|y")] {
            assert!(Cursor::decode(bad, sort).is_err(), "{bad}");
        }
    }

    #[test]
    fn phone_formats_normalise_alike() {
        for given in [
            "+1 202 555 0101",
            "(202) 555-0101",
            "12025550101",
            "202.555.0101",
        ] {
            let l = listing(&[("phone", given)]).unwrap();
            assert_eq!(
                l.filter.phone,
                Some(PhoneMatch::E164("12025550101".into())),
                "{given}"
            );
        }
        let l = listing(&[("phone", "sip:alice")]).unwrap();
        assert_eq!(
            l.filter.phone,
            Some(PhoneMatch::AsGiven("sip:alice".into()))
        );
    }

    #[test]
    fn defaults_lists_and_local_times() {
        let l = listing(&[]).unwrap();
        assert_eq!(l.limit, DEFAULT_LIMIT);
        assert_eq!(l.sort.key, SortKey::DesiredTime);
        assert!(!l.sort.desc && l.filter.is_empty() && l.zone.is_none());
        let l = listing(&[
            ("state", "scheduled, QUEUED,SCHEDULED"),
            ("reason", "CANCELLED"),
            ("tz", "Europe/Paris"),
            ("desiredFrom", "2026-07-01T10:00"),
        ])
        .unwrap();
        assert_eq!(
            l.filter.states,
            [CallbackState::Scheduled, CallbackState::Queued]
        );
        assert_eq!(l.filter.reasons, [CompletionReason::Cancelled]);
        let from = l.filter.desired_from.unwrap();
        assert_eq!(from.to_string(), "2026-07-01T08:00:00Z");
    }

    #[test]
    fn bad_input_names_the_parameter() {
        for (k, v) in [
            ("desiredFrom", "soon"),
            ("createdTo", ""),
            ("state", "DONE"),
            ("reason", "x"),
            ("limit", "0"),
            ("limit", "1001"),
            ("sort", "phone"),
            ("order", "sideways"),
            ("cursor", "nope"),
            ("format", "xml"),
            ("tz", "Nowhere/Else"),
            ("service", &"s".repeat(MAX_VALUE + 1)),
            ("phone", "a\0b"),
        ] {
            assert!(
                msg(&[(k, v)]).starts_with(k),
                "{k}={v:?}: {}",
                msg(&[(k, v)])
            );
        }
        assert!(msg(&[("dryRun", "true")]).contains("not a parameter"));
        assert!(msg(&[("state", "QUEUED"), ("state", "QUEUED")]).contains("more than once"));
        let reversed = [
            ("createdFrom", "2026-07-02T00:00:00Z"),
            ("createdTo", "2026-07-01T00:00:00Z"),
        ];
        assert!(msg(&reversed).starts_with("createdTo"));
        let (f, dry) = parse_bulk(&pairs(&[("service", "sales"), ("dryRun", "true")])).unwrap();
        assert!(dry && f.service.as_deref() == Some("sales"));
        assert!(parse_bulk(&pairs(&[("limit", "5")])).is_err());
        assert!(parse_bulk(&pairs(&[("dryRun", "yes")])).is_err());
    }
}
