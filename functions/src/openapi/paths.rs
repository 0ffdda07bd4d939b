//! The operations of the OpenAPI document, by route: parameters and headers as the handlers
//! read them, every status a handler or the middleware in front of it answers, and the links
//! from a create to the retrieve and cancel of what it made.

use serde_json::{Map, Value, json};

use super::schemas::r;
use crate::callbacks::create::MAX_IDEMPOTENCY_KEY;
use crate::wait::estimated_wait_time::MAX_QUEUES;
use shared::model::availability::{EARLIEST_MS, LATEST_MS, MAX_DAYS};

/// The `x-correlation-id` header every answer carries.
fn corr_header() -> Value {
    json!({"x-correlation-id": {"required": true, "schema": {"type": "string"},
        "description": "the request's correlation id (also `status.corrId`)"}})
}

/// The `status` of an answer with this HTTP status (`status.code` equals it).
fn status(code: u16) -> Value {
    let mut fixed = json!({"code": {"type": "integer", "enum": [code]}});
    if code == 200 {
        fixed["message"] = json!({"type": "string", "enum": ["Successful"]});
    }
    json!({"allOf": [r("Status"), {"type": "object", "properties": fixed}]})
}

/// A 200 answer with `data`.
fn ok(data: Value) -> Value {
    json!({"description": "Successful", "headers": corr_header(), "content": {"application/json": {"schema":
        {"type": "object", "additionalProperties": false, "required": ["status", "data"],
         "properties": {"status": status(200), "data": data}}}}})
}

/// An error answer: the envelope with `status` only (a full slot's 429 adds `data`).
fn error(code: u16, description: &str) -> Value {
    let mut properties = json!({"status": status(code)});
    let mut headers = corr_header();
    if code == 429 {
        properties["data"] = r("ProposedSlots");
        headers["Retry-After"] = json!({"required": false, "schema": {"type": "integer", "minimum": 1},
            "description": "seconds until a retry can pass; absent when waiting alone does not help (a full slot, an active-callback limit)"});
    }
    json!({"description": description, "headers": headers, "content": {"application/json": {"schema":
        {"type": "object", "additionalProperties": false, "required": ["status"], "properties": properties}}}})
}

/// The answers every operation behind an API key may give besides its own.
const KEYED: [(u16, &str); 3] = [
    (401, "x-api-key missing, unknown or revoked"),
    (
        429,
        "a limit was reached: this API key's request rate, repeated authentication failures from this client or this server's budget of lookups of unseen keys (docs/abuse.md), a create-time throttle, or a full slot (data.slots proposes open ones)",
    ),
    (
        503,
        "a dependency did not answer in time; nothing was changed, retry (docs/bounded-answers.md)",
    ),
];

/// The answers of an operation that reads a JSON body.
const BODY: [(u16, &str); 2] = [
    (
        408,
        "the body did not arrive within REQUEST_TIMEOUT_MS (a slow client); nothing was changed (docs/http-server.md)",
    ),
    (
        413,
        "body over the public port's limit (EXTERNAL_BODY_LIMIT, 500 KB by default)",
    ),
];

/// One operation behind an API key.
fn op(summary: &str, id: &str, params: Value, ok_data: Value, own: &[(u16, &str)]) -> Value {
    let mut responses = Map::new();
    responses.insert("200".into(), ok(ok_data));
    for (code, what) in own.iter().chain(KEYED.iter()) {
        responses.insert(code.to_string(), error(*code, what));
    }
    json!({"summary": summary, "operationId": id, "security": [{"apiKey": []}],
        "parameters": params, "responses": responses})
}

/// A POST operation with a JSON body of component `schema`.
fn post(summary: &str, id: &str, schema: &str, ok_data: Value, own: &[(u16, &str)]) -> Value {
    let mut own = own.to_vec();
    own.extend(BODY);
    let mut o = op(summary, id, json!([]), ok_data, &own);
    o["requestBody"] = json!({"required": true, "description": "JSON (read as JSON whatever the Content-Type)",
        "content": {"application/json": {"schema": r(schema)}}});
    o
}

