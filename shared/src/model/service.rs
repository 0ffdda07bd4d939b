//! Service settings: one CALLBACK_SETTINGS row = one callback virtual queue
//! (docs/decisions.md#service-settings: every column, its default, range and use).
//!
//! Every column has a default; unknown columns are kept in `extra` and shown back, never
//! dropped. [`ServiceSettings::parse`] is the only way in, so a stored row is always valid.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::Error;

/// Who dials: the platform calls the customer, or the customer calls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CallDirection {
    /// The contact center calls the customer (default).
    #[default]
    #[serde(rename = "USERTERMINATED")]
    UserTerminated,
    /// The customer calls in (Click-To-Call-In); needs push targets.
    #[serde(rename = "USERORIGINATED")]
    UserOriginated,
}

/// `in_queue_checking`: how many active callbacks one number may hold per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InQueueChecking {
    /// At most 2 (GMS `true`).
    #[default]
    On,
    /// At most 1 active callback per number (`"strict"`).
    Strict,
    /// Any number of active callbacks per number (`false`).
    Off,
}

impl InQueueChecking {
    /// The per-number limit, if any.
    pub fn limit(self) -> Option<u32> {
        match self {
            Self::On => Some(2),
            Self::Strict => Some(1),
            Self::Off => None,
        }
    }
}

impl Serialize for InQueueChecking {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::On => s.serialize_bool(true),
            Self::Strict => s.serialize_str("strict"),
            Self::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for InQueueChecking {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(true) => Ok(Self::On),
            Value::Bool(false) => Ok(Self::Off),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" => Ok(Self::On),
                "false" => Ok(Self::Off),
                "strict" => Ok(Self::Strict),
                _ => Err(serde::de::Error::custom(
                    "expected true, false or \"strict\"",
                )),
            },
            _ => Err(serde::de::Error::custom(
                "expected true, false or \"strict\"",
            )),
        }
    }
}

macro_rules! default_fns {
    ($($name:ident: $ty:ty = $val:expr;)*) => {
        mod defaults {
            #[allow(unused_imports, reason = "some defaults are plain literals")]
            use super::*;
            $(pub(super) fn $name() -> $ty { $val })*
        }
    };
}

default_fns! {
    yes: bool = true;
    slot_minutes: u16 = 15;
    slot_capacity: u32 = 100;
    max_days_ahead: u16 = 14;
    ttl_seconds: u32 = 86_400;
    max_attempts: u16 = 1;
    retry_delay_seconds: u32 = 300;
    language: String = "en-US".into();
    push_threshold_minutes: u32 = 5;
    throttle_per_service_1: u32 = 500;
    throttle_ttl_1: u32 = 300;
    throttle_per_service_2: u32 = 1000;
    throttle_ttl_2: u32 = 3600;
    throttle_per_number_24h: u32 = 6;
    max_queued: u32 = 1000;
    dispatch_rate_per_second: u32 = 50;
    priority_interval_seconds: u32 = 60;
}

/// Largest `priority_increment`: keeps every escalated priority exact in the double
/// arithmetic of the queue-position script (`redis::queue`).
pub const MAX_PRIORITY_INCREMENT: i32 = 2_000;

