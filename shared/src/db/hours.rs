//! Business hours and capacity rules (named, per tenant, versioned), and the [`SlotPlan`] of a
//! service built from them.

use deadpool_postgres::GenericClient;
use serde::Serialize;
use serde_json::Value;

use crate::{
    error::Error,
    model::{BusinessHours, CapacityRule, ServiceSettings, SlotPlan, callback::wire_time},
};

/// The two kinds of named rule stored here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `business_hours` table; services refer to it in their `business_hours` column.
    BusinessHours,
    /// `capacity_rules` table; services refer to it in their `capacity_rule` column.
    CapacityRule,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Self::BusinessHours => "business_hours",
            Self::CapacityRule => "capacity_rules",
        }
    }

    /// The service settings column that names a rule of this kind.
    pub fn column(self) -> &'static str {
        match self {
            Self::BusinessHours => "business_hours",
            Self::CapacityRule => "capacity_rule",
        }
    }

    /// Human name for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::BusinessHours => "business hours",
            Self::CapacityRule => "capacity rule",
        }
    }

    /// Validates a spec of this kind; returns its canonical JSON.
    pub fn validate(self, spec: &Value) -> Result<Value, Error> {
        match self {
            Self::BusinessHours => {
                serde_json::to_value(BusinessHours::parse(spec)?).map_err(Error::internal)
            }
            Self::CapacityRule => {
                serde_json::to_value(CapacityRule::parse(spec)?).map_err(Error::internal)
            }
        }
    }
}

/// A stored rule as the admin API shows it: the spec's fields plus name, version, updatedAt.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRule {
    /// Rule name.
    pub name: String,
    /// The spec (`timezone`/`weekly`/`exceptions` or `slot_minutes`/`weekly`/`overrides`).
    #[serde(flatten)]
    pub spec: serde_json::Map<String, Value>,
    /// Change counter.
    pub version: i32,
    /// Last change.
    pub updated_at: String,
}

