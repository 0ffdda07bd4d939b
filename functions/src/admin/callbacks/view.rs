//! A callback as the admin API shows it: every stored column an admin may read (the JSON of the
//! listing and the detail, and the CSV export's columns).

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use shared::{
    db::callbacks::StoredCallback,
    model::{availability::Zone, callback::wire_time},
};

/// One callback of the listing.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminCallback {
    /// The callback's id.
    pub id: String,
    /// Its service.
    pub service_name: String,
    /// SCHEDULED, QUEUED, ROUTING, PROCESSING or COMPLETED.
    pub state: &'static str,
    /// The completion reason (COMPLETED only).
    pub reason: Option<&'static str>,
    /// The number as the create gave it.
    pub phone_number: String,
    /// The normalised number (`+` and E.164 digits), when it normalised.
    pub phone_e164: Option<String>,
    /// When the customer wants the call.
    pub desired_time: String,
    /// When the current attempt is (or was) handed to the voice platform.
    pub dispatch_time: String,
    /// When the current attempt reached the voice platform.
    pub submitted_time: Option<String>,
    /// When the create was committed.
    pub created_time: String,
    /// The current dial attempt (1 for the first).
    pub attempt: i16,
    /// The priority it started with.
    pub priority: i32,
    /// The stored user data.
    pub user_data: Option<Value>,
    /// Per-callback attributes (informational fields, overrides; push targets by channel only).
    pub attrs: Map<String, Value>,
}

impl AdminCallback {
    /// The view of a stored row, times in UTC.
    pub fn of(cb: &StoredCallback) -> Self {
        let t = wire_time;
        Self {
            id: cb.id.to_string(),
            service_name: cb.service.clone(),
            state: cb.state.as_str(),
            reason: cb.reason.map(|r| r.as_str()),
            phone_number: cb.phone_number.clone(),
            phone_e164: cb.phone_e164.as_ref().map(|n| format!("+{n}")),
            desired_time: t(cb.desired_time),
            dispatch_time: t(cb.dispatch_at),
            submitted_time: cb.submitted_at.map(t),
            created_time: t(cb.created_at),
            attempt: cb.attempt,
            priority: cb.priority,
            user_data: cb.user_data.clone(),
            // Device tokens show as their channel only (docs/push.md#what-callers-see).
            attrs: shared::model::attrs::shown(&cb.attrs),
        }
    }
}

/// The CSV export's header.
pub const CSV_HEADER: [&str; 13] = [
    "id",
    "serviceName",
    "state",
    "reason",
    "phoneNumber",
    "phoneE164",
    "desiredTime",
    "dispatchTime",
    "submittedTime",
    "createdTime",
    "attempt",
    "priority",
    "userData",
];

/// One CSV row (the header's columns); times in `zone` with their offset, or UTC (`Z`).
pub fn csv_row(cb: &StoredCallback, zone: Option<&Zone>) -> [String; 13] {
    let t = |at: Timestamp| zone.map_or_else(|| wire_time(at), |z| z.local_time(at));
    [
        cb.id.to_string(),
        cb.service.clone(),
        cb.state.as_str().to_string(),
        cb.reason.map_or("", |r| r.as_str()).to_string(),
        cb.phone_number.clone(),
        cb.phone_e164
            .as_ref()
            .map_or_else(String::new, |n| format!("+{n}")),
        t(cb.desired_time),
        t(cb.dispatch_at),
        cb.submitted_at.map_or_else(String::new, t),
        t(cb.created_at),
        cb.attempt.to_string(),
        cb.priority.to_string(),
        cb.user_data
            .as_ref()
            .map_or_else(String::new, Value::to_string),
    ]
}
