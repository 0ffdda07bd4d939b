//! The informational fields of a create request: kept for reporting and the voice prompts,
//! never a reason to refuse a callback.
//!
//! The published Engagement API clients send some of them on every create whether the app set
//! them or not (the JavaScript and Java clients' generated models give `cbOfferType` a sentence
//! as its default value, and `language` the default `en-US`), so a strict check here would
//! refuse every app built on those clients. The rule, field by field, with the evidence, is in
//! `docs/create-fields.md`:
//!
//! - a value that fits is stored as given (enumerations in their canonical spelling);
//! - a value that does not fit is treated as absent (the offer type is then derived from
//!   `desiredTime`, the language from the service) and its text is kept as `<field>Raw`, cleaned
//!   and cut to [`MAX_RAW`] bytes, so reports can still see what the app sent;
//! - numbers and booleans count as text; `null`, arrays and objects count as absent.

use serde_json::{Number, Value};

use super::attrs::CallbackAttrs;

/// The longest kept text, in bytes (cut at a character boundary).
pub const MAX_RAW: usize = 255;

/// Offer types GES knows.
const OFFER_TYPES: [&str; 3] = ["ASAP", "SCHEDULED", "COMBINED_SCHEDULED_AND_ASAP"];

/// Offer timings GES knows.
const OFFER_TIMINGS: [&str; 2] = ["OFF-HOURS", "ON-HOURS"];

/// The informational fields as received.
#[derive(Debug, Default)]
pub struct Fields {
    /// `cbOfferType`: how the callback was offered (`ASAP`, `SCHEDULED`,
    /// `COMBINED_SCHEDULED_AND_ASAP`, any case); reporting only. Unknown: derived from
    /// `desiredTime`, the text kept as `cbOfferTypeRaw`.
    pub cb_offer_type: Option<Value>,
    /// `language`: the prompts' language (`en-US`); overrides the service's. Not a language
    /// code ([`valid_language`]): the service's applies, the text kept as `languageRaw`.
    pub language: Option<Value>,
    /// `inboundVQ`: the virtual queue the caller would have waited in; reporting only, stored as
    /// cleaned text.
    pub inbound_vq: Option<Value>,
    /// `offerThreshold`: the wait (seconds) above which the app offered the callback; reporting
    /// only. Stored as a number (numeric strings count), else as `offerThresholdRaw`.
    pub offer_threshold: Option<Value>,
    /// `channel`: where the request came from (free text, e.g. `web`); reporting only, stored as
    /// cleaned text.
    pub channel: Option<Value>,
    /// `offerTiming`: `ON-HOURS` or `OFF-HOURS` (any case); reporting only. Anything else is
    /// kept as `offerTimingRaw`.
    pub offer_timing: Option<Value>,
    /// `cbOriginationIxnId`: id of the interaction the offer came from (an inbound call's
    /// CallUUID, a chat id); reporting only, stored as cleaned text.
    pub cb_origination_ixn_id: Option<Value>,
}

/// A scalar as text; `null`, arrays and objects are absent.
fn as_text(v: Option<Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Storable text: control characters become spaces, outer blanks go, at most [`MAX_RAW`]
/// bytes; `None` when nothing is left.
pub fn clean(s: &str) -> Option<String> {
    let replaced: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = replaced.trim();
    let mut end = trimmed.len().min(MAX_RAW);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    let cut = trimmed[..end].trim_end();
    (!cut.is_empty()).then(|| cut.to_string())
}

/// A language code such as `en-US`: a 2–3 letter language (ISO 639), then dash-separated
/// parts of 1–8 letters or digits (region, script), at most 16 bytes in all.
pub fn valid_language(s: &str) -> bool {
    let mut parts = s.split('-');
    let lang_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()));
    s.len() <= 16
        && lang_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The canonical spelling of `s` among `allowed` (blanks and case ignored).
