//! The component schemas of the OpenAPI document: request bodies as the validators accept them
//! (docs/create-fields.md), response models as the handlers serialize them, and the envelope of
//! every answer. The unit tests in `openapi::conformance` hold each one to its Rust type.

use serde_json::{Value, json};
use shared::model::{
    callback::{
        MAX_CAPTCHA_TOKEN, MAX_PHONE, MAX_PUSH_TARGETS, MAX_PUSH_TOKEN, MAX_SERVICE_NAME, MAX_TEXT,
        MIN_PHONE_DIGITS,
    },
    informational::MAX_RAW,
};

/// Callback states, in lifecycle order (the wire spelling of `CallbackState`).
pub(super) const STATES: [&str; 5] = ["SCHEDULED", "QUEUED", "ROUTING", "PROCESSING", "COMPLETED"];

/// Completion reasons Engage records (the wire spelling of `CompletionReason`).
pub(super) const REASONS: [&str; 7] = [
    "AGENT_CONNECTED",
    "CANCELLED",
    "FAIL_TIMEOUT_TTL",
    "FAIL_CALL_TO_CUSTOMER",
    "FAIL_QUEUEING",
    "FAIL_ERROR",
    "NOT_AVAILABLE",
];

/// A reference to a component schema.
pub(super) fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Text without control characters (the rule of the strict routing fields), nullable.
fn routing_text(description: &str) -> Value {
    text_of(MAX_TEXT, description)
}

/// [`routing_text`] of at most `max` characters.
fn text_of(max: usize, description: &str) -> Value {
    json!({"type": "string", "nullable": true, "maxLength": max,
           "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$", "description": description})
}

/// A lenient (informational) field: any JSON value is accepted; what does not fit is kept as
/// `<field>Raw` (docs/create-fields.md).
fn lenient(description: &str, example: Value) -> Value {
    json!({"nullable": true, "example": example, "description": format!(
        "{description} Informational: any JSON value is accepted; a value that does not fit is \
         treated as absent and its text kept as the callback's `…Raw` attribute.")})
}

/// Every component schema.
pub(super) fn all() -> Value {
    let mut schemas = envelope();
    for (name, schema) in [
        ("CreateCallbackParms", create_parms()),
        ("PushTarget", push_target()),
        ("CallbackIdParms", id_parms()),
        (
            "CreateCallbackData",
            id_data("the new callback's id (a UUIDv7)"),
        ),
        ("CancelCallbackData", id_data("the cancelled callback's id")),
        ("RescheduleCallbackParms", reschedule_parms()),
        ("RescheduleCallbackData", reschedule_data()),
        ("Callback", callback()),
        ("Availabilities", availabilities()),
        ("Slot", slot()),
        ("OpenForData", open_for()),
        ("QueueStatus", queue_status()),
        ("EstimatedWaitTime", estimated_wait_time()),
        ("ProposedSlots", proposed_slots()),
        ("CallInRequestsParms", call_in_parms()),
        ("CallInRequest", call_in_request()),
        ("StatisticsRequest", statistics_request()),
        ("Statistics", statistics()),
    ] {
        schemas[name] = schema;
    }
    schemas
}

/// `Status` and `Error`: the envelope parts every answer shares.
fn envelope() -> Value {
    json!({
      "Status": {"type": "object", "additionalProperties": false,
        "required": ["code", "message", "corrId"], "properties": {
          "code": {"type": "integer", "description": "equals the HTTP status"},
          "message": {"type": "string", "description": "`Successful`, or what went wrong and how to fix it"},
          "corrId": {"type": "string", "description": "correlation id of the request (also the `x-correlation-id` header); quote it when reporting a problem"}}},
      "Error": {"type": "object", "additionalProperties": false, "required": ["status"],
        "properties": {"status": r("Status")},
        "description": "An error answer: `status` only (a full slot's 429 adds `data`, see ProposedSlots)."}
    })
}

