//! `GET /engagement/v3/openapi.json`: the OpenAPI 3.0 document of the public Engagement API,
//! as served by this build. A test checks that every public route is documented and every
//! documented path is routed.

use axum::{Json, Router, routing::get};
use serde_json::{Value, json};
use shared::http::AppState;

/// Route of the document (public, no API key needed).
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/engagement/v3/openapi.json",
        get(|| async { Json(document()) }),
    )
}

fn envelope(data: Value) -> Value {
    json!({"type": "object", "required": ["status"], "properties": {
        "status": {"$ref": "#/components/schemas/Status"}, "data": data}})
}

fn response(description: &str, data: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": envelope(data)}}})
}

fn errors(codes: &[u16]) -> serde_json::Map<String, Value> {
    codes
        .iter()
        .map(|c| {
            let what = match c {
                400 => "invalid request; status.message says what to fix",
                401 => "missing, unknown or revoked x-api-key",
                404 => "no such callback for this tenant",
                409 => "Idempotency-Key reused with a different body",
                413 => "body over 500 KB",
                429 => "a limit was reached (throttle, or slot full: data.slots proposes open slots)",
                503 => "a dependency is unavailable; nothing was changed, retry",
                _ => "error",
            };
            let mut body = json!({"description": what,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
            if *c == 429 {
                body["headers"] = json!({"Retry-After": {
                    "description": "seconds until a retry can pass (rate and window limits; absent when only a completion frees the limit, or for a full slot)",
                    "schema": {"type": "integer", "minimum": 1}}});
            }
            (c.to_string(), body)
        })
        .collect()
}

fn op(
    summary: &str,
    id: &str,
    body: Option<&str>,
    params: Value,
    ok: Value,
    codes: &[u16],
) -> Value {
    let mut responses = errors(codes);
    responses.insert("200".into(), response("Successful", ok));
    let mut o = json!({"summary": summary, "operationId": id, "security": [{"apiKey": []}],
        "parameters": params, "responses": responses});
    if let Some(schema) = body {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    }
    o
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}, "description": description})
}

/// The OpenAPI 3 document of the public API, served at `GET /engagement/v3/openapi.json`.
pub fn document() -> Value {
    json!({
      "openapi": "3.0.3",
      "info": {"title": "Engage — Engagement API v3", "version": env!("CARGO_PKG_VERSION"),
               "description": "Callback engagement API, wire-compatible with the Genesys Engagement Service Engagement API v3. Every response is {status:{code,message,corrId}, data}; status.code equals the HTTP status."},
      "servers": [{"url": "/"}],
      "paths": paths(),
      "components": {
        "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        "schemas": schemas()
      }
    })
}

