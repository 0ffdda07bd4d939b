//! The CALLBACK_SETTINGS table in Designer's own form (docs/designer-publish.md): columns named
//! by their Designer titles, cells as Designer exports them (text: `"true"`, `"30"`, `""`).
//!
//! [`map_row`] turns one such row into the snake_case settings object that
//! [`ServiceSettings::parse`](super::ServiceSettings::parse) validates, so a Designer table goes
//! through the same validation and the same one-transaction publish as our own form. Titles
//! match whatever their case, spacing and punctuation ("Callback TTL (seconds)" and
//! `callback_ttl_seconds` are one title); every settings column also answers to its own
//! snake_case name. [`csv_rows`] and [`object_rows`] read the CSV export and the JSON object
//! form into rows keyed by title.

use std::{
    collections::{BTreeMap, HashMap},
    sync::LazyLock,
};

use serde_json::{Map, Value};

use crate::error::Error;

/// Longest cell value, in characters (docs/designer-publish.md#limits).
pub const MAX_CELL_CHARS: usize = 1024;
/// Longest column title, in characters.
pub const MAX_TITLE_CHARS: usize = 256;
/// Most data rows a table may hold (the same bound as our own form).
pub const MAX_ROWS: usize = 10_000;

/// How the cells of a column are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The row key: the service (virtual queue) name.
    Key,
    /// `true`/`false` (also yes/no, y/n, 1/0, on/off).
    Flag,
    /// A whole number.
    Whole,
    /// Text (a number is taken as its digits).
    Text,
    /// `USERTERMINATED` or `USERORIGINATED` (spacing and case aside).
    Direction,
    /// A flag or `strict`.
    InQueue,
}

/// One settings column: the setting it fills, how its cells are read, and the Designer titles
/// it answers to (docs/designer-publish.md#columns says which are confirmed by public text).
struct Column {
    setting: &'static str,
    kind: Kind,
    titles: &'static [&'static str],
}

const fn col(setting: &'static str, kind: Kind, titles: &'static [&'static str]) -> Column {
    Column {
        setting,
        kind,
        titles,
    }
}

use Kind::{Direction, Flag, InQueue, Key, Text, Whole};

/// Every column Engage maps, with its titles; the key first.
const COLUMNS: &[Column] = &[
    col(
        "name",
        Key,
        &[
            "Callback Virtual Queue",
            "Virtual Queue",
            "Callback VQ",
            "VQ",
            "Service Name",
            "Service",
        ],
    ),
    col("callback_application", Text, &["Callback Application"]),
    col("application_stream", Text, &["Application Stream"]),
    col(
        "ewt_statistic",
        Text,
        &["EWT Statistic", "Wait Time Statistic"],
    ),
    col("route_point", Text, &["Routing Point"]),
    col("dial_prefix", Text, &["Dial Prefix"]),
    col("display_number", Text, &["Call Display Number"]),
    col("display_name", Text, &["Callback Display Name"]),
    col("ttl_seconds", Whole, &["Callback TTL (seconds)"]),
    col(
        "push_threshold_minutes",
        Whole,
        &["Push Notification Threshold (minutes)"],
    ),
    col("enabled", Flag, &["Enabled", "Service Enabled"]),
    col(
        "immediate_enabled",
        Flag,
        &["Immediate Callback Enabled", "Enable Immediate Callback"],
    ),
    col(
        "scheduled_enabled",
        Flag,
        &["Scheduled Callback Enabled", "Enable Scheduled Callback"],
    ),
    col("call_direction", Direction, &["Call Direction"]),
    col("business_hours", Text, &["Business Hours"]),
    col("capacity_rule", Text, &["Capacity Rule"]),
    col(
        "slot_minutes",
        Whole,
        &["Slot Duration (minutes)", "Time Slot (minutes)"],
    ),
    col(
        "slot_capacity",
        Whole,
        &["Slot Capacity", "Max Callbacks per Slot"],
    ),
    col("max_days_ahead", Whole, &["Max Days Ahead"]),
    col(
        "reject_out_of_hours",
        Flag,
        &["Reject Out of Office Hours", "Reject Out of Hours"],
    ),
    col("lead_time_seconds", Whole, &["Lead Time (seconds)"]),
    col(
        "max_attempts",
        Whole,
        &["Max Attempts", "Max Dial Attempts"],
    ),
    col("retry_delay_seconds", Whole, &["Retry Delay (seconds)"]),
    col("survey_rp", Text, &["Survey Routing Point", "Survey RP"]),
    col("priority", Whole, &["Priority", "Initial Priority"]),
    col("priority_increment", Whole, &["Priority Increment"]),
    col(
        "priority_interval_seconds",
        Whole,
        &["Priority Interval (seconds)"],
    ),
    col("priority_limit", Whole, &["Priority Limit", "Max Priority"]),
    col("language", Text, &["Language"]),
    col("captcha_required", Flag, &["CAPTCHA Required"]),
    col(
        "number_rule",
        Text,
        &["Number Validation Rule", "Number Rule"],
    ),
    col(
        "throttle_per_service_1",
        Whole,
        &["Throttle Callbacks per Service 1"],
    ),
    col("throttle_ttl_1", Whole, &["Throttle TTL 1 (seconds)"]),
    col(
        "throttle_per_service_2",
        Whole,
        &["Throttle Callbacks per Service 2"],
    ),
    col("throttle_ttl_2", Whole, &["Throttle TTL 2 (seconds)"]),
    col(
        "throttle_per_number_24h",
        Whole,
        &["Throttle Requests per Number (24h)"],
    ),
    col(
        "in_queue_checking",
        InQueue,
        &["In Queue Checking", "Enable In Queue Checking"],
    ),
    col("max_queued", Whole, &["Max Queued Callbacks"]),
    col(
        "dispatch_rate_per_second",
        Whole,
        &["Dispatch Rate (per second)"],
    ),
];

/// A title reduced to what matching compares: its letters and digits, lower case.
pub fn normalize(title: &str) -> String {
    title
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Normalized title (and snake_case setting name) → column.
static BY_TITLE: LazyLock<HashMap<String, &'static Column>> = LazyLock::new(|| {
    COLUMNS
        .iter()
        .flat_map(|c| {
            let own = std::iter::once(normalize(c.setting));
            own.chain(c.titles.iter().map(|t| normalize(t)))
                .map(move |t| (t, c))
        })
        .collect()
});

