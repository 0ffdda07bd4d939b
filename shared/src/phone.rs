//! Phone numbers: parsing and normalisation with the `phonenumber` crate, per-tenant number
//! rules (docs/decisions.md#number-rules, docs/ges-behavior.md#phone-numbers) and the dial
//! string handed to the voice platform.
//!
//! - With a number rule, a number must parse as a valid number (the rule's default country
//!   applies to national numbers), come from a permitted country, match none of the blocked
//!   patterns (regexes over the E.164 digits without `+`) and, when `block_premium` is set,
//!   not be premium-rate. Each failure is a 400 with its own message.
//! - Without a rule, the number is parsed with the default country US only to normalise it;
//!   a number that does not parse as a valid number is kept as given (GES uses web numbers
//!   as provided, docs/ges-behavior.md#phone-numbers) and nothing is rejected here.
//!
//! The normalised form is E.164 without `+` (`12025550123`); [`dial_number`] prepends the
//! service's `dial_prefix`.

use phonenumber::metadata::Metadata;
use regex::{RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

use crate::error::Error;

mod classify;

/// The default country when a rule gives none, and for services without a rule.
pub const DEFAULT_COUNTRY: &str = "US";
/// Most blocked patterns per rule.
pub const MAX_PATTERNS: usize = 100;
/// Longest blocked pattern, characters.
pub const MAX_PATTERN_LEN: usize = 256;
/// Most permitted countries per rule.
pub const MAX_COUNTRIES: usize = 300;
/// Compiled-size bound of a rule's patterns (bytes of the regex program), so a pattern such as
/// `(a{1000}){1000}` is refused at PUT time instead of costing memory and time at create time.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A number rule as stored and shown by the admin API (`PUT …/number-rules/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberRule {
    /// ISO 3166 alpha-2 country used for numbers without a country code.
    #[serde(default = "default_country")]
    pub default_country: String,
    /// ISO 3166 alpha-2 countries numbers may belong to (at least one).
    pub permitted_countries: Vec<String>,
    /// Regexes over the E.164 digits without `+`; a match blocks the number.
    #[serde(default)]
    pub blocked_patterns: Vec<String>,
    /// Refuse premium-rate numbers (e.g. US 1-900) with 400; default true.
    #[serde(default = "yes")]
    pub block_premium: bool,
}

fn default_country() -> String {
    DEFAULT_COUNTRY.into()
}

fn yes() -> bool {
    true
}

/// A validated rule, patterns compiled; build it with [`NumberRule::compile`].
#[derive(Debug, Clone)]
pub struct CompiledRule {
    default_country: phonenumber::country::Id,
    permitted: Vec<phonenumber::country::Id>,
    blocked: RegexSet,
    block_premium: bool,
}

fn country(field: &str, code: &str) -> Result<phonenumber::country::Id, Error> {
    let upper = code.trim().to_ascii_uppercase();
    if upper.len() != 2 {
        return Err(Error::invalid(format!(
            "{field}: {code:?} is not an ISO 3166 alpha-2 country code"
        )));
    }
    upper.parse().map_err(|_| {
        Error::invalid(format!(
            "{field}: {code:?} is not a country with a telephone numbering plan"
        ))
    })
}

