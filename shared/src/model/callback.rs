//! Callbacks: states, completion reasons, the create request and the retrieve model.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::{attrs::CallbackAttrs, informational, user_data};
use crate::error::Error;

/// Lifecycle states (docs/decisions.md#callback-lifecycle). The order is the only allowed
/// direction of travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallbackState {
    /// Waiting for its dispatch time; no voice session yet.
    Scheduled,
    /// Handed (or being handed) to the voice platform; waiting for an agent.
    Queued,
    /// Agent reserved, call being delivered.
    Routing,
    /// Agent handling; cannot be cancelled.
    Processing,
    /// Final; carries a [`CompletionReason`].
    Completed,
}

impl CallbackState {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "SCHEDULED",
            Self::Queued => "QUEUED",
            Self::Routing => "ROUTING",
            Self::Processing => "PROCESSING",
            Self::Completed => "COMPLETED",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "SCHEDULED" => Self::Scheduled,
            "QUEUED" => Self::Queued,
            "ROUTING" => Self::Routing,
            "PROCESSING" => Self::Processing,
            "COMPLETED" => Self::Completed,
            _ => return None,
        })
    }

    /// Whether a cancel request may end a callback in this state.
    pub fn cancellable(self) -> bool {
        !matches!(self, Self::Processing | Self::Completed)
    }

    /// Whether the voice platform is working on it (position and EWT are reported).
    pub fn in_queue(self) -> bool {
        matches!(self, Self::Queued | Self::Routing | Self::Processing)
    }
}

/// Why a callback completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompletionReason {
    /// Routed to an agent and connected.
    AgentConnected,
    /// Cancelled by API or admin.
    Cancelled,
    /// Not served within the service TTL once queued.
    FailTimeoutTtl,
    /// The call to the customer failed (retried while attempts are left).
    FailCallToCustomer,
    /// The voice platform could not queue it.
    FailQueueing,
    /// Any other failure.
    FailError,
    /// Ended without a reason.
    NotAvailable,
}

impl CompletionReason {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentConnected => "AGENT_CONNECTED",
            Self::Cancelled => "CANCELLED",
            Self::FailTimeoutTtl => "FAIL_TIMEOUT_TTL",
            Self::FailCallToCustomer => "FAIL_CALL_TO_CUSTOMER",
            Self::FailQueueing => "FAIL_QUEUEING",
            Self::FailError => "FAIL_ERROR",
            Self::NotAvailable => "NOT_AVAILABLE",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "AGENT_CONNECTED" => Self::AgentConnected,
            "CANCELLED" => Self::Cancelled,
            "FAIL_TIMEOUT_TTL" => Self::FailTimeoutTtl,
            "FAIL_CALL_TO_CUSTOMER" => Self::FailCallToCustomer,
            "FAIL_QUEUEING" => Self::FailQueueing,
            "FAIL_ERROR" => Self::FailError,
            "NOT_AVAILABLE" => Self::NotAvailable,
            _ => return None,
        })
    }
}

/// One push target of a create request (`{channel: "FCM", target: <token>}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTarget {
    /// Push channel; GES knows only `FCM` (Firebase Cloud Messaging).
    pub channel: String,
    /// The device's FCM registration token the push is addressed to.
    pub target: String,
}

/// `POST /callbacks/create` body (`CreateCallbackParms`), as received: every field optional
/// so that missing ones get our own message. Unknown fields are ignored, as GES does.
///
/// Informational (reporting) fields are read as any JSON value and never fail a create; the
/// fields that change what happens keep their types and are checked strictly. Each field's
/// decision and its evidence (the published clients' generated models) is in
/// `docs/create-fields.md`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCallbackParms {
    /// Callback service (virtual queue) name.
    pub service_name: Option<String>,
    /// Number to call back.
    pub phone_number: Option<String>,
    /// RFC 3339 time; present ⇒ scheduled.
    pub desired_time: Option<String>,
    /// `ASAP` | `SCHEDULED` | `COMBINED_SCHEDULED_AND_ASAP`.
    pub cb_offer_type: Option<Value>,
    /// Language code, e.g. `en-US`.
    pub language: Option<Value>,
    /// Inbound virtual queue (reporting).
    #[serde(rename = "inboundVQ")]
    pub inbound_vq: Option<Value>,
    /// EWT threshold used to offer the callback (reporting).
    pub offer_threshold: Option<Value>,
    /// Where the request came from (free text); reporting only.
    pub channel: Option<Value>,
    /// `OFF-HOURS` | `ON-HOURS`: when the offer was made; reporting only.
    pub offer_timing: Option<Value>,
    /// Id of the interaction the offer came from (an inbound call's CallUUID, a chat id);
    /// reporting only.
    pub cb_origination_ixn_id: Option<Value>,
    /// Survey routing point (overrides the service).
    #[serde(rename = "surveyRP")]
    pub survey_rp: Option<String>,
    /// Initial priority (overrides the service).
    pub priority: Option<Number>,
    /// Routing point (overrides the service).
    pub route_point: Option<String>,
    /// Attached data; non-identifier keys are dropped.
    pub user_data: Option<Value>,
    /// reCAPTCHA response token; required when the service has `captcha_required`.
    pub captcha_token: Option<String>,
    /// Push targets (required for USERORIGINATED services).
    pub push_targets: Option<Vec<PushTarget>>,
    /// Strict capacity check for scheduled callbacks.
    pub always_check_capacity: Option<bool>,
    /// Legacy push field (before client 9.0.20).
    pub push_channel: Option<String>,
    /// Legacy push field (before client 9.0.20).
    pub push_target: Option<String>,
}