fn column(title: &str) -> Option<&'static Column> {
    BY_TITLE.get(&normalize(title)).copied()
}

/// Whether a row of a JSON array is in Designer's form: it has a column that is a Designer
/// title and not one of our own column names (our form is `name` plus snake_case settings).
pub fn is_designer_row(row: &Value) -> bool {
    let Some(obj) = row.as_object() else {
        return false;
    };
    obj.keys()
        .any(|k| column(k).is_some() && !COLUMNS.iter().any(|c| c.setting == k))
}

/// One Designer row mapped onto the settings columns.
#[derive(Debug, Clone)]
pub struct MappedRow {
    /// The service name (the row key).
    pub name: String,
    /// The snake_case settings object, for `ServiceSettings::parse`; columns no title names
    /// are kept under their own title.
    pub settings: Value,
    /// The title each setting was sent under (`name` included), for error messages.
    pub titles: BTreeMap<&'static str, String>,
    /// Titles no column knows (kept in the settings as sent).
    pub unknown: Vec<String>,
}

/// Maps row `i` (its cells keyed by title) onto the settings columns, coercing each cell to its
/// column's type; errors name the row, its key and the column's title as sent.
pub fn map_row(i: usize, row: &Map<String, Value>) -> Result<MappedRow, Error> {
    let mut known: Vec<(&'static Column, &str, &Value)> = Vec::new();
    let mut titles: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (title, value) in row {
        if title.chars().count() > MAX_TITLE_CHARS {
            return Err(Error::invalid(format!(
                "rows[{i}]: a column title is over {MAX_TITLE_CHARS} characters"
            )));
        }
        match column(title) {
            Some(c) => {
                if let Some(first) = titles.insert(c.setting, title.clone()) {
                    return Err(Error::invalid(format!(
                        "rows[{i}]: columns {first:?} and {title:?} are the same column ({})",
                        c.setting
                    )));
                }
                known.push((c, title, value));
            }
            None => unknown.push((title.as_str(), value)),
        }
    }
    let name = row_key(i, &known)?;
    let at = |title: &str, msg: String| {
        Error::invalid(format!("rows[{i}] ({name:?}): column {title}: {msg}"))
    };
    let mut settings = Map::new();
    for (c, title, value) in known.iter().filter(|(c, ..)| c.kind != Key) {
        if let Some(v) = cell(c.kind, value).map_err(|m| at(title, m))? {
            settings.insert(c.setting.to_string(), v);
        }
    }
    let mut kept = Vec::new();
    for (title, value) in unknown {
        if let Some(v) = cell(Text, value).map_err(|m| at(title, m))? {
            settings.insert(title.to_string(), v);
        }
        kept.push(title.to_string());
    }
    Ok(MappedRow {
        name,
        settings: Value::Object(settings),
        titles,
        unknown: kept,
    })
}

/// The service name of a row, from its key column.
fn row_key(i: usize, known: &[(&'static Column, &str, &Value)]) -> Result<String, Error> {
    let Some((_, title, value)) = known.iter().find(|(c, ..)| c.kind == Key) else {
        return Err(Error::invalid(format!(
            "rows[{i}]: no service name: a column titled \"Virtual Queue\" (or one of {}) is \
             required",
            key_titles()
        )));
    };
    let bad = |m: &str| Error::invalid(format!("rows[{i}]: column {title}: {m}"));
    match cell(Text, value).map_err(|m| bad(&m))? {
        Some(Value::String(n)) if super::valid_name(&n) => Ok(n),
        Some(_) => Err(bad(
            "must be 1-255 printable characters without '/' (the service name)",
        )),
        None => Err(bad("is required (the service name)")),
    }
}

fn key_titles() -> String {
    let mut all: Vec<&str> = COLUMNS[0].titles.to_vec();
    all.push("name");
    all.join(", ")
}

/// One cell read as `kind`: `None` when empty (the column's default applies).
fn cell(kind: Kind, value: &Value) -> Result<Option<Value>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                return Ok(None);
            }
            if t.chars().count() > MAX_CELL_CHARS {
                return Err(format!("at most {MAX_CELL_CHARS} characters"));
            }
            text_cell(kind, t).map(Some)
        }
        Value::Bool(b) => match kind {
            Flag | InQueue => Ok(Some(Value::Bool(*b))),
            _ => Err(format!("expected {}, got a boolean", kind_noun(kind))),
        },
        Value::Number(n) => match kind {
            Whole => whole_number(n).map(|w| Some(Value::from(w))),
            Text | Key => Ok(Some(Value::String(n.to_string()))),
            _ => Err(format!("expected {}, got a number", kind_noun(kind))),
        },
        Value::Array(_) | Value::Object(_) => Err(format!(
            "expected {}, got a JSON {}",
            kind_noun(kind),
            if value.is_array() { "array" } else { "object" }
        )),
    }
}

