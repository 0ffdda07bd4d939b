//! GMS query by properties (`GET /genesys/1/service/callback[/{service}]?k=v…`) and the admin
//! queue listing's parameters, parsed from the query string into validated filters
//! (docs/gms.md#queries).
//!
//! - Keys: `_customer_number`, `_callback_state`, `_service_name`, `_id`, `_callback_reason`,
//!   and user-data keys (any other identifier, `_customer_id` too: GMS create keeps unknown
//!   `_` keys as user data). The record keys that are not stored values (`_desired_time`,
//!   `_expiration_time`, `_url`) and keys that are not identifiers are refused (400).
//! - A leading `!` negates a value. `_callback_state` takes a comma list (`QUEUED,SCHEDULED`,
//!   `!COMPLETED`): one of the states, or none of them when negated.
//! - `operand=AND|OR` (default AND) combines every pair, repeated keys included: AND with
//!   `k=a&k=b` matches nothing unless one is negated, OR matches either.
//! - `max` (1..=[`MAX_MAX`], default [`DEFAULT_MAX`]) bounds the answer; no filter at all lists
//!   the newest callbacks of the scope, never more than `max`.
//! - Values are compared as text, exactly; empty values, a NUL, more than [`MAX_VALUE`] bytes
//!   or more than [`MAX_FILTERS`] pairs are refused (400).

use uuid::Uuid;

use super::{CallbackState, user_data};
use crate::error::Error;

/// Answer size when `max` is not given.
pub const DEFAULT_MAX: usize = 100;
/// Largest `max` accepted.
pub const MAX_MAX: usize = 1000;
/// Most filter pairs in one query.
pub const MAX_FILTERS: usize = 20;
/// Longest filter value, in bytes.
pub const MAX_VALUE: usize = 1024;
/// Longest user-data key, in bytes.
pub const MAX_KEY: usize = 255;

/// The `_` keys a query may filter on.
pub const SYSTEM_KEYS: [&str; 5] = [
    "_customer_number",
    "_callback_state",
    "_service_name",
    "_id",
    "_callback_reason",
];

/// Record keys that are computed, not stored: never equal to a filter value.
pub const UNSEARCHABLE: [&str; 3] = ["_desired_time", "_expiration_time", "_url"];

/// How the pairs combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// Every pair matches.
    And,
    /// At least one pair matches.
    Or,
}

/// What a filter compares, with the value it is compared to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// The number as given at create (`_customer_number`).
    CustomerNumber(String),
    /// The callback's state is one of these (a negated list is stored as its complement).
    States(Vec<CallbackState>),
    /// The service name (`_service_name`).
    Service(String),
    /// The callback id (`_id`).
    Id(Uuid),
    /// The completion reason (`_callback_reason`); a callback without one never equals it.
    Reason(String),
    /// A user-data key's value, read as text (`user_data ->> key`); absent never equals.
    UserData {
        /// The key (an identifier).
        key: String,
        /// The value compared.
        value: String,
    },
}

/// One `key=value` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// What is compared.
    pub test: Test,
    /// `!value`: matches when the test does not (a missing key or reason counts as different).
    pub negated: bool,
}

/// A validated query by properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyQuery {
    /// How the filters combine.
    pub operand: Operand,
    /// The pairs, in request order (none: the whole scope, newest first).
    pub filters: Vec<Filter>,
    /// The most records answered.
    pub max: usize,
}

impl PropertyQuery {
    /// Parses the query string's pairs (in order, repeated keys kept).
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, Error> {
        let mut query = Self {
            operand: Operand::And,
            filters: Vec::new(),
            max: DEFAULT_MAX,
        };
        for (key, value) in pairs {
            match key.as_str() {
                "operand" => query.operand = parse_operand(value)?,
                "max" => query.max = parse_max(value)?,
                _ => query.filters.push(parse_filter(key, value)?),
            }
        }
        if query.filters.len() > MAX_FILTERS {
            return Err(Error::invalid(format!(
                "a query takes at most {MAX_FILTERS} key=value pairs"
            )));
        }
        Ok(query)
    }
}

fn parse_operand(value: &str) -> Result<Operand, Error> {
    match value.trim().to_ascii_uppercase().as_str() {
        "AND" | "" => Ok(Operand::And),
        "OR" => Ok(Operand::Or),
        _ => Err(Error::invalid("operand must be AND or OR")),
    }
}

/// `max`: an integer from 1 to [`MAX_MAX`].
pub fn parse_max(value: &str) -> Result<usize, Error> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_MAX).contains(n))
        .ok_or_else(|| Error::invalid(format!("max must be an integer from 1 to {MAX_MAX}")))
}

fn parse_filter(key: &str, raw: &str) -> Result<Filter, Error> {
    if key.contains('\0') || raw.contains('\0') {
        return Err(Error::invalid(
            "query keys and values may not contain the NUL character",
        ));
    }
    let (negated, value) = match raw.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if value.is_empty() {
        return Err(Error::invalid(format!("{key} needs a value to match")));
    }
    if value.len() > MAX_VALUE {
        return Err(Error::invalid(format!(
            "the value of {key} is longer than {MAX_VALUE} bytes"
        )));
    }
    let test = match key {
        "_customer_number" => Test::CustomerNumber(value.to_string()),
        "_service_name" => Test::Service(value.to_string()),
        "_callback_reason" => Test::Reason(value.to_string()),
        "_id" => Test::Id(
            Uuid::parse_str(value.trim())
                .map_err(|_| Error::invalid("_id must be a callback id (a UUID)"))?,
        ),
        "_callback_state" => return states(value, negated),
        _ if UNSEARCHABLE.contains(&key) => {
            return Err(Error::invalid(format!(
                "{key} is not a searchable key; search by {}, or by user-data keys",
                SYSTEM_KEYS.join(", ")
            )));
        }
        _ if key.len() <= MAX_KEY && user_data::is_identifier(key) => Test::UserData {
            key: key.to_string(),
            value: value.to_string(),
        },
        _ => {
            return Err(Error::invalid(format!(
                "{} is not a user-data key: keys are identifiers of at most {MAX_KEY} bytes",
                printable(key)
            )));
        }
    };
    Ok(Filter { test, negated })
}