/// An optional query parameter; empty counts as absent, as the handlers read it.
fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "allowEmptyValue": true,
        "schema": schema, "description": description})
}

fn path_param(name: &str, description: &str, example: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "example": example,
        "schema": {"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*$"}, "description": description})
}

/// The Idempotency-Key: 1 to [`MAX_IDEMPOTENCY_KEY`] visible ASCII characters (inner spaces
/// allowed), then optional blanks, which are not part of the key (HTTP strips them). Leading
/// blanks are stripped too, but are left out of the pattern: common HTTP clients refuse to
/// send them.
fn idempotency_key_pattern() -> String {
    format!(
        "^[!-~]([ -~]{{0,{}}}[!-~])?[\\t ]*$",
        MAX_IDEMPOTENCY_KEY - 2
    )
}

/// Every documented route and its operations.
pub(super) fn all() -> Value {
    json!({
      "/engagement/v3/callbacks/create": {"post": create()},
      "/engagement/v3/callbacks/retrieve": {"post": post("One callback of the caller's tenant", "queryCallbackById", "CallbackIdParms",
            r("Callback"), &[(400, "id missing or not a callback id"), (404, "no such callback for this tenant")])},
      "/engagement/v3/callbacks/cancel": {"post": post("Cancel a callback that is not PROCESSING or COMPLETED", "cancelCallback", "CallbackIdParms",
            r("CancelCallbackData"), &[(400, "id missing or not a callback id, or the callback is PROCESSING or COMPLETED"), (404, "no such callback for this tenant")])},
      "/engagement/v3/callbacks/reschedule": {"post": post("Engage extension: move a callback not yet handed off to a new desired time and/or change its user data", "rescheduleCallback", "RescheduleCallbackParms",
            r("RescheduleCallbackData"), &[(400, "id missing or not a callback id, nothing to change, a malformed time or property name, or the time outside the booking window or business hours"),
                (404, "no such callback for this tenant"),
                (409, "the callback is COMPLETED, or already with the voice platform (it can no longer be rescheduled)")])},
      "/engagement/v3/callbacks/availability/{service}": {"get": availability()},
      "/engagement/v3/callbacks/open-for/{service}": {"get": op("Seconds until the office closes (0 when closed)", "openFor",
            json!([path_param("service", "callback service, or business hours, name", "demo-scheduled"),
                   query("start", json!({"type": "string"}), "reference time (with an offset, or local to timezone); default now"),
                   query("timezone", json!({"type": "string"}), "IANA time zone of a local start (default UTC)")]),
            r("OpenForData"), &[(400, "unknown service or business hours, or a malformed parameter")])},
      "/engagement/v3/callbacks/queue-status/{queue}": {"get": op("Wait estimate and which callback offers to make now", "queryQueueStatus",
            json!([path_param("queue", "callback service (virtual queue) name", "demo-immediate")]),
            r("QueueStatus"), &[(400, "unknown service")])},
      "/engagement/v3/estimated-wait-time": {"get": estimated_wait_time()},
      "/engagement/v3/call-in/requests/create": {"post": post("Click-To-Call-In: an inbound number (and access code) to call before expirationTime", "callInRequests", "CallInRequestsParms",
            r("CallInRequest"), &[(400, "groupName missing or not a Click-To-Call-In group of this tenant, or a malformed fromPhoneNumber, userData (an object of at most 16 KB) or callbackServiceId (a callback of this tenant)")])},
      "/engagement/v3/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "security": [],
            "responses": {
              "200": {"description": "OpenAPI 3.0 document", "headers": {}, "content": {"application/json": {"schema":
                {"type": "object", "required": ["openapi", "info", "paths"]}}}},
              "429": error(429, "an x-api-key was sent and is over its request rate")}}}
    })
}