/// A create request after field-level validation (service rules are checked by the caller).
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The service (callback virtual queue) the callback is booked on, as the request named it.
    pub service_name: String,
    /// Phone number as given (trimmed).
    pub phone_number: String,
    /// Desired time; `None` = immediate.
    pub desired_time: Option<Timestamp>,
    /// The request's `priority`, replacing the service's initial priority when present.
    pub priority: Option<i32>,
    /// Whether a captcha token came with the request.
    pub captcha_token: Option<String>,
    /// Attributes kept with the callback: overrides, informational fields, push targets
    /// (legacy fields folded in) and `alwaysCheckCapacity`.
    pub attrs: CallbackAttrs,
    /// Filtered user data (`None` when absent or empty).
    pub user_data: Option<Map<String, Value>>,
}

/// The longest routing text (`surveyRP`, `routePoint`), in bytes.
pub const MAX_TEXT: usize = 255;
/// The longest `captchaToken`, in bytes: real tokens are long (reCAPTCHA v2 about 560
/// characters, v3 and hCaptcha often over 1,500; docs/credentials.md#captcha).
pub const MAX_CAPTCHA_TOKEN: usize = 8192;
/// The longest `serviceName`, in bytes (the rule of every name: `model::valid_name`).
pub const MAX_SERVICE_NAME: usize = 255;
/// The longest `phoneNumber`, in bytes.
pub const MAX_PHONE: usize = 32;
/// The fewest digits of a `phoneNumber`.
pub const MIN_PHONE_DIGITS: usize = 3;
/// The most `pushTargets`.
pub const MAX_PUSH_TARGETS: usize = 10;
/// The longest `pushTargets[].target` (an FCM registration token), in bytes.
pub const MAX_PUSH_TOKEN: usize = 4096;

fn text(field: &str, v: Option<String>) -> Result<Option<String>, Error> {
    text_of(field, v, MAX_TEXT)
}

/// [`text`] at most `max` bytes long.
fn text_of(field: &str, v: Option<String>, max: usize) -> Result<Option<String>, Error> {
    match v {
        None => Ok(None),
        Some(s) if s.len() > max => Err(Error::invalid(format!(
            "{field} is too long (at most {max} characters)"
        ))),
        Some(s) if s.chars().any(char::is_control) => Err(Error::invalid(format!(
            "{field} may not contain control characters"
        ))),
        Some(s) => Ok(Some(s)),
    }
}

/// Parses an RFC 3339 time with an offset (`2026-05-28T15:30:00.000Z`).
pub fn parse_time(field: &str, s: &str) -> Result<Timestamp, Error> {
    s.parse::<Timestamp>().map_err(|_| {
        Error::invalid(format!(
            "{field} must be an ISO-8601 time with a UTC offset, e.g. 2026-05-28T15:30:00.000Z"
        ))
    })
}

fn service_name(v: Option<String>) -> Result<String, Error> {
    let name = match v.map(|s| s.trim().to_string()) {
        Some(s) if !s.is_empty() => s,
        _ => return Err(Error::invalid("serviceName is required")),
    };
    if !super::valid_name(&name) {
        return Err(Error::invalid("serviceName is not a valid service name"));
    }
    Ok(name)
}