impl NumberRule {
    /// Validates the rule and compiles its patterns; errors name the field or pattern at fault.
    pub fn compile(&self) -> Result<CompiledRule, Error> {
        let default_country = country("default_country", &self.default_country)?;
        if self.permitted_countries.is_empty() {
            return Err(Error::invalid(
                "permitted_countries: a number rule must permit at least one country",
            ));
        }
        if self.permitted_countries.len() > MAX_COUNTRIES {
            return Err(Error::invalid(format!(
                "permitted_countries: at most {MAX_COUNTRIES} countries"
            )));
        }
        let permitted = self
            .permitted_countries
            .iter()
            .map(|c| country("permitted_countries", c))
            .collect::<Result<Vec<_>, _>>()?;
        if self.blocked_patterns.len() > MAX_PATTERNS {
            return Err(Error::invalid(format!(
                "blocked_patterns: at most {MAX_PATTERNS} patterns"
            )));
        }
        for p in &self.blocked_patterns {
            if p.is_empty() || p.chars().count() > MAX_PATTERN_LEN {
                return Err(Error::invalid(format!(
                    "blocked_patterns: pattern {p:?} must be 1 to {MAX_PATTERN_LEN} characters"
                )));
            }
            // Compile each alone first, so the error names the pattern at fault.
            RegexSetBuilder::new([p])
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    let why = match e {
                        regex::Error::CompiledTooBig(_) => "is too complex".to_string(),
                        other => format!("is not a valid regular expression: {other}"),
                    };
                    Error::invalid(format!("blocked_patterns: pattern {p:?} {why}"))
                })?;
        }
        let blocked = RegexSetBuilder::new(&self.blocked_patterns)
            .size_limit(REGEX_SIZE_LIMIT * 4)
            .dfa_size_limit(REGEX_SIZE_LIMIT * 4)
            .build()
            .map_err(|_| {
                Error::invalid("blocked_patterns: the patterns together are too complex")
            })?;
        Ok(CompiledRule {
            default_country,
            permitted,
            blocked,
            block_premium: self.block_premium,
        })
    }

    /// The rule with country codes upper-cased (the stored form).
    pub fn normalised(mut self) -> Self {
        self.default_country = self.default_country.trim().to_ascii_uppercase();
        for c in &mut self.permitted_countries {
            *c = c.trim().to_ascii_uppercase();
        }
        self
    }
}

/// Why a number is refused under a rule; each maps to a 400 with a clear message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// Not a number that can exist (unparsable, wrong length, unassigned range).
    #[error("impossible number: {0}")]
    Impossible(String),
    /// The number's country is not permitted.
    #[error("number not permitted: country {0}")]
    CountryNotPermitted(String),
    /// A blocked pattern matches.
    #[error("number matches a blocked pattern")]
    Blocked,
    /// Premium-rate numbers are blocked.
    #[error("premium-rate number")]
    Premium,
}

impl From<NumberError> for Error {
    fn from(e: NumberError) -> Self {
        Error::invalid(e.to_string())
    }
}

/// A number that passed its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// E.164 without `+`, or `None` when there was no rule and the number did not parse.
    pub e164: Option<String>,
}

/// A number that parsed as valid: what [`check`] needs of it, each computed once.
struct Valid {
    parsed: phonenumber::PhoneNumber,
    /// The region whose numbering plan classified it (`None`: its code's regions did not).
    region: Option<&'static Metadata>,
    kind: phonenumber::Type,
    /// E.164 digits, without `+`.
    e164: String,
}

/// Parses `number` with `default` as the country of national numbers; only valid numbers count.
/// Answers the number with its type, classified once (the type is what `is_valid` computes and
/// drops: `Unknown` = invalid), so a rule's premium check does not classify it again, and its
/// E.164 digits, formatted once.
fn parse_valid(number: &str, default: phonenumber::country::Id) -> Result<Valid, String> {
    // An international number is parsed without a default country: phonenumber 0.3.10 applies
    // the default country's national prefix to it otherwise (`+33 1 42…` read with US loses
    // its `1`, since `1` is the US national prefix).
    // International when the first plus sign or digit, where the parser starts reading, is a
    // plus (`\0+ 7…`, found by the `phone` fuzz target, was read with US's prefix rules).
    let first = number
        .chars()
        .find(|c| matches!(c, '+' | '＋') || c.is_numeric());
    let country = (!matches!(first, Some('+' | '＋'))).then_some(default);
    let parsed =
        phonenumber::parse(country, number).map_err(|e| format!("not a phone number ({e})"))?;
    let (region, kind) = classify::region_and_type(&parsed);
    // phonenumber 0.3.10's `number_type` drops the national number's leading zeros (Italy's
    // `06…` is then `Unknown`), while `is_valid` keeps them: such numbers are valid by the
    // latter (their type stays `Unknown`, so no premium check applies; Italy's premium
    // numbers have no leading zero).
    let zeros = parsed.national().zeros() > 0;
    if kind == phonenumber::Type::Unknown && !(zeros && phonenumber::is_valid(&parsed)) {
        return Err(format!(
            "not a valid number (national numbers are read as {})",
            default.as_ref()
        ));
    }
    // The numbering metadata accepts some numbers longer than E.164 allows (German service
    // numbers of 16 digits, found by the `phone` fuzz target): not E.164, so not valid here.
    let e164 = e164_digits(&parsed);
    if e164.len() > MAX_E164_DIGITS {
        return Err(format!(
            "not a valid number (more than {MAX_E164_DIGITS} digits with the country code)"
        ));
    }
    if !stable(number, &e164) {
        return Err("not a valid number (its E.164 form reads as another number)".to_string());
    }
    Ok(Valid {
        parsed,
        region,
        kind,
        e164,
    })
}

