//! Configuration pages: services (published settings, read-only), business hours
//! (read-only), capacity rules (the weekly grid, editable by roles with
//! [`Permission::EditCapacity`]) and number rules with a "test a number" box. Reads and writes
//! go through the same store and validation as the admin API (`shared::db::versioned`,
//! `admin::versioned::put_object`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::{
    Router,
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use shared::{
    db::{
        self,
        hours::{CapacityKind, HoursKind},
        number_rules::NumberRules,
        services::Services,
    },
    http::AppState,
    phone,
};

use super::{
    UiError, page,
    roles::Permission,
    session::{Posted, Session},
};
use crate::admin::versioned::put_object;

/// The configuration routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ges/config/services", get(services))
        .route("/ges/config/capacity", get(capacity))
        .route("/ges/config/capacity/{name}", post(save_capacity))
        .route("/ges/config/number-rules", get(number_rules))
        .route("/ges/config/number-rules/test", post(test_number))
}

/// A stored object shown as pretty JSON.
#[derive(Serialize)]
struct Shown {
    name: String,
    version: i32,
    updated_at: String,
    json: String,
}

fn shown<T: Serialize>(name: &str, version: i32, updated_at: &str, body: &T) -> Shown {
    Shown {
        name: name.to_string(),
        version,
        updated_at: updated_at.to_string(),
        json: serde_json::to_string_pretty(body).unwrap_or_default(),
    }
}

async fn services(State(state): State<AppState>, s: Session) -> Result<Response, UiError> {
    s.require(Permission::ViewConfig)?;
    let client = state.db.get().await?;
    let services = db::versioned::list::<Services>(&client, &s.tenant).await?;
    let hours = db::versioned::list::<HoursKind>(&client, &s.tenant).await?;
    let services: Vec<_> = services
        .iter()
        .map(|x| shown(&x.name, x.version, &x.updated_at, &x.body))
        .collect();
    let hours: Vec<_> = hours
        .iter()
        .map(|x| shown(&x.name, x.version, &x.updated_at, &x.body))
        .collect();
    page(
        "services.html",
        Some(&s),
        minijinja::context! { services => services, hours => hours },
    )
}

/// Day names of the weekly grid, index 0 = Monday (`"1"`).
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// A capacity rule as an editable grid: one row per slot start any day uses.
#[derive(Serialize)]
struct Grid {
    name: String,
    slot_minutes: u64,
    days: Vec<&'static str>,
    rows: Vec<GridRow>,
    overrides: usize,
}

#[derive(Serialize)]
struct GridRow {
    /// `HHMM`.
    time: String,
    /// `HH:MM`.
    label: String,
    cells: Vec<u64>,
}

fn grid(name: &str, spec: &Map<String, Value>) -> Grid {
    let weekly = spec.get("weekly").and_then(Value::as_object);
    let day = |d: usize| {
        weekly
            .and_then(|w| w.get(&(d + 1).to_string()))
            .and_then(Value::as_object)
    };
    let times: BTreeSet<String> = (0..7)
        .filter_map(day)
        .flat_map(|m| m.keys().cloned())
        .collect();
    let rows = times
        .into_iter()
        .map(|t| GridRow {
            label: format!("{}:{}", &t[..2.min(t.len())], &t[2.min(t.len())..]),
            cells: (0..7)
                .map(|d| {
                    day(d)
                        .and_then(|m| m.get(&t))
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                })
                .collect(),
            time: t,
        })
        .collect();
    Grid {
        name: name.to_string(),
        slot_minutes: spec
            .get("slot_minutes")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        days: DAYS.to_vec(),
        rows,
        overrides: spec
            .get("overrides")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
    }
}

async fn capacity(State(state): State<AppState>, s: Session) -> Result<Response, UiError> {
    s.require(Permission::ViewConfig)?;
    let client = state.db.get().await?;
    let rules = db::versioned::list::<CapacityKind>(&client, &s.tenant).await?;
    let grids: Vec<_> = rules.iter().map(|r| grid(&r.name, &r.body)).collect();
    page(
        "capacity.html",
        Some(&s),
        minijinja::context! { rules => grids, editable => s.may(Permission::EditCapacity) },
    )
}

