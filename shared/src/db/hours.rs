//! Business hours and capacity rules (named, per tenant, versioned), and the [`SlotPlan`] of a
//! service built from them.

use deadpool_postgres::GenericClient;
use serde_json::{Map, Value};

use super::versioned::{self, Kind, Spec, kind};
use crate::{
    error::{Error, Result},
    model::{BusinessHours, CapacityRule, ServiceSettings, SlotPlan},
};

kind! {
    /// The `business_hours` table: named business hours, referenced by services through their
    /// `business_hours` setting; the body is the canonical spec (`timezone`, `weekly`,
    /// `exceptions`), shown beside the name (docs/admin-objects.md#common-behaviour).
    pub HoursKind: Map<String, Value> = Spec::new("business_hours", "spec", "business hours")
        .used_by("business_hours", "change their business_hours setting first", i64::MAX)
}

kind! {
    /// The `capacity_rules` table: named capacity rules, referenced by services through their
    /// `capacity_rule` setting; the body is the canonical spec (`slot_minutes`, `weekly`,
    /// `overrides`), shown beside the name (docs/admin-objects.md#common-behaviour).
    pub CapacityKind: Map<String, Value> = Spec::new("capacity_rules", "spec", "capacity rule")
        .used_by("capacity_rule", "change their capacity_rule setting first", i64::MAX)
}

/// The service setting that names objects of kind `K` (`business_hours`, `capacity_rule`).
pub fn setting<K: Kind>() -> &'static str {
    K::SPEC.used_by.map_or(K::SPEC.noun, |u| u.setting)
}

/// Business hours by name, parsed, or `None`.
pub async fn business_hours(
    db: &impl GenericClient,
    tenant: &str,
    name: &str,
) -> Result<Option<BusinessHours>> {
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

/// The parsed rule a service names: `None` when it names none; invalid input (an
/// administrator must fix the service) when the named rule does not exist.
fn named_rule<T>(
    service: &str,
    noun: &str,
    name: Option<&String>,
    spec: Option<Value>,
    parse: fn(&Value) -> Result<T>,
) -> Result<Option<T>> {
    match (name, spec) {
        (None, _) => Ok(None),
        (Some(name), None) => Err(Error::invalid(format!(
            "service {service} refers to {noun} {name}, which does not exist"
        ))),
        (Some(_), Some(spec)) => parse(&spec).map(Some).map_err(stored_invalid),
    }
}

/// The slot plan of a service (one query for both rules). A rule the service names but which
/// does not exist is invalid input naming it (an administrator must fix the service).
pub async fn plan(
    db: &impl GenericClient,
    tenant: &str,
    service: &str,
    settings: &ServiceSettings,
) -> Result<SlotPlan> {
    let (hours, rule) = (&settings.business_hours, &settings.capacity_rule);
    if hours.is_none() && rule.is_none() {
        return Ok(SlotPlan::new(settings, None, None));
    }
    let row = super::stmt::query_one(
        db,
        "SELECT (SELECT spec FROM business_hours WHERE tenant_id = $1 AND name = $2),
                    (SELECT spec FROM capacity_rules WHERE tenant_id = $1 AND name = $3)",
        &[&tenant, hours, rule],
    )
    .await?;
    let hours = named_rule(
        service,
        HoursKind::SPEC.noun,
        hours.as_ref(),
        row.get(0),
        BusinessHours::parse,
    )?;
    let rule = named_rule(
        service,
        CapacityKind::SPEC.noun,
        rule.as_ref(),
        row.get(1),
        CapacityRule::parse,
    )?;
    Ok(SlotPlan::new(settings, hours, rule))
}

/// Checks that the business hours and capacity rule a service names exist (a service cannot
/// refer to rules that are not there, docs/decisions.md#rule-references); the error names
/// the column.
pub async fn check_refs(
    db: &impl GenericClient,
    tenant: &str,
    settings: &ServiceSettings,
) -> Result<()> {
    require::<HoursKind>(db, tenant, settings.business_hours.as_ref()).await?;
    require::<CapacityKind>(db, tenant, settings.capacity_rule.as_ref()).await
}

async fn require<K: Kind>(
    db: &impl GenericClient,
    tenant: &str,
    name: Option<&String>,
) -> Result<()> {
    let Some(name) = name else { return Ok(()) };
    if versioned::existing::<K>(db, tenant, std::slice::from_ref(name))
        .await?
        .is_empty()
    {
        return Err(Error::invalid(format!(
            "setting {}: no {} named {name:?}; create it first",
            setting::<K>(),
            K::SPEC.noun
        )));
    }
    Ok(())
}
