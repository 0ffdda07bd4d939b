//! Callbacks: states, completion reasons, the create request and the retrieve model.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::user_data;
use crate::error::ApiError;

/// Lifecycle states (DESIGN §4). The order is the only allowed direction of travel.
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushTarget {
    /// Only `FCM`.
    pub channel: String,
    /// FCM registration token.
    pub target: String,
}

/// `POST /callbacks/create` body (`CreateCallbackParms`), as received: every field optional
/// so that missing ones get our own message. Unknown fields are ignored, as GES does.
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
    pub cb_offer_type: Option<String>,
    /// Language code, e.g. `en-US`.
    pub language: Option<String>,
    /// Inbound virtual queue (reporting).
    #[serde(rename = "inboundVQ")]
    pub inbound_vq: Option<String>,
    /// EWT threshold used to offer the callback (reporting).
    pub offer_threshold: Option<Number>,
    /// Origination channel.
    pub channel: Option<String>,
    /// `OFF-HOURS` | `ON-HOURS`.
    pub offer_timing: Option<String>,
    /// Originating interaction id.
    pub cb_origination_ixn_id: Option<String>,
    /// Survey routing point (overrides the service).
    #[serde(rename = "surveyRP")]
    pub survey_rp: Option<String>,
    /// Initial priority (overrides the service).
    pub priority: Option<Number>,
    /// Routing point (overrides the service).
    pub route_point: Option<String>,
    /// Attached data; non-identifier keys are dropped.
    pub user_data: Option<Value>,
    /// reCAPTCHA token.
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
    /// Service name.
    pub service_name: String,
    /// Phone number as given (trimmed).
    pub phone_number: String,
    /// Desired time; `None` = immediate.
    pub desired_time: Option<Timestamp>,
    /// Priority override.
    pub priority: Option<i32>,
    /// Whether strict capacity checking was asked for.
    pub always_check_capacity: bool,
    /// Push targets (legacy fields folded in).
    pub push_targets: Vec<PushTarget>,
    /// Whether a captcha token came with the request.
    pub captcha_token: Option<String>,
    /// Optional attributes kept with the callback (language, offer type, overrides, …).
    pub attrs: Map<String, Value>,
    /// Filtered user data (`None` when absent or empty).
    pub user_data: Option<Map<String, Value>>,
}

const MAX_TEXT: usize = 255;

fn text(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(None),
        Some(s) if s.len() > MAX_TEXT => Err(ApiError::bad_request(format!(
            "{field} is too long (at most {MAX_TEXT} characters)"
        ))),
        Some(s) if s.chars().any(char::is_control) => Err(ApiError::bad_request(format!(
            "{field} may not contain control characters"
        ))),
        Some(s) => Ok(Some(s)),
    }
}

fn one_of(field: &str, v: Option<String>, allowed: &[&str]) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if !allowed.contains(&s.as_str()) => Err(ApiError::bad_request(format!(
            "{field} must be one of {}",
            allowed.join(", ")
        ))),
        other => Ok(other),
    }
}

/// Parses an RFC 3339 time with an offset (`2026-05-28T15:30:00.000Z`).
pub fn parse_time(field: &str, s: &str) -> Result<Timestamp, ApiError> {
    s.parse::<Timestamp>().map_err(|_| {
        ApiError::bad_request(format!(
            "{field} must be an ISO-8601 time with a UTC offset, e.g. 2026-05-28T15:30:00.000Z"
        ))
    })
}