fn create_parms() -> Value {
    let time = json!({"type": "string", "nullable": true, "example": "2030-05-28T15:30:00.000Z",
        "anyOf": [{"format": "date-time"}, {"pattern": "^\\s*$"}],
        "description": "ISO-8601 time with a UTC offset; present (not empty) ⇒ a scheduled callback, absent ⇒ immediate"});
    json!({"type": "object", "required": ["serviceName", "phoneNumber"],
    "description": "Unknown fields are ignored; `null` means absent for every optional field (docs/create-fields.md).",
    "example": {"serviceName": "demo-immediate", "phoneNumber": "+12125550100"},
    "properties": {
      "serviceName": {"type": "string", "minLength": 1, "maxLength": MAX_SERVICE_NAME,
            "pattern": "^\\s*[^/\\u0000-\\u001f\\u007f-\\u009f]*\\s*$",
          "example": "demo-immediate", "description": "callback service (virtual queue) name: no `/` or control characters; an unknown one is 400"},
      "phoneNumber": {"type": "string", "minLength": MIN_PHONE_DIGITS, "maxLength": MAX_PHONE,
          "pattern": "^[0-9+ ().-]*$", "example": "+12125550100",
          "description": format!("number to call: digits (at least {MIN_PHONE_DIGITS}) with optional +, spaces, dashes, dots or parentheses; the service's number rule may refuse it (400)")},
      "desiredTime": time,
      "cbOfferType": lenient("How the callback was offered: ASAP, SCHEDULED or COMBINED_SCHEDULED_AND_ASAP (any case); otherwise derived from desiredTime.", json!("ASAP")),
      "language": lenient("Language code of the voice prompts (overrides the service's), e.g. en-US.", json!("en-US")),
      "inboundVQ": lenient(&format!("Inbound virtual queue the offer came from (kept as text, at most {MAX_RAW} bytes)."), json!("VQ_Support")),
      "offerThreshold": lenient("Wait (seconds) above which the app offered the callback; numbers or numeric text.", json!(120)),
      "channel": lenient("Where the request came from (free text).", json!("web")),
      "offerTiming": lenient("OFF-HOURS or ON-HOURS (any case).", json!("ON-HOURS")),
      "cbOriginationIxnId": lenient("Id of the interaction the offer came from.", json!("00F0025A2E0B7A6B")),
      "surveyRP": routing_text("survey routing point (overrides the service's)"),
      "priority": {"type": "integer", "nullable": true, "minimum": i32::MIN, "maximum": i32::MAX,
          "description": "initial priority (overrides the service's)"},
      "routePoint": routing_text("routing point of the outbound call (overrides the service's)"),
      "userData": {"type": "object", "nullable": true, "additionalProperties": true,
          "description": "attached data; keys that are not JavaScript identifiers are dropped; never logged"},
      "captchaToken": text_of(MAX_CAPTCHA_TOKEN, "reCAPTCHA response token (required when the service requires a captcha)"),
      "pushTargets": {"type": "array", "nullable": true, "maxItems": MAX_PUSH_TARGETS, "items": r("PushTarget")},
      "alwaysCheckCapacity": {"type": "boolean", "nullable": true,
          "description": "strict capacity check for a scheduled callback"},
      "pushChannel": {"type": "string", "nullable": true, "enum": ["FCM", null],
          "description": "legacy (clients before 9.0.20): with pushTarget, one more push target; not without it", "deprecated": true},
      "pushTarget": {"type": "string", "nullable": true, "minLength": 1, "maxLength": MAX_PUSH_TOKEN,
          "description": "legacy (clients before 9.0.20): an FCM registration token, channel pushChannel (default FCM)", "deprecated": true}
    }})
}

fn push_target() -> Value {
    json!({"type": "object", "required": ["channel", "target"], "properties": {
        "channel": {"type": "string", "enum": ["FCM"]},
        "target": {"type": "string", "minLength": 1, "maxLength": MAX_PUSH_TOKEN,
            "description": "the device's FCM registration token (not blank)"}}})
}

fn id_parms() -> Value {
    json!({"type": "object", "required": ["id"], "properties": {
        "id": {"type": "string", "format": "uuid", "description": "the id create returned"}}})
}

/// The reschedule extension's body (Engage only; docs/voice-platform.md#reschedule).
fn reschedule_parms() -> Value {
    json!({"type": "object", "required": ["id"],
      "anyOf": [{"required": ["desiredTime"], "properties": {"desiredTime": {"type": "string"}}},
                {"required": ["userData"], "properties": {"userData": {"type": "object", "minProperties": 1}}}],
      "description": "Engage extension (GES v3 has no reschedule): a new desired time and/or user-data changes; at least one.",
      "example": {"id": "0190a3c2-7b1e-7cc0-8e3f-2f6f1c0b9d11", "desiredTime": "2030-05-28T16:00:00.000Z"},
      "properties": {
        "id": {"type": "string", "format": "uuid", "description": "the id create returned"},
        "desiredTime": {"type": "string", "nullable": true, "format": "date-time",
            "description": "the new desired time (ISO-8601 with a UTC offset): the create's checks apply (booking window, business hours, slot capacity)"},
        "userData": {"type": "object", "nullable": true, "additionalProperties": true,
            "description": "properties to set (any JSON value) or remove (null); keys must be JavaScript identifiers, not reserved words"}}})
}

