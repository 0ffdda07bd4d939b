//! Number rules (per tenant, referenced by services through `number_rule`).

use deadpool_postgres::GenericClient;
use serde::Serialize;
use serde_json::Value;

use crate::{error::Error, model::callback::wire_time, phone::NumberRule};

/// A number rule as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRule {
    /// Rule name.
    pub name: String,
    /// The rule.
    pub rule: NumberRule,
    /// Change counter.
    pub version: i32,
    /// Last change.
    pub updated_at: String,
}

fn from_row(row: &tokio_postgres::Row) -> Result<StoredRule, Error> {
    let rule: Value = row.get("rule");
    Ok(StoredRule {
        name: row.get("name"),
        rule: serde_json::from_value(rule).map_err(Error::internal)?,
        version: row.get("version"),
        updated_at: wire_time(row.get("updated_at")),
    })
}

/// Creates or replaces a rule (already validated); returns it and whether it is new.
/// 404 for an unknown tenant.
pub async fn put(
    db: &impl GenericClient,
    tenant: &str,
    name: &str,
    rule: &NumberRule,
) -> Result<(StoredRule, bool), Error> {
    let json = serde_json::to_value(rule).map_err(Error::internal)?;
    let row = db
        .query_opt(
            "INSERT INTO number_rules (tenant_id, name, rule)
             SELECT id, $2, $3 FROM tenants WHERE id = $1
             ON CONFLICT (tenant_id, name) DO UPDATE
                SET rule = EXCLUDED.rule, version = number_rules.version + 1, updated_at = now()
             RETURNING name, rule, version, updated_at, (xmax = 0) AS created",
            &[&tenant, &name, &json],
        )
        .await?
        .ok_or_else(|| Error::not_found(format!("no tenant {tenant}")))?;
    Ok((from_row(&row)?, row.get("created")))
}

/// One rule, or `None`.
pub async fn find(
    db: &impl GenericClient,
    tenant: &str,
    name: &str,
) -> Result<Option<StoredRule>, Error> {
    db.query_opt(
        "SELECT name, rule, version, updated_at FROM number_rules
         WHERE tenant_id = $1 AND name = $2",
        &[&tenant, &name],
    )
    .await?
    .map(|r| from_row(&r))
    .transpose()
}

/// The tenant's rules, by name.
pub async fn list(db: &impl GenericClient, tenant: &str) -> Result<Vec<StoredRule>, Error> {
    let rows = db
        .query(
            "SELECT name, rule, version, updated_at FROM number_rules
             WHERE tenant_id = $1 ORDER BY name",
            &[&tenant],
        )
        .await?;
    rows.iter().map(from_row).collect()
}

/// Deletes a rule; 409 while live services still reference it, 404 when there is none.
pub async fn delete(db: &impl GenericClient, tenant: &str, name: &str) -> Result<(), Error> {
    let users: Vec<String> = db
        .query(
            "SELECT name FROM services
             WHERE tenant_id = $1 AND deleted_at IS NULL AND settings->>'number_rule' = $2
             ORDER BY name LIMIT 10",
            &[&tenant, &name],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !users.is_empty() {
        return Err(Error::conflict(format!(
            "number rule {name} is used by service(s) {}; assign another rule to them first",
            users.join(", ")
        )));
    }
    let n = db
        .execute(
            "DELETE FROM number_rules WHERE tenant_id = $1 AND name = $2",
            &[&tenant, &name],
        )
        .await?;
    if n == 0 {
        return Err(Error::not_found(format!(
            "no number rule {name} for tenant {tenant}"
        )));
    }
    Ok(())
}