impl CreateCallbackParms {
    /// Field-level validation; service-dependent rules come later.
    pub fn validate(self) -> Result<CreateRequest, ApiError> {
        let service_name = match self.service_name.map(|s| s.trim().to_string()) {
            Some(s) if !s.is_empty() => s,
            _ => return Err(ApiError::bad_request("serviceName is required")),
        };
        if !super::valid_name(&service_name) {
            return Err(ApiError::bad_request(
                "serviceName is not a valid service name",
            ));
        }
        let phone_number = match self.phone_number.map(|s| s.trim().to_string()) {
            Some(s) if !s.is_empty() => s,
            _ => return Err(ApiError::bad_request("phoneNumber is required")),
        };
        let digits = phone_number.chars().filter(char::is_ascii_digit).count();
        if phone_number.len() > 32
            || digits < 3
            || !phone_number
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'))
        {
            return Err(ApiError::bad_request(
                "phoneNumber must be a phone number: digits with optional +, spaces, dashes, dots or parentheses",
            ));
        }
        let desired_time = match self.desired_time.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(parse_time("desiredTime", s)?),
        };
        let priority = match self.priority {
            None => None,
            Some(n) => {
                let v = n.as_i64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                        .map(|f| f as i64)
                });
                match v.and_then(|v| i32::try_from(v).ok()) {
                    Some(v) => Some(v),
                    None => {
                        return Err(ApiError::bad_request(
                            "priority must be an integer between -2147483648 and 2147483647",
                        ));
                    }
                }
            }
        };
        let mut push_targets = self.push_targets.unwrap_or_default();
        match (self.push_channel, self.push_target) {
            (None, None) => {}
            (channel, Some(target)) => push_targets.push(PushTarget {
                channel: channel.unwrap_or_else(|| "FCM".into()),
                target,
            }),
            (Some(_), None) => {
                return Err(ApiError::bad_request(
                    "pushChannel given without pushTarget",
                ));
            }
        }
        if push_targets.len() > 10 {
            return Err(ApiError::bad_request(
                "pushTargets may hold at most 10 targets",
            ));
        }
        for t in &push_targets {
            if t.channel != "FCM" {
                return Err(ApiError::bad_request("pushTargets[].channel must be FCM"));
            }
            if t.target.trim().is_empty() || t.target.len() > 4096 {
                return Err(ApiError::bad_request(
                    "pushTargets[].target must be a non-empty FCM registration token",
                ));
            }
        }
        let user_data = match self.user_data {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(user_data::filter(map)).filter(|m| !m.is_empty()),
            Some(_) => return Err(ApiError::bad_request("userData must be a JSON object")),
        };

        let mut attrs = Map::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                attrs.insert(k.into(), Value::String(v));
            }
        };
        let cb_offer_type = one_of(
            "cbOfferType",
            self.cb_offer_type,
            &["ASAP", "SCHEDULED", "COMBINED_SCHEDULED_AND_ASAP"],
        )?;
        let offer_timing = one_of("offerTiming", self.offer_timing, &["OFF-HOURS", "ON-HOURS"])?;
        let language = text("language", self.language)?;
        if let Some(lang) = &language {
            let ok = lang.len() <= 16
                && lang
                    .split('-')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
            if !ok {
                return Err(ApiError::bad_request(
                    "language must be a language code such as en-US or fr-CA",
                ));
            }
        }
        put(
            "cbOfferType",
            cb_offer_type.or_else(|| {
                Some(
                    if desired_time.is_some() {
                        "SCHEDULED"
                    } else {
                        "ASAP"
                    }
                    .into(),
                )
            }),
        );
        put("offerTiming", offer_timing);
        put("language", language);
        put("inboundVQ", text("inboundVQ", self.inbound_vq)?);
        put("channel", text("channel", self.channel)?);
        put(
            "cbOriginationIxnId",
            text("cbOriginationIxnId", self.cb_origination_ixn_id)?,
        );
        put("surveyRP", text("surveyRP", self.survey_rp)?);
        put("routePoint", text("routePoint", self.route_point)?);
        if let Some(t) = self.offer_threshold {
            attrs.insert("offerThreshold".into(), Value::Number(t));
        }
        if !push_targets.is_empty() {
            attrs.insert(
                "pushTargets".into(),
                serde_json::to_value(&push_targets).map_err(ApiError::internal)?,
            );
        }
        let captcha_token = text("captchaToken", self.captcha_token)?;
        let always_check_capacity = self.always_check_capacity.unwrap_or(false);
        if always_check_capacity {
            attrs.insert("alwaysCheckCapacity".into(), Value::Bool(true));
        }
        Ok(CreateRequest {
            service_name,
            phone_number,
            desired_time,
            priority,
            always_check_capacity,
            push_targets,
            captcha_token,
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
    pub fn parse(self) -> Result<uuid::Uuid, ApiError> {
        match self.id.as_deref().map(str::trim) {
            None | Some("") => Err(ApiError::bad_request("id is required")),
            Some(s) => uuid::Uuid::parse_str(s)
                .map_err(|_| ApiError::bad_request("id is not a callback id returned by create")),
        }
    }
}

/// The `Callback` model returned by retrieve.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Callback {
    /// Callback id.
    pub id: String,
    /// Service (virtual queue).
    pub service_name: String,
    /// Desired time, UTC.
    pub desired_time: String,
    /// Current state.
    pub callback_state: CallbackState,
    /// Only when COMPLETED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_reason: Option<CompletionReason>,
    /// Number as given.
    pub phone_number: String,
    /// Only while QUEUED, ROUTING or PROCESSING.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position_in_queue: Option<i64>,
    /// Seconds; only while QUEUED, ROUTING or PROCESSING.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_wait_time: Option<i64>,
    /// Dial attempt (1 for the first).
    pub attempt: i16,
    /// Creation time, UTC.
    pub created_time: String,
    /// Stored optional attributes (language, offer type, overrides, push targets).
    #[serde(flatten)]
    pub attrs: Map<String, Value>,
    /// Filtered user data.
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

    fn parms(json: &str) -> Result<CreateRequest, ApiError> {
        serde_json::from_str::<CreateCallbackParms>(json)
            .unwrap()
            .validate()
    }

    #[test]
    fn minimal_immediate_request() {
        let r = parms(r#"{"serviceName":"s","phoneNumber":"+1 (555) 010-0000"}"#).unwrap();
        assert!(r.desired_time.is_none());
        assert_eq!(r.attrs["cbOfferType"], "ASAP");
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
            msg(r#"{"serviceName":"s","phoneNumber":"5550100","cbOfferType":"SOON"}"#)
                .contains("cbOfferType")
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
        assert_eq!(r.attrs["cbOfferType"], "SCHEDULED");
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
