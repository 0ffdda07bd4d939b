//! Business-hours and capacity checks of `POST /callbacks/create`
//! (docs/decisions.md#capacity-rules).
//!
//! Decisions (GES leaves these open: docs/ges-behavior.md#capacity-and-scheduling; the same list
//! is in docs/decisions.md#scheduling-decisions):
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
//! - When the slot grid changes (length or zone), places booked under the old grid count
//!   against the new slot their desired time falls in (docs/slot-grid.md).

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use serde_json::json;
use shared::{
    ApiError, db,
    db::slots::SlotClaim,
    http::ApiResult,
    model::{ServiceSettings, SlotPlan, callback::wire_time},
};

/// The outcome of the checks: the slot to claim, if any.
#[derive(Debug)]
pub struct Checked {
    /// The slot place the new callback takes.
    pub claim: Option<SlotClaim>,
    plan: Option<SlotPlan>,
    desired: Option<Timestamp>,
}

/// Checks a create against the service's hours and capacity at `now`.
pub async fn check(
    db: &impl GenericClient,
    tenant: &str,
    service: &str,
    settings: &ServiceSettings,
    desired: Option<Timestamp>,
    always_check_capacity: bool,
    now: Timestamp,
) -> ApiResult<Checked> {
    let Some(t) = desired else {
        if settings.reject_out_of_hours
            && let Some(name) = &settings.business_hours
        {
            let plan = db::hours::plan(db, tenant, service, settings).await?;
            if !plan.is_open(now) {
                return Err(ApiError::bad_request(format!(
                    "service {service} is closed now (business hours {name}); book a scheduled callback instead"
                )));
            }
        }
        return Ok(Checked {
            claim: None,
            plan: None,
            desired: None,
        });
    };
    let plan = db::hours::plan(db, tenant, service, settings).await?;
    let slot = plan.slot_at(t);
    if !plan.is_open(t) {
        if settings.reject_out_of_hours {
            return Err(ApiError::bad_request(format!(
                "desiredTime {} is outside the business hours of service {service}",
                wire_time(t)
            )));
        }
        if slot.total == 0 && !always_check_capacity {
            return Ok(Checked {
                claim: None,
                plan: Some(plan),
                desired,
            });
        }
    }
    let checked = Checked {
        claim: (slot.total > 0).then_some(SlotClaim {
            start: slot.start,
            capacity: slot.total,
            minutes: plan.slot_minutes(),
        }),
        plan: Some(plan),
        desired,
    };
    if slot.total == 0 {
        let msg = format!(
            "the slot starting {} of service {service} takes no scheduled callbacks; data.slots proposes open slots",
            wire_time(slot.start)
        );
        return Err(checked.full(db, tenant, service, settings, now, msg).await);
    }
    Ok(checked)
}

impl Checked {
    /// Turns the insert's full-slot error into the 429 with proposals; other errors pass.
    pub async fn explain(
        &self,
        db: &impl GenericClient,
        tenant: &str,
        service: &str,
        settings: &ServiceSettings,
        now: Timestamp,
        err: ApiError,
    ) -> ApiError {
        match (&err, &self.claim) {
            (ApiError::TooManyRequests { data: None, .. }, Some(claim)) => {
                let msg = format!(
                    "the slot starting {} of service {service} is fully booked; data.slots proposes the nearest open slots",
                    wire_time(claim.start)
                );
                self.full(db, tenant, service, settings, now, msg).await
            }
            _ => err,
        }
    }

    async fn full(
        &self,
        db: &impl GenericClient,
        tenant: &str,
        service: &str,
        settings: &ServiceSettings,
        now: Timestamp,
        message: String,
    ) -> ApiError {
        let (Some(plan), Some(desired)) = (&self.plan, self.desired) else {
            return ApiError::TooManyRequests {
                message,
                data: None,
                retry_after_s: None,
            };
        };
        match db::slots::proposals(
            db,
            tenant,
            service,
            plan,
            settings.max_days_ahead,
            desired,
            now,
        )
        .await
        {
            Ok(slots) => ApiError::TooManyRequests {
                message,
                data: Some(json!({ "slots": slots })),
                retry_after_s: None,
            },
            Err(e) => e.into(),
        }
    }
}
