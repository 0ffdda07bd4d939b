//! Callback services (CALLBACK_SETTINGS rows): a [`versioned`](super::versioned) kind whose
//! deletes are soft, so callbacks already booked keep the settings they were booked under.

use deadpool_postgres::GenericClient;

use super::versioned::{self, Spec, Stored, kind};
use crate::{
    error::{Error, Result},
    model::ServiceSettings,
};

kind! {
    /// The `services` table (docs/admin-objects.md#services).
    pub Services: ServiceSettings =
        Spec::new("services", "settings", "service").shown_in("settings").soft_delete()
}

/// A service as the admin API shows it (`name`, `settings`, `version`, `updatedAt`).
pub type Service = Stored<Services>;

/// One live service, or `None`.
pub async fn find(db: &impl GenericClient, tenant: &str, name: &str) -> Result<Option<Service>> {
    versioned::find(db, tenant, name).await
}

/// Settings of a service including soft-deleted ones (the worker dispatches booked callbacks
/// of a deleted service with the settings it last had).
pub async fn settings_any(
    db: &impl GenericClient,
    tenant: &str,
    name: &str,
) -> Result<Option<ServiceSettings>> {
    db.query_opt(
        "SELECT settings FROM services WHERE tenant_id = $1 AND name = $2",
        &[&tenant, &name],
    )
    .await?
    .map(|r| serde_json::from_value(r.get(0)).map_err(Error::internal))
    .transpose()
}