fn canonical(s: &str, allowed: &[&'static str]) -> Option<&'static str> {
    let s = s.trim();
    allowed.iter().copied().find(|a| a.eq_ignore_ascii_case(s))
}

/// Keeps `value` in `field` when `accept` takes it, else its cleaned text in `raw`.
fn keep_or_raw(
    (field, raw): (&mut Option<String>, &mut Option<String>),
    value: Option<String>,
    accept: impl Fn(&str) -> Option<String>,
) {
    let Some(value) = value else { return };
    match accept(&value) {
        Some(ok) => *field = Some(ok),
        None => *raw = clean(&value),
    }
}

/// `offerThreshold` as a JSON number (a numeric string counts).
fn threshold(v: &Value) -> Option<Number> {
    match v {
        Value::Number(n) => Some(n.clone()),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(Number::from_f64),
        _ => None,
    }
}

impl Fields {
    /// The attributes to store. `cbOfferType` is always present: the request's when it is a
    /// known offer type, otherwise `SCHEDULED` with a desired time and `ASAP` without.
    pub fn into_attrs(self, scheduled: bool) -> CallbackAttrs {
        let mut a = CallbackAttrs::default();
        keep_or_raw(
            (&mut a.offer_type, &mut a.offer_type_raw),
            as_text(self.cb_offer_type),
            |s| canonical(s, &OFFER_TYPES).map(str::to_string),
        );
        if a.offer_type.is_none() {
            let derived = if scheduled { "SCHEDULED" } else { "ASAP" };
            a.offer_type = Some(derived.into());
        }
        keep_or_raw(
            (&mut a.offer_timing, &mut a.offer_timing_raw),
            as_text(self.offer_timing),
            |s| canonical(s, &OFFER_TIMINGS).map(str::to_string),
        );
        keep_or_raw(
            (&mut a.language, &mut a.language_raw),
            as_text(self.language),
            |s| valid_language(s.trim()).then(|| s.trim().to_string()),
        );
        a.inbound_vq = as_text(self.inbound_vq).as_deref().and_then(clean);
        a.channel = as_text(self.channel).as_deref().and_then(clean);
        a.origination_ixn_id = as_text(self.cb_origination_ixn_id)
            .as_deref()
            .and_then(clean);
        if let Some(v) = self.offer_threshold.filter(|v| !v.is_null()) {
            match threshold(&v) {
                Some(n) => a.offer_threshold = Some(n),
                None => a.offer_threshold_raw = as_text(Some(v)).as_deref().and_then(clean),
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    /// The sentence the JS (9.0.84) and Java clients send as `cbOfferType` by default.
    const CLIENT_DEFAULT: &str = "ASAP if the request does not include the desiredTime parameter and SCHEDULED if the request includes the desiredTime parameter.";

    /// The attributes as stored (`callbacks.attrs`).
    fn attrs(v: Value, scheduled: bool) -> Map<String, Value> {
        let get = |k: &str| v.get(k).cloned();
        let typed = Fields {
            cb_offer_type: get("cbOfferType"),
            language: get("language"),
            inbound_vq: get("inboundVQ"),
            offer_threshold: get("offerThreshold"),
            channel: get("channel"),
            offer_timing: get("offerTiming"),
            cb_origination_ixn_id: get("cbOriginationIxnId"),
        }
        .into_attrs(scheduled);
        match typed.to_json() {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn client_default_offer_type_is_derived_and_kept_raw() {
        let a = attrs(json!({"cbOfferType": CLIENT_DEFAULT}), false);
        assert_eq!(a["cbOfferType"], "ASAP");
        assert_eq!(a["cbOfferTypeRaw"], CLIENT_DEFAULT);
        let a = attrs(json!({"cbOfferType": CLIENT_DEFAULT}), true);
        assert_eq!(a["cbOfferType"], "SCHEDULED");
    }

    #[test]
    fn known_offer_types_are_kept_in_canonical_spelling() {
        let a = attrs(
            json!({"cbOfferType": " combined_scheduled_and_asap "}),
            true,
        );
        assert_eq!(a["cbOfferType"], "COMBINED_SCHEDULED_AND_ASAP");
        assert!(!a.contains_key("cbOfferTypeRaw"));
        // An app may say ASAP for a scheduled request: reporting keeps what it said.
        assert_eq!(
            attrs(json!({"cbOfferType": "ASAP"}), true)["cbOfferType"],
            "ASAP"
        );
    }

    #[test]
    fn absent_null_and_structured_offer_types_are_derived_without_raw() {
        for v in [
            json!({}),
            json!({"cbOfferType": null}),
            json!({"cbOfferType": [1]}),
        ] {
            let a = attrs(v, false);
            assert_eq!(a["cbOfferType"], "ASAP");
            assert!(!a.contains_key("cbOfferTypeRaw"));
        }
        assert_eq!(
            attrs(json!({"cbOfferType": 7}), false)["cbOfferTypeRaw"],
            "7"
        );
    }

    #[test]
    fn language_default_and_bad_codes() {
        assert_eq!(
            attrs(json!({"language": "en-US"}), false)["language"],
            "en-US"
        );
        let a = attrs(json!({"language": "English (US)"}), false);
        assert!(!a.contains_key("language"));
        assert_eq!(a["languageRaw"], "English (US)");
        assert!(!attrs(json!({"language": ""}), false).contains_key("languageRaw"));
        for ok in ["en-UK", "fr-CA", "es-MX", "zh-Hant-TW", "de"] {
            assert!(valid_language(ok), "{ok}");
        }
        for bad in [
            "English",
            "5",
            "e",
            "en--US",
            "en-US-",
            "en_US",
            "en-abcdefghi",
        ] {
            assert!(!valid_language(bad), "{bad}");
        }
    }

    #[test]
    fn offer_timing_unknown_is_absent_and_raw() {
        assert_eq!(
            attrs(json!({"offerTiming": "on-hours"}), false)["offerTiming"],
            "ON-HOURS"
        );
        let a = attrs(json!({"offerTiming": "<unspecified>"}), false);
        assert!(!a.contains_key("offerTiming"));
        assert_eq!(a["offerTimingRaw"], "<unspecified>");
    }

    #[test]
    fn free_text_is_cleaned_and_cut_never_refused() {
        let long = "é".repeat(300);
        let a = attrs(
            json!({"inboundVQ": "VQ\u{0}1\n", "channel": long, "cbOriginationIxnId": 42}),
            false,
        );
        assert_eq!(a["inboundVQ"], "VQ 1");
        let ch = a["channel"].as_str().unwrap();
        assert!(ch.len() <= MAX_RAW && ch.chars().all(|c| c == 'é'));
        assert_eq!(a["cbOriginationIxnId"], "42");
        assert!(!attrs(json!({"channel": "  "}), false).contains_key("channel"));
    }

    #[test]
    fn offer_threshold_numbers_strings_and_junk() {
        assert_eq!(
            attrs(json!({"offerThreshold": 300}), false)["offerThreshold"],
            300
        );
        assert_eq!(
            attrs(json!({"offerThreshold": "90.5"}), false)["offerThreshold"],
            90.5
        );
        let a = attrs(json!({"offerThreshold": "five minutes"}), false);
        assert!(!a.contains_key("offerThreshold"));
        assert_eq!(a["offerThresholdRaw"], "five minutes");
        assert!(
            attrs(json!({"offerThreshold": null}), false)
                .get("offerThresholdRaw")
                .is_none()
        );
    }
}