fn reschedule_data() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["id"], "properties": {
        "id": {"type": "string", "format": "uuid", "description": "the callback's id"},
        "desiredTime": {"type": "string", "format": "date-time", "description": "its desired time now (absent when only properties changed)"}}})
}

fn id_data(description: &str) -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["id"],
        "properties": {"id": {"type": "string", "format": "uuid", "description": description}}})
}

/// `Callback` as retrieve returns it: the v3 model, plus `serviceName`, `attempt`,
/// `createdTime`, `userData` and the stored attributes of the create.
fn callback() -> Value {
    let time = json!({"type": "string", "format": "date-time"});
    let text = json!({"type": "string"});
    json!({"type": "object", "additionalProperties": true,
    "description": "The v3 `Callback` model, with what Engage keeps beyond it: serviceName, attempt, createdTime, userData and the create's stored attributes (docs/create-fields.md#stored-attributes). Attributes stored by older versions may appear under their own names.",
    "required": ["id", "serviceName", "desiredTime", "callbackState", "phoneNumber", "attempt", "createdTime"],
    "properties": {
      "id": {"type": "string", "format": "uuid"},
      "serviceName": text, "desiredTime": time, "createdTime": time,
      "callbackState": {"type": "string", "enum": STATES},
      "callbackReason": {"type": "string", "enum": REASONS, "description": "only when COMPLETED"},
      "phoneNumber": text,
      "positionInQueue": {"type": "integer", "minimum": 0, "description": "1-based place in the queue while QUEUED or ROUTING (absent when unknown); 0 while PROCESSING; absent otherwise"},
      "estimatedWaitTime": {"type": "integer", "minimum": 0, "description": "seconds until an agent is expected while QUEUED or ROUTING (absent without history); 0 while PROCESSING; absent otherwise"},
      "attempt": {"type": "integer", "minimum": 1, "description": "dial attempt, 1 for the first"},
      "userData": {"type": "object", "additionalProperties": true},
      "cbOfferType": {"type": "string", "enum": ["ASAP", "SCHEDULED", "COMBINED_SCHEDULED_AND_ASAP"]},
      "cbOfferTypeRaw": raw("cbOfferType"),
      "offerTiming": {"type": "string", "enum": ["OFF-HOURS", "ON-HOURS"]},
      "offerTimingRaw": raw("offerTiming"),
      "language": text, "languageRaw": raw("language"),
      "inboundVQ": text, "channel": text, "cbOriginationIxnId": text,
      "offerThreshold": {"type": "number"}, "offerThresholdRaw": raw("offerThreshold"),
      "surveyRP": text, "routePoint": text,
      "pushTargets": shown_push_targets(),
      "alwaysCheckCapacity": {"type": "boolean", "enum": [true], "description": "present only when the create asked for it"}
    }})
}

/// Retrieve's `pushTargets`: channel only (docs/push.md#what-callers-see).
fn shown_push_targets() -> Value {
    json!({"type": "array",
        "description": "the create's push targets, channel only: a registration token is a credential of the customer's device and is never shown",
        "items": {"type": "object", "additionalProperties": false, "required": ["channel"],
            "properties": {"channel": {"type": "string", "enum": ["FCM"]}}}})
}

fn raw(field: &str) -> Value {
    json!({"type": "string", "maxLength": MAX_RAW, "description": format!("the create's `{field}` text, kept when it was not a usable value")})
}

fn availabilities() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["slots", "durationMin", "timezone"], "properties": {
        "slots": {"type": "array", "items": r("Slot"), "description": "in time order"},
        "durationMin": {"type": "integer", "minimum": 1, "description": "slot length in minutes"},
        "timezone": {"type": "string", "description": "the requested timezone as given (UTC when absent)"}}})
}

fn slot() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["utcTime", "localTime", "capacity", "total"], "properties": {
        "utcTime": {"type": "string", "format": "date-time"},
        "localTime": {"type": "string", "format": "date-time", "description": "the slot start in the requested timezone, with its offset"},
        "capacity": {"type": "integer", "minimum": 0, "description": "places left"},
        "total": {"type": "integer", "minimum": 0, "description": "places configured"}}})
}

