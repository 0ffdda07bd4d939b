//! Who may do what on the admin callback API: the one authorisation check of every operation
//! (docs/admin-queries.md#authorisation).
//!
//! Two actors: the holder of `ADMIN_TOKEN` (the API's extractor), who acts for any tenant, and
//! a `/ges` UI session user of one tenant and one role (`ui::callbacks` builds it from the
//! session), whose rights are the UI's one permission table (docs/admin-ui.md#roles): Monitor
//! views, Supervisor and Administrator also change and export, Developer has no Callback tab.

use axum::{extract::FromRequestParts, http::request::Parts};
use shared::http::{Admin, ApiError, AppState};

use crate::ui::roles::Permission;
pub use crate::ui::roles::Role;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// `Authorization: Bearer $ADMIN_TOKEN`: every operation, any tenant.
    AdminToken,
    /// A signed-in user of one tenant (the UI's session: `ui::callbacks`).
    User {
        /// The tenant the user belongs to.
        tenant: String,
        /// The user's role.
        role: Role,
    },
}

/// What an operation does to a tenant's callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// List, search, read one with its history.
    View,
    /// Cancel, bulk cancel, reschedule (a dry run of a bulk cancel too: it is the first half
    /// of one).
    Change,
    /// The CSV export.
    Export,
}

impl Actor {
    /// `Ok` when the actor may do `op` on `tenant`'s callbacks; 403 otherwise (a user of
    /// another tenant gets 404, as if the tenant did not exist for them).
    pub fn may(&self, tenant: &str, op: Operation) -> Result<(), ApiError> {
        let (own, role) = match self {
            Self::AdminToken => return Ok(()),
            Self::User { tenant: own, role } => (own, *role),
        };
        if own != tenant {
            return Err(ApiError::not_found(format!("no tenant {tenant}")));
        }
        // The one permission table of the UI's roles (docs/admin-ui.md#roles).
        let allowed = role.may(match op {
            Operation::View => Permission::ListCallbacks,
            Operation::Change => Permission::ManageCallbacks,
            Operation::Export => Permission::ExportCallbacks,
        });
        if allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the {role:?} role may not {} callbacks",
                match op {
                    Operation::View => "view",
                    Operation::Change => "change",
                    Operation::Export => "export",
                }
            )))
        }
    }
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Admin::from_request_parts(parts, state).await?;
        Ok(Self::AdminToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_tenants() {
        assert!(Actor::AdminToken.may("any", Operation::Change).is_ok());
        let user = |role| Actor::User {
            tenant: "acme".into(),
            role,
        };
        for op in [Operation::View, Operation::Change, Operation::Export] {
            assert!(user(Role::Supervisor).may("acme", op).is_ok());
            assert!(user(Role::Administrator).may("acme", op).is_ok());
            assert!(user(Role::Developer).may("acme", op).is_err());
            let other = user(Role::Administrator).may("globex", op).unwrap_err();
            assert_eq!(other.status_code(), 404);
        }
        assert!(user(Role::Monitor).may("acme", Operation::View).is_ok());
        let refused = user(Role::Monitor)
            .may("acme", Operation::Change)
            .unwrap_err();
        assert_eq!(refused.status_code(), 403);
        assert!(user(Role::Monitor).may("acme", Operation::Export).is_err());
    }
}