/// A non-empty, trimmed text cell read as `kind`.
fn text_cell(kind: Kind, t: &str) -> Result<Value, String> {
    let shown = || shorten(t);
    match kind {
        Key | Text => Ok(Value::String(t.to_string())),
        Flag => flag(t)
            .map(Value::Bool)
            .ok_or_else(|| format!("expected true or false, got {}", shown())),
        Whole => t
            .strip_prefix('+')
            .unwrap_or(t)
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("expected a whole number, got {}", shown())),
        Direction => match normalize(t).as_str() {
            "userterminated" => Ok(Value::from("USERTERMINATED")),
            "useroriginated" => Ok(Value::from("USERORIGINATED")),
            _ => Err(format!(
                "expected USERTERMINATED or USERORIGINATED, got {}",
                shown()
            )),
        },
        InQueue if t.eq_ignore_ascii_case("strict") => Ok(Value::from("strict")),
        InQueue => flag(t)
            .map(Value::Bool)
            .ok_or_else(|| format!("expected true, false or strict, got {}", shown())),
    }
}

fn flag(t: &str) -> Option<bool> {
    match t.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" | "on" => Some(true),
        "false" | "no" | "n" | "0" | "off" => Some(false),
        _ => None,
    }
}

/// A JSON number that is whole (`30` or `30.0`).
fn whole_number(n: &serde_json::Number) -> Result<i64, String> {
    if let Some(w) = n.as_i64() {
        return Ok(w);
    }
    match n.as_f64() {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "checked whole and in range"
        )]
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(format!("expected a whole number, got {n}")),
    }
}

fn kind_noun(kind: Kind) -> &'static str {
    match kind {
        Key | Text => "text",
        Flag => "true or false",
        Whole => "a whole number",
        Direction => "USERTERMINATED or USERORIGINATED",
        InQueue => "true, false or strict",
    }
}