/// The operations, by route.
fn paths() -> Value {
    let s = json!({"type": "string"});
    let create = op(
        "Book an immediate (no desiredTime) or scheduled callback",
        "bookCallbackExternal",
        Some("CreateCallbackParms"),
        json!([{"name": "Idempotency-Key", "in": "header", "required": false,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "Same key and body within 24 h → the same callback; another body → 409."}]),
        json!({"type": "object", "required": ["id"], "properties": {"id": s}}),
        &[400, 401, 409, 413, 429, 503],
    );
    json!({
      "/engagement/v3/callbacks/create": {"post": create},
      "/engagement/v3/callbacks/retrieve": {"post": op("One callback of the caller's tenant", "queryCallbackById", Some("CallbackIdParms"), json!([]),
            json!({"$ref": "#/components/schemas/Callback"}), &[400, 401, 404, 413, 503])},
      "/engagement/v3/callbacks/cancel": {"post": op("Cancel a callback that is not PROCESSING or COMPLETED", "cancelCallback", Some("CallbackIdParms"), json!([]),
            json!({"type": "object", "required": ["id"], "properties": {"id": s}}), &[400, 401, 404, 413, 503])},
      "/engagement/v3/callbacks/availability/{service}": {"get": op("Free time slots of a service", "queryAvailabilityV2", None,
            json!([path_param("service", "callback service (virtual queue) name"),
                   query("start", s.clone(), "start time (UTC with Z, or local time without zone when timezone is given); default now"),
                   query("startMS", json!({"type": "integer", "format": "int64"}), "start as epoch milliseconds (not with start)"),
                   query("end", s.clone(), "end time (same format as start); not with endMS or numberOfDays"),
                   query("endMS", json!({"type": "integer", "format": "int64"}), "end as epoch milliseconds"),
                   query("numberOfDays", json!({"type": "integer", "minimum": 1}), "length of the window in days"),
                   query("timezone", s.clone(), "IANA time zone of start/end and of localTime (default UTC)"),
                   query("maxTimeSlots", json!({"type": "integer", "minimum": 1}), "at most this many slots"),
                   query("reportBusy", json!({"type": "boolean"}), "also list full slots (capacity 0)")]),
            json!({"$ref": "#/components/schemas/Availabilities"}), &[400, 401, 503])},
      "/engagement/v3/callbacks/open-for/{service}": {"get": op("Seconds until the office closes (0 when closed)", "openFor", None,
            json!([path_param("service", "callback service or business-hours name"),
                   query("start", s.clone(), "reference time (default now)"),
                   query("timezone", s.clone(), "IANA time zone of start")]),
            json!({"type": "object", "required": ["openFor"], "properties": {"openFor": {"type": "integer"}}}), &[400, 401, 503])},
      "/engagement/v3/callbacks/queue-status/{queue}": {"get": op("Wait estimate and which callback offers to make now", "queryQueueStatus", None,
            json!([path_param("queue", "callback service (virtual queue) name")]),
            json!({"$ref": "#/components/schemas/QueueStatus"}), &[400, 401, 503])},
      "/engagement/v3/estimated-wait-time": {"get": op("Estimated wait time of virtual queues", "estimatedWaitTimeAPI1", None,
            json!([{"name": "virtual-queues", "in": "query", "required": true, "schema": {"type": "string", "minLength": 1},
                    "description": "comma-separated virtual queue (service) names, at most 50"},
                   query("mode", json!({"type": "string", "enum": ["mode1", "mode2", "mode3"], "default": "mode2"}),
                         "mode1: pending count × mean interval of the last 32 dequeues; mode2: mode1, -1 when callbacks wait and no agent took one recently; mode3: external statistics source (-1 when none is configured)"),
                   query("include-calls-on-hold", json!({"type": "boolean"}), "accepted; no effect")]),
            json!({"type": "array", "items": {"$ref": "#/components/schemas/EstimatedWaitTime"}}), &[400, 401, 503])},
      "/engagement/v3/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "security": [],
            "responses": {"200": {"description": "OpenAPI 3.0 document", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    })
}

/// The request and response schemas the operations refer to.
fn schemas() -> Value {
    let time = json!({"type": "string", "format": "date-time"});
    let s = json!({"type": "string"});
    let text = json!({"type": "string", "maxLength": 255});
    json!({
      "Status": {"type": "object", "required": ["code", "message", "corrId"], "properties": {
          "code": {"type": "integer"}, "message": s, "corrId": s}},
      "Error": {"type": "object", "required": ["status"], "properties": {
          "status": {"$ref": "#/components/schemas/Status"},
          "data": {"type": "object", "description": "on 429 for a full slot: {slots: {<slot start UTC>: <remaining capacity>}}"}}},
      "PushTarget": {"type": "object", "required": ["channel", "target"], "properties": {
          "channel": {"type": "string", "enum": ["FCM"]}, "target": {"type": "string", "minLength": 1, "maxLength": 4096}}},
      "CreateCallbackParms": {"type": "object", "required": ["serviceName", "phoneNumber"], "properties": {
          "serviceName": {"type": "string", "minLength": 1, "maxLength": 255},
          "phoneNumber": {"type": "string", "minLength": 3, "maxLength": 32},
          "desiredTime": time.clone(),
          "cbOfferType": {"type": "string", "example": "ASAP", "description": "ASAP, SCHEDULED or COMBINED_SCHEDULED_AND_ASAP (reporting only); any other value is kept as cbOfferTypeRaw and the type derived from desiredTime"},
          "language": {"type": "string", "example": "en-US", "description": "a value that is not a language code is kept as languageRaw and the service's language used"},
          "inboundVQ": s, "offerThreshold": {"type": "number"}, "channel": s,
          "offerTiming": {"type": "string", "example": "ON-HOURS", "description": "OFF-HOURS or ON-HOURS (reporting only); any other value is kept as offerTimingRaw"},
          "cbOriginationIxnId": s, "surveyRP": text, "priority": {"type": "integer"}, "routePoint": text,
          "userData": {"type": "object", "additionalProperties": true, "description": "keys that are not JavaScript identifiers are dropped; never logged"},
          "captchaToken": text,
          "pushTargets": {"type": "array", "maxItems": 10, "items": {"$ref": "#/components/schemas/PushTarget"}},
          "alwaysCheckCapacity": {"type": "boolean"}}},
      "CallbackIdParms": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string", "format": "uuid"}}},
      "Callback": {"type": "object", "required": ["id", "serviceName", "desiredTime", "callbackState", "phoneNumber"], "properties": {
          "id": s, "serviceName": s, "desiredTime": time.clone(),
          "callbackState": {"type": "string", "enum": ["SCHEDULED", "QUEUED", "ROUTING", "PROCESSING", "COMPLETED"]},
          "callbackReason": {"type": "string", "description": "only when COMPLETED"},
          "phoneNumber": s,
          "positionInQueue": {"type": "integer", "description": "only while QUEUED, ROUTING or PROCESSING"},
          "estimatedWaitTime": {"type": "integer", "description": "seconds; only while QUEUED, ROUTING or PROCESSING"},
          "attempt": {"type": "integer"}, "createdTime": time.clone(),
          "userData": {"type": "object"}}},
      "Slot": {"type": "object", "required": ["utcTime", "localTime", "capacity", "total"], "properties": {
          "utcTime": time.clone(), "localTime": s,
          "capacity": {"type": "integer", "description": "places left"},
          "total": {"type": "integer", "description": "places configured"}}},
      "EstimatedWaitTime": {"type": "object", "required": ["virtualQueue", "estimatedWaitTime"], "properties": {
          "virtualQueue": s,
          "estimatedWaitTime": {"type": "integer", "description": "seconds; -1 when unknown (see message)"},
          "message": {"type": "string", "description": "why the estimate is unknown (unknown service, no history yet, no agent activity, no statistics source)"}}},
      "QueueStatus": {"type": "object", "required": ["ewt", "offerImmediateCallback", "offerScheduledCallback"], "properties": {
          "ewt": {"type": "integer", "description": "seconds (mode2); -1 when unknown"},
          "offerImmediateCallback": {"type": "boolean", "description": "immediate callbacks enabled and now + ewt before closing"},
          "offerScheduledCallback": {"type": "boolean", "description": "scheduled callbacks enabled"}}},
      "Availabilities": {"type": "object", "required": ["slots", "durationMin", "timezone"], "properties": {
          "slots": {"type": "array", "items": {"$ref": "#/components/schemas/Slot"}},
          "durationMin": {"type": "integer"}, "timezone": s}}
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    use super::*;

    /// Route strings of the public API found in this crate's sources.
    fn routed_paths() -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut stack = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).expect("src readable").flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "rs") && !p.ends_with("openapi.rs") {
                    let text = std::fs::read_to_string(&p).expect("source readable");
                    for piece in text.split('"').skip(1).step_by(2) {
                        if piece.starts_with("/engagement/v3/") {
                            found.insert(piece.to_string());
                        }
                    }
                }
            }
        }
        found
    }

    #[test]
    fn every_public_route_is_documented() {
        let doc = document();
        let documented: BTreeSet<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .filter(|p| !p.ends_with("openapi.json"))
            .cloned()
            .collect();
        assert_eq!(routed_paths(), documented);
    }

    #[tokio::test]
    async fn every_documented_path_is_routed_on_the_public_port() {
        let cfg = shared::Config::from_vars([(
            "DATABASE_URL".to_string(),
            "postgres://u@127.0.0.1:1/d".to_string(),
        )])
        .expect("config");
        let app = crate::external_app(AppState::new(cfg).expect("state"));
        for (path, item) in document()["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("item").keys() {
                let uri = path
                    .replace("{service}", "sales")
                    .replace("{queue}", "sales");
                let req = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&uri)
                    .body(Body::empty())
                    .expect("request");
                let resp = app.clone().oneshot(req).await.expect("infallible");
                // Without an API key every API route answers 401; the document itself 200.
                let code = resp.status().as_u16();
                assert!(code == 401 || code == 200, "{method} {uri} → {code}");
            }
        }
    }
}
