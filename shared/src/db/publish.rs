//! Designer publish of the whole CALLBACK_SETTINGS table (docs/decisions.md#designer-publish).
//!
//! The table replaces the tenant's service set in one transaction: new rows are created,
//! changed rows are replaced (their version goes up), unchanged rows are left alone, and live
//! services missing from the table are disabled (`enabled = false`; their booked callbacks keep
//! running, and a later table that lists them enables them again). Every row is validated before
//! anything is written; the first bad row answers 400 naming its index, its name and the column,
//! and nothing changes.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::GenericClient;
use serde::Serialize;
use serde_json::Value;

use super::{
    hours::{self, CapacityKind, HoursKind},
    services::Services,
    versioned::{self, Kind},
};
use crate::{
    error::{Error, Result},
    model::{ServiceSettings, valid_name},
};

/// Most rows one table may hold.
pub const MAX_ROWS: usize = 10_000;

/// What a publish changed, by service name.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PublishReport {
    /// Rows that created a service.
    pub created: Vec<String>,
    /// Rows that changed a service (new version).
    pub updated: Vec<String>,
    /// Rows equal to the stored service.
    pub unchanged: Vec<String>,
    /// Live services absent from the table, now disabled.
    pub disabled: Vec<String>,
}

/// One validated row: the service name and its settings.
pub type Row = (String, ServiceSettings);

/// Validates every row of a table: `(name, settings)` in table order, or the first row's error.
pub fn parse_table(table: Value) -> Result<Vec<Row>> {
    let Value::Array(rows) = table else {
        return Err(Error::invalid(
            "the CALLBACK_SETTINGS table must be a JSON array of rows",
        ));
    };
    if rows.len() > MAX_ROWS {
        return Err(Error::invalid(format!(
            "the table has {} rows; at most {MAX_ROWS} are accepted",
            rows.len()
        )));
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let name = row_name(i, &row)?;
        if let Some(first) = seen.insert(name.clone(), i) {
            return Err(Error::invalid(format!(
                "rows[{i}] ({name:?}): column name: duplicates rows[{first}]"
            )));
        }
        let settings = ServiceSettings::parse(row).map_err(|e| {
            let msg = e.to_string();
            let msg = msg.strip_prefix("setting ").unwrap_or(&msg);
            Error::invalid(format!("rows[{i}] ({name:?}): column {msg}"))
        })?;
        out.push((name, settings));
    }
    Ok(out)
}

/// The service name of row `i`.
fn row_name(i: usize, row: &Value) -> Result<String> {
    match row.get("name") {
        Some(Value::String(n)) if valid_name(n) => Ok(n.clone()),
        Some(Value::String(n)) => Err(Error::invalid(format!(
            "rows[{i}] ({n:?}): column name: must be 1-255 printable characters without '/'"
        ))),
        _ if !row.is_object() => Err(Error::invalid(format!("rows[{i}]: must be a JSON object"))),
        _ => Err(Error::invalid(format!(
            "rows[{i}]: column name: is required (the service name)"
        ))),
    }
}

/// Applies a validated table in one transaction.
pub async fn publish(
    client: &mut deadpool_postgres::Client,
    tenant: &str,
    rows: Vec<Row>,
) -> Result<PublishReport> {
    let tx = client.transaction().await?;
    // Serialises publishes of one tenant without blocking inserts that reference the tenant.
    tx.query_opt(
        "SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
        &[&tenant],
    )
    .await?
    .ok_or_else(|| Error::not_found(format!("no tenant {tenant}")))?;
    // Rows cannot refer to rules that do not exist (docs/decisions.md#rule-references).
    check_refs::<HoursKind>(&tx, tenant, &rows, |s| s.business_hours.as_ref()).await?;
    check_refs::<CapacityKind>(&tx, tenant, &rows, |s| s.capacity_rule.as_ref()).await?;
    let current = current(&tx, tenant).await?;
    let report = apply(&tx, tenant, &rows, &current).await?;
    tx.commit().await?;
    Ok(report)
}

/// Every rule of kind `K` the rows name exists; else the first row naming a missing one.
async fn check_refs<K: Kind>(
    db: &impl GenericClient,
    tenant: &str,
    rows: &[Row],
    pick: fn(&ServiceSettings) -> Option<&String>,
) -> Result<()> {
    let wanted: BTreeSet<String> = rows.iter().filter_map(|(_, s)| pick(s).cloned()).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let wanted: Vec<String> = wanted.into_iter().collect();
    let found: BTreeSet<String> = versioned::existing::<K>(db, tenant, &wanted)
        .await?
        .into_iter()
        .collect();
    for (i, (name, s)) in rows.iter().enumerate() {
        if let Some(r) = pick(s)
            && !found.contains(r)
        {
            return Err(Error::invalid(format!(
                "rows[{i}] ({name:?}): column {}: no {} named {r:?}; create it first",
                hours::setting::<K>(),
                K::SPEC.noun
            )));
        }
    }
    Ok(())
}

/// The tenant's services: name → (stored settings, live).
async fn current(db: &impl GenericClient, tenant: &str) -> Result<BTreeMap<String, (Value, bool)>> {
    Ok(db
        .query(
            "SELECT name, settings, deleted_at IS NULL FROM services WHERE tenant_id = $1",
            &[&tenant],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// Creates or replaces every row that differs from the live service of its name, then
/// disables the live, enabled services the table does not list.
async fn apply(
    db: &impl GenericClient,
    tenant: &str,
    rows: &[Row],
    current: &BTreeMap<String, (Value, bool)>,
) -> Result<PublishReport> {
    let mut report = PublishReport::default();
    for (name, settings) in rows {
        let json = serde_json::to_value(settings).map_err(Error::internal)?;
        match current.get(name) {
            Some((stored, true)) if *stored == json => report.unchanged.push(name.clone()),
            _ => {
                let (_, created) = versioned::put::<Services>(db, tenant, name, settings).await?;
                let list = if created {
                    &mut report.created
                } else {
                    &mut report.updated
                };
                list.push(name.clone());
            }
        }
    }
    let listed: BTreeSet<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    for (name, (stored, live)) in current {
        if !live || listed.contains(name.as_str()) {
            continue;
        }
        let mut settings: ServiceSettings =
            serde_json::from_value(stored.clone()).map_err(Error::internal)?;
        if settings.enabled {
            settings.enabled = false;
            versioned::put::<Services>(db, tenant, name, &settings).await?;
            report.disabled.push(name.clone());
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        parse_table(v).unwrap_err().to_string()
    }

    #[test]
    fn bad_rows_are_named_with_index_name_and_column() {
        let e = err(json!([{"name":"a"},{"name":"b","slot_minutes":20}]));
        assert!(e.starts_with("rows[1] (\"b\"): column slot_minutes"), "{e}");
        let e = err(json!([{"name":"a","max_attempts":"x"}]));
        assert!(e.starts_with("rows[0] (\"a\"): column max_attempts"), "{e}");
        assert!(err(json!([{"slot_minutes":15}])).starts_with("rows[0]: column name"));
        assert!(err(json!([{"name":"a"},{"name":"a"}])).contains("duplicates rows[0]"));
        assert!(err(json!([1])).starts_with("rows[0]: must be a JSON object"));
        assert!(err(json!({"name":"a"})).contains("JSON array"));
    }

    #[test]
    fn good_table_keeps_order() {
        let rows = parse_table(json!([{"name":"b"},{"name":"a","slot_capacity":5}])).unwrap();
        assert_eq!(rows[0].0, "b");
        assert_eq!(rows[1].1.slot_capacity, 5);
    }
}
