//! The per-callback attributes kept in `callbacks.attrs` (a JSON object): the request's
//! overrides of the service (route point, survey routing point, language), its informational
//! fields and its push targets. One typed struct whose serde names are the stored keys, written
//! by create (`model::callback`) and read by the worker's voice-stream entry, so a key cannot
//! be renamed on one side only. The stored format is the JSON create has always written: old
//! rows read unchanged, and keys this struct does not name are kept in [`CallbackAttrs::other`].
//! What each field accepts is in docs/create-fields.md (the struct:
//! docs/create-fields.md#stored-attributes).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::callback::PushTarget;

/// The attributes of one callback, as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallbackAttrs {
    /// `ASAP`, `SCHEDULED` or `COMBINED_SCHEDULED_AND_ASAP` (reporting); derived from the
    /// desired time when the request's value is not one of them.
    #[serde(
        rename = "cbOfferType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub offer_type: Option<String>,
    /// The request's `cbOfferType` text when it was not an offer type (cleaned, cut).
    #[serde(
        rename = "cbOfferTypeRaw",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub offer_type_raw: Option<String>,
    /// `OFF-HOURS` or `ON-HOURS` (reporting).
    #[serde(
        rename = "offerTiming",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub offer_timing: Option<String>,
    /// The request's `offerTiming` text when it was neither.
    #[serde(
        rename = "offerTimingRaw",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub offer_timing_raw: Option<String>,
    /// Language code of the voice prompts (e.g. `en-US`); overrides the service's `language`.
    #[serde(rename = "language", default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The request's `language` text when it was not a language code.
    #[serde(
        rename = "languageRaw",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub language_raw: Option<String>,
    /// Inbound virtual queue the offer was made from (reporting).
    #[serde(rename = "inboundVQ", default, skip_serializing_if = "Option::is_none")]
    pub inbound_vq: Option<String>,
    /// Origination channel (reporting).
    #[serde(rename = "channel", default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Originating interaction id (reporting).
    #[serde(
        rename = "cbOriginationIxnId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub origination_ixn_id: Option<String>,
    /// EWT threshold (seconds) the app used to offer the callback (reporting).
    #[serde(
        rename = "offerThreshold",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub offer_threshold: Option<Number>,
    /// The request's `offerThreshold` text when it was not a number.
    #[serde(
        rename = "offerThresholdRaw",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub offer_threshold_raw: Option<String>,
    /// Survey routing point; overrides the service's `survey_rp`.
    #[serde(rename = "surveyRP", default, skip_serializing_if = "Option::is_none")]
    pub survey_rp: Option<String>,
    /// Routing point; overrides the service's `route_point`.
    #[serde(
        rename = "routePoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub route_point: Option<String>,
    /// FCM push targets (USERORIGINATED services).
    #[serde(rename = "pushTargets", default, skip_serializing_if = "Vec::is_empty")]
    pub push_targets: Vec<PushTarget>,
    /// The request asked for the strict capacity check.
    #[serde(
        rename = "alwaysCheckCapacity",
        default,
        skip_serializing_if = "is_false"
    )]
    pub always_check_capacity: bool,
    /// Keys this version does not name (rows written by another version), kept as they are.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The stored attributes as API callers see them (retrieve): each push target shows only its
/// channel. A registration token is a credential of the customer's device, used only to send
/// it notifications (docs/push.md#what-callers-see).
pub fn shown(stored: &Map<String, Value>) -> Map<String, Value> {
    let mut shown = stored.clone();
    if let Some(Value::Array(targets)) = shown.get_mut("pushTargets") {
        for t in targets.iter_mut() {
            let channel = t.get("channel").cloned().unwrap_or(Value::Null);
            *t = Value::Object(Map::from_iter([("channel".to_string(), channel)]));
        }
    }
    shown
}

impl CallbackAttrs {
    /// The stored JSON object (`None` when there is nothing to store: the column stays NULL).
    pub fn to_json(&self) -> Option<Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) if m.is_empty() => None,
            Ok(v) => Some(v),
            // Unreachable: every field serialises to JSON.
            Err(_) => None,
        }
    }

    /// Reads a stored `attrs` object. A key whose value has the wrong type (a row edited by
    /// hand) is dropped, keeping the others.
    pub fn from_map(map: &Map<String, Value>) -> Self {
        if let Ok(attrs) = serde_json::from_value(Value::Object(map.clone())) {
            return attrs;
        }
        let mut kept = Map::new();
        for (k, v) in map {
            let one = Map::from_iter([(k.clone(), v.clone())]);
            if serde_json::from_value::<Self>(Value::Object(one)).is_ok() {
                kept.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(Value::Object(kept)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Every key create stores, as rows written before the struct existed hold them.
    fn stored_row() -> Value {
        json!({
            "cbOfferType": "SCHEDULED", "cbOfferTypeRaw": "later please",
            "offerTiming": "ON-HOURS", "offerTimingRaw": "x",
            "language": "fr-CA", "languageRaw": "French",
            "inboundVQ": "VQ1", "channel": "web", "cbOriginationIxnId": "42",
            "offerThreshold": 90.5, "offerThresholdRaw": "soon",
            "surveyRP": "8001", "routePoint": "7001",
            "pushTargets": [{"channel": "FCM", "target": "tok"}],
            "alwaysCheckCapacity": true,
            "addedByALaterVersion": {"a": 1}
        })
    }

    #[test]
    fn stored_rows_read_into_the_typed_fields_and_write_back_unchanged() {
        let Value::Object(map) = stored_row() else {
            unreachable!()
        };
        let attrs = CallbackAttrs::from_map(&map);
        assert_eq!(attrs.route_point.as_deref(), Some("7001"));
        assert_eq!(attrs.survey_rp.as_deref(), Some("8001"));
        assert_eq!(attrs.language.as_deref(), Some("fr-CA"));
        assert_eq!(attrs.push_targets.len(), 1);
        assert!(attrs.always_check_capacity);
        assert_eq!(attrs.other.len(), 1, "unknown keys are kept");
        assert_eq!(attrs.to_json(), Some(stored_row()), "round trip");
    }

    #[test]
    fn typed_writes_use_the_stored_key_names() {
        let attrs = CallbackAttrs {
            route_point: Some("7001".into()),
            survey_rp: Some("8001".into()),
            language: Some("en-GB".into()),
            ..Default::default()
        };
        assert_eq!(
            attrs.to_json(),
            Some(json!({"routePoint": "7001", "surveyRP": "8001", "language": "en-GB"}))
        );
        assert_eq!(CallbackAttrs::default().to_json(), None);
    }

    #[test]
    fn a_mistyped_key_is_dropped_alone() {
        let Value::Object(map) = json!({"routePoint": 7001, "language": "de"}) else {
            unreachable!()
        };
        let attrs = CallbackAttrs::from_map(&map);
        assert_eq!(attrs.route_point, None);
        assert_eq!(attrs.language.as_deref(), Some("de"));
    }

    #[test]
    fn callers_see_push_channels_never_tokens() {
        let stored = serde_json::json!({"language": "en",
            "pushTargets": [{"channel": "FCM", "target": "secret-token"}]});
        let Value::Object(stored) = stored else {
            panic!("object")
        };
        let shown = Value::Object(shown(&stored));
        assert_eq!(
            shown["pushTargets"],
            serde_json::json!([{"channel": "FCM"}])
        );
        assert_eq!(shown["language"], "en");
        assert!(!shown.to_string().contains("secret-token"));
    }
}
