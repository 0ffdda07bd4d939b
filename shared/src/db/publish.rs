//! Designer publish of the whole CALLBACK_SETTINGS table (docs/decisions.md#designer-publish).
//!
//! The table comes in our form (`name` plus snake_case columns) or in Designer's own (rows keyed
//! by Designer's column titles, as JSON or CSV: `model::designer`, docs/designer-publish.md);
//! both become the same [`Row`]s, validated by `ServiceSettings::parse`.
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
    model::{ServiceSettings, designer, valid_name},
};

/// Most rows one table may hold.
pub const MAX_ROWS: usize = designer::MAX_ROWS;

/// Most unknown Designer titles a report lists.
const MAX_UNKNOWN_LISTED: usize = 100;

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
    /// Designer titles no settings column knows: kept in the settings as sent, listed so a
    /// misspelt title is noticed (docs/designer-publish.md#unknown-columns). At most 100.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_columns: Vec<String>,
}

/// One validated row.
#[derive(Debug, Clone)]
pub struct Row {
    /// Its place in the table (`rows[index]` in errors; a skipped blank CSV row still counts).
    pub index: usize,
    /// The service name.
    pub name: String,
    /// Its settings.
    pub settings: ServiceSettings,
    /// The title each setting was sent under (Designer's form); a setting not listed is named
    /// by itself in errors.
    pub titles: BTreeMap<&'static str, String>,
}

impl Row {
    /// How errors name `setting`: the title it was sent under, else the setting itself.
    pub fn column<'a>(&'a self, setting: &'a str) -> &'a str {
        self.titles.get(setting).map_or(setting, String::as_str)
    }
}

/// A validated table: its rows in table order, and the Designer titles no column knows.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// The rows, in table order.
    pub rows: Vec<Row>,
    /// Titles no settings column knows, first seen first (at most 100).
    pub unknown_columns: Vec<String>,
}

/// Validates a JSON table: our form (an array of rows, each `name` plus snake_case columns) or
/// Designer's (rows keyed by Designer titles, or an object with `rows`); every row, or the
/// first row's error (docs/designer-publish.md#shapes).
pub fn parse_table(table: Value) -> Result<Table> {
    match table {
        Value::Array(rows) if rows.iter().any(designer::is_designer_row) => {
            if rows.len() > MAX_ROWS {
                return Err(designer::too_many_rows());
            }
            let rows = rows.into_iter().enumerate().map(|(i, r)| match r {
                Value::Object(o) => Ok((i, o)),
                _ => Err(Error::invalid(format!("rows[{i}]: must be a JSON object"))),
            });
            designer_table(rows.collect::<Result<Vec<_>>>()?)
        }
        Value::Array(rows) => own_table(rows),
        Value::Object(table) => designer_table(designer::object_rows(&table)?),
        _ => Err(Error::invalid(
            "the CALLBACK_SETTINGS table must be a JSON array of rows",
        )),
    }
}

/// Validates Designer's CSV export (a header row of titles, then one row per service).
pub fn parse_csv(body: &[u8]) -> Result<Table> {
    designer_table(designer::csv_rows(body)?)
}

/// Our own form: each row `name` plus the snake_case settings columns.
fn own_table(rows: Vec<Value>) -> Result<Table> {
    if rows.len() > MAX_ROWS {
        return Err(Error::invalid(format!(
            "the table has {} rows; at most {MAX_ROWS} are accepted",
            rows.len()
        )));
    }
    let mut seen = Seen::default();
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let name = row_name(i, &row)?;
        seen.check(i, &name, "name")?;
        let row = Row {
            index: i,
            settings: settings(i, &name, row, &BTreeMap::new())?,
            name,
            titles: BTreeMap::new(),
        };
        out.push(row);
    }
    Ok(Table {
        rows: out,
        unknown_columns: Vec::new(),
    })
}

/// Designer's form: rows keyed by title, mapped onto the settings columns, then validated as
/// ours are; errors name the titles as sent.
fn designer_table(rows: Vec<designer::TitledRow>) -> Result<Table> {
    let mut seen = Seen::default();
    let mut unknown: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows {
        let mapped = designer::map_row(i, &row)?;
        let key = mapped.titles.get("name").map_or("name", String::as_str);
        seen.check(i, &mapped.name, key)?;
        for title in mapped.unknown {
            if unknown.len() < MAX_UNKNOWN_LISTED && !unknown.contains(&title) {
                unknown.push(title);
            }
        }
        out.push(Row {
            index: i,
            settings: settings(i, &mapped.name, mapped.settings, &mapped.titles)?,
            name: mapped.name,
            titles: mapped.titles,
        });
    }
    Ok(Table {
        rows: out,
        unknown_columns: unknown,
    })
}

/// Names seen so far, to refuse a second row of one service.
#[derive(Default)]
struct Seen(BTreeMap<String, usize>);

impl Seen {
    fn check(&mut self, i: usize, name: &str, column: &str) -> Result<()> {
        match self.0.insert(name.to_string(), i) {
            Some(first) => Err(Error::invalid(format!(
                "rows[{i}] ({name:?}): column {column}: duplicates rows[{first}]"
            ))),
            None => Ok(()),
        }
    }
}

/// Validates the settings of row `i`; the error names the column by the title it was sent
/// under.
fn settings(
    i: usize,
    name: &str,
    row: Value,
    titles: &BTreeMap<&'static str, String>,
) -> Result<ServiceSettings> {
    ServiceSettings::parse(row).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.strip_prefix("setting ").unwrap_or(&msg);
        let msg = match msg.split_once(": ") {
            Some((cols, rest)) => {
                let named: Vec<&str> = cols
                    .split('/')
                    .map(|c| titles.get(c).map_or(c, String::as_str))
                    .collect();
                format!("{}: {rest}", named.join("/"))
            }
            None => msg.to_string(),
        };
        Error::invalid(format!("rows[{i}] ({name:?}): column {msg}"))
    })
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
    table: Table,
) -> Result<PublishReport> {
    let rows = table.rows;
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
    let mut report = apply(&tx, tenant, &rows, &current).await?;
    tx.commit().await?;
    report.unknown_columns = table.unknown_columns;
    Ok(report)
}