/// A value quoted for an error message, cut to 40 characters.
fn shorten(t: &str) -> String {
    let cut: String = t.chars().take(40).collect();
    if cut.len() < t.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// A data row keyed by title, with its index in the table (blank rows of a CSV are skipped
/// but still counted, so `rows[i]` is the i-th row after the header).
pub type TitledRow = (usize, Map<String, Value>);

/// Rows of cells under a header: each cell keyed by its column's title. A row longer than the
/// header is refused; a shorter one has its missing cells empty; a row of empty cells is
/// skipped. Titles are trimmed; an untitled column must stay empty.
fn zip_rows(header: &[String], rows: Vec<Vec<Value>>) -> Result<Vec<TitledRow>, Error> {
    check_header(header)?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, cells) in rows.into_iter().enumerate() {
        if cells.len() > header.len() {
            return Err(Error::invalid(format!(
                "rows[{i}]: {} values, but the header has {} columns",
                cells.len(),
                header.len()
            )));
        }
        if cells.iter().all(is_blank) {
            continue;
        }
        let mut row = Map::new();
        for (n, (title, v)) in header.iter().zip(cells).enumerate() {
            if title.is_empty() {
                if !is_blank(&v) {
                    return Err(Error::invalid(format!(
                        "rows[{i}]: column {} has a value but no title",
                        n + 1
                    )));
                }
                continue;
            }
            row.insert(title.clone(), v);
        }
        out.push((i, row));
    }
    Ok(out)
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// A header names each column once (as matching sees titles).
fn check_header(header: &[String]) -> Result<(), Error> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for title in header.iter().filter(|t| !t.is_empty()) {
        if title.chars().count() > MAX_TITLE_CHARS {
            return Err(Error::invalid(format!(
                "header: a column title is over {MAX_TITLE_CHARS} characters"
            )));
        }
        let key = column(title).map_or_else(|| normalize(title), |c| c.setting.to_string());
        if let Some(first) = seen.insert(key, title) {
            return Err(Error::invalid(format!(
                "header: columns {first:?} and {title:?} are the same column"
            )));
        }
    }
    Ok(())
}

/// Reads a CSV export: a header row of titles, then one row per service. UTF-8 (a leading
/// byte-order mark is skipped); quoted cells may hold commas, quotes (doubled) and line breaks,
/// and must be closed;
/// lines end in LF or CRLF. The delimiter is `,`, or `;` or a tab when the header line holds
/// none of the others.
pub fn csv_rows(body: &[u8]) -> Result<Vec<TitledRow>, Error> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    // A quoted cell left open would swallow the rest of the table into one cell.
    if body.iter().filter(|&&b| b == b'"').count() % 2 == 1 {
        return Err(Error::invalid(
            "the CSV table has an unterminated quoted cell (an odd number of '\"' characters)",
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter(body))
        .from_reader(body);
    let mut records = reader.records();
    let header: Vec<String> = match records.next() {
        None => {
            return Err(Error::invalid(
                "the CSV table is empty: a header row of column titles is required",
            ));
        }
        Some(r) => r
            .map_err(csv_error)?
            .iter()
            .map(|t| t.trim().to_string())
            .collect(),
    };
    let mut rows = Vec::new();
    for record in records {
        if rows.len() == MAX_ROWS {
            return Err(too_many_rows());
        }
        let record = record.map_err(csv_error)?;
        rows.push(record.iter().map(Value::from).collect());
    }
    zip_rows(&header, rows)
}

/// The delimiter of a CSV body: `,` unless its first line has no comma but a `;` or a tab.
fn delimiter(body: &[u8]) -> u8 {
    let first = body.split(|&b| b == b'\n').next().unwrap_or_default();
    [b',', b';', b'\t']
        .into_iter()
        .find(|d| first.contains(d))
        .unwrap_or(b',')
}

fn csv_error(e: csv::Error) -> Error {
    let line = e.position().map(|p| format!(" (line {})", p.line()));
    let what = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "the CSV table is not UTF-8 text".to_string(),
        _ => format!("the CSV table could not be read: {e}"),
    };
    Error::invalid(format!("{what}{}", line.unwrap_or_default()))
}

/// The error of a table over [`MAX_ROWS`].
pub fn too_many_rows() -> Error {
    Error::invalid(format!(
        "the table has over {MAX_ROWS} rows; at most {MAX_ROWS} are accepted"
    ))
}