/// Whether the number reads back as itself from its E.164 form, so that every spelling of a
/// number has one normal form (the per-number limits key on it). phonenumber 0.3.10 is not
/// always so: `00002 20469058` read as French kept two zeros of the national number
/// (`+33 00 220469058`) that `+3300220469058` loses, and `011-784-01162384` read with the US
/// exit code is `+7 840 116 2384` while `+78401162384` loses its `8` as Russia's national
/// prefix (both found by the `phone` fuzz target). One more parse, without classification,
/// unless `number` was given as exactly that form (`+` and the digits): it was just parsed as
/// such (international numbers are parsed without a default country), and parsing is
/// deterministic, so it reads as itself. Most API clients send E.164.
fn stable(number: &str, e164: &str) -> bool {
    if number.strip_prefix('+') == Some(e164) {
        return true;
    }
    phonenumber::parse(None, format!("+{e164}")).is_ok_and(|again| e164_digits(&again) == e164)
}

/// The most digits of an E.164 number, country code included (ITU-T E.164).
pub const MAX_E164_DIGITS: usize = 15;

/// The E.164 digits of `n` (country code, then the national number with its leading zeros):
/// what phonenumber 0.3.10's E.164 formatter writes after its `+`, without the search for a
/// national format that formatter runs first and does not use in this mode (about 1 % of the
/// API's CPU per create, docs/costs.md). The `phone` tests compare the two.
fn e164_digits(n: &phonenumber::PhoneNumber) -> String {
    format!("{}{}", n.country().code(), n.national())
}

/// Checks `number` against `rule` (or only normalises it when there is none).
pub fn check(number: &str, rule: Option<&CompiledRule>) -> Result<Checked, NumberError> {
    let Some(rule) = rule else {
        return Ok(Checked {
            // (Not the country: phonenumber 0.3 works it out again on every call, a third
            // of this function's cost, and nothing reads it.)
            e164: parse_valid(number, phonenumber::country::Id::US)
                .ok()
                .map(|v| v.e164),
        });
    };
    let Valid {
        parsed,
        region,
        kind,
        e164,
    } = parse_valid(number, rule.default_country).map_err(NumberError::Impossible)?;
    let id = country_of(&parsed, region);
    if !id.is_some_and(|c| rule.permitted.contains(&c)) {
        let shown = id.map_or_else(
            || format!("unknown (+{})", parsed.country().code()),
            |c| c.as_ref().to_string(),
        );
        return Err(NumberError::CountryNotPermitted(shown));
    }
    if rule.blocked.is_match(&e164) {
        return Err(NumberError::Blocked);
    }
    if rule.block_premium && kind == phonenumber::Type::PremiumRate {
        return Err(NumberError::Premium);
    }
    Ok(Checked { e164: Some(e164) })
}

/// The number's country. phonenumber 0.3.10 cannot name it for numbers with leading zeros of
/// their national number (it matches regions without the zeros), so those get their code's
/// main country (`+39 06…` Italy).
fn country_of(
    n: &phonenumber::PhoneNumber,
    region: Option<&'static Metadata>,
) -> Option<phonenumber::country::Id> {
    // `n.country().id()`, from the region already found.
    region.and_then(|m| m.id().parse().ok()).or_else(|| {
        if n.national().zeros() == 0 {
            return None;
        }
        let regions = phonenumber::metadata::DATABASE.by_code(&n.country().code())?;
        regions.first()?.id().parse().ok()
    })
}

