//! Admission of a create: immediate or scheduled, with its dispatch time and slot, decided
//! once from the request, the service's settings and the time, without a database.
//!
//! Two pure steps, so that the business-hours plan is read only when it is used:
//! [`admit`] checks what the request and the settings alone decide (the service takes this
//! kind of callback, the desired time is in range) and returns the [`Admission`];
//! [`book`] then applies the plan to it (open hours, the slot and its capacity).
//!
//! Decisions (GES leaves these open: docs/ges-behavior.md#capacity-and-scheduling; the same
//! list is in docs/decisions.md#scheduling-decisions, capacity in
//! docs/decisions.md#capacity-rules, the grid in docs/slot-grid.md):
//! - **Scheduled, inside business hours**: the callback takes one place in the slot containing
//!   its desired time, claimed in the statement that inserts it (`shared::db::slots`). A full
//!   slot (or one whose capacity is 0) answers 429 with `data.slots` proposing the nearest open
//!   slots. Engage never lets a callback "slide" into another slot: sliding would either
//!   overbook the requested slot's agents or call the customer at a time they did not choose, so
//!   the strict behaviour GES reserves for `alwaysCheckCapacity` is the behaviour for everyone.
//! - **Scheduled, outside business hours**: 400 when the service's `reject_out_of_hours` is true
//!   (the default). When it is false the callback is accepted; it takes a slot place if its slot
//!   still overlaps business hours (capacity applies there), and otherwise is not counted
//!   against any slot, since no capacity is defined outside business hours, unless the request
//!   says `alwaysCheckCapacity`, which then refuses it with 429 and proposals.
//! - **Immediate**: refused with 400 while the office is closed when `reject_out_of_hours` is
//!   true (one switch for both kinds: "this service does not take callbacks out of hours").
//!   Immediate callbacks never take slot capacity (capacity is about scheduled callbacks).
//! - A service without business hours is always open; without a capacity rule its slots are
//!   `slot_minutes` long with `slot_capacity` places each.

use jiff::{SignedDuration, Timestamp};
use shared::{
    db::{callbacks::Admission, slots::SlotClaim},
    error::{Error, Result},
    model::{
        ServiceSettings, SlotPlan,
        callback::{CreateRequest, wire_time},
        service::CallDirection,
    },
};

/// How far in the past a desired time may be (clock skew of callers).
pub const PAST_TOLERANCE: SignedDuration = SignedDuration::from_secs(60);

/// What [`book`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Booked {
    /// Admitted, with the slot place it takes (if any).
    Admitted(Admission),
    /// The slot of the desired time takes no scheduled callbacks (capacity 0): a 429 with
    /// proposals (`shared::db::slots::refuse`).
    Closed {
        /// The slot's start.
        start: Timestamp,
    },
}

/// Admits `req` to the service whose `settings` are given, at `now`: the checks that need
/// neither the business hours nor the database (400 naming what to fix).
pub fn admit(req: &CreateRequest, settings: &ServiceSettings, now: Timestamp) -> Result<Admission> {
    let service = &req.service_name;
    service_takes(req, settings)?;
    let Some(t) = req.desired_time else {
        if !settings.immediate_enabled {
            return invalid(format!(
                "service {service} does not offer immediate callbacks"
            ));
        }
        return Ok(Admission::Immediate);
    };
    scheduled(t, service, settings, now)
}

/// The admission of a callback for desired time `t` on `service` (create and reschedule): the
/// service takes scheduled callbacks and `t` is in range (400 naming what to fix).
pub fn scheduled(
    t: Timestamp,
    service: &str,
    settings: &ServiceSettings,
    now: Timestamp,
) -> Result<Admission> {
    if !settings.scheduled_enabled {
        return invalid(format!(
            "service {service} does not offer scheduled callbacks"
        ));
    }
    if t < now - PAST_TOLERANCE {
        return invalid("desiredTime is in the past".into());
    }
    if t > now + SignedDuration::from_hours(24 * i64::from(settings.max_days_ahead)) {
        return invalid(format!(
            "desiredTime is more than {} days ahead (max_days_ahead of service {service})",
            settings.max_days_ahead
        ));
    }
    // Not before the database's now(), applied by the insert (one clock).
    let lead = SignedDuration::from_secs(i64::from(settings.lead_time_seconds));
    Ok(Admission::Scheduled {
        desired: t,
        dispatch_at: t - lead,
        slot: None,
    })
}