fn phone_number(v: Option<String>) -> Result<String, Error> {
    let phone = match v.map(|s| s.trim().to_string()) {
        Some(s) if !s.is_empty() => s,
        _ => return Err(Error::invalid("phoneNumber is required")),
    };
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    if phone.len() > MAX_PHONE
        || digits < MIN_PHONE_DIGITS
        || !phone
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'))
    {
        return Err(Error::invalid(
            "phoneNumber must be a phone number: digits with optional +, spaces, dashes, dots or parentheses",
        ));
    }
    Ok(phone)
}

fn priority(v: Option<Number>) -> Result<Option<i32>, Error> {
    let Some(n) = v else {
        return Ok(None);
    };
    let v = n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
            .map(|f| f as i64)
    });
    match v.and_then(|v| i32::try_from(v).ok()) {
        Some(v) => Ok(Some(v)),
        None => Err(Error::invalid(
            "priority must be an integer between -2147483648 and 2147483647",
        )),
    }
}

fn push_targets(
    targets: Option<Vec<PushTarget>>,
    channel: Option<String>,
    target: Option<String>,
) -> Result<Vec<PushTarget>, Error> {
    let mut targets = targets.unwrap_or_default();
    match (channel, target) {
        (None, None) => {}
        (channel, Some(target)) => targets.push(PushTarget {
            channel: channel.unwrap_or_else(|| "FCM".into()),
            target,
        }),
        (Some(_), None) => {
            return Err(Error::invalid("pushChannel given without pushTarget"));
        }
    }
    if targets.len() > MAX_PUSH_TARGETS {
        return Err(Error::invalid("pushTargets may hold at most 10 targets"));
    }
    for t in &targets {
        if t.channel != "FCM" {
            return Err(Error::invalid("pushTargets[].channel must be FCM"));
        }
        if t.target.trim().is_empty() || t.target.len() > MAX_PUSH_TOKEN {
            return Err(Error::invalid(
                "pushTargets[].target must be a non-empty FCM registration token",
            ));
        }
    }
    Ok(targets)
}

fn user_data_map(v: Option<Value>) -> Result<Option<Map<String, Value>>, Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(user_data::filter(map)).filter(|m| !m.is_empty())),
        Some(_) => Err(Error::invalid("userData must be a JSON object")),
    }
}

impl CreateCallbackParms {
    /// Field-level validation; service-dependent rules come later. Strict fields answer 400
    /// naming the field; informational ones never do (see [`informational`]).
    pub fn validate(self) -> Result<CreateRequest, Error> {
        let service_name = service_name(self.service_name)?;
        let phone_number = phone_number(self.phone_number)?;
        let desired_time = match self.desired_time.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(parse_time("desiredTime", s)?),
        };
        let priority = priority(self.priority)?;
        let push_targets = push_targets(self.push_targets, self.push_channel, self.push_target)?;
        let user_data = user_data_map(self.user_data)?;
        let mut attrs = informational::Fields {
            cb_offer_type: self.cb_offer_type,
            language: self.language,
            inbound_vq: self.inbound_vq,
            offer_threshold: self.offer_threshold,
            channel: self.channel,
            offer_timing: self.offer_timing,
            cb_origination_ixn_id: self.cb_origination_ixn_id,
        }
        .into_attrs(desired_time.is_some());
        attrs.survey_rp = text("surveyRP", self.survey_rp)?;
        attrs.route_point = text("routePoint", self.route_point)?;
        attrs.push_targets = push_targets;
        attrs.always_check_capacity = self.always_check_capacity.unwrap_or(false);
        Ok(CreateRequest {
            service_name,
            phone_number,
            desired_time,
            priority,
            captcha_token: text_of("captchaToken", self.captcha_token, MAX_CAPTCHA_TOKEN)?,
            attrs,
            user_data,
        })
    }
}

/// Body of retrieve and cancel (`CallbackIdParms`).
#[derive(Debug, Default, Deserialize)]
pub struct CallbackIdParms {
    /// The id returned by create.
    pub id: Option<String>,
}

impl CallbackIdParms {
    /// The id as a UUID, or a 400 saying what is wrong.
    pub fn parse(self) -> Result<uuid::Uuid, Error> {
        match self.id.as_deref().map(str::trim) {
            None | Some("") => Err(Error::invalid("id is required")),
            Some(s) => uuid::Uuid::parse_str(s)
                .map_err(|_| Error::invalid("id is not a callback id returned by create")),
        }
    }
}