/// Digits of a number as given: the fallback key and dial string of numbers that did not
/// normalise (formatting characters and a leading `+` dropped).
pub fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// The number throttles key on: the E.164 digits, else the digits as given.
pub fn number_key(e164: Option<&str>, as_given: &str) -> String {
    e164.map_or_else(|| digits(as_given), str::to_string)
}

/// The dial string of the voice stream entry: `dial_prefix` + the normalised number (the digits
/// as given when the number did not normalise). The worker uses this for `dial_number`.
pub fn dial_number(dial_prefix: &str, e164: Option<&str>, as_given: &str) -> String {
    format!("{dial_prefix}{}", number_key(e164, as_given))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(json: serde_json::Value) -> CompiledRule {
        serde_json::from_value::<NumberRule>(json)
            .unwrap()
            .compile()
            .unwrap()
    }

    fn design_rule() -> CompiledRule {
        rule(serde_json::json!({
            "default_country": "US",
            "permitted_countries": ["US", "CA"],
            "blocked_patterns": ["^1900", "5550000$"],
            "block_premium": true
        }))
    }

    /// Number rules, one row per case: (rule, number, expected e164 or error message).
    #[test]
    fn number_rules_table() {
        let us_ca = design_rule();
        let gb = rule(
            serde_json::json!({"default_country":"GB","permitted_countries":["GB"],
            "block_premium": true}),
        );
        let gb_premium_ok = rule(serde_json::json!({"default_country":"GB",
            "permitted_countries":["GB"], "block_premium": false}));
        let fr_digits = rule(serde_json::json!({"default_country":"FR",
            "permitted_countries":["FR","DE"], "blocked_patterns":["^336"]}));
        let cases: &[(&str, &CompiledRule, &str, Result<&str, &str>)] = &[
            (
                "permitted US, formatted",
                &us_ca,
                "+1 (202) 555-0123",
                Ok("12025550123"),
            ),
            (
                "permitted US, national",
                &us_ca,
                "202-555-0123",
                Ok("12025550123"),
            ),
            ("permitted CA", &us_ca, "+1 416 555 0123", Ok("14165550123")),
            (
                "country not permitted",
                &us_ca,
                "+44 20 7946 0958",
                Err("number not permitted: country GB"),
            ),
            (
                "country not permitted (FR)",
                &us_ca,
                "+33 1 42 68 53 00",
                Err("number not permitted: country FR"),
            ),
            (
                "blocked prefix pattern",
                &us_ca,
                "+1 900 555 0123",
                Err("number matches a blocked pattern"),
            ),
            (
                "blocked suffix pattern",
                &us_ca,
                "+1 202 555 0000",
                Err("number matches a blocked pattern"),
            ),
            (
                "premium GB",
                &gb,
                "+44 909 879 0123",
                Err("premium-rate number"),
            ),
            (
                "premium allowed",
                &gb_premium_ok,
                "+44 909 879 0123",
                Ok("449098790123"),
            ),
            (
                "default country GB",
                &gb,
                "020 7946 0958",
                Ok("442079460958"),
            ),
            (
                "default country FR",
                &fr_digits,
                "01 42 68 53 00",
                Ok("33142685300"),
            ),
            (
                "blocked FR mobile",
                &fr_digits,
                "06 12 34 56 78",
                Err("number matches a blocked pattern"),
            ),
            (
                "second permitted country",
                &fr_digits,
                "+49 30 901820",
                Ok("4930901820"),
            ),
            (
                "impossible: too short",
                &us_ca,
                "+1 202",
                Err("impossible number"),
            ),
            (
                "impossible: letters",
                &us_ca,
                "call me",
                Err("impossible number"),
            ),
            (
                "impossible: unassigned area code",
                &us_ca,
                "+1 011 555 0123",
                Err("impossible number"),
            ),
            (
                "impossible: too long",
                &us_ca,
                "+1 202 555 0123 4567 89",
                Err("impossible number"),
            ),
        ];
        for (name, rule, number, want) in cases {
            let got = check(number, Some(rule));
            match (want, got) {
                (Ok(e164), Ok(c)) => assert_eq!(c.e164.as_deref(), Some(*e164), "{name}"),
                (Err(msg), Err(e)) => {
                    assert!(
                        e.to_string().starts_with(msg),
                        "{name}: got {e}, want {msg}"
                    )
                }
                (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    /// Found by the `phone` fuzz target: numbers the parser reads one way as given and another
    /// way from their own E.164 form (leading zeros of a national number, a national prefix
    /// after an exit code) get no normal form; Italy's leading zero, part of its numbers, is
    /// kept, and Italian numbers pass an Italian rule.
    #[test]
    fn a_number_whose_e164_form_reads_as_another_is_not_normalised() {
        assert_eq!(check("011-784-01162384", None).unwrap().e164, None);
        let given = "00002 20469058";
        assert_eq!(check(given, None).unwrap().e164, None);
        for rule in [
            serde_json::json!({"default_country": "FR", "permitted_countries": ["FR"]}),
            serde_json::json!({"default_country": "GB", "permitted_countries": ["GB", "FR", "DE", "IN"]}),
        ] {
            let rule = serde_json::from_value::<NumberRule>(rule)
                .unwrap()
                .compile()
                .unwrap();
            if let Ok(c) = check(given, Some(&rule)) {
                let e = c.e164.unwrap();
                let again = check(&format!("+{e}"), Some(&rule)).unwrap().e164;
                assert_eq!(again.as_deref(), Some(e.as_str()));
            }
        }
        // Italy's leading zero is part of the number and survives.
        let rome = check("+39 06 4991 1234", None).unwrap().e164.unwrap();
        assert_eq!(rome, "390649911234");
        assert_eq!(
            check(&format!("+{rome}"), None).unwrap().e164,
            Some(rome.clone())
        );
        let italy = serde_json::from_value::<NumberRule>(
            serde_json::json!({"default_country": "IT", "permitted_countries": ["IT"]}),
        )
        .unwrap()
        .compile()
        .unwrap();
        let national = check("06 4991 1234", Some(&italy)).unwrap().e164;
        assert_eq!(national, Some(rome));
    }

    /// Found by the `phone` fuzz target: the numbering metadata calls this German number
    /// valid, but its E.164 form has 16 digits. Without a rule it is kept as given; under a
    /// rule it is impossible.
    #[test]
    fn numbers_longer_than_e164_are_not_normalised() {
        let long = "+49185900 30 901820";
        assert_eq!(check(long, None).unwrap().e164, None);
        let de = rule(serde_json::json!({"default_country":"DE","permitted_countries":["DE"]}));
        let e = check(long, Some(&de)).unwrap_err();
        assert!(e.to_string().contains("more than 15 digits"), "{e}");
        // Fifteen digits still are.
        assert_eq!(
            check("+49 30 901820", Some(&de)).unwrap().e164.as_deref(),
            Some("4930901820")
        );
    }

    /// Found by the `phone` fuzz target: text before the plus sign (here a NUL) made an
    /// international number read with the default country's prefix rules, so its E.164 form
    /// did not normalise to itself.
    #[test]
    fn a_plus_after_leading_junk_is_still_international() {
        for given in ["\0+ 7835353eetxx= ", "x+7835353eetxx", "＋7835353eetxx"] {
            let Some(e) = check(given, None).unwrap().e164 else {
                continue;
            };
            let again = check(&format!("+{e}"), None).unwrap().e164;
            assert_eq!(again.as_deref(), Some(e.as_str()), "{given:?}");
        }
    }

    #[test]
    fn without_a_rule_numbers_normalise_or_stay_as_given() {
        let c = check("(202) 555-0123", None).unwrap();
        assert_eq!(c.e164.as_deref(), Some("12025550123"));
        assert_eq!(
            check("+44 20 7946 0958", None).unwrap().e164.as_deref(),
            Some("442079460958")
        );
        // Not a valid number anywhere: kept as given, nothing refused.
        let c = check("12345", None).unwrap();
        assert_eq!(c.e164, None);
        assert_eq!(number_key(c.e164.as_deref(), "12-345"), "12345");
    }

    /// Dial strings: (prefix, e164, as given, expected).
    #[test]
    fn dial_number_table() {
        let cases = [
            ("", Some("12025550123"), "202-555-0123", "12025550123"),
            ("+", Some("12025550123"), "202-555-0123", "+12025550123"),
            ("9", Some("442079460958"), "020 7946 0958", "9442079460958"),
            ("*67", Some("12025550123"), "x", "*6712025550123"),
            ("", None, "+(12) 345-6", "123456"),
            ("0", None, "12 345", "012345"),
        ];
        for (prefix, e164, given, want) in cases {
            assert_eq!(
                dial_number(prefix, e164, given),
                want,
                "{prefix} {e164:?} {given}"
            );
        }
    }

    #[test]
    fn rule_validation_names_the_fault() {
        let err = |json: serde_json::Value| {
            serde_json::from_value::<NumberRule>(json)
                .map_err(|e| e.to_string())
                .and_then(|r| r.compile().map(drop).map_err(|e| e.to_string()))
                .unwrap_err()
        };
        let e =
            err(serde_json::json!({"permitted_countries":["US"],"blocked_patterns":["^1(900"]}));
        assert!(
            e.contains("\"^1(900\"") && e.contains("not a valid regular expression"),
            "{e}"
        );
        let e = err(
            serde_json::json!({"permitted_countries":["US"],"blocked_patterns":["(a{1000}){1000}"]}),
        );
        assert!(e.contains("too complex"), "{e}");
        let e = err(serde_json::json!({"permitted_countries":[]}));
        assert!(e.contains("at least one country"), "{e}");
        let e = err(serde_json::json!({"permitted_countries":["XX"]}));
        assert!(e.contains("\"XX\""), "{e}");
        let e = err(serde_json::json!({"permitted_countries":["US"],"default_country":"USA"}));
        assert!(e.contains("default_country"), "{e}");
        let e = err(serde_json::json!({"permitted_countries":["US"],"colour":"red"}));
        assert!(e.contains("colour"), "{e}");
        let long = "1".repeat(MAX_PATTERN_LEN + 1);
        let e = err(serde_json::json!({"permitted_countries":["US"],"blocked_patterns":[long]}));
        assert!(e.contains("1 to 256 characters"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any string: no panic; a normalised number is all digits, at most 15 of them.
        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let rule = design_rule();
            for r in [None, Some(&rule)] {
                if let Ok(c) = check(&s, r)
                    && let Some(e) = c.e164
                {
                    prop_assert!(e.len() <= 15 && e.chars().all(|c| c.is_ascii_digit()), "{e}");
                }
            }
            let d = dial_number("+", None, &s);
            prop_assert!(d[1..].chars().all(|c| c.is_ascii_digit()));
        }

        /// RFC 3966 and odd forms: no panic.
        #[test]
        fn odd_forms_never_panic(s in "(tel:)?[+]?[0-9０-９ ()+.;=a-z-]{0,30}") {
            let rule = design_rule();
            let _ = check(&s, None);
            let _ = check(&s, Some(&rule));
        }

        /// Phone-like strings: normalising is stable (the E.164 form normalises to itself),
        /// and the full reparse that `stable` skips for input already in that form agrees.
        #[test]
        fn normalisation_is_idempotent(s in "[+]?[0-9 ().-]{3,20}") {
            if let Ok(Checked { e164: Some(e), .. }) = check(&s, None) {
                let again = check(&format!("+{e}"), None).unwrap();
                prop_assert_eq!(again.e164.as_deref(), Some(e.as_str()));
                prop_assert!(stable("", &e), "the full reparse of +{e}");
            }
        }

        /// `e164_digits` writes what phonenumber's E.164 formatter writes, for any country
        /// code and national number it parses (leading zeros included).
        #[test]
        fn e164_digits_are_the_formatters(code in 1u16..1000, digits in "0{0,3}[0-9]{1,17}") {
            if let Ok(n) = phonenumber::parse(None, format!("+{code}{digits}")) {
                let formatted = n.format().mode(phonenumber::Mode::E164).to_string();
                prop_assert_eq!(format!("+{}", e164_digits(&n)), formatted);
            }
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// The alphabet create lets through to the parser: no panic, digits-only output.
        #[test]
        fn create_alphabet_never_panics(s in "[+0-9 ().-]{0,32}") {
            if let Ok(Checked { e164: Some(e), .. }) = check(&s, None) {
                prop_assert!(e.chars().all(|c| c.is_ascii_digit()));
            }
        }
    }
}