/// The service-level conditions of any create: enabled, push targets, captcha.
fn service_takes(req: &CreateRequest, s: &ServiceSettings) -> Result<()> {
    let service = &req.service_name;
    if !s.enabled {
        return invalid(format!("service {service} is disabled"));
    }
    if s.call_direction == CallDirection::UserOriginated && req.attrs.push_targets.is_empty() {
        return invalid(format!(
            "pushTargets is required: service {service} is USERORIGINATED"
        ));
    }
    if s.captcha_required && req.captcha_token.is_none() {
        return invalid(format!("captchaToken is required by service {service}"));
    }
    Ok(())
}

/// Whether [`book`] needs the service's slot plan for `admission` (reading it costs a query
/// when the service names business hours or a capacity rule).
pub fn needs_plan(admission: &Admission, settings: &ServiceSettings) -> bool {
    match admission {
        Admission::Immediate => settings.reject_out_of_hours && settings.business_hours.is_some(),
        Admission::Scheduled { .. } => true,
    }
}

/// Applies the service's business hours and capacity to an admission (`plan`: `None` when
/// [`needs_plan`] said so).
pub fn book(
    admission: Admission,
    req: &CreateRequest,
    settings: &ServiceSettings,
    plan: Option<&SlotPlan>,
    now: Timestamp,
) -> Result<Booked> {
    let service = (req.service_name.as_str(), req.attrs.always_check_capacity);
    book_on(admission, service, settings, plan, now)
}

/// [`book`] for `(service name, alwaysCheckCapacity)` (create and reschedule).
pub fn book_on(
    admission: Admission,
    (service, always_check_capacity): (&str, bool),
    settings: &ServiceSettings,
    plan: Option<&SlotPlan>,
    now: Timestamp,
) -> Result<Booked> {
    let Some(plan) = plan else {
        return Ok(Booked::Admitted(admission));
    };
    let Admission::Scheduled {
        desired,
        dispatch_at,
        ..
    } = admission
    else {
        return match &settings.business_hours {
            Some(name) if settings.reject_out_of_hours && !plan.is_open(now) => invalid(format!(
                "service {service} is closed now (business hours {name}); book a scheduled callback instead"
            )),
            _ => Ok(Booked::Admitted(admission)),
        };
    };
    let slot = plan.slot_at(desired);
    if !plan.is_open(desired) {
        if settings.reject_out_of_hours {
            return invalid(format!(
                "desiredTime {} is outside the business hours of service {service}",
                wire_time(desired)
            ));
        }
        if slot.total == 0 && !always_check_capacity {
            return Ok(Booked::Admitted(admission));
        }
    }
    if slot.total == 0 {
        return Ok(Booked::Closed { start: slot.start });
    }
    Ok(Booked::Admitted(Admission::Scheduled {
        desired,
        dispatch_at,
        slot: Some(SlotClaim {
            start: slot.start,
            capacity: slot.total,
            minutes: plan.slot_minutes(),
        }),
    }))
}