/// The `Callback` model returned by retrieve.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Callback {
    /// The id create returned (a UUID).
    pub id: String,
    /// The service (callback virtual queue) it is booked on.
    pub service_name: String,
    /// When the customer wants the call (`2026-05-28T15:30:00.000Z`); the creation time for an
    /// immediate callback.
    pub desired_time: String,
    /// Where the callback is in its lifecycle (docs/decisions.md#callback-lifecycle).
    pub callback_state: CallbackState,
    /// Why it completed; only when COMPLETED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_reason: Option<CompletionReason>,
    /// The phone number as the create gave it (trimmed).
    pub phone_number: String,
    /// 1-based place in the service's queue view (priority, then time) while QUEUED or ROUTING;
    /// 0 while PROCESSING; absent otherwise, or when Redis cannot say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position_in_queue: Option<i64>,
    /// Seconds until an agent is expected (callbacks ahead × mean dequeue interval) while QUEUED
    /// or ROUTING; 0 while PROCESSING; absent otherwise, or without enough history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_wait_time: Option<i64>,
    /// Dial attempt (1 for the first).
    pub attempt: i16,
    /// When the create was committed (`2026-05-28T15:30:00.000Z`).
    pub created_time: String,
    /// Stored optional attributes (language, offer type, overrides, push channels: never a
    /// push token, `attrs::shown`).
    #[serde(flatten)]
    pub attrs: Map<String, Value>,
    /// The create's `userData`, keys that are not identifiers dropped; absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<Value>,
}

