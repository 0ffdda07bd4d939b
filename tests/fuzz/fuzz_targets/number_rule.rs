//! Fuzz target `number_rule`: a `PUT …/number-rules/{name}` body, through the admin handler's
//! parser (`parse_json`) and validator (`AdminKind::validate`: the rule's fields, normalised,
//! its patterns compiled under their size limits), then applied to fixed numbers
//! (docs/fuzzing.md#number_rule).
//!
//! Asserts beyond "no panic": a refusal is a 4xx; an accepted rule round-trips (its JSON
//! validates to the same rule); under it, an accepted number's form is E.164 from a permitted
//! country and matches none of its blocked patterns.
#![no_main]

use functions::admin::versioned::AdminKind;
use fuzzing::assert_client_error;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::{db::number_rules::NumberRules, http::extract::parse_json, phone};

/// Numbers of several countries and kinds (national, international, premium, short).
const NUMBERS: [&str; 8] = [
    "+1 202 555 0123",
    "202-555-0123",
    "+1 900 555 0123",
    "+44 20 7946 0958",
    "020 7946 0958",
    "+33 6 12 34 56 78",
    "+91 98765 43210",
    "112",
];

fuzz_target!(|data: &[u8]| {
    let Ok(body) = parse_json::<Value>(data) else {
        return;
    };
    let rule = match NumberRules::validate("fuzz", body) {
        Ok(rule) => rule,
        Err(e) => return assert_client_error(&e),
    };
    let json = serde_json::to_value(&rule).expect("a rule serialises");
    let again = NumberRules::validate("fuzz", json).expect("stored rule revalidates");
    assert_eq!(again, rule, "stored rule is not stable");
    let compiled = rule.compile().expect("validated rule compiles");
    let blocked = regex::RegexSet::new(&rule.blocked_patterns).expect("validated patterns");
    for n in NUMBERS {
        let Ok(checked) = phone::check(n, Some(&compiled)) else {
            continue;
        };
        let e = checked.e164.expect("a rule accepts only valid numbers");
        assert!(
            e.len() <= 15 && e.bytes().all(|b| b.is_ascii_digit()),
            "{e}"
        );
        assert!(
            !blocked.is_match(&e),
            "{n} accepted though a pattern matches {e}"
        );
    }
});