/// The settings of one callback service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceSettings {
    /// Whether the service takes new callbacks: a create on a disabled service is 400, and
    /// queue-status offers nothing. A Designer publish that no longer lists the service sets it
    /// false; booked callbacks still run.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Whether creates without `desiredTime` are accepted (else 400); drives queue-status
    /// `offerImmediateCallback`.
    #[serde(default = "defaults::yes")]
    pub immediate_enabled: bool,
    /// Whether creates with `desiredTime` are accepted (else 400); drives queue-status
    /// `offerScheduledCallback`.
    #[serde(default = "defaults::yes")]
    pub scheduled_enabled: bool,
    /// Who dials; copied to the stream entry's `call_direction`. A USERORIGINATED create needs
    /// `pushTargets`.
    #[serde(default)]
    pub call_direction: CallDirection,
    /// Name of the tenant's business hours (must exist): open-for, availability, out-of-hours
    /// checks and the zone of the slot grid. None: always open, slots in UTC.
    #[serde(default)]
    pub business_hours: Option<String>,
    /// Name of the tenant's capacity rule (must exist); when set, its slot length and per-slot
    /// capacities replace `slot_minutes` / `slot_capacity`.
    #[serde(default)]
    pub capacity_rule: Option<String>,
    /// Slot length in minutes (15, 30 or 60) when no capacity rule is assigned.
    #[serde(default = "defaults::slot_minutes")]
    pub slot_minutes: u16,
    /// Places per slot for scheduled callbacks when no capacity rule is assigned.
    #[serde(default = "defaults::slot_capacity")]
    pub slot_capacity: u32,
    /// How many days ahead a callback may be scheduled (1–366); a later `desiredTime` is 400.
    #[serde(default = "defaults::max_days_ahead")]
    pub max_days_ahead: u16,
    /// Refuse (400) scheduled times outside business hours, and immediate callbacks while the
    /// office is closed (docs/decisions.md#scheduling-decisions).
    #[serde(default = "defaults::yes")]
    pub reject_out_of_hours: bool,
    /// Seconds (0–86,400) before the desired time a scheduled callback is handed to the voice
    /// platform: its dispatch time is desired time minus this.
    #[serde(default)]
    pub lead_time_seconds: u32,
    /// Seconds (> 0) a queued callback may wait for an agent; the worker then ends it
    /// `FAIL_TIMEOUT_TTL` (with a cancel owed to the voice platform).
    #[serde(default = "defaults::ttl_seconds")]
    pub ttl_seconds: u32,
    /// Dial attempts (1–10): a `FAIL_CALL_TO_CUSTOMER` with attempts left is dispatched again
    /// after `retry_delay_seconds`, as a new attempt.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u16,
    /// Seconds between a failed attempt and the next one (PostgreSQL's clock).
    #[serde(default = "defaults::retry_delay_seconds")]
    pub retry_delay_seconds: u32,
    /// Prepended to the normalised number in the stream entry's `dial_number` (at most 16 of
    /// `0-9 + * #`; `+` dials E.164).
    #[serde(default)]
    pub dial_prefix: String,
    /// Routing point the voice platform places the outbound call from; stream entry
    /// `route_point`, unless the create sends `routePoint`.
    #[serde(default)]
    pub route_point: Option<String>,
    /// Number shown to the customer as caller id (Designer's `Call Display Number`); stream
    /// entry `display_number` when set.
    #[serde(default)]
    pub display_number: Option<String>,
    /// Name shown to the customer as caller id (`Callback Display Name`); stream entry
    /// `display_name` when set.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Routing point of the survey after the call; stream entry `survey_rp`, unless the create
    /// sends `surveyRP`.
    #[serde(default)]
    pub survey_rp: Option<String>,
    /// Priority a callback starts with in the voice platform's queue (higher first); stream entry
    /// `priority`, unless the create sends `priority`. Queue views order by it, clamped to
    /// ±`redis::queue::PRIORITY_CAP`.
    #[serde(default)]
    pub priority: i32,
    /// How much a waiting callback's priority rises every `priority_interval_seconds` (0–2,000;
    /// 0 = no escalation): queue positions and the stream entry's `priority` use
    /// [`ServiceSettings::escalated_priority`] (docs/decisions.md#priority-escalation).
    #[serde(default)]
    pub priority_increment: i32,
    /// Seconds (1–86,400) between two escalation steps.
    #[serde(default = "defaults::priority_interval_seconds")]
    pub priority_interval_seconds: u32,
    /// Ceiling of that escalation (0 = none); a start above it is kept, never lowered.
    #[serde(default)]
    pub priority_limit: i32,
    /// Language of the callback's prompts (`en-US`, `fr-CA`, …); stream entry `language`, unless
    /// the create sends a usable `language`.
    #[serde(default = "defaults::language")]
    pub language: String,
    /// The Designer application the voice platform runs for the callback; stream entry
    /// `callback_application` when set.
    #[serde(default)]
    pub callback_application: Option<String>,
    /// Build stream of that application (e.g. `Development`); stream entry
    /// `application_stream` when set.
    #[serde(default)]
    pub application_stream: Option<String>,
    /// Name of the GWS statistic (Stat Server's, pre-configured for the contact center) whose
    /// value on this virtual queue (object type `Queue`, id = the service name) is the
    /// estimated wait time in seconds of `mode3` (docs/statistics.md#ewt-mode3). None: mode3
    /// answers `-1`.
    #[serde(default)]
    pub ewt_statistic: Option<String>,
    /// Minutes of estimated wait below which the `CALLBACK_UPCOMING` push is sent, once per
    /// callback (0: never; docs/push.md#events).
    #[serde(default = "defaults::push_threshold_minutes")]
    pub push_threshold_minutes: u32,
    /// Whether a create must carry a `captchaToken` that the tenant's CAPTCHA verifier accepts
    /// (docs/credentials.md#captcha).
    #[serde(default)]
    pub captcha_required: bool,
    /// Name of the tenant's number rule (must exist) that validates phone numbers on create.
    /// None: numbers are normalised when possible and never refused (`shared::phone`).
    #[serde(default)]
    pub number_rule: Option<String>,
    /// Creates the service admits in any `throttle_ttl_1` seconds (0 = no limit); over it, 429
    /// and `CB_TTL_LIMIT_REACHED` (docs/throttling.md).
    #[serde(default = "defaults::throttle_per_service_1")]
    pub throttle_per_service_1: u32,
    /// Length of window 1 in seconds (> 0), over which `throttle_per_service_1` counts.
    #[serde(default = "defaults::throttle_ttl_1")]
    pub throttle_ttl_1: u32,
    /// Creates the service admits in any `throttle_ttl_2` seconds (0 = no limit), as above.
    #[serde(default = "defaults::throttle_per_service_2")]
    pub throttle_per_service_2: u32,
    /// Length of window 2 in seconds (> 0), over which `throttle_per_service_2` counts.
    #[serde(default = "defaults::throttle_ttl_2")]
    pub throttle_ttl_2: u32,
    /// Immediate creates one phone number may make on the service in any 24 h (0 = no limit);
    /// over it, 429 and `CB_ENQUEUE_LIMIT_REACHED`.
    #[serde(default = "defaults::throttle_per_number_24h")]
    pub throttle_per_number_24h: u32,
    /// Active (not COMPLETED) callbacks one number may hold on the service: `true` (2),
    /// `"strict"` (1), `false` (no check); over it, 429 and `CB_ENQUEUE_LIMIT_REACHED`.
    #[serde(default)]
    pub in_queue_checking: InQueueChecking,
    /// Active (not COMPLETED) callbacks the service may hold (0 = no limit); over it, 429 and
    /// `CB_ENQUEUE_LIMIT_REACHED`.
    #[serde(default = "defaults::max_queued")]
    pub max_queued: u32,
    /// At most this many submissions per second (> 0) to the voice stream, per worker process;
    /// a callback over the pace goes back to the schedule at the time it may go
    /// (`worker::pacing`).
    #[serde(default = "defaults::dispatch_rate_per_second")]
    pub dispatch_rate_per_second: u32,
    /// Columns this version does not know; kept and shown back.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self::parse(Value::Object(Default::default())).expect("defaults are valid")
    }
}