/// Formats a timestamp the way GES does: `2026-05-28T15:30:00.000Z`.
pub fn wire_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parms(json: &str) -> Result<CreateRequest, Error> {
        serde_json::from_str::<CreateCallbackParms>(json)
            .unwrap()
            .validate()
    }

    /// The attributes as stored (`callbacks.attrs`).
    fn stored(r: &CreateRequest) -> Map<String, Value> {
        match r.attrs.to_json() {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// Each published limit (the OpenAPI document states them) is where the validator draws
    /// the line: accepted at the limit, refused one past it.
    #[test]
    fn limits_hold_exactly_at_their_constants() {
        let ok = |field: &str, v: Value| {
            let mut body = serde_json::json!({"serviceName": "s", "phoneNumber": "5550100"});
            body[field] = v;
            serde_json::from_value::<CreateCallbackParms>(body)
                .unwrap()
                .validate()
                .is_ok()
        };
        let text = |n: usize| Value::String("a".repeat(n));
        for field in ["serviceName", "surveyRP", "routePoint"] {
            assert_eq!(MAX_SERVICE_NAME, MAX_TEXT);
            assert!(ok(field, text(MAX_TEXT)), "{field} at the limit");
            assert!(!ok(field, text(MAX_TEXT + 1)), "{field} past the limit");
        }
        assert!(ok("captchaToken", text(MAX_CAPTCHA_TOKEN)));
        assert!(!ok("captchaToken", text(MAX_CAPTCHA_TOKEN + 1)));
        let digits = |n: usize| Value::String("5".repeat(n));
        assert!(ok("phoneNumber", digits(MAX_PHONE)));
        assert!(!ok("phoneNumber", digits(MAX_PHONE + 1)));
        assert!(ok("phoneNumber", digits(MIN_PHONE_DIGITS)));
        assert!(!ok("phoneNumber", digits(MIN_PHONE_DIGITS - 1)));
        let targets = |n: usize, len: usize| {
            serde_json::json!(vec![
                serde_json::json!({"channel": "FCM", "target": "t".repeat(len)});
                n
            ])
        };
        assert!(ok("pushTargets", targets(MAX_PUSH_TARGETS, 1)));
        assert!(!ok("pushTargets", targets(MAX_PUSH_TARGETS + 1, 1)));
        assert!(ok("pushTargets", targets(1, MAX_PUSH_TOKEN)));
        assert!(!ok("pushTargets", targets(1, MAX_PUSH_TOKEN + 1)));
    }

    #[test]
    fn minimal_immediate_request() {
        let r = parms(r#"{"serviceName":"s","phoneNumber":"+1 (555) 010-0000"}"#).unwrap();
        assert!(r.desired_time.is_none());
        assert_eq!(stored(&r)["cbOfferType"], "ASAP");
    }

    #[test]
    fn field_errors_are_specific() {
        let msg = |j: &str| parms(j).unwrap_err().to_string();
        assert_eq!(
            msg(r#"{"phoneNumber":"5550100"}"#),
            "serviceName is required"
        );
        assert_eq!(msg(r#"{"serviceName":"s"}"#), "phoneNumber is required");
        assert!(msg(r#"{"serviceName":"s","phoneNumber":"abc"}"#).contains("phoneNumber"));
        assert!(
            msg(r#"{"serviceName":"s","phoneNumber":"5550100","desiredTime":"tomorrow"}"#)
                .contains("desiredTime")
        );
        assert!(
            msg(r#"{"serviceName":"s","phoneNumber":"5550100","priority":1.5}"#)
                .contains("priority")
        );
        assert!(
            msg(r#"{"serviceName":"s","phoneNumber":"5550100","userData":[1]}"#)
                .contains("userData")
        );
        assert!(
            msg(r#"{"serviceName":"s","phoneNumber":"5550100","routePoint":"a\u0000b"}"#)
                .contains("routePoint")
        );
        assert!(
            msg(
                r#"{"serviceName":"s","phoneNumber":"5550100","desiredTime":"2030-01-02T03:04:05"}"#
            )
            .contains("UTC offset")
        );
    }

    /// Bodies the published JavaScript client 9.0.84 puts on the wire (captured; see
    /// `tests/fixtures/clients/README.md`): the model's defaults are sent after the app's fields.
    #[test]
    fn published_client_bodies_validate() {
        let default = "ASAP if the request does not include the desiredTime parameter and SCHEDULED if the request includes the desiredTime parameter.";
        let immediate = format!(
            r#"{{"serviceName":"CB_Support","phoneNumber":"+15551234567","cbOfferType":"{default}","language":"en-US"}}"#
        );
        let r = parms(&immediate).unwrap();
        assert_eq!(stored(&r)["cbOfferType"], "ASAP");
        assert_eq!(stored(&r)["cbOfferTypeRaw"], default);
        assert_eq!(stored(&r)["language"], "en-US");
        let scheduled = format!(
            r#"{{"serviceName":"CB_Support","phoneNumber":"+15551234567","desiredTime":"2030-05-28T15:30:00.000Z","userData":{{"orderId":"A-17","vip":true,"n":3}},"cbOfferType":"{default}","language":"en-US"}}"#
        );
        let r = parms(&scheduled).unwrap();
        assert_eq!(stored(&r)["cbOfferType"], "SCHEDULED");
        assert_eq!(r.user_data.unwrap().len(), 3);
        // The Java client writes OffsetDateTime with ISO_OFFSET_DATE_TIME (no millis at .000).
        let java = r#"{"serviceName":"s","phoneNumber":"5550100","desiredTime":"2030-05-28T17:30:00+02:00"}"#;
        assert_eq!(
            wire_time(parms(java).unwrap().desired_time.unwrap()),
            "2030-05-28T15:30:00.000Z"
        );
    }

    #[test]
    fn nulls_are_absent_for_every_optional_field() {
        let r = parms(
            r#"{"serviceName":"s","phoneNumber":"5550100","desiredTime":null,"cbOfferType":null,
                "language":null,"inboundVQ":null,"offerThreshold":null,"channel":null,
                "offerTiming":null,"cbOriginationIxnId":null,"surveyRP":null,"priority":null,
                "routePoint":null,"userData":null,"captchaToken":null,"pushTargets":null,
                "alwaysCheckCapacity":null}"#,
        )
        .unwrap();
        assert!(r.desired_time.is_none() && r.priority.is_none() && r.user_data.is_none());
        assert_eq!(
            stored(&r).len(),
            1,
            "only the derived cbOfferType: {:?}",
            r.attrs
        );
    }

    #[test]
    fn scheduled_request_keeps_attrs_and_filters_user_data() {
        let r = parms(
            r#"{"serviceName":"s","phoneNumber":"5550100","desiredTime":"2030-01-02T03:04:05.000Z",
                "language":"fr-CA","priority":3,"userData":{"ok":1,"bad key":2},
                "pushTargets":[{"channel":"FCM","target":"tok"}]}"#,
        )
        .unwrap();
        assert_eq!(
            wire_time(r.desired_time.unwrap()),
            "2030-01-02T03:04:05.000Z"
        );
        assert_eq!(r.priority, Some(3));
        assert_eq!(stored(&r)["cbOfferType"], "SCHEDULED");
        assert_eq!(r.user_data.unwrap().len(), 1);
    }

    #[test]
    fn states_only_move_forward() {
        assert!(CallbackState::Scheduled < CallbackState::Queued);
        assert!(CallbackState::Processing < CallbackState::Completed);
        assert!(!CallbackState::Processing.cancellable());
        assert_eq!(
            CallbackState::parse("ROUTING"),
            Some(CallbackState::Routing)
        );
    }
}