/// The get-statistic-ex body, passed to GWS as sent (docs/statistics.md).
fn statistics_request() -> Value {
    json!({"type": "object", "additionalProperties": true,
        "description": "GWS's get-statistic-ex body, passed through: `data.statistics` lists the statistics (Stat Server names pre-configured for the contact center) and the objects they are asked for",
        "example": {"data": {"statistics": [{"name": "CurrNumberWaitingCalls", "objectId": "demo-immediate", "objectType": "Queue"}]}}})
}

/// GWS's answer, as GWS sent it.
fn statistics() -> Value {
    json!({"type": "object", "additionalProperties": true,
        "description": "GWS's get-statistic-ex answer as GWS sent it (its own `status` and `data.statistics[]` of `{name, objectId, objectType, timestamp, value}`)"})
}

fn open_for() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["openFor"], "properties": {
        "openFor": {"type": "integer", "minimum": 0, "description": "seconds until the office closes; 0 when closed (at most 7 days)"}}})
}

fn queue_status() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["ewt", "offerImmediateCallback", "offerScheduledCallback"], "properties": {
        "ewt": {"type": "integer", "minimum": -1, "description": "seconds (mode2); -1 when unknown"},
        "offerImmediateCallback": {"type": "boolean", "description": "immediate callbacks enabled and now + ewt before closing"},
        "offerScheduledCallback": {"type": "boolean", "description": "scheduled callbacks enabled"}}})
}

fn estimated_wait_time() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["virtualQueue", "estimatedWaitTime", "resultCode"], "properties": {
        "virtualQueue": {"type": "string"},
        "resultCode": {"type": "integer", "enum": [0, -1, -2], "description": "0 a valid estimate; -1 unknown (no history yet, unknown queue, no statistics source, data unavailable); -2 no agent serving the queue"},
        "estimatedWaitTime": {"type": "integer", "minimum": -1, "description": "seconds; -1 when unknown (see message)"},
        "message": {"type": "string", "description": "why the estimate is unknown (unknown service, no history yet, no agent activity, no statistics source)"}}})
}

fn proposed_slots() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["slots"],
        "description": "`data` of a 429 for a full slot (`ProposedSlots` in the published clients)",
        "properties": {"slots": {"type": "object", "description": "open slots near the one asked for: slot start (UTC) → places left, as text (`HashData`)",
            "additionalProperties": {"type": "string", "pattern": "^[0-9]+$"}}}})
}

/// `CallInRequestsParms` (docs/call-in.md#create).
fn call_in_parms() -> Value {
    let nullable = |t: Value| {
        let mut t = t;
        t["nullable"] = json!(true);
        t
    };
    json!({"type": "object", "required": ["groupName"],
      "example": {"groupName": "Support", "fromPhoneNumber": "+16505550100", "userData": {"orderId": "A-17"}},
      "properties": {
        "groupName": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^/\\u0000-\\u001f\\u007f-\\u009f]*$",
            "description": "a Click-To-Call-In group of the tenant"},
        "fromPhoneNumber": nullable(json!({"type": "string", "maxLength": MAX_PHONE,
            "description": "the number the customer will call from; the match then requires it"})),
        "userData": nullable(json!({"type": "object", "additionalProperties": true,
            "description": "handed to the voice platform with the match; keys must be JavaScript identifiers (others are dropped); at most 16 KB of JSON"})),
        "callbackServiceId": nullable(json!({"type": "string", "format": "uuid",
            "description": "a callback of the tenant to link"}))}})
}

/// `CallInRequest` as create answers it.
fn call_in_request() -> Value {
    json!({"type": "object", "additionalProperties": false,
      "required": ["id", "toPhoneNumber", "groupName", "expirationTime"], "properties": {
        "id": {"type": "string", "format": "uuid", "description": "the request's id (a UUIDv7)"},
        "toPhoneNumber": {"type": "string", "description": "the number to dial (E.164)"},
        "groupName": {"type": "string"},
        "expirationTime": {"type": "integer", "description": "epoch milliseconds after which the number no longer matches"},
        "accessCode": {"type": "integer", "minimum": 1000, "maximum": 99_999_999,
            "description": "the code to key in (groups with access codes; never starts with 0)"},
        "fromPhoneNumber": {"type": "string", "description": "the caller's number (E.164), when given"},
        "callbackServiceId": {"type": "string", "format": "uuid", "description": "the linked callback, when given"}}})
}