fn create() -> Value {
    let mut o = post(
        "Book an immediate (no desiredTime) or scheduled callback",
        "bookCallbackExternal",
        "CreateCallbackParms",
        r("CreateCallbackData"),
        &[
            (
                400,
                "invalid request: status.message names the field or the rule (unknown service, outside business hours or the booking window, number rule, captcha)",
            ),
            (409, "Idempotency-Key reused with a different body"),
        ],
    );
    o["parameters"] = json!([{"name": "Idempotency-Key", "in": "header", "required": false,
        "schema": {"type": "string", "minLength": 1,
                   "pattern": idempotency_key_pattern()},
        "description": "Same key and body within 24 h → the same callback; another body → 409. Visible ASCII (inner spaces allowed); surrounding blanks are trimmed."}]);
    let by_id = json!({"requestBody": {"id": "$response.body#/data/id"}});
    o["responses"]["200"]["links"] = json!({
        "RetrieveCreated": {"operationId": "queryCallbackById", "description": "the callback just booked", "requestBody": by_id["requestBody"]},
        "CancelCreated": {"operationId": "cancelCallback", "description": "cancel the callback just booked", "requestBody": by_id["requestBody"]},
        "RescheduleCreated": {"operationId": "rescheduleCallback", "description": "reschedule the callback just booked (Engage extension)", "requestBody": by_id["requestBody"]}});
    o
}

fn availability() -> Value {
    let ms = json!({"type": "integer", "format": "int64",
        "minimum": EARLIEST_MS, "maximum": LATEST_MS});
    op(
        "Free time slots of a service",
        "queryAvailabilityV2",
        json!([
            path_param(
                "service",
                "callback service (virtual queue) name",
                "demo-scheduled"
            ),
            query(
                "start",
                json!({"type": "string"}),
                "start time (with an offset, or local to timezone without one, or a date) from 1970 to 9998-12-31; default now; not with startMS"
            ),
            query(
                "startMS",
                ms.clone(),
                "start as epoch milliseconds; not with start"
            ),
            query(
                "end",
                json!({"type": "string"}),
                "end time (as start); only one of end, endMS, numberOfDays"
            ),
            query("endMS", ms, "end as epoch milliseconds"),
            query(
                "numberOfDays",
                json!({"type": "integer", "minimum": 0, "maximum": MAX_DAYS}),
                "length of the window in calendar days of timezone"
            ),
            query(
                "timezone",
                json!({"type": "string"}),
                "IANA time zone of local start/end and of localTime (default UTC)"
            ),
            query(
                "maxTimeSlots",
                json!({"type": "integer", "minimum": 1}),
                "at most this many slots"
            ),
            query(
                "reportBusy",
                json!({"type": "boolean"}),
                "also list full slots (capacity 0)"
            )
        ]),
        r("Availabilities"),
        &[(
            400,
            "unknown or disabled service, no scheduled callbacks, or a malformed or conflicting parameter (status.message names it)",
        )],
    )
}

fn estimated_wait_time() -> Value {
    op(
        "Estimated wait time of virtual queues",
        "estimatedWaitTimeAPI1",
        json!([{"name": "virtual-queues", "in": "query", "required": true, "example": "demo-immediate,demo-scheduled",
                "schema": {"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*[^,\\s\\u0000][^\\u0000]*$"},
                "description": format!("comma-separated virtual queue (service) names, at most {MAX_QUEUES}; an unknown one answers -1 with a message; no NUL characters")},
               query("mode", json!({"type": "string", "enum": ["mode1", "mode2", "mode3"], "default": "mode2"}),
                     "mode1: pending count × mean interval of the last 32 dequeues; mode2: mode1, -1 when callbacks wait and no agent took one recently; mode3: external statistics source (-1 when none is configured)"),
               query("include-calls-on-hold", json!({"type": "boolean"}), "true or false (any case); no effect: Engage's queues hold callbacks only, never a call on hold")]),
        json!({"type": "array", "items": r("EstimatedWaitTime")}),
        &[(
            400,
            "virtual-queues missing or naming more than 50 queues, an unknown mode, or include-calls-on-hold not a boolean",
        )],
    )
}
