//! The document against the code: request schemas name exactly the fields the request types
//! read, response schemas exactly what the response types write (values built field by field,
//! so a new field fails to compile here until it is documented), every error the edge can
//! answer fits its documented shape, and the bodies the published clients send are valid
//! (docs/api-contract.md#held-to-the-code).

use std::collections::BTreeSet;

use axum::response::IntoResponse;
use serde::de::{self, Deserialize, Visitor};
use serde_json::{Map, Value, json};
use shared::{
    ApiError,
    model::{
        CallbackState,
        attrs::CallbackAttrs,
        availability::{Availabilities, OpenFor, SlotOut},
        call_in::CallInRequestsParms,
        callback::{Callback, CallbackIdParms, CompletionReason, CreateCallbackParms, PushTarget},
        ewt::{EstimatedWaitTime, QueueStatus},
    },
};

use super::{document, schemas};
use crate::call_in::create::CallInRequest;
use crate::callbacks::{
    cancel::CancelledData,
    create::Created,
    reschedule::{RescheduleParms, RescheduledData},
};

/// A deserializer that only records the field names a derived `Deserialize` asks for.
struct Fields<'a>(&'a mut Vec<&'static str>);

impl<'de> de::Deserializer<'de> for Fields<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.extend_from_slice(fields);
        Err(de::Error::custom("recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The JSON names a derived `Deserialize` reads.
fn read_fields<T: for<'de> Deserialize<'de>>() -> BTreeSet<String> {
    let mut names = Vec::new();
    let _ = T::deserialize(Fields(&mut names));
    names.into_iter().map(String::from).collect()
}

fn schema(name: &str) -> Value {
    document()["components"]["schemas"][name].clone()
}

fn properties(name: &str) -> BTreeSet<String> {
    schema(name)["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect()
}

fn keys(v: &impl serde::Serialize) -> BTreeSet<String> {
    match serde_json::to_value(v).expect("serializes") {
        Value::Object(m) => m.keys().cloned().collect(),
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn request_schemas_name_exactly_the_fields_read() {
    assert_eq!(
        read_fields::<CreateCallbackParms>(),
        properties("CreateCallbackParms")
    );
    assert_eq!(
        read_fields::<CallbackIdParms>(),
        properties("CallbackIdParms")
    );
    assert_eq!(read_fields::<PushTarget>(), properties("PushTarget"));
    assert_eq!(
        read_fields::<CallInRequestsParms>(),
        properties("CallInRequestsParms")
    );
    assert_eq!(
        read_fields::<RescheduleParms>(),
        properties("RescheduleCallbackParms")
    );
}

/// Every stored attribute set, so that its serde names can be read.
fn full_attrs() -> CallbackAttrs {
    let s = || Some("x".to_string());
    CallbackAttrs {
        offer_type: Some("ASAP".into()),
        offer_type_raw: s(),
        offer_timing: Some("ON-HOURS".into()),
        offer_timing_raw: s(),
        language: Some("en-US".into()),
        language_raw: s(),
        inbound_vq: s(),
        channel: s(),
        origination_ixn_id: s(),
        offer_threshold: Some(30.into()),
        offer_threshold_raw: s(),
        survey_rp: s(),
        route_point: s(),
        push_targets: vec![PushTarget {
            channel: "FCM".into(),
            target: "t".into(),
        }],
        always_check_capacity: true,
        other: Map::new(),
    }
}

/// A retrieve answer with every field present.
fn full_callback() -> Callback {
    let Some(Value::Object(attrs)) = full_attrs().to_json() else {
        panic!("attrs serialize to an object")
    };
    Callback {
        id: uuid::Uuid::now_v7().to_string(),
        service_name: "s".into(),
        desired_time: "2030-05-28T15:30:00.000Z".into(),
        callback_state: CallbackState::Completed,
        callback_reason: Some(CompletionReason::Cancelled),
        phone_number: "5550100".into(),
        position_in_queue: Some(1),
        estimated_wait_time: Some(60),
        attempt: 1,
        created_time: "2030-05-28T15:00:00.000Z".into(),
        attrs,
        user_data: Some(json!({"orderId": "A-17"})),
    }
}

fn full_availabilities() -> Availabilities {
    Availabilities {
        slots: vec![SlotOut {
            utc_time: "2030-05-28T15:30:00.000Z".into(),
            local_time: "2030-05-28T11:30:00.000-04:00".into(),
            capacity: 3,
            total: 10,
        }],
        duration_min: 15,
        timezone: "America/New_York".into(),
    }
}

#[test]
fn response_schemas_name_exactly_the_fields_written() {
    assert_eq!(keys(&full_callback()), properties("Callback"));
    let av = full_availabilities();
    assert_eq!(keys(&av), properties("Availabilities"));
    assert_eq!(keys(&av.slots[0]), properties("Slot"));
    assert_eq!(keys(&OpenFor { open_for: 5 }), properties("OpenForData"));
    let qs = QueueStatus {
        ewt: 5,
        offer_immediate_callback: true,
        offer_scheduled_callback: false,
    };
    assert_eq!(keys(&qs), properties("QueueStatus"));
    let ewt = EstimatedWaitTime {
        virtual_queue: "q".into(),
        estimated_wait_time: -1,
        message: Some("unknown service".into()),
        result_code: -1,
    };
    assert_eq!(keys(&ewt), properties("EstimatedWaitTime"));
    let id = || uuid::Uuid::now_v7().to_string();
    assert_eq!(
        keys(&Created { id: id() }),
        properties("CreateCallbackData")
    );
    assert_eq!(
        keys(&CancelledData { id: id() }),
        properties("CancelCallbackData")
    );
    let moved = RescheduledData {
        id: id(),
        desired_time: Some("2030-05-28T15:30:00.000Z".into()),
    };
    assert_eq!(keys(&moved), properties("RescheduleCallbackData"));
    assert_eq!(keys(&full_call_in()), properties("CallInRequest"));
}

/// A `CallInRequest` with every field set.
fn full_call_in() -> CallInRequest {
    CallInRequest {
        id: uuid::Uuid::now_v7().to_string(),
        to_phone_number: "+16505550100".into(),
        group_name: "Support".into(),
        expiration_time: 1_900_000_000_000,
        access_code: Some(4321),
        from_phone_number: Some("+14155550100".into()),
        callback_service_id: Some(uuid::Uuid::now_v7().to_string()),
    }
}

/// Each state and reason once (a new variant fails to compile here until it is listed).
fn wire_state(s: CallbackState) -> &'static str {
    match s {
        CallbackState::Scheduled
        | CallbackState::Queued
        | CallbackState::Routing
        | CallbackState::Processing
        | CallbackState::Completed => s.as_str(),
    }
}

#[test]
fn enumerations_are_the_codes() {
    for s in schemas::STATES {
        let state = CallbackState::parse(s).expect("a state");
        assert_eq!(wire_state(state), s);
    }
    for s in schemas::REASONS {
        assert_eq!(CompletionReason::parse(s).map(|r| r.as_str()), Some(s));
    }
    let all_states = [
        CallbackState::Scheduled,
        CallbackState::Queued,
        CallbackState::Routing,
        CallbackState::Processing,
        CallbackState::Completed,
    ];
    assert_eq!(all_states.len(), schemas::STATES.len());
    let all_reasons = [
        CompletionReason::AgentConnected,
        CompletionReason::Cancelled,
        CompletionReason::FailTimeoutTtl,
        CompletionReason::FailCallToCustomer,
        CompletionReason::FailQueueing,
        CompletionReason::FailError,
        CompletionReason::NotAvailable,
    ];
    let listed: BTreeSet<&str> = all_reasons.iter().map(|r| r.as_str()).collect();
    assert_eq!(listed, schemas::REASONS.into_iter().collect());
}

/// A small validator for the parts of JSON Schema the document uses.
fn check(v: &Value, s: &Value, at: &str) -> Result<(), String> {
    if let Some(target) = s["$ref"].as_str() {
        let name = target.trim_start_matches("#/components/schemas/");
        return check(v, &schema(name), at);
    }
    if let Some(all) = s["allOf"].as_array() {
        all.iter().try_for_each(|sub| check(v, sub, at))?;
    }
    if let Some(any) = s["anyOf"].as_array()
        && !any.iter().any(|sub| check(v, sub, at).is_ok())
    {
        return Err(format!("{at}: none of anyOf fits {v}"));
    }
    if v.is_null() && s["nullable"] == true {
        return Ok(());
    }
    if let Some(values) = s["enum"].as_array()
        && !values.contains(v)
    {
        return Err(format!("{at}: {v} not in {values:?}"));
    }
    check_type(v, s, at)?;
    match v {
        Value::Object(m) => check_object(m, s, at),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check(item, &s["items"], &format!("{at}[{i}]"))),
        Value::String(text) => check_string(text, s, at),
        Value::Number(n) => {
            let n = n.as_f64().expect("finite");
            let below = s["minimum"].as_f64().is_some_and(|min| n < min);
            let above = s["maximum"].as_f64().is_some_and(|max| n > max);
            (!below && !above)
                .then_some(())
                .ok_or(format!("{at}: {n} out of range"))
        }
        _ => Ok(()),
    }
}

fn check_type(v: &Value, s: &Value, at: &str) -> Result<(), String> {
    let fits = match s["type"].as_str() {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(other) => return Err(format!("{at}: unknown type {other}")),
    };
    fits.then_some(())
        .ok_or(format!("{at}: {v} is not of type {}", s["type"]))
}

fn check_object(m: &Map<String, Value>, s: &Value, at: &str) -> Result<(), String> {
    for name in s["required"].as_array().into_iter().flatten() {
        let name = name.as_str().expect("name");
        if !m.contains_key(name) {
            return Err(format!("{at}: {name} missing"));
        }
    }
    for (k, v) in m {
        let here = format!("{at}.{k}");
        match (&s["properties"][k], &s["additionalProperties"]) {
            (Value::Null, Value::Bool(false)) => return Err(format!("{here} not documented")),
            (Value::Null, Value::Object(_)) => check(v, &s["additionalProperties"], &here)?,
            (Value::Null, _) => {}
            (p, _) => check(v, p, &here)?,
        }
    }
    Ok(())
}

fn check_string(text: &str, s: &Value, at: &str) -> Result<(), String> {
    let len = text.chars().count() as u64;
    if s["minLength"].as_u64().is_some_and(|min| len < min)
        || s["maxLength"].as_u64().is_some_and(|max| len > max)
    {
        return Err(format!("{at}: length {len} out of range"));
    }
    if let Some(p) = s["pattern"].as_str()
        && !regex::Regex::new(p).expect("pattern").is_match(text)
    {
        return Err(format!("{at}: {text:?} does not match {p}"));
    }
    let fits = match s["format"].as_str() {
        Some("date-time") => text.parse::<jiff::Timestamp>().is_ok(),
        Some("uuid") => uuid::Uuid::parse_str(text).is_ok(),
        _ => true,
    };
    fits.then_some(())
        .ok_or(format!("{at}: {text:?} is not {}", s["format"]))
}

/// The schema of the answer `code` of `method path`.
fn answer(path: &str, method: &str, code: u16) -> Value {
    let doc = document();
    let resp = &doc["paths"][path][method]["responses"][code.to_string()];
    resp["content"]["application/json"]["schema"].clone()
}

/// The `data` a real answer of each operation carries fits its documented 200.
#[test]
fn real_answers_fit_their_operations() {
    let ok = |data: Value| json!({"status": {"code": 200, "message": "Successful", "corrId": "c"}, "data": data});
    let v = |x: &dyn erased::Ser| x.to_value();
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "/engagement/v3/callbacks/create",
            "post",
            v(&Created {
                id: uuid::Uuid::now_v7().to_string(),
            }),
        ),
        (
            "/engagement/v3/callbacks/retrieve",
            "post",
            v(&full_callback()),
        ),
        (
            "/engagement/v3/callbacks/reschedule",
            "post",
            v(&RescheduledData {
                id: uuid::Uuid::now_v7().to_string(),
                desired_time: Some("2030-05-28T15:30:00.000Z".into()),
            }),
        ),
        (
            "/engagement/v3/callbacks/reschedule",
            "post",
            v(&RescheduledData {
                id: uuid::Uuid::now_v7().to_string(),
                desired_time: None,
            }),
        ),
        (
            "/engagement/v3/callbacks/availability/{service}",
            "get",
            v(&full_availabilities()),
        ),
        (
            "/engagement/v3/callbacks/open-for/{service}",
            "get",
            v(&OpenFor { open_for: 0 }),
        ),
        (
            "/engagement/v3/callbacks/queue-status/{queue}",
            "get",
            v(&QueueStatus {
                ewt: -1,
                offer_immediate_callback: false,
                offer_scheduled_callback: true,
            }),
        ),
        (
            "/engagement/v3/estimated-wait-time",
            "get",
            v(&vec![EstimatedWaitTime {
                virtual_queue: "q".into(),
                estimated_wait_time: 30,
                message: None,
                result_code: 0,
            }]),
        ),
    ];
    for (path, method, data) in cases {
        check(&ok(data), &answer(path, method, 200), path).unwrap();
    }
    let bare_call_in = CallInRequest {
        access_code: None,
        from_phone_number: None,
        callback_service_id: None,
        ..full_call_in()
    };
    for c in [full_call_in(), bare_call_in] {
        let path = "/engagement/v3/call-in/requests/create";
        check(&ok(v(&c)), &answer(path, "post", 200), path).unwrap();
    }
    let bare = Callback {
        callback_reason: None,
        position_in_queue: None,
        estimated_wait_time: None,
        attrs: Map::new(),
        user_data: None,
        ..full_callback()
    };
    check(
        &ok(v(&bare)),
        &answer("/engagement/v3/callbacks/retrieve", "post", 200),
        "bare",
    )
    .unwrap();
}

/// Type erasure for the table above.
mod erased {
    pub(super) trait Ser {
        fn to_value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_value(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("serializes")
        }
    }
}

async fn body_of(e: ApiError) -> (u16, Value, bool) {
    let resp = e.into_response();
    let code = resp.status().as_u16();
    let retry = resp.headers().contains_key("retry-after");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (code, serde_json::from_slice(&bytes).expect("json"), retry)
}

/// Every error the edge answers on the create route fits the documented answer of its status.
#[tokio::test]
async fn every_error_fits_its_documented_answer() {
    let slots = json!({"slots": {"2030-05-28T15:30:00.000Z": "3"}});
    let errors = vec![
        ApiError::bad_request("phoneNumber is required"),
        ApiError::unauthorized("invalid API key"),
        ApiError::conflict("Idempotency-Key reused"),
        ApiError::PayloadTooLarge("too large".into()),
        ApiError::RequestTimeout("the request body did not arrive within 15000 ms".into()),
        ApiError::TooManyRequests {
            message: "limit".into(),
            data: None,
            retry_after_s: Some(3),
        },
        ApiError::TooManyRequests {
            message: "slot full".into(),
            data: Some(slots),
            retry_after_s: None,
        },
        ApiError::unavailable("retry later"),
    ];
    for e in errors {
        let (code, body, _) = body_of(e).await;
        let s = answer("/engagement/v3/callbacks/create", "post", code);
        check(&body, &s, &code.to_string()).unwrap();
    }
    let (code, body, _) = body_of(ApiError::not_found("no such callback")).await;
    check(
        &body,
        &answer("/engagement/v3/callbacks/retrieve", "post", code),
        "404",
    )
    .unwrap();
}

/// What the published clients put on the wire (`tests/fixtures/clients/`) is a valid
/// `CreateCallbackParms`, and the document's own example too.
#[test]
fn published_client_bodies_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/clients");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("fixtures").flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "json") {
            let body: Value =
                serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
            check(
                &body,
                &schema("CreateCallbackParms"),
                &p.display().to_string(),
            )
            .unwrap();
            seen += 1;
        }
    }
    assert!(seen >= 4, "client fixtures found: {seen}");
    let s = schema("CreateCallbackParms");
    check(&s["example"], &s, "example").unwrap();
}

/// The validator above refuses what it should (so the tests above prove something).
#[test]
fn the_checker_refuses_misfits() {
    let s = schema("CreateCallbackParms");
    for bad in [
        json!({"phoneNumber": "5550100"}),
        json!({"serviceName": "s", "phoneNumber": "abc"}),
        json!({"serviceName": "s", "phoneNumber": "5550100", "priority": 1.5}),
        json!({"serviceName": "s", "phoneNumber": "5550100", "desiredTime": "tomorrow"}),
        json!({"serviceName": "s", "phoneNumber": "5550100", "pushTargets": [{"channel": "APNS", "target": "t"}]}),
    ] {
        assert!(check(&bad, &s, "bad").is_err(), "{bad}");
    }
    let extra = json!({"status": {"code": 200, "message": "Successful", "corrId": "c"}, "data": {"id": uuid::Uuid::now_v7().to_string(), "more": 1}});
    assert!(
        check(
            &extra,
            &answer("/engagement/v3/callbacks/create", "post", 200),
            "extra"
        )
        .is_err()
    );
}