/// Every rule of kind `K` the rows name exists; else the first row naming a missing one.
async fn check_refs<K: Kind>(
    db: &impl GenericClient,
    tenant: &str,
    rows: &[Row],
    pick: fn(&ServiceSettings) -> Option<&String>,
) -> Result<()> {
    let wanted: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| pick(&r.settings).cloned())
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let wanted: Vec<String> = wanted.into_iter().collect();
    let found: BTreeSet<String> = versioned::existing::<K>(db, tenant, &wanted)
        .await?
        .into_iter()
        .collect();
    for row in rows {
        if let Some(r) = pick(&row.settings)
            && !found.contains(r)
        {
            return Err(Error::invalid(format!(
                "rows[{}] ({:?}): column {}: no {} named {r:?}; create it first",
                row.index,
                row.name,
                row.column(hours::setting::<K>()),
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
    for Row { name, settings, .. } in rows {
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
    let listed: BTreeSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
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
    use proptest::strategy::Strategy;
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
    fn designer_rows_become_the_same_rows_and_errors_use_titles() {
        let t = parse_table(json!([
            {"Virtual Queue": "a", "Slot Duration (minutes)": "30", "Comments": "x"},
            {"name": "b", "slot_capacity": 5}
        ]))
        .unwrap();
        assert_eq!(t.rows[0].settings.slot_minutes, 30);
        assert_eq!(t.rows[0].settings.extra["Comments"], "x");
        assert_eq!(t.rows[1].settings.slot_capacity, 5);
        assert_eq!(t.unknown_columns, ["Comments"]);
        let e = err(json!([{"VQ": "a", "Slot Duration (minutes)": "20"}]));
        assert_eq!(
            e,
            "rows[0] (\"a\"): column Slot Duration (minutes): must be 15, 30 or 60"
        );
        let e = err(json!([{"VQ": "a", "Throttle TTL 1 (seconds)": "0"}]));
        assert!(
            e.contains("column Throttle TTL 1 (seconds)/throttle_ttl_2: must be"),
            "{e}"
        );
        let e = err(json!([{"VQ": "a", "Slot Capacity": "-1"}]));
        assert!(
            e.starts_with("rows[0] (\"a\"): column Slot Capacity: invalid value"),
            "{e}"
        );
        let e = err(json!([{"VQ": "a"}, {"Virtual Queue": "a"}]));
        assert_eq!(
            e,
            "rows[1] (\"a\"): column Virtual Queue: duplicates rows[0]"
        );
        let e = err(json!([{"VQ": "a"}, 7]));
        assert_eq!(e, "rows[1]: must be a JSON object");
    }

    /// A table that validates is what it says: unique names, settings that parse back equal.
    fn sound(t: &Table) {
        let names: BTreeSet<&str> = t.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names.len(), t.rows.len(), "duplicate names passed");
        for r in &t.rows {
            let json = serde_json::to_value(&r.settings).unwrap();
            let back = ServiceSettings::parse(json.clone()).expect("stored settings re-parse");
            assert_eq!(serde_json::to_value(&back).unwrap(), json);
        }
    }

    fn refused_or_sound(r: Result<Table>) {
        match r {
            Ok(t) => sound(&t),
            Err(Error::Invalid(_)) => {}
            Err(e) => panic!("not a 400: {e}"),
        }
    }

    proptest::proptest! {
        /// Any bytes as CSV, and CSV-like text under real titles: a 400 or a sound table,
        /// never a panic.
        #[test]
        fn any_csv_is_refused_or_read_soundly(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            text in "[\"a-c0-9 ,;\r\n\u{feff}é/+-]{0,300}",
        ) {
            refused_or_sound(parse_csv(&bytes));
            let header = "Virtual Queue,Slot Capacity,Enabled,Call Direction,Priority,Notes\n";
            refused_or_sound(parse_csv(format!("{header}{text}").as_bytes()));
        }

        /// Designer rows of arbitrary scalar cells: a 400 or a sound table.
        #[test]
        fn any_designer_cells_are_refused_or_read_soundly(
            cells in proptest::collection::vec(
                (0usize..6, proptest::prop_oneof![
                    "[a-z0-9 +-.]{0,8}".prop_map(Value::from),
                    proptest::prelude::any::<i64>().prop_map(Value::from),
                    proptest::prelude::any::<f64>().prop_map(Value::from),
                    proptest::prelude::any::<bool>().prop_map(Value::from),
                    proptest::strategy::Just(Value::Null),
                ]),
                0..12,
            ),
        ) {
            let titles = ["VQ", "Slot Capacity", "Enabled", "Call Direction", "Priority", "Notes"];
            let mut rows = vec![serde_json::Map::new(), serde_json::Map::new()];
            for (n, (col, v)) in cells.into_iter().enumerate() {
                rows[n % 2].insert(titles[col].to_string(), v);
            }
            let table = Value::Array(rows.into_iter().map(Value::Object).collect());
            refused_or_sound(parse_table(json!({"rows": table})));
        }
    }

    #[test]
    fn good_table_keeps_order() {
        let rows = parse_table(json!([{"name":"b"},{"name":"a","slot_capacity":5}]))
            .unwrap()
            .rows;
        assert_eq!(rows[0].name, "b");
        assert_eq!(rows[1].settings.slot_capacity, 5);
    }
}
