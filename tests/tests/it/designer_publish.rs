//! The CALLBACK_SETTINGS publish in Designer's own form (docs/designer-publish.md): rows keyed
//! by Designer's column titles with text cells, as JSON or CSV, booked against through v3 and
//! handed to the voice platform with what the table says; one bad row changes nothing; and the
//! attacks (duplicates, 10k rows, huge cells, JSON types, CSV quoting) answer 400 or parse
//! correctly, never 500.

use std::time::{Duration, Instant};

use harness::{ADMIN_TOKEN, Engage, TestEnv, WorkerProc, next_phone, send};
use jiff::{Timestamp, ToSpan, civil::Time, tz::TimeZone};
use serde_json::{Value, json};

const PATH: &str = "/ges/v1/tenants/acme/callback-settings";

/// `sales`: scheduled only, office hours 09:00-17:00 UTC, 30-minute slots of one place.
/// `support`: immediate only, always open, everything the voice platform is told.
fn designer_table() -> Value {
    json!([
        {
            "Virtual Queue": "sales",
            "Callback Application": "CB_Sales",
            "Application Stream": "Development",
            "Business Hours": "office",
            "Immediate Callback Enabled": "false",
            "Scheduled Callback Enabled": "true",
            "Slot Duration (minutes)": "30",
            "Slot Capacity": "1",
            "Reject Out of Office Hours": "TRUE",
            "Callback TTL (seconds)": "3600",
            "Push Notification Threshold (minutes)": "",
            "Comments": "west coast"
        },
        {
            "Virtual Queue": "support",
            "Callback Application": "CB_Support",
            "Application Stream": "Production",
            "Routing Point": "5000",
            "Dial Prefix": "9",
            "Call Display Number": "+18005550100",
            "Callback Display Name": "Acme, Support",
            "Immediate Callback Enabled": "yes",
            "Scheduled Callback Enabled": "no",
            "Call Direction": "User Terminated",
            "Priority": "2",
            "Priority Increment": "3",
            "Priority Interval (seconds)": "60",
            "Priority Limit": "20",
            "In Queue Checking": "false",
            "Business Hours": ""
        }
    ])
}

