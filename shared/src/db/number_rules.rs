//! Number rules (per tenant, referenced by services through their `number_rule` setting): a
//! [`versioned`](super::versioned) kind that cannot be deleted while a live service uses it.

use deadpool_postgres::GenericClient;

use super::versioned::{self, Spec, Stored, kind};
use crate::{error::Result, phone::NumberRule};

kind! {
    /// The `number_rules` table (docs/admin-objects.md#common-behaviour).
    pub NumberRules: NumberRule = Spec::new("number_rules", "rule", "number rule")
        .shown_in("rule")
        .used_by("number_rule", "assign another rule to them first", 10)
}

/// A number rule as the admin API shows it (`name`, `rule`, `version`, `updatedAt`).
pub type StoredRule = Stored<NumberRules>;

/// One rule, or `None`.
pub async fn find(db: &impl GenericClient, tenant: &str, name: &str) -> Result<Option<StoredRule>> {
    versioned::find(db, tenant, name).await
}