/// Reads the JSON object form: `{"rows": [...]}`, each row an object keyed by title, or
/// `{"columns": [titles], "rows": [[cells], ...]}`. A column may be given as its title or as
/// an object with a `title` (or `name`, `label`). A `name` (or `table`) other than
/// CALLBACK_SETTINGS is refused; other members are ignored.
pub fn object_rows(table: &Map<String, Value>) -> Result<Vec<TitledRow>, Error> {
    let Some(Value::Array(rows)) = table.get("rows") else {
        return Err(Error::invalid(
            "the CALLBACK_SETTINGS table must be a JSON array of rows, or an object with a \
             \"rows\" array",
        ));
    };
    for key in ["name", "table"] {
        if let Some(Value::String(n)) = table.get(key)
            && normalize(n) != "callbacksettings"
        {
            return Err(Error::invalid(format!(
                "this is the table {}; only CALLBACK_SETTINGS is published here",
                shorten(n)
            )));
        }
    }
    if rows.len() > MAX_ROWS {
        return Err(too_many_rows());
    }
    if rows.iter().all(Value::is_object) {
        return Ok(rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r.as_object()?.clone())))
            .collect());
    }
    let header = column_titles(table.get("columns"))?;
    let mut cells = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        match row {
            Value::Array(c) => cells.push(c.clone()),
            _ => {
                return Err(Error::invalid(format!(
                    "rows[{i}]: must be an object keyed by column title, or an array of cells"
                )));
            }
        }
    }
    zip_rows(&header, cells)
}

/// The titles of a `columns` array.
fn column_titles(columns: Option<&Value>) -> Result<Vec<String>, Error> {
    let Some(Value::Array(columns)) = columns else {
        return Err(Error::invalid(
            "rows given as arrays of cells need a \"columns\" array of titles",
        ));
    };
    columns
        .iter()
        .enumerate()
        .map(|(n, c)| {
            let title = match c {
                Value::String(t) => Some(t.as_str()),
                Value::Object(o) => ["title", "name", "label"]
                    .into_iter()
                    .find_map(|k| o.get(k)?.as_str()),
                _ => None,
            };
            title.map(|t| t.trim().to_string()).ok_or_else(|| {
                Error::invalid(format!(
                    "columns[{n}]: must be a title, or an object with a \"title\""
                ))
            })
        })
        .collect()
}

