//! One store for the tenant's named, versioned admin objects: callback services, number rules,
//! business hours and capacity rules (docs/admin-objects.md#common-behaviour).
//!
//! Every kind lives in its own table keyed by `(tenant_id, name)` with a JSON column, a
//! `version` that goes up on every change and an `updated_at`. A kind says only what differs
//! (a [`Kind`]): its table and column, its noun in messages, how the admin API shows its body,
//! whether a delete is soft (services: booked callbacks keep the settings they were booked
//! under) and which service setting refers to it (a delete is then refused while live services
//! use it).

use deadpool_postgres::GenericClient;
use serde::{Serialize, Serializer, de::DeserializeOwned, ser::SerializeMap};
use serde_json::Value;

use super::stmt;
use crate::{
    error::{Error, Result},
    model::callback::wire_time,
};

/// The service setting that names an object of a kind, so a delete can be refused while live
/// services use it.
#[derive(Debug, Clone, Copy)]
pub struct UsedBy {
    /// The service settings column (`number_rule`, `business_hours`, …).
    pub setting: &'static str,
    /// What the 409 tells the administrator to do first.
    pub advice: &'static str,
    /// How many of the services using it the 409 names at most.
    pub names_at_most: i64,
}

/// What differs between kinds, built with `const` methods:
/// `Spec::new("number_rules", "rule", "number rule").shown_in("rule").used_by(…)`.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The table (`services`, `number_rules`, `business_hours`, `capacity_rules`).
    pub table: &'static str,
    /// The JSON column holding the body.
    pub column: &'static str,
    /// The object's name in messages (`service`, `number rule`, …).
    pub noun: &'static str,
    /// The admin API's field for the body (`settings`, `rule`), or `None` to show the body's
    /// own fields beside `name`, `version` and `updatedAt` (so a fetched rule can be PUT back).
    pub field: Option<&'static str>,
    /// A delete only marks the row (`deleted_at`); a later PUT brings it back, version + 1.
    pub soft_delete: bool,
    /// The service setting that refers to objects of this kind, if any.
    pub used_by: Option<UsedBy>,
}

impl Spec {
    /// A kind stored in `table`'s JSON `column`, called `noun` in messages, shown flat, deleted
    /// for good and referred to by nothing.
    pub const fn new(table: &'static str, column: &'static str, noun: &'static str) -> Self {
        Self {
            table,
            column,
            noun,
            field: None,
            soft_delete: false,
            used_by: None,
        }
    }

    /// Shown under `field` instead of flat.
    pub const fn shown_in(self, field: &'static str) -> Self {
        Self {
            field: Some(field),
            ..self
        }
    }

    /// This kind is deleted softly: a delete only marks the row (`deleted_at`), a later PUT
    /// brings it back.
    pub const fn soft_delete(self) -> Self {
        Self {
            soft_delete: true,
            ..self
        }
    }

    /// Named by the services' `setting`; a delete is refused while live services use it.
    pub const fn used_by(self, setting: &'static str, advice: &'static str, at_most: i64) -> Self {
        Self {
            used_by: Some(UsedBy {
                setting,
                advice,
                names_at_most: at_most,
            }),
            ..self
        }
    }
}

/// One kind of versioned object: its body type and its [`Spec`].
pub trait Kind: Send + Sync + 'static {
    /// The object's JSON body as stored and shown (already validated when stored).
    type Body: Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync;
    /// What differs from the other kinds.
    const SPEC: Spec;
}