/// `engage serve` with tenant `acme` (and its key) and business hours `office`.
async fn start() -> (TestEnv, Engage, String) {
    let (env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    let days: serde_json::Map<String, Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .into_iter()
        .map(|d| (d.to_string(), json!([["09:00", "17:00"]])))
        .collect();
    let (code, body) = e
        .admin_put(
            "/ges/v1/tenants/acme/business-hours/office",
            json!({"timezone": "UTC", "weekly": days}),
        )
        .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    (env, e, key)
}

/// Tomorrow at `hh:mm` UTC, as a wire time.
fn tomorrow_at(hour: i8, minute: i8) -> String {
    let day = Timestamp::now().to_zoned(TimeZone::UTC).date() + 1.day();
    let t = day
        .to_datetime(Time::constant(hour, minute, 0, 0))
        .to_zoned(TimeZone::UTC)
        .expect("UTC")
        .timestamp();
    t.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string()
}

/// A raw publish: `body` as sent, with `content_type` when given.
async fn publish_raw(e: &Engage, body: impl Into<reqwest::Body>, ct: Option<&str>) -> (u16, Value) {
    let mut req = e
        .http
        .post(format!("{}{PATH}", e.internal))
        .bearer_auth(ADMIN_TOKEN)
        .body(body);
    if let Some(ct) = ct {
        req = req.header("content-type", ct);
    }
    send(req).await
}

async fn services(e: &Engage) -> Vec<Value> {
    let (code, body) = e.admin_get("/ges/v1/tenants/acme/services").await;
    assert_eq!(code, 200, "{body}");
    body["data"].as_array().expect("service list").clone()
}

fn find<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

/// The entry of callback `id` on the voice stream (waits up to 20 s).
async fn entry_of(env: &TestEnv, id: &str) -> std::collections::BTreeMap<String, String> {
    let started = Instant::now();
    loop {
        if let Some((_, f)) = env
            .handoffs()
            .await
            .into_iter()
            .find(|(_, f)| f.get("callback_id").map(String::as_str) == Some(id))
        {
            return f;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no entry for {id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_designer_table_publishes_and_books_into_its_hours_capacity_and_hand_off() {
    let (env, e, key) = start().await;
    let (code, body) = e.admin_post(PATH, designer_table()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["created"], json!(["sales", "support"]));
    assert_eq!(body["data"]["unknown_columns"], json!(["Comments"]));
    let list = services(&e).await;
    let sales = &find(&list, "sales")["settings"];
    assert_eq!(sales["slot_minutes"], 30);
    assert_eq!(sales["ttl_seconds"], 3600);
    assert_eq!(
        sales["push_threshold_minutes"], 5,
        "an empty cell is the default"
    );
    assert_eq!(sales["Comments"], "west coast", "unknown titles are kept");
    assert_eq!(
        find(&list, "support")["settings"]["business_hours"],
        Value::Null
    );

    // Scheduled into sales' hours and its one place per 30-minute slot.
    let at = |h, m| {
        e.create(&key)
            .service("sales")
            .phone(&next_phone())
            .at(&tomorrow_at(h, m))
    };
    let (code, body) = at(10, 0).send().await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = at(10, 15).send().await;
    assert_eq!(code, 429, "the slot of 10:00-10:30 holds one: {body}");
    assert_eq!(at(10, 30).send().await.0, 200, "the next slot is free");
    let (code, body) = at(20, 0).send().await;
    assert_eq!(code, 400, "out of office hours: {body}");
    let (code, body) = e
        .create(&key)
        .service("sales")
        .phone(&next_phone())
        .send()
        .await;
    assert_eq!(code, 400, "immediate is disabled on sales: {body}");
    let (code, body) = e
        .create(&key)
        .service("support")
        .phone(&next_phone())
        .at(&tomorrow_at(10, 0))
        .send()
        .await;
    assert_eq!(code, 400, "scheduled is disabled on support: {body}");

    // Immediate on support: handed off with what its row says.
    let _worker = WorkerProc::start(&env, &[]).await;
    let id = e
        .create(&key)
        .service("support")
        .phone(&next_phone())
        .id()
        .await;
    let entry = entry_of(&env, &id).await;
    for (k, v) in [
        ("service", "support"),
        ("callback_application", "CB_Support"),
        ("application_stream", "Production"),
        ("display_number", "+18005550100"),
        ("display_name", "Acme, Support"),
        ("route_point", "5000"),
        ("call_direction", "USERTERMINATED"),
        ("priority", "2"),
        ("priority_increment", "3"),
        ("priority_interval_seconds", "60"),
        ("priority_limit", "20"),
    ] {
        assert_eq!(
            entry.get(k).map(String::as_str),
            Some(v),
            "{k} in {entry:?}"
        );
    }
    assert!(entry["dial_number"].starts_with('9'), "{entry:?}");
}

/// The same table as Designer's CSV export (BOM, CRLF, a quoted cell with a comma) is the same
/// table: republished, every row is unchanged; a table without support disables it.
#[tokio::test]
async fn republish_identical_as_csv_is_unchanged_and_a_removed_row_is_disabled() {
    let (_env, e, key) = start().await;
    assert_eq!(e.admin_post(PATH, designer_table()).await.0, 200);
    let before = services(&e).await;
    let (code, body) = e.admin_post(PATH, designer_table()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["unchanged"], json!(["sales", "support"]));
    let csv = "\u{feff}Virtual Queue,Callback Application,Application Stream,Business Hours,\
        Immediate Callback Enabled,Scheduled Callback Enabled,Slot Duration (minutes),\
        Slot Capacity,Reject Out of Office Hours,Callback TTL (seconds),\
        Push Notification Threshold (minutes),Comments,Routing Point,Dial Prefix,\
        Call Display Number,Callback Display Name,Call Direction,Priority,Priority Increment,\
        Priority Interval (seconds),Priority Limit,In Queue Checking\r\n\
        sales,CB_Sales,Development,office,false,true,30,1,TRUE,3600,,west coast,,,,,,,,,,\r\n\
        support,CB_Support,Production,,yes,no,,,,,,,5000,9,+18005550100,\"Acme, Support\",\
        User Terminated,2,3,60,20,false\r\n";
    let (code, body) = publish_raw(&e, csv, Some("text/csv; charset=utf-8")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["data"]["unchanged"],
        json!(["sales", "support"]),
        "{body}"
    );
    assert_eq!(
        services(&e).await,
        before,
        "nothing changed, versions included"
    );

    let only_sales = "Virtual Queue,Callback Application,Application Stream,Business Hours,\
        Immediate Callback Enabled,Slot Duration (minutes),Slot Capacity,Callback TTL (seconds),\
        Reject Out of Office Hours,Comments\n\
        sales,CB_Sales,Development,office,false,30,1,3600,true,west coast\n";
    let (code, body) = publish_raw(&e, only_sales, Some("text/csv")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["unchanged"], json!(["sales"]), "{body}");
    assert_eq!(body["data"]["disabled"], json!(["support"]));
    let (code, body) = e
        .create(&key)
        .service("support")
        .phone(&next_phone())
        .send()
        .await;
    assert_eq!(code, 400, "support is disabled: {body}");
}

/// Each table holds one bad row (after a good one): a bad number, unknown business hours, a
/// bad boolean, a bad call direction; each answers 400 naming the row, its service and the
/// column by its title, and nothing changes.
#[tokio::test]
async fn a_table_with_one_bad_row_changes_nothing() {
    let (_env, e, _key) = start().await;
    assert_eq!(e.admin_post(PATH, designer_table()).await.0, 200);
    let before = services(&e).await;
    let cases = [
        (
            "Callback TTL (seconds)",
            "ten",
            "expected a whole number, got \"ten\"",
        ),
        (
            "Business Hours",
            "nowhere",
            "no business hours named \"nowhere\"",
        ),
        (
            "Immediate Callback Enabled",
            "maybe",
            "expected true or false, got \"maybe\"",
        ),
        (
            "Call Direction",
            "sideways",
            "expected USERTERMINATED or USERORIGINATED",
        ),
        ("Slot Duration (minutes)", "20", "must be 15, 30 or 60"),
        ("Slot Capacity", "-1", "invalid value"),
    ];
    for (title, value, why) in cases {
        let mut table = designer_table();
        table[1][title] = json!(value);
        table[0]["Callback Application"] = json!("CB_Changed");
        let (code, body) = e.admin_post(PATH, table).await;
        assert_eq!(code, 400, "{title}: {body}");
        let msg = body["status"]["message"].as_str().unwrap_or_default();
        let want = format!("rows[1] (\"support\"): column {title}: ");
        assert!(
            msg.starts_with(&want) && msg.contains(why),
            "{title}: {msg}"
        );
        assert_eq!(services(&e).await, before, "{title}: nothing changed");
    }
    let bad_csv = "VQ,Slot Capacity\nsales,3\nsupport,lots\n";
    let (code, body) = publish_raw(&e, bad_csv, Some("text/csv")).await;
    assert_eq!(code, 400, "{body}");
    let msg = body["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("rows[1] (\"support\"): column Slot Capacity:"),
        "{msg}"
    );
    assert_eq!(services(&e).await, before);
}

/// Duplicate keys, JSON types where text belongs, huge cells and titles: 400 with the reason,
/// or (numbers, booleans, nulls where they fit) the right settings; never a 500.
#[tokio::test]
async fn duplicates_json_types_and_huge_cells_are_refused_or_read_right() {
    let (_env, e, _key) = start().await;
    let long_title: serde_json::Map<String, Value> = [
        ("VQ".to_string(), json!("a")),
        ("t".repeat(300), json!("x")),
    ]
    .into_iter()
    .collect();
    let refused = [
        (
            json!([{"VQ": "a"}, {"Virtual Queue": "a"}]),
            "rows[1] (\"a\"): column Virtual Queue: duplicates rows[0]",
        ),
        (
            json!([{"VQ": "a", "Virtual Queue": "b"}]),
            "are the same column",
        ),
        (
            json!([{"VQ": "a", "Slot Capacity": {"x": 1}}]),
            "column Slot Capacity: expected a whole number, got a JSON object",
        ),
        (
            json!([{"VQ": "a", "Slot Capacity": 1.5}]),
            "expected a whole number, got 1.5",
        ),
        (
            json!([{"VQ": "a", "Slot Capacity": 1e30}]),
            "expected a whole number",
        ),
        (
            json!([{"VQ": "a", "Enabled": 1}]),
            "column Enabled: expected true or false, got a number",
        ),
        (
            json!([{"VQ": true}]),
            "column VQ: expected text, got a boolean",
        ),
        (json!([{"VQ": ["a"]}]), "got a JSON array"),
        (json!([{"VQ": "a"}, "b"]), "rows[1]: must be a JSON object"),
        (
            json!([{"VQ": "a", "Callback Display Name": "x".repeat(2_000_000)}]),
            "at most 1024 characters",
        ),
        (json!([long_title]), "a column title is over 256 characters"),
        (
            json!([{"VQ": "n".repeat(300)}]),
            "must be 1-255 printable characters",
        ),
        (json!([{"Dial Prefix": "9"}]), "rows[0]: no service name"),
        (
            json!({"name": "NUMBER_VALIDATION_CONFIGURATIONS", "rows": []}),
            "only CALLBACK_SETTINGS",
        ),
        (
            json!({"columns": ["VQ"], "rows": [["a", "b"]]}),
            "2 values, but the header has 1",
        ),
        (json!("CALLBACK_SETTINGS"), "must be a JSON array of rows"),
    ];
    for (table, why) in refused {
        let (code, body) = e.admin_post(PATH, table).await;
        let msg = body["status"]["message"].as_str().unwrap_or_default();
        assert_eq!(code, 400, "{why}: {body}");
        assert!(msg.contains(why), "{why}: {msg}");
    }
    assert!(services(&e).await.is_empty(), "nothing was created");

    let typed = json!({"columns": ["VQ", "Callback TTL (seconds)", "Enabled", "Routing Point",
                                   "Dial Prefix", "Priority", "In Queue Checking"],
                       "rows": [["typed", 7200, true, 5000, null, -3.0, "STRICT"]]});
    let (code, body) = e.admin_post(PATH, typed).await;
    assert_eq!(code, 200, "{body}");
    let list = services(&e).await;
    let s = &find(&list, "typed")["settings"];
    assert_eq!(s["ttl_seconds"], 7200);
    assert_eq!(s["route_point"], "5000");
    assert_eq!(s["dial_prefix"], "");
    assert_eq!(s["priority"], -3);
    assert_eq!(s["in_queue_checking"], "strict");
}

/// CSV: quotes, commas, line breaks and doubled quotes inside cells, a BOM and CRLF read right;
/// `;` files too; broken files (open quote, not UTF-8, no header, rows longer than the header,
/// CSV sent as JSON) answer 400 saying why.
#[tokio::test]
async fn csv_quoting_is_read_right_and_broken_files_are_refused() {
    let (_env, e, _key) = start().await;
    let csv = "\u{feff}\"Virtual Queue\",\"Callback Display Name\",Notes\r\n\
               q1,\"Acme, Inc. \"\"West\"\"\",\"two\r\nlines\"\r\n\
               ,,\r\n\
               \"q2\",plain\r\n";
    let (code, body) = publish_raw(&e, csv, Some("text/csv")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["created"], json!(["q1", "q2"]));
    let list = services(&e).await;
    assert_eq!(
        find(&list, "q1")["settings"]["display_name"],
        "Acme, Inc. \"West\""
    );
    assert_eq!(find(&list, "q1")["settings"]["Notes"], "two\r\nlines");
    let (code, body) = publish_raw(&e, "VQ;Dial Prefix\r\nq1;9\r\n", Some("application/csv")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["disabled"], json!(["q2"]));
    let after = services(&e).await;

    let broken: [(&[u8], Option<&str>, &str); 6] = [
        (
            b"VQ,Dial Prefix\n\"q1,9\nq2,8\n",
            Some("text/csv"),
            "unterminated quoted cell",
        ),
        (
            b"VQ,Callback Display Name\nq1,Caf\xe9\n",
            Some("text/csv"),
            "not UTF-8",
        ),
        (
            b"",
            Some("text/csv"),
            "a header row of column titles is required",
        ),
        (
            b"VQ\nq1,extra\n",
            Some("text/csv"),
            "rows[0]: 2 values, but the header has 1",
        ),
        (b"VQ,vq\nq1,q1\n", Some("text/csv"), "are the same column"),
        (
            b"VQ,Dial Prefix\nq1,9\n",
            None,
            "a CSV table needs Content-Type: text/csv",
        ),
    ];
    for (body, ct, why) in broken {
        let (code, answer) = publish_raw(&e, body.to_vec(), ct).await;
        let msg = answer["status"]["message"].as_str().unwrap_or_default();
        assert_eq!(code, 400, "{why}: {answer}");
        assert!(msg.contains(why), "{why}: {msg}");
    }
    assert_eq!(services(&e).await, after, "nothing changed");
}

/// 10,000 rows (the limit) publish within the request deadline; 10,001 are refused before
/// anything is written, as JSON and as CSV; a body over the port's limit is 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rows_publish_and_one_more_is_refused() {
    let (_env, e, _key) = start().await;
    let csv = |n: usize| {
        let mut s = String::from("Virtual Queue,Slot Capacity,Immediate Callback Enabled\n");
        for i in 0..n {
            s.push_str(&format!("vq-{i},{},true\n", i % 50));
        }
        s
    };
    let (code, body) = publish_raw(&e, csv(10_001), Some("text/csv")).await;
    assert_eq!(code, 400, "{body}");
    let json_rows: Vec<Value> = (0..10_001)
        .map(|i| json!({"VQ": format!("j{i}")}))
        .collect();
    let (code, body) = e.admin_post(PATH, Value::Array(json_rows)).await;
    assert_eq!(code, 400, "{body}");
    assert!(services(&e).await.is_empty());

    let started = Instant::now();
    let (code, body) = publish_raw(&e, csv(10_000), Some("text/csv")).await;
    let took = started.elapsed();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["data"]["created"].as_array().map(Vec::len),
        Some(10_000)
    );
    println!("10,000-row CSV publish: {took:?}");
    let (code, body) = publish_raw(&e, csv(10_000), Some("text/csv")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["data"]["unchanged"].as_array().map(Vec::len),
        Some(10_000)
    );

    let huge = format!("VQ,Notes\nq,{}\n", "x".repeat(11 * 1024 * 1024));
    let (code, _) = publish_raw(&e, huge, Some("text/csv")).await;
    assert_eq!(code, 413);
}