/// Every title this module knows, for the docs check.
#[cfg(test)]
fn all_titles() -> impl Iterator<Item = (&'static str, &'static str)> {
    COLUMNS
        .iter()
        .flat_map(|c| c.titles.iter().map(move |t| (c.setting, *t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn titles_never_collide_and_cover_every_setting() {
        let mut seen: HashMap<String, &str> = HashMap::new();
        for c in COLUMNS {
            for t in std::iter::once(c.setting).chain(c.titles.iter().copied()) {
                if let Some(other) = seen.insert(normalize(t), c.setting) {
                    assert!(other == c.setting, "{t} is both {other} and {}", c.setting);
                }
            }
        }
        let defaults = serde_json::to_value(super::super::ServiceSettings::default()).unwrap();
        for setting in defaults.as_object().unwrap().keys() {
            assert!(
                COLUMNS.iter().any(|c| c.setting == setting),
                "no Designer column for {setting}"
            );
        }
    }

    #[test]
    fn every_title_is_documented() {
        let doc = include_str!("../../../docs/designer-publish.md");
        for (setting, title) in all_titles() {
            assert!(
                doc.contains(&format!("`{title}`")),
                "docs/designer-publish.md does not list {title} ({setting})"
            );
        }
    }

    #[test]
    fn cells_are_coerced_by_column() {
        let m = map_row(
            0,
            &row(json!({
                "Virtual Queue": " sales ", "callback ttl seconds": "30",
                "Immediate Callback Enabled": "FALSE", "Call Direction": "User Originated",
                "Routing Point": 5000, "Dial Prefix": "", "in_queue_checking": "Strict",
                "Comments": "kept", "Priority": 3.0
            })),
        )
        .unwrap();
        assert_eq!(m.name, "sales");
        assert_eq!(
            m.settings,
            json!({"ttl_seconds": 30, "immediate_enabled": false,
                   "call_direction": "USERORIGINATED", "route_point": "5000",
                   "in_queue_checking": "strict", "Comments": "kept", "priority": 3})
        );
        assert_eq!(m.unknown, ["Comments"]);
        assert_eq!(m.titles["ttl_seconds"], "callback ttl seconds");
    }

    #[test]
    fn bad_cells_name_row_key_and_title() {
        let err = |v: Value| map_row(2, &row(v)).unwrap_err().to_string();
        let e = err(json!({"VQ": "a", "Callback TTL (seconds)": "soon"}));
        assert_eq!(
            e,
            "rows[2] (\"a\"): column Callback TTL (seconds): expected a whole number, got \"soon\""
        );
        let e = err(json!({"VQ": "a", "Enabled": "maybe"}));
        assert!(e.contains("column Enabled: expected true or false"), "{e}");
        let e = err(json!({"VQ": "a", "Dial Prefix": ["9"]}));
        assert!(e.contains("got a JSON array"), "{e}");
        let e = err(json!({"VQ": "a", "Priority": true}));
        assert!(e.contains("column Priority: expected a whole number, got a boolean"));
        let e = err(json!({"Dial Prefix": "9"}));
        assert!(e.starts_with("rows[2]: no service name"), "{e}");
        let e = err(json!({"VQ": "a", "vq": "b"}));
        assert!(e.contains("are the same column (name)"), "{e}");
        let e = err(json!({"VQ": "a", "Comments": "x".repeat(MAX_CELL_CHARS + 1)}));
        assert!(
            e.contains("column Comments: at most 1024 characters"),
            "{e}"
        );
        let e = err(json!({"VQ": "a/b"}));
        assert!(e.starts_with("rows[2]: column VQ: must be 1-255"), "{e}");
    }

    #[test]
    fn designer_rows_are_told_from_ours() {
        assert!(!is_designer_row(
            &json!({"name": "a", "slot_minutes": 15, "Custom": 1})
        ));
        assert!(is_designer_row(&json!({"name": "a", "Dial Prefix": "9"})));
        assert!(is_designer_row(&json!({"Virtual Queue": "a"})));
        assert!(!is_designer_row(&json!(1)));
    }

    #[test]
    fn csv_with_bom_crlf_quotes_and_blank_rows() {
        let body = "\u{feff}Virtual Queue,Callback Display Name,Comments\r\n\
                    sales,\"Acme, Inc. \"\"West\"\"\",\"two\r\nlines\"\r\n\
                    ,,\r\n\
                    support,Help\r\n";
        let rows = csv_rows(body.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1["Callback Display Name"], "Acme, Inc. \"West\"");
        assert_eq!(rows[0].1["Comments"], "two\r\nlines");
        assert_eq!(rows[1].0, 2, "the blank row still counts");
        assert!(!rows[1].1.contains_key("Comments"), "short row");
        let semi = csv_rows(b"VQ;Dial Prefix\na;9\n").unwrap();
        assert_eq!(semi[0].1["Dial Prefix"], "9");
    }

    #[test]
    fn bad_csv_is_refused_clearly() {
        let err = |b: &[u8]| csv_rows(b).unwrap_err().to_string();
        assert!(err(b"").contains("a header row"));
        assert!(err(b"VQ,vq\na,b\n").contains("are the same column"));
        assert!(err(b"VQ\na,b\n").contains("rows[0]: 2 values, but the header has 1"));
        assert!(err(b"VQ,\na,x\n").contains("column 2 has a value but no title"));
        assert!(err(b"VQ\n\xff\xfe\n").contains("not UTF-8"));
        assert!(err(b"VQ,Dial Prefix\n\"a,9\nb,8\n").contains("unterminated quoted cell"));
    }

    #[test]
    fn object_form_with_columns_and_cell_arrays() {
        let t = json!({"name": "CALLBACK_SETTINGS",
                       "columns": ["Virtual Queue", {"title": "Dial Prefix"}],
                       "rows": [["a", "9"], ["b"]]});
        let rows = object_rows(t.as_object().unwrap()).unwrap();
        assert_eq!(rows[0].1["Dial Prefix"], "9");
        assert_eq!(rows[1].1["Virtual Queue"], "b");
        let other = json!({"name": "NUMBER_VALIDATION_CONFIGURATIONS", "rows": []});
        let e = object_rows(other.as_object().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("only CALLBACK_SETTINGS"), "{e}");
        let e = object_rows(json!({"rows": [[1]]}).as_object().unwrap()).unwrap_err();
        assert!(e.to_string().contains("need a \"columns\" array"));
    }
}