/// Declares a kind: a unit type named in the admin API's generic code, its body type and its
/// [`Spec`].
macro_rules! kind {
    ($(#[$doc:meta])* $vis:vis $name:ident: $body:ty = $spec:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;

        impl $crate::db::versioned::Kind for $name {
            type Body = $body;
            const SPEC: $crate::db::versioned::Spec = $spec;
        }
    };
}
pub(crate) use kind;

/// One stored object as the admin API shows it.
#[derive(Debug, Clone)]
pub struct Stored<K: Kind> {
    /// The object's name (unique per tenant and kind).
    pub name: String,
    /// The validated JSON body (a service's settings, a rule's spec), as stored.
    pub body: K::Body,
    /// Change counter: 1 when created, + 1 on every change (a soft delete included).
    pub version: i32,
    /// Time of the last change, wire format.
    pub updated_at: String,
}

impl<K: Kind> Serialize for Stored<K> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &self.name)?;
        match K::SPEC.field {
            Some(field) => m.serialize_entry(field, &self.body)?,
            None => {
                let body = serde_json::to_value(&self.body).map_err(serde::ser::Error::custom)?;
                for (key, value) in body.as_object().into_iter().flatten() {
                    m.serialize_entry(key, value)?;
                }
            }
        }
        m.serialize_entry("version", &self.version)?;
        m.serialize_entry("updatedAt", &self.updated_at)?;
        m.end()
    }
}

/// `AND deleted_at IS NULL` for kinds with soft deletes.
fn live<K: Kind>() -> &'static str {
    if K::SPEC.soft_delete {
        " AND deleted_at IS NULL"
    } else {
        ""
    }
}

fn from_row<K: Kind>(row: &tokio_postgres::Row) -> Result<Stored<K>> {
    let body: Value = row.get(K::SPEC.column);
    let body = serde_json::from_value(body).map_err(|e| {
        Error::internal(anyhow::anyhow!(
            "a stored {} no longer reads: {e}",
            K::SPEC.noun
        ))
    })?;
    Ok(Stored {
        name: row.get("name"),
        body,
        version: row.get("version"),
        updated_at: wire_time(row.get("updated_at")),
    })
}

fn missing<K: Kind>(tenant: &str, name: &str) -> Error {
    Error::not_found(format!("no {} {name} for tenant {tenant}", K::SPEC.noun))
}

/// Creates or replaces an object (already validated); returns it and whether it is new.
/// Not found for an unknown tenant.
pub async fn put<K: Kind>(
    db: &impl GenericClient,
    tenant: &str,
    name: &str,
    body: &K::Body,
) -> Result<(Stored<K>, bool)> {
    let (table, column) = (K::SPEC.table, K::SPEC.column);
    let revive = if K::SPEC.soft_delete {
        ", deleted_at = NULL"
    } else {
        ""
    };
    let json = serde_json::to_value(body).map_err(Error::internal)?;
    let sql = format!(
        "INSERT INTO {table} (tenant_id, name, {column})
         SELECT id, $2, $3 FROM tenants WHERE id = $1
         ON CONFLICT (tenant_id, name) DO UPDATE
            SET {column} = EXCLUDED.{column}, version = {table}.version + 1,
                updated_at = now(){revive}
         RETURNING name, {column}, version, updated_at, (xmax = 0) AS created"
    );
    let row = stmt::query_opt(db, &sql, &[&tenant, &name, &json])
        .await?
        .ok_or_else(|| Error::not_found(format!("no tenant {tenant}")))?;
    Ok((from_row(&row)?, row.get("created")))
}

/// One live object, or `None`.
pub async fn find<K: Kind>(
    db: &impl GenericClient,
    tenant: &str,
    name: &str,
) -> Result<Option<Stored<K>>> {
    let sql = format!(
        "SELECT name, {}, version, updated_at FROM {} WHERE tenant_id = $1 AND name = $2{}",
        K::SPEC.column,
        K::SPEC.table,
        live::<K>()
    );
    stmt::query_opt(db, &sql, &[&tenant, &name])
        .await?
        .map(|r| from_row(&r))
        .transpose()
}

/// One live object, or not found naming it.
pub async fn get<K: Kind>(db: &impl GenericClient, tenant: &str, name: &str) -> Result<Stored<K>> {
    find(db, tenant, name)
        .await?
        .ok_or_else(|| missing::<K>(tenant, name))
}

/// The tenant's live objects of one kind, by name.
pub async fn list<K: Kind>(db: &impl GenericClient, tenant: &str) -> Result<Vec<Stored<K>>> {
    let sql = format!(
        "SELECT name, {}, version, updated_at FROM {} WHERE tenant_id = $1{} ORDER BY name",
        K::SPEC.column,
        K::SPEC.table,
        live::<K>()
    );
    let rows = stmt::query(db, &sql, &[&tenant]).await?;
    rows.iter().map(from_row).collect()
}

