//! Domain models: the values the API, the stores and the worker agree on.
//!
//! Wire types follow the Engagement API v3 names (camelCase); settings follow the
//! CALLBACK_SETTINGS column names (snake_case, docs/decisions.md#service-settings). Parsing
//! functions here turn untrusted input into validated values ("parse, don't validate").

pub mod admin_query;
pub mod attrs;
pub mod availability;
pub mod call_in;
pub mod callback;
pub mod capacity;
pub mod designer;
pub mod ewt;
pub mod gms_query;
pub mod hours;
pub mod informational;
pub mod service;
pub mod user_data;

pub use callback::{CallbackState, CompletionReason};
pub use capacity::{CapacityRule, Slot, SlotPlan};
pub use hours::BusinessHours;
pub use service::ServiceSettings;

/// Tenant (contact center) id: 1–64 characters of `[A-Za-z0-9_.-]`, starting alphanumeric.
pub fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Service (virtual queue) or rule name: 1–255 printable characters without `/`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains('/')
        && name.chars().all(|c| !c.is_control())
        && name.trim() == name
}