fn from_row(row: &tokio_postgres::Row) -> StoredRule {
    let spec = match row.get::<_, Value>("spec") {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    StoredRule {
        name: row.get("name"),
        spec,
        version: row.get("version"),
        updated_at: wire_time(row.get("updated_at")),
    }
}

/// Creates or replaces a rule from a validated canonical spec; returns it and whether it is
/// new. 404 for an unknown tenant.
pub async fn put(
    db: &impl GenericClient,
    kind: Kind,
    tenant: &str,
    name: &str,
    spec: &Value,
) -> Result<(StoredRule, bool), Error> {
    let table = kind.table();
    let row = super::stmt::query_opt(
        db,
        &format!(
            "INSERT INTO {table} (tenant_id, name, spec)
                 SELECT id, $2, $3 FROM tenants WHERE id = $1
                 ON CONFLICT (tenant_id, name) DO UPDATE
                    SET spec = EXCLUDED.spec, version = {table}.version + 1, updated_at = now()
                 RETURNING name, spec, version, updated_at, (xmax = 0) AS created"
        ),
        &[&tenant, &name, spec],
    )
    .await?
    .ok_or_else(|| Error::not_found(format!("no tenant {tenant}")))?;
    Ok((from_row(&row), row.get("created")))
}

/// One rule, or 404.
pub async fn get(
    db: &impl GenericClient,
    kind: Kind,
    tenant: &str,
    name: &str,
) -> Result<StoredRule, Error> {
    super::stmt::query_opt(
        db,
        &format!(
            "SELECT name, spec, version, updated_at FROM {} WHERE tenant_id = $1 AND name = $2",
            kind.table()
        ),
        &[&tenant, &name],
    )
    .await?
    .map(|r| from_row(&r))
    .ok_or_else(|| Error::not_found(format!("no {} {name} for tenant {tenant}", kind.noun())))
}

/// The tenant's rules of one kind, by name.
pub async fn list(
    db: &impl GenericClient,
    kind: Kind,
    tenant: &str,
) -> Result<Vec<StoredRule>, Error> {
    let rows = super::stmt::query(
        db,
        &format!(
            "SELECT name, spec, version, updated_at FROM {} WHERE tenant_id = $1 ORDER BY name",
            kind.table()
        ),
        &[&tenant],
    )
    .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Names of the tenant's rules of one kind that exist among `names`.
pub async fn existing(
    db: &impl GenericClient,
    kind: Kind,
    tenant: &str,
    names: &[String],
) -> Result<Vec<String>, Error> {
    let rows = super::stmt::query(
        db,
        &format!(
            "SELECT name FROM {} WHERE tenant_id = $1 AND name = ANY($2)",
            kind.table()
        ),
        &[&tenant, &names],
    )
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Deletes a rule; 409 while live services refer to it (naming them), 404 when absent.
pub async fn delete(
    db: &impl GenericClient,
    kind: Kind,
    tenant: &str,
    name: &str,
) -> Result<(), Error> {
    let users = super::stmt::query(
        db,
        "SELECT name FROM services
             WHERE tenant_id = $1 AND deleted_at IS NULL AND settings ->> $2 = $3 ORDER BY name",
        &[&tenant, &kind.column(), &name],
    )
    .await?;
    if !users.is_empty() {
        let names: Vec<String> = users.iter().map(|r| r.get(0)).collect();
        return Err(Error::conflict(format!(
            "{} {name} is used by service(s) {}; change their {} setting first",
            kind.noun(),
            names.join(", "),
            kind.column()
        )));
    }
    let n = super::stmt::execute(
        db,
        &format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND name = $2",
            kind.table()
        ),
        &[&tenant, &name],
    )
    .await?;
    if n == 0 {
        return Err(Error::not_found(format!(
            "no {} {name} for tenant {tenant}",
            kind.noun()
        )));
    }
    Ok(())
}

/// Business hours by name, parsed, or `None`.
pub async fn business_hours(
    db: &impl GenericClient,
    tenant: &str,
    name: &str,
) -> Result<Option<BusinessHours>, Error> {
    super::stmt::query_opt(
        db,
        "SELECT spec FROM business_hours WHERE tenant_id = $1 AND name = $2",
        &[&tenant, &name],
    )
    .await?
    .map(|r| BusinessHours::parse(&r.get::<_, Value>(0)).map_err(stored_invalid))
    .transpose()
}

fn stored_invalid(e: Error) -> Error {
    Error::internal(anyhow::anyhow!("stored rule no longer validates: {e}"))
}

/// The slot plan of a service (one query for both rules). A rule the service names but which
/// does not exist is a 400 naming it (an administrator must fix the service).
pub async fn plan(
    db: &impl GenericClient,
    tenant: &str,
    service: &str,
    settings: &ServiceSettings,
) -> Result<SlotPlan, Error> {
    if settings.business_hours.is_none() && settings.capacity_rule.is_none() {
        return Ok(SlotPlan::new(settings, None, None));
    }
    let row = super::stmt::query_one(
        db,
        "SELECT (SELECT spec FROM business_hours WHERE tenant_id = $1 AND name = $2),
                    (SELECT spec FROM capacity_rules WHERE tenant_id = $1 AND name = $3)",
        &[&tenant, &settings.business_hours, &settings.capacity_rule],
    )
    .await?;
    let missing = |kind: Kind, name: &str| {
        Error::invalid(format!(
            "service {service} refers to {} {name}, which does not exist",
            kind.noun()
        ))
    };
    let hours = match (&settings.business_hours, row.get::<_, Option<Value>>(0)) {
        (None, _) => None,
        (Some(name), None) => return Err(missing(Kind::BusinessHours, name)),
        (Some(_), Some(spec)) => Some(BusinessHours::parse(&spec).map_err(stored_invalid)?),
    };
    let rule = match (&settings.capacity_rule, row.get::<_, Option<Value>>(1)) {
        (None, _) => None,
        (Some(name), None) => return Err(missing(Kind::CapacityRule, name)),
        (Some(_), Some(spec)) => Some(CapacityRule::parse(&spec).map_err(stored_invalid)?),
    };
    Ok(SlotPlan::new(settings, hours, rule))
}

/// Checks that the business hours and capacity rule a service names exist (a service cannot
/// refer to rules that are not there, docs/decisions.md#rule-references); the error names
/// the column.
pub async fn check_refs(
    db: &impl GenericClient,
    tenant: &str,
    settings: &ServiceSettings,
) -> Result<(), Error> {
    for (kind, name) in [
        (Kind::BusinessHours, &settings.business_hours),
        (Kind::CapacityRule, &settings.capacity_rule),
    ] {
        if let Some(name) = name
            && existing(db, kind, tenant, std::slice::from_ref(name))
                .await?
                .is_empty()
        {
            return Err(Error::invalid(format!(
                "setting {}: no {} named {name:?}; create it first",
                kind.column(),
                kind.noun()
            )));
        }
    }
    Ok(())
}