/// A key quoted for a message: at most 64 characters, control characters escaped.
fn printable(key: &str) -> String {
    let cut: String = key.chars().take(64).collect();
    format!("{:?}", cut)
}

/// The GMS spelling of a state, onto the stored states it covers: GMS has no ROUTING, and a
/// record shows it as QUEUED (`functions::gms::record`), so QUEUED covers both; ROUTING alone
/// is accepted too.
fn gms_state(name: &str) -> Option<&'static [CallbackState]> {
    use CallbackState::*;
    Some(match name.trim().to_ascii_uppercase().as_str() {
        "SCHEDULED" => &[Scheduled],
        "QUEUED" => &[Queued, Routing],
        "ROUTING" => &[Routing],
        "PROCESSING" => &[Processing],
        "COMPLETED" => &[Completed],
        _ => return None,
    })
}

/// `_callback_state`: a comma list of states; negated, its complement (so PostgreSQL reads it
/// through the state index as a positive list).
fn states(value: &str, negated: bool) -> Result<Filter, Error> {
    let mut listed = parse_states(value)?;
    if negated {
        listed = complement(&listed);
    }
    Ok(Filter {
        test: Test::States(listed),
        negated: false,
    })
}

/// A comma list of state names (GMS spelling), deduplicated, in lifecycle order.
pub fn parse_states(value: &str) -> Result<Vec<CallbackState>, Error> {
    let mut listed = Vec::new();
    for name in value.split(',') {
        let covered = gms_state(name).ok_or_else(|| {
            Error::invalid(format!(
                "unknown callback state {}: use SCHEDULED, QUEUED, ROUTING, PROCESSING or COMPLETED",
                printable(name.trim())
            ))
        })?;
        listed.extend_from_slice(covered);
    }
    listed.sort();
    listed.dedup();
    Ok(listed)
}

/// The states not in `listed`.
pub fn complement(listed: &[CallbackState]) -> Vec<CallbackState> {
    use CallbackState::*;
    [Scheduled, Queued, Routing, Processing, Completed]
        .into_iter()
        .filter(|s| !listed.contains(s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<PropertyQuery, Error> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PropertyQuery::parse(&v)
    }

    fn msg(pairs: &[(&str, &str)]) -> String {
        q(pairs).unwrap_err().to_string()
    }

    #[test]
    fn negation_operand_and_states() {
        let p = q(&[
            ("_customer_number", "5115"),
            ("_callback_state", "!COMPLETED"),
            ("operand", "or"),
        ])
        .unwrap();
        assert_eq!(p.operand, Operand::Or);
        assert_eq!(p.max, DEFAULT_MAX);
        assert_eq!(p.filters[0].test, Test::CustomerNumber("5115".into()));
        use CallbackState::*;
        assert_eq!(
            p.filters[1].test,
            Test::States(vec![Scheduled, Queued, Routing, Processing])
        );
        let p = q(&[("_callback_state", "queued,SCHEDULED,QUEUED")]).unwrap();
        assert_eq!(
            p.filters[0].test,
            Test::States(vec![Scheduled, Queued, Routing])
        );
        let p = q(&[("orderId", "!42")]).unwrap();
        assert!(p.filters[0].negated);
        assert!(q(&[]).unwrap().filters.is_empty());
    }

    #[test]
    fn bad_input_is_named() {
        assert!(msg(&[("operand", "XOR")]).starts_with("operand"));
        assert!(msg(&[("max", "0")]).starts_with("max"));
        assert!(msg(&[("max", "1001")]).starts_with("max"));
        assert!(msg(&[("max", "-1")]).starts_with("max"));
        assert!(msg(&[("_id", "nope")]).starts_with("_id"));
        assert!(msg(&[("_callback_state", "DONE")]).contains("unknown callback state"));
        assert!(msg(&[("_url", "1")]).contains("not a searchable key"));
        assert!(matches!(
            q(&[("_customer_id", "7")]).unwrap().filters[0].test,
            Test::UserData { .. }
        ));
        assert!(msg(&[("a'b", "1")]).contains("not a user-data key"));
        assert!(msg(&[("class", "1")]).contains("not a user-data key"));
        assert!(msg(&[("k", "")]).contains("needs a value"));
        assert!(msg(&[("k", "!")]).contains("needs a value"));
        assert!(msg(&[("k", "a\0b")]).contains("NUL"));
        assert!(msg(&[("k", &"x".repeat(MAX_VALUE + 1))]).contains("longer than"));
        let many: Vec<(&str, &str)> = (0..=MAX_FILTERS).map(|_| ("k", "v")).collect();
        assert!(msg(&many).contains("at most"));
    }

    #[test]
    fn quotes_and_wildcards_are_plain_values() {
        for v in ["'", "%", "\\", "' OR 1=1 --", "_%"] {
            let p = q(&[("_customer_number", v)]).unwrap();
            assert_eq!(p.filters[0].test, Test::CustomerNumber(v.to_string()));
        }
    }
}