/// Saves an edited grid: cells `c_<day 1-7>_<HHMM>` (empty = 0), plus an optional new row
/// `new_time` (`HH:MM` or `HHMM`); slot length and date overrides are kept as stored.
async fn save_capacity(
    State(state): State<AppState>,
    Path(name): Path<String>,
    posted: Posted<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = &posted.session;
    s.require(Permission::EditCapacity)?;
    let client = state.db.get().await?;
    let stored = db::versioned::get::<CapacityKind>(&client, &s.tenant, &name).await?;
    drop(client);
    let mut weekly: BTreeMap<String, Map<String, Value>> =
        (1..=7).map(|d| (d.to_string(), Map::new())).collect();
    let new_time = posted
        .form
        .get("new_time")
        .map(|t| t.replace(':', "").trim().to_string())
        .filter(|t| !t.is_empty());
    for (key, value) in &posted.form {
        let Some((day, time)) = key.strip_prefix("c_").and_then(|k| k.split_once('_')) else {
            continue;
        };
        let value = value.trim();
        let cap: u64 = if value.is_empty() {
            0
        } else {
            value.parse().map_err(|_| {
                UiError::BadRequest(format!("capacity {value:?} is not a whole number ≥ 0"))
            })?
        };
        let Some(cells) = weekly.get_mut(day) else {
            return Err(UiError::BadRequest(format!("no day {day:?} in a week")));
        };
        if cap > 0 {
            cells.insert(time.to_string(), json!(cap));
        }
    }
    if let Some(t) = new_time {
        for cells in weekly.values_mut() {
            cells.entry(t.clone()).or_insert(json!(0));
        }
    }
    let mut body = stored.body.clone();
    body.insert("weekly".into(), json!(weekly));
    put_object::<CapacityKind>(&state, &s.tenant, &name, Value::Object(body)).await?;
    Ok(Redirect::to("/ges/config/capacity").into_response())
}

async fn number_rules(State(state): State<AppState>, s: Session) -> Result<Response, UiError> {
    rules_page(&state, &s, None).await
}

async fn rules_page(
    state: &AppState,
    s: &Session,
    result: Option<Value>,
) -> Result<Response, UiError> {
    s.require(Permission::ViewConfig)?;
    let client = state.db.get().await?;
    let rules = db::versioned::list::<NumberRules>(&client, &s.tenant).await?;
    let rules: Vec<_> = rules
        .iter()
        .map(|x| shown(&x.name, x.version, &x.updated_at, &x.body))
        .collect();
    page(
        "number_rules.html",
        Some(s),
        minijinja::context! { rules => rules, result => result },
    )
}

#[derive(Deserialize)]
struct TestForm {
    number: String,
    #[serde(default)]
    rule: String,
}

/// The "test a number" box: checks a number against a rule (or none) as a create would.
async fn test_number(
    State(state): State<AppState>,
    posted: Posted<TestForm>,
) -> Result<Response, UiError> {
    let s = &posted.session;
    s.require(Permission::ViewConfig)?;
    let f = &posted.form;
    if f.number.len() > 64 {
        return Err(UiError::BadRequest(
            "a phone number has at most 64 characters".into(),
        ));
    }
    let compiled = if f.rule.is_empty() {
        None
    } else {
        let client = state.db.get().await?;
        let rule = db::versioned::get::<NumberRules>(&client, &s.tenant, &f.rule).await?;
        Some(rule.body.compile()?)
    };
    let result = match phone::check(&f.number, compiled.as_ref()) {
        Ok(c) => json!({"ok": true, "number": f.number, "rule": f.rule,
                        "e164": c.e164.map(|d| format!("+{d}"))}),
        Err(e) => json!({"ok": false, "number": f.number, "rule": f.rule, "error": e.to_string()}),
    };
    rules_page(&state, s, Some(result)).await
}
