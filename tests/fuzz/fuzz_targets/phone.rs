//! Fuzz target `phone`: a phone number as a create gives it, through `phone::check` without a
//! rule and under fixed number rules, and through the dial string (docs/fuzzing.md#phone).
//!
//! Asserts beyond "no panic": an accepted number's normal form is E.164 (1 to 15 digits, no
//! leading zero) and is stable (`+<e164>` normalises to itself, and passes the rule that
//! accepted it); a dial string is the prefix followed by digits only.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use shared::phone::{self, CompiledRule, NumberRule};

static RULES: LazyLock<Vec<CompiledRule>> = LazyLock::new(|| {
    [
        json!({"default_country": "US", "permitted_countries": ["US", "CA"],
               "blocked_patterns": ["^1900", "5550000$"], "block_premium": true}),
        json!({"default_country": "GB", "permitted_countries": ["GB", "FR", "DE", "IN"],
               "block_premium": false}),
        json!({"default_country": "FR", "permitted_countries": ["FR"],
               "blocked_patterns": ["^336"]}),
    ]
    .into_iter()
    .map(|v| {
        serde_json::from_value::<NumberRule>(v)
            .expect("fixture rule parses")
            .compile()
            .expect("fixture rule compiles")
    })
    .collect()
});

fn assert_e164(e: &str, given: &str) {
    assert!(
        (1..=15).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_digit()) && !e.starts_with('0'),
        "{given:?} normalised to {e:?}, not E.164"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(number) = std::str::from_utf8(data) else {
        return;
    };
    let plain = phone::check(number, None).expect("without a rule nothing is refused");
    if let Some(e) = &plain.e164 {
        assert_e164(e, number);
        let again = phone::check(&format!("+{e}"), None).expect("no rule");
        assert_eq!(
            again.e164.as_deref(),
            Some(e.as_str()),
            "{number:?} not stable"
        );
    }
    for rule in RULES.iter() {
        if let Ok(checked) = phone::check(number, Some(rule)) {
            let e = checked
                .e164
                .as_deref()
                .expect("a rule accepts only valid numbers");
            assert_e164(e, number);
            let again = phone::check(&format!("+{e}"), Some(rule));
            assert_eq!(
                again.ok().and_then(|c| c.e164).as_deref(),
                Some(e),
                "{number:?}"
            );
        }
    }
    let dial = phone::dial_number("*67", plain.e164.as_deref(), number);
    assert!(
        dial.strip_prefix("*67")
            .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
    );
});