impl ServiceSettings {
    /// The priority of a callback that started at `base` and has waited `waited_ms` since its
    /// desired time: `base + increment × ⌊waited / interval⌋`, capped at `priority_limit` when
    /// one is set (a `base` above the cap stays). docs/decisions.md#priority-escalation.
    pub fn escalated_priority(&self, base: i32, waited_ms: i64) -> i32 {
        if self.priority_increment <= 0 || waited_ms <= 0 {
            return base;
        }
        let interval_ms = i64::from(self.priority_interval_seconds.max(1)) * 1_000;
        let steps = waited_ms / interval_ms;
        let mut raised = i64::from(base)
            .saturating_add(i64::from(self.priority_increment).saturating_mul(steps));
        if self.priority_limit != 0 {
            raised = raised.min(i64::from(self.priority_limit.max(base)));
        }
        i32::try_from(raised).unwrap_or(i32::MAX)
    }

    /// Parses and validates one settings object; errors name the column.
    pub fn parse(mut value: Value) -> Result<Self, Error> {
        let Some(obj) = value.as_object_mut() else {
            return Err(Error::invalid("service settings must be a JSON object"));
        };
        // The name is the URL's (or the table row's) key, not a setting.
        obj.remove("name");
        let settings: Self = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            Error::invalid(format!("setting {path}: {}", e.inner()))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::invalid(m.to_string()));
        if !matches!(self.slot_minutes, 15 | 30 | 60) {
            return bad("setting slot_minutes: must be 15, 30 or 60");
        }
        if self.max_days_ahead == 0 || self.max_days_ahead > 366 {
            return bad("setting max_days_ahead: must be between 1 and 366");
        }
        if self.max_attempts == 0 || self.max_attempts > 10 {
            return bad("setting max_attempts: must be between 1 and 10");
        }
        if self.ttl_seconds == 0 {
            return bad("setting ttl_seconds: must be positive");
        }
        if self.throttle_ttl_1 == 0 || self.throttle_ttl_2 == 0 {
            return bad("setting throttle_ttl_1/throttle_ttl_2: must be positive");
        }
        if self.dispatch_rate_per_second == 0 {
            return bad("setting dispatch_rate_per_second: must be positive");
        }
        if !(0..=MAX_PRIORITY_INCREMENT).contains(&self.priority_increment) {
            return bad("setting priority_increment: must be between 0 and 2000");
        }
        if self.priority_interval_seconds == 0 || self.priority_interval_seconds > 86_400 {
            return bad("setting priority_interval_seconds: must be between 1 and 86400");
        }
        // Every stream entry carries it and the voice platform refuses a blank one
        // (docs/voice-platform.md#stream-entries).
        if self.language.trim().is_empty()
            || self.language.len() > 64
            || self.language.chars().any(char::is_control)
        {
            return bad(
                "setting language: must be a language code such as en-US (1-64 characters)",
            );
        }
        if self.lead_time_seconds > 86_400 {
            return bad("setting lead_time_seconds: at most 86400");
        }
        if self.dial_prefix.len() > 16
            || !self
                .dial_prefix
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '+' | '*' | '#'))
        {
            return bad("setting dial_prefix: at most 16 of 0-9 + * #");
        }
        self.check_ewt_statistic()?;
        for (col, v) in [
            ("business_hours", &self.business_hours),
            ("capacity_rule", &self.capacity_rule),
            ("number_rule", &self.number_rule),
        ] {
            if let Some(v) = v
                && !super::valid_name(v)
            {
                return Err(Error::invalid(format!(
                    "setting {col}: not a valid rule name"
                )));
            }
        }
        Ok(())
    }

    /// `ewt_statistic`: 1–255 characters, no control characters, not blank.
    fn check_ewt_statistic(&self) -> Result<(), Error> {
        match &self.ewt_statistic {
            Some(s) if s.trim().is_empty() || s.len() > 255 || s.chars().any(char::is_control) => {
                Err(Error::invalid(
                    "setting ewt_statistic: must be a GWS statistic name (1-255 characters)",
                ))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_follow_design() {
        let s = ServiceSettings::default();
        assert!(s.enabled && s.immediate_enabled && s.scheduled_enabled);
        assert_eq!(s.slot_minutes, 15);
        assert_eq!(s.slot_capacity, 100);
        assert_eq!(s.ttl_seconds, 86_400);
        assert_eq!(s.throttle_per_service_1, 500);
        assert_eq!(s.in_queue_checking.limit(), Some(2));
        assert_eq!(s.language, "en-US");
    }

    #[test]
    fn unknown_columns_are_kept_and_name_is_dropped() {
        let s = ServiceSettings::parse(
            json!({"name":"x","Custom Column":"v","in_queue_checking":"strict"}),
        )
        .unwrap();
        assert_eq!(s.extra.get("Custom Column"), Some(&json!("v")));
        assert!(!s.extra.contains_key("name"));
        assert_eq!(s.in_queue_checking, InQueueChecking::Strict);
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["Custom Column"], "v");
        assert_eq!(back["in_queue_checking"], "strict");
    }

    #[test]
    fn escalation_steps_and_caps() {
        let s = ServiceSettings::parse(json!({
            "priority_increment": 2, "priority_interval_seconds": 10, "priority_limit": 7
        }))
        .unwrap();
        assert_eq!(s.escalated_priority(1, -5_000), 1, "not due yet");
        assert_eq!(s.escalated_priority(1, 9_999), 1);
        assert_eq!(s.escalated_priority(1, 10_000), 3);
        assert_eq!(s.escalated_priority(1, 29_999), 5);
        assert_eq!(s.escalated_priority(1, 30_000), 7, "capped");
        assert_eq!(s.escalated_priority(1, 3_600_000), 7);
        assert_eq!(
            s.escalated_priority(9, 3_600_000),
            9,
            "a start above the cap stays"
        );
        let none = ServiceSettings::default();
        assert_eq!(none.escalated_priority(4, i64::MAX), 4);
        let open = ServiceSettings::parse(json!({"priority_increment": 2000})).unwrap();
        assert_eq!(open.escalated_priority(0, i64::MAX), i32::MAX, "saturates");
        for bad in [
            json!({"priority_increment": -1}),
            json!({"priority_increment": 2001}),
            json!({"priority_interval_seconds": 0}),
        ] {
            assert!(ServiceSettings::parse(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_column() {
        let e = ServiceSettings::parse(json!({"slot_minutes": 20}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("slot_minutes"), "{e}");
        let e = ServiceSettings::parse(json!({"slot_capacity": "lots"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("slot_capacity"), "{e}");
        let e = ServiceSettings::parse(json!({"call_direction": "SIDEWAYS"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("call_direction"), "{e}");
    }
}