fn invalid<T>(message: String) -> Result<T> {
    Err(Error::Invalid(message))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shared::model::{callback::CreateCallbackParms, hours::BusinessHours};

    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2030-01-07T10:00:00Z"; // a Monday

    fn request(desired: Option<&str>) -> CreateRequest {
        let mut body = json!({"serviceName": "s", "phoneNumber": "5550100"});
        if let Some(t) = desired {
            body["desiredTime"] = json!(t);
        }
        serde_json::from_value::<CreateCallbackParms>(body)
            .unwrap()
            .validate()
            .unwrap()
    }

    fn settings(v: serde_json::Value) -> ServiceSettings {
        ServiceSettings::parse(v).unwrap()
    }

    fn refusal(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(Error::Invalid(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    /// Monday to Friday 09:00–17:00 UTC.
    fn office(s: &ServiceSettings) -> SlotPlan {
        let hours = BusinessHours::parse(&json!({"timezone": "UTC", "weekly": {
            "mon": [["09:00", "17:00"]], "tue": [["09:00", "17:00"]], "wed": [["09:00", "17:00"]],
            "thu": [["09:00", "17:00"]], "fri": [["09:00", "17:00"]]}}))
        .unwrap();
        SlotPlan::new(s, Some(hours), None)
    }

    #[test]
    fn no_desired_time_is_immediate_and_needs_no_plan_by_default() {
        let s = ServiceSettings::default();
        let a = admit(&request(None), &s, at(NOW)).unwrap();
        assert_eq!(a, Admission::Immediate);
        assert!(!needs_plan(&a, &s));
        let booked = book(a, &request(None), &s, None, at(NOW)).unwrap();
        assert_eq!(booked, Booked::Admitted(Admission::Immediate));
    }

    #[test]
    fn a_desired_time_is_scheduled_with_the_lead_time_taken_off() {
        let s = settings(json!({"lead_time_seconds": 300}));
        let a = admit(&request(Some("2030-01-07T12:00:00Z")), &s, at(NOW)).unwrap();
        assert_eq!(
            a,
            Admission::Scheduled {
                desired: at("2030-01-07T12:00:00Z"),
                dispatch_at: at("2030-01-07T11:55:00Z"),
                slot: None,
            }
        );
        assert!(needs_plan(&a, &s));
    }

    #[test]
    fn the_service_decides_which_kinds_it_takes() {
        let s = settings(json!({"immediate_enabled": false}));
        assert!(refusal(admit(&request(None), &s, at(NOW))).contains("immediate"));
        let s = settings(json!({"scheduled_enabled": false}));
        let r = request(Some("2030-01-07T12:00:00Z"));
        assert!(refusal(admit(&r, &s, at(NOW))).contains("scheduled"));
        let s = settings(json!({"enabled": false}));
        assert_eq!(
            refusal(admit(&request(None), &s, at(NOW))),
            "service s is disabled"
        );
        let s = settings(json!({"captcha_required": true}));
        assert!(refusal(admit(&request(None), &s, at(NOW))).contains("captchaToken"));
    }

    #[test]
    fn desired_times_out_of_range_are_refused_at_their_edges() {
        let s = settings(json!({"max_days_ahead": 1}));
        let past = request(Some("2030-01-07T09:58:59Z"));
        assert_eq!(
            refusal(admit(&past, &s, at(NOW))),
            "desiredTime is in the past"
        );
        let skew = request(Some("2030-01-07T09:59:00Z"));
        assert!(
            admit(&skew, &s, at(NOW)).is_ok(),
            "60 s of skew are tolerated"
        );
        let far = request(Some("2030-01-08T10:00:01Z"));
        assert!(refusal(admit(&far, &s, at(NOW))).contains("1 days ahead"));
        assert!(admit(&request(Some("2030-01-08T10:00:00Z")), &s, at(NOW)).is_ok());
    }

    #[test]
    fn a_scheduled_callback_in_open_hours_claims_its_slot() {
        let s = settings(json!({"slot_minutes": 30, "slot_capacity": 4}));
        let r = request(Some("2030-01-07T12:10:00Z"));
        let a = admit(&r, &s, at(NOW)).unwrap();
        let booked = book(a, &r, &s, Some(&office(&s)), at(NOW)).unwrap();
        let Booked::Admitted(Admission::Scheduled { slot, .. }) = booked else {
            panic!("{booked:?}");
        };
        assert_eq!(
            slot,
            Some(SlotClaim {
                start: at("2030-01-07T12:00:00Z"),
                capacity: 4,
                minutes: 30,
            })
        );
    }

    #[test]
    fn out_of_hours_is_refused_or_taken_uncounted_by_the_switch() {
        let sunday = request(Some("2030-01-13T12:00:00Z"));
        let strict = ServiceSettings::default();
        let a = admit(&sunday, &strict, at(NOW)).unwrap();
        let e = refusal(book(a, &sunday, &strict, Some(&office(&strict)), at(NOW)));
        assert!(e.contains("outside the business hours"), "{e}");

        let lenient = settings(json!({"reject_out_of_hours": false}));
        let a = admit(&sunday, &lenient, at(NOW)).unwrap();
        let booked = book(a, &sunday, &lenient, Some(&office(&lenient)), at(NOW)).unwrap();
        assert_eq!(
            booked,
            Booked::Admitted(a),
            "accepted, counted against no slot"
        );
    }

    #[test]
    fn always_check_capacity_out_of_hours_meets_a_closed_slot() {
        let s = settings(json!({"reject_out_of_hours": false}));
        let body = json!({"serviceName": "s", "phoneNumber": "5550100",
            "desiredTime": "2030-01-13T12:05:00Z", "alwaysCheckCapacity": true});
        let r = serde_json::from_value::<CreateCallbackParms>(body)
            .unwrap()
            .validate()
            .unwrap();
        let a = admit(&r, &s, at(NOW)).unwrap();
        let booked = book(a, &r, &s, Some(&office(&s)), at(NOW)).unwrap();
        assert_eq!(
            booked,
            Booked::Closed {
                start: at("2030-01-13T12:00:00Z")
            }
        );
    }

    #[test]
    fn immediate_while_closed_follows_the_switch() {
        let sunday_now = at("2030-01-13T12:00:00Z");
        let s = settings(json!({"business_hours": "office"}));
        let a = admit(&request(None), &s, sunday_now).unwrap();
        assert!(needs_plan(&a, &s));
        let e = refusal(book(a, &request(None), &s, Some(&office(&s)), sunday_now));
        assert!(e.contains("closed now (business hours office)"), "{e}");

        let s = settings(json!({"business_hours": "office", "reject_out_of_hours": false}));
        assert!(!needs_plan(&a, &s), "nothing to check: no query");
    }
}
