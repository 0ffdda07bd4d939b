//! The admin UI's roles and the ONE permission table every page and action is checked
//! against on the server (docs/admin-ui.md#roles).

use serde::Serialize;

/// A predefined role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Role {
    /// Everything.
    Administrator,
    /// Callbacks tab in full, number rules editable, capacity read-only, no Developer tab.
    Supervisor,
    /// Views callbacks and queues only.
    Monitor,
    /// Developer tab, number rules editable, capacity read-only.
    Developer,
}

/// Something a page shows or an action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// See the queues page.
    ViewCallbacks,
    /// List and search callbacks, read one with its history (the Callbacks page).
    ListCallbacks,
    /// Create, reschedule, cancel, bulk cancel callbacks.
    ManageCallbacks,
    /// Export callbacks as CSV.
    ExportCallbacks,
    /// See the configuration pages (services, hours, capacity, number rules).
    ViewConfig,
    /// Edit capacity rules and business hours.
    EditCapacity,
    /// Edit Click-To-Call-In groups.
    EditCallIn,
    /// Edit number rules (and use the "test a number" box).
    EditNumberRules,
    /// The Developer tab: API key validation, API errors, re-read configuration.
    Developer,
}

use Permission::*;

/// Which role has which permission: columns Administrator, Supervisor, Monitor, Developer.
const TABLE: &[(Permission, [bool; 4])] = &[
    (ViewCallbacks, [true, true, true, true]),
    (ListCallbacks, [true, true, true, false]),
    (ManageCallbacks, [true, true, false, false]),
    (ExportCallbacks, [true, true, false, false]),
    (ViewConfig, [true, true, false, true]),
    (EditCapacity, [true, false, false, false]),
    (EditCallIn, [true, false, false, false]),
    (EditNumberRules, [true, true, false, true]),
    (Developer, [true, false, false, true]),
];

impl Role {
    /// Every role, in the table's column order.
    pub const ALL: [Role; 4] = [
        Role::Administrator,
        Role::Supervisor,
        Role::Monitor,
        Role::Developer,
    ];

    /// The role named `name` (exact, as stored), or `None`.
    pub fn parse(name: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Administrator => "Administrator",
            Role::Supervisor => "Supervisor",
            Role::Monitor => "Monitor",
            Role::Developer => "Developer",
        }
    }

    /// Whether this role may do `p` (the table above, nothing else).
    pub fn may(self, p: Permission) -> bool {
        let column = Self::ALL.iter().position(|r| *r == self).unwrap_or(0);
        TABLE
            .iter()
            .find(|(q, _)| *q == p)
            .is_some_and(|(_, row)| row[column])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_matches_ges_roles() {
        assert!(Role::Administrator.may(EditCapacity));
        assert!(!Role::Supervisor.may(EditCapacity) && Role::Supervisor.may(ManageCallbacks));
        assert!(!Role::Supervisor.may(Developer) && Role::Supervisor.may(EditNumberRules));
        assert!(Role::Monitor.may(ViewCallbacks) && !Role::Monitor.may(ManageCallbacks));
        assert!(!Role::Monitor.may(ViewConfig) && !Role::Monitor.may(ExportCallbacks));
        assert!(Role::Developer.may(Developer) && !Role::Developer.may(ManageCallbacks));
        assert_eq!(Role::parse("Monitor"), Some(Role::Monitor));
        assert_eq!(Role::parse("monitor"), None);
    }
}
