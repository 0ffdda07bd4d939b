//! Fuzz target `create_body`: a `POST /callbacks/create` body, through the create handler's
//! own steps that need no database (docs/fuzzing.md#create_body): `parse_json` (the handler's
//! body parser), `CreateCallbackParms::validate`, then `admit::admit` and `admit::book`
//! against a few fixed services at a fixed time.
//!
//! Asserts beyond "no panic": a validated request keeps the field rules (service name, phone
//! alphabet and length, push targets, priority); its stored attributes read back unchanged
//! (`CallbackAttrs::to_json` → `from_map`); an admitted scheduled request round-trips (the
//! body retrieve would show validates to the same request); a slot it claims contains its
//! desired time and has places.
#![no_main]

use std::sync::LazyLock;

use functions::callbacks::create::admit::{self, Booked};
use fuzzing::{now, ny_hours, plan, settings};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use shared::{
    db::callbacks::Admission,
    http::extract::parse_json,
    model::{
        ServiceSettings, SlotPlan,
        attrs::CallbackAttrs,
        callback::{CreateCallbackParms, CreateRequest, MAX_PHONE, MAX_PUSH_TARGETS, wire_time},
        valid_name,
    },
};

/// The services a request is admitted to: defaults; out-of-hours accepted with New York
/// hours; strict New York hours with a capacity rule of 15-minute slots.
static SERVICES: LazyLock<Vec<(ServiceSettings, Option<SlotPlan>)>> = LazyLock::new(|| {
    let rule = shared::model::CapacityRule::parse(&json!({
        "slot_minutes": 15,
        "weekly": {"1": {"0900": 2, "0915": 0, "1000": 5}, "3": {"0000": 1, "2345": 1}}
    }))
    .expect("fixture rule is valid");
    vec![
        (settings(json!({})), None),
        (
            settings(json!({"business_hours": "ny", "reject_out_of_hours": false,
                            "max_days_ahead": 366, "lead_time_seconds": 86400})),
            Some(plan(Some(ny_hours()), None)),
        ),
        (
            settings(json!({"business_hours": "ny", "capacity_rule": "r",
                            "call_direction": "USERORIGINATED", "captcha_required": true})),
            Some(plan(Some(ny_hours()), Some(rule))),
        ),
    ]
});

fn check_fields(req: &CreateRequest) {
    assert!(
        valid_name(&req.service_name),
        "service name {:?}",
        req.service_name
    );
    let phone = &req.phone_number;
    assert!(
        phone.len() <= MAX_PHONE && phone.trim() == phone,
        "phone {phone:?}"
    );
    assert!(phone.chars().filter(char::is_ascii_digit).count() >= 3);
    assert!(req.attrs.push_targets.len() <= MAX_PUSH_TARGETS);
    let stored = req.attrs.to_json().unwrap_or(Value::Object(Map::new()));
    let Value::Object(map) = stored else {
        panic!("attrs stored as a non-object: {stored}");
    };
    assert_eq!(CallbackAttrs::from_map(&map), req.attrs, "attrs round trip");
}

/// The body a client could send again from what retrieve shows of an admitted request.
fn resubmit(req: &CreateRequest) -> CreateRequest {
    let mut body = json!({
        "serviceName": req.service_name,
        "phoneNumber": req.phone_number,
        "priority": req.priority,
        "captchaToken": req.captcha_token,
        "userData": req.user_data,
    });
    if let Some(t) = req.desired_time {
        body["desiredTime"] = json!(wire_time(t));
    }
    if let Some(Value::Object(attrs)) = req.attrs.to_json() {
        for (k, v) in attrs {
            body[k] = v;
        }
    }
    let bytes = serde_json::to_vec(&body).expect("serialises");
    let parms: CreateCallbackParms = parse_json(&bytes).expect("resubmitted body parses");
    parms.validate().expect("resubmitted body validates")
}

fn check_round_trip(req: &CreateRequest) {
    let again = resubmit(req);
    assert_eq!(again.service_name, req.service_name);
    assert_eq!(again.phone_number, req.phone_number);
    assert_eq!(again.priority, req.priority);
    assert_eq!(again.captcha_token, req.captcha_token);
    assert_eq!(again.user_data, req.user_data);
    let ms = |t: Option<jiff::Timestamp>| t.map(wire_time);
    assert_eq!(ms(again.desired_time), ms(req.desired_time), "desiredTime");
    assert_eq!(again.attrs.push_targets, req.attrs.push_targets);
    assert_eq!(
        again.attrs.always_check_capacity,
        req.attrs.always_check_capacity
    );
}

fn admit_to(req: &CreateRequest, s: &ServiceSettings, plan: Option<&SlotPlan>) {
    let now = now();
    let Ok(admission) = admit::admit(req, s, now) else {
        return;
    };
    let plan = plan.filter(|_| admit::needs_plan(&admission, s));
    let Ok(booked) = admit::book(admission, req, s, plan, now) else {
        return;
    };
    let Booked::Admitted(Admission::Scheduled {
        desired,
        dispatch_at,
        slot,
    }) = booked
    else {
        return;
    };
    assert!(dispatch_at <= desired, "dispatch after the desired time");
    check_round_trip(req);
    if let (Some(claim), Some(plan)) = (slot, plan) {
        assert!(claim.capacity > 0, "a claim on a closed slot");
        assert!(
            claim.start <= desired,
            "claimed slot starts after the desired time"
        );
        assert_eq!(claim.minutes, plan.slot_minutes());
        let end = claim.start + plan.slot_len();
        assert!(desired < end, "claimed slot ends before the desired time");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(parms) = parse_json::<CreateCallbackParms>(data) else {
        return;
    };
    let Ok(req) = parms.validate() else {
        return;
    };
    check_fields(&req);
    for (s, plan) in SERVICES.iter() {
        admit_to(&req, s, plan.as_ref());
    }
});