/// Names of the tenant's live objects of one kind that exist among `names`.
pub async fn existing<K: Kind>(
    db: &impl GenericClient,
    tenant: &str,
    names: &[String],
) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT name FROM {} WHERE tenant_id = $1 AND name = ANY($2){}",
        K::SPEC.table,
        live::<K>()
    );
    let rows = stmt::query(db, &sql, &[&tenant, &names]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Deletes an object: a conflict while live services use it (naming them), not found when
/// there is none. A soft delete keeps the row (version + 1) for what was booked under it.
pub async fn delete<K: Kind>(db: &impl GenericClient, tenant: &str, name: &str) -> Result<()> {
    if let Some(used_by) = K::SPEC.used_by {
        refuse_if_used::<K>(db, used_by, tenant, name).await?;
    }
    let sql = if K::SPEC.soft_delete {
        format!(
            "UPDATE {} SET deleted_at = now(), version = version + 1, updated_at = now()
             WHERE tenant_id = $1 AND name = $2 AND deleted_at IS NULL",
            K::SPEC.table
        )
    } else {
        format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND name = $2",
            K::SPEC.table
        )
    };
    match stmt::execute(db, &sql, &[&tenant, &name]).await? {
        0 => Err(missing::<K>(tenant, name)),
        _ => Ok(()),
    }
}

async fn refuse_if_used<K: Kind>(
    db: &impl GenericClient,
    used_by: UsedBy,
    tenant: &str,
    name: &str,
) -> Result<()> {
    let users = stmt::query(
        db,
        "SELECT name FROM services
         WHERE tenant_id = $1 AND deleted_at IS NULL AND settings ->> $2 = $3
         ORDER BY name LIMIT $4",
        &[&tenant, &used_by.setting, &name, &used_by.names_at_most],
    )
    .await?;
    if users.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = users.iter().map(|r| r.get(0)).collect();
    Err(Error::conflict(format!(
        "{} {name} is used by service(s) {}; {}",
        K::SPEC.noun,
        names.join(", "),
        used_by.advice
    )))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Stored;
    use crate::db::{hours::HoursKind, number_rules::NumberRules, services::Services};

    fn stored<K: super::Kind>(body: serde_json::Value) -> serde_json::Value {
        let s: Stored<K> = Stored {
            name: "a".into(),
            body: serde_json::from_value(body).unwrap(),
            version: 3,
            updated_at: "2026-01-01T00:00:00.000Z".into(),
        };
        serde_json::to_value(&s).unwrap()
    }

    #[test]
    fn bodies_are_shown_in_their_field_or_beside_the_name() {
        let v = stored::<Services>(json!({"slot_capacity": 4}));
        assert_eq!(v["settings"]["slot_capacity"], 4);
        assert_eq!(
            (v["name"].as_str(), v["version"].as_i64()),
            (Some("a"), Some(3))
        );
        let v = stored::<NumberRules>(json!({"permitted_countries": ["US"]}));
        assert_eq!(v["rule"]["permitted_countries"], json!(["US"]));
        let v = stored::<HoursKind>(json!({"timezone": "UTC", "weekly": {}}));
        assert_eq!(
            v,
            json!({"name": "a", "timezone": "UTC", "weekly": {}, "version": 3,
                   "updatedAt": "2026-01-01T00:00:00.000Z"})
        );
    }

    #[test]
    fn specs_say_what_differs() {
        use super::Kind;
        let specs = [Services::SPEC, NumberRules::SPEC, HoursKind::SPEC];
        let soft: Vec<bool> = specs.iter().map(|s| s.soft_delete).collect();
        assert_eq!(soft, [true, false, false]);
        let used: Vec<Option<&str>> = specs.iter().map(|s| s.used_by.map(|u| u.setting)).collect();
        assert_eq!(used, [None, Some("number_rule"), Some("business_hours")]);
        let shown: Vec<Option<&str>> = specs.iter().map(|s| s.field).collect();
        assert_eq!(shown, [Some("settings"), Some("rule"), None]);
    }
}
