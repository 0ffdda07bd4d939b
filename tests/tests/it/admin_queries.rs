//! The admin callback API over real HTTP (docs/admin-queries.md): every filter (the phone in
//! several formats matching the normalised number), both sorts both ways, keyset pages that
//! neither skip nor repeat rows while creates land, tenant isolation through every route,
//! bulk cancel (dry-run count equal to the real one, the settle owed to the voice platform for
//! handed-off and soon-due callbacks), reschedule and cancel through the public API's rules,
//! bad input as 400, and the CSV export of 100,000 rows streamed at bounded memory.

use std::{collections::HashMap, time::Duration};

use harness::{ADMIN_TOKEN, Engage, Fixture, TestEnv, WorkerProc, send, wire};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const BASE: &str = "/ges/v1/tenants";

/// Query-string pairs.
type Query<'a> = Vec<(&'a str, &'a str)>;

/// `GET …/callbacks` of `tenant` with `query` pairs: (status, envelope).
async fn list(e: &Engage, tenant: &str, query: &[(&str, &str)]) -> (u16, Value) {
    send(
        e.http
            .get(format!("{}{BASE}/{tenant}/callbacks", e.internal))
            .bearer_auth(ADMIN_TOKEN)
            .query(query),
    )
    .await
}

/// The ids of a listing answer, in its order.
fn ids(body: &Value) -> Vec<String> {
    body["data"]["callbacks"]
        .as_array()
        .unwrap_or_else(|| panic!("no callbacks: {body}"))
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// The ids of a listing, asserting 200.
async fn found(e: &Engage, tenant: &str, query: &[(&str, &str)]) -> Vec<String> {
    let (code, body) = list(e, tenant, query).await;
    assert_eq!(code, 200, "{query:?}: {body}");
    ids(&body)
}

/// `POST …/callbacks/bulk-cancel` with `query` and an optional JSON body.
async fn bulk(
    e: &Engage,
    tenant: &str,
    query: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = e
        .http
        .post(format!(
            "{}{BASE}/{tenant}/callbacks/bulk-cancel",
            e.internal
        ))
        .bearer_auth(ADMIN_TOKEN)
        .query(query);
    if let Some(b) = body {
        req = req.json(&b);
    }
    send(req).await
}

/// The CSV export of `tenant` with `query`: (status, records with the header first).
async fn export(e: &Engage, tenant: &str, query: &[(&str, &str)]) -> (u16, Vec<Vec<String>>) {
    let resp = e
        .http
        .get(format!("{}{BASE}/{tenant}/callbacks.csv", e.internal))
        .bearer_auth(ADMIN_TOKEN)
        .query(query)
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let text = resp.bytes().await.unwrap();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_ref());
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    (code, rows)
}

#[tokio::test]
async fn filters_sorts_details_and_bad_input() {
    let open = harness::open_service(json!({}));
    let fx = Fixture::start(open.clone()).await;
    let e = &fx.engage;
    e.service("acme", "support", open.clone()).await;
    let started = Timestamp::now() - SignedDuration::from_secs(1);
    let a = fx
        .create()
        .phone("+1 202 555 0101")
        .in_secs(3600)
        .id()
        .await;
    let b = fx.create().phone("(202) 555-0102").in_secs(7200).id().await;
    let c = fx
        .create()
        .service("support")
        .phone("+12025550103")
        .in_secs(10800)
        .id()
        .await;
    let d = fx.create().phone("+12025550104").in_secs(14400).id().await;
    assert_eq!(fx.cancel(&d).await.0, 200);

    // The phone in several formats matches the normalised number.
    for given in [
        "+12025550101",
        "202-555-0101",
        "(202) 555 0101",
        "1 202 555 0101",
        "+1.202.555.0101",
    ] {
        assert_eq!(
            found(e, "acme", &[("phone", given)]).await,
            vec![a.clone()],
            "{given}"
        );
    }
    assert_eq!(
        found(e, "acme", &[("state", "COMPLETED")]).await,
        vec![d.clone()]
    );
    assert_eq!(
        found(e, "acme", &[("state", "scheduled")]).await,
        [&a, &b, &c].map(|s| s.clone())
    );
    assert_eq!(
        found(e, "acme", &[("reason", "CANCELLED")]).await,
        vec![d.clone()]
    );
    assert!(
        found(e, "acme", &[("reason", "AGENT_CONNECTED")])
            .await
            .is_empty()
    );
    assert_eq!(
        found(e, "acme", &[("service", "support")]).await,
        vec![c.clone()]
    );
    let from = wire(Timestamp::now() + SignedDuration::from_mins(90));
    let to = wire(Timestamp::now() + SignedDuration::from_mins(150));
    let window = [("desiredFrom", from.as_str()), ("desiredTo", to.as_str())];
    assert_eq!(found(e, "acme", &window).await, vec![b.clone()]);
    let since = wire(started);
    let later = wire(Timestamp::now() + SignedDuration::from_secs(5));
    assert_eq!(found(e, "acme", &[("createdFrom", &since)]).await.len(), 4);
    assert!(
        found(e, "acme", &[("createdFrom", &later)])
            .await
            .is_empty()
    );
    assert!(found(e, "acme", &[("createdTo", &since)]).await.is_empty());
    // Combined: AND.
    let both = [("service", "sales"), ("state", "SCHEDULED")];
    assert_eq!(found(e, "acme", &both).await, vec![a.clone(), b.clone()]);

    // Sorts: desired time and created, both ways.
    let all = vec![a.clone(), b.clone(), c.clone(), d.clone()];
    let rev: Vec<String> = all.iter().rev().cloned().collect();
    assert_eq!(found(e, "acme", &[]).await, all);
    assert_eq!(found(e, "acme", &[("order", "desc")]).await, rev);
    assert_eq!(found(e, "acme", &[("sort", "created")]).await, all);
    assert_eq!(
        found(e, "acme", &[("sort", "created"), ("order", "desc")]).await,
        rev
    );

    // A view row, and the detail with its history.
    let (_, body) = list(e, "acme", &[("phone", "+12025550104")]).await;
    let row = &body["data"]["callbacks"][0];
    assert_eq!(row["state"], "COMPLETED");
    assert_eq!(row["reason"], "CANCELLED");
    assert_eq!(row["phoneE164"], "+12025550104");
    assert!(body["data"]["nextCursor"].is_null());
    let (code, detail) = e.admin_get(&format!("{BASE}/acme/callbacks/{d}")).await;
    assert_eq!(code, 200, "{detail}");
    let history: Vec<(&str, &str)> = detail["data"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["state"].as_str().unwrap(), h["source"].as_str().unwrap()))
        .collect();
    assert_eq!(history, [("SCHEDULED", "create"), ("COMPLETED", "api")]);
    assert_eq!(detail["data"]["history"][1]["reason"], "CANCELLED");
    assert_eq!(detail["data"]["attempts"][0]["attempt"], 1);
    assert_eq!(detail["data"]["callback"]["id"], d.as_str());
    for missing in [uuid::Uuid::now_v7().to_string(), "nope".into()] {
        let (code, _) = e
            .admin_get(&format!("{BASE}/acme/callbacks/{missing}"))
            .await;
        assert_eq!(code, 404);
    }

    // `tz`: local times in, local times out.
    let (code, rows) = export(
        e,
        "acme",
        &[("tz", "Asia/Kolkata"), ("phone", "2025550101")],
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[1][6].ends_with("+05:30"), "{rows:?}");

    // Bad input: 400 naming the parameter, never a 500.
    let bad: &[(&str, &str)] = &[
        ("desiredFrom", "soon"),
        ("desiredTo", ""),
        ("createdFrom", "2026-13-01"),
        ("state", "DONE"),
        ("reason", "BORED"),
        ("limit", "0"),
        ("limit", "1001"),
        ("limit", "x"),
        ("sort", "phone"),
        ("order", "up"),
        ("cursor", "zz"),
        ("format", "xml"),
        ("tz", "Mars/Olympus"),
        ("service", "a\0b"),
    ];
    for (k, v) in bad {
        let (code, body) = list(e, "acme", &[(k, v)]).await;
        assert_eq!(code, 400, "{k}={v:?}: {body}");
        let msg = harness::message(&body);
        assert!(msg.starts_with(k), "{k}: {msg}");
    }
    let (code, body) = list(e, "acme", &[("colour", "red")]).await;
    assert!(
        code == 400 && harness::message(&body).contains("colour"),
        "{body}"
    );
    let (code, body) = list(e, "acme", &[("state", "QUEUED"), ("state", "SCHEDULED")]).await;
    assert!(
        code == 400 && harness::message(&body).starts_with("state"),
        "{body}"
    );
    let (code, body) = list(e, "acme", &[("desiredFrom", &to), ("desiredTo", &from)]).await;
    assert!(
        code == 400 && harness::message(&body).starts_with("desiredTo"),
        "{body}"
    );
    // A cursor of another sort order is refused.
    let (_, page) = list(e, "acme", &[("limit", "1")]).await;
    let cursor = page["data"]["nextCursor"].as_str().unwrap().to_string();
    let (code, body) = list(e, "acme", &[("cursor", &cursor), ("order", "desc")]).await;
    assert!(
        code == 400 && harness::message(&body).starts_with("cursor"),
        "{body}"
    );
    // Without the admin token: 401.
    let (code, _) = send(e.http.get(format!("{}{BASE}/acme/callbacks", e.internal))).await;
    assert_eq!(code, 401);
    assert_eq!(
        fx.env
            .count("SELECT count(*) FROM callbacks WHERE state = 'COMPLETED'")
            .await,
        1
    );
}

#[tokio::test]
async fn another_tenant_is_never_seen_or_touched() {
    let open = harness::open_service(json!({}));
    let fx = Fixture::start(open.clone()).await;
    let e = &fx.engage;
    let other = e.provision("globex", "sales", open).await;
    let number = "+12025550150";
    let ours = fx.create().phone(number).in_secs(3600).id().await;
    let (code, body) = e
        .create(&other)
        .service("sales")
        .phone(number)
        .at(&harness::in_secs(3600))
        .send()
        .await;
    assert_eq!(code, 200, "{body}");
    let theirs = body["data"]["id"].as_str().unwrap().to_string();

    // Listing, filters, detail, export: only acme's.
    assert_eq!(found(e, "acme", &[]).await, vec![ours.clone()]);
    assert_eq!(
        found(e, "acme", &[("phone", number)]).await,
        vec![ours.clone()]
    );
    assert_eq!(
        found(e, "globex", &[("phone", number)]).await,
        vec![theirs.clone()]
    );
    let (code, _) = e
        .admin_get(&format!("{BASE}/acme/callbacks/{theirs}"))
        .await;
    assert_eq!(code, 404);
    let (_, rows) = export(e, "acme", &[]).await;
    let exported: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(exported, [ours.as_str()]);
    // Changes: cancel, reschedule, bulk by ids and by filter never reach globex's callback.
    let path = format!("{BASE}/acme/callbacks/{theirs}");
    assert_eq!(
        e.admin_post(&format!("{path}/cancel"), json!({})).await.0,
        404
    );
    let later = json!({"desiredTime": harness::in_secs(7200)});
    assert_eq!(
        e.admin_post(&format!("{path}/reschedule"), later).await.0,
        404
    );
    let (code, body) = bulk(
        e,
        "acme",
        &[("dryRun", "true")],
        Some(json!({"ids": [theirs]})),
    )
    .await;
    assert_eq!(
        (code, body["data"]["matched"].clone()),
        (200, json!(0)),
        "{body}"
    );
    let (code, body) = bulk(e, "acme", &[], Some(json!({"ids": [theirs]}))).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["results"][0]["outcome"], "NOT_FOUND");
    let (code, body) = bulk(e, "acme", &[("phone", number)], None).await;
    assert_eq!(
        (code, body["data"]["cancelled"].clone()),
        (200, json!(1)),
        "{body}"
    );
    assert_eq!(
        e.retrieve(&other, &theirs).await["callbackState"],
        "SCHEDULED"
    );
    assert_eq!(fx.retrieve(&ours).await["callbackReason"], "CANCELLED");
    // An unknown tenant is 404, not an empty listing.
    assert_eq!(list(e, "initech", &[]).await.0, 404);
    assert_eq!(export(e, "initech", &[]).await.0, 404);
    assert_eq!(
        bulk(e, "initech", &[("state", "SCHEDULED")], None).await.0,
        404
    );
}

/// Pages of 7 read while creates land before and after the cursor: every callback that
/// existed when the listing started is seen exactly once, and no id twice, in both sorts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_pages_neither_skip_nor_repeat_while_rows_are_inserted() {
    let fx = Fixture::start(harness::open_service(json!({}))).await;
    let e = &fx.engage;
    let mut initial = Vec::new();
    for i in 0..60 {
        initial.push(fx.create().in_secs(3600 + i * 97 % 5000).id().await);
    }
    for (sort, order) in [
        ("desiredTime", "asc"),
        ("created", "desc"),
        ("desiredTime", "desc"),
    ] {
        let writer = async {
            for i in 0..30 {
                fx.create().in_secs(3000 + i * 211 % 6000).id().await;
            }
        };
        let reader = async {
            let mut seen: Vec<String> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut q = vec![("sort", sort), ("order", order), ("limit", "7")];
                if let Some(c) = &cursor {
                    q.push(("cursor", c.as_str()));
                }
                let (code, body) = list(e, "acme", &q).await;
                assert_eq!(code, 200, "{body}");
                seen.extend(ids(&body));
                match body["data"]["nextCursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        };
        let (seen, ()) = tokio::join!(reader, writer);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &seen {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeated.is_empty(), "{sort} {order}: repeated {repeated:?}");
        let skipped: Vec<_> = initial
            .iter()
            .filter(|id| !counts.contains_key(id.as_str()))
            .collect();
        assert!(skipped.is_empty(), "{sort} {order}: skipped {skipped:?}");
        println!("FIGURE keyset_{sort}_{order}_rows_seen={}", seen.len());
    }
}

/// Bulk cancel by filter and by ids through the one cancel: the dry run's count is the real
/// count; a handed-off callback gets its control entry, a soon-due one its fence, nothing stays
/// owed; a callback with an agent is not cancellable; reschedule and cancel of one callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_cancel_counts_then_cancels_through_the_one_cancel() {
    let fx = Fixture::dispatch(TestEnv::new(), "acme", "sales", json!({})).await;
    let e = &fx.engage;
    e.service("acme", "support", harness::open_service(json!({})))
        .await;
    let _worker = WorkerProc::start(&fx.env, &[]).await;
    let now: Vec<String> = futures::future::join_all((0..3).map(|_| fx.create().id())).await;
    fx.env.wait_handoffs(3, Duration::from_secs(20)).await;
    let agent = &now[2];
    let (code, ev) = e
        .event(agent, json!({"state": "PROCESSING", "attempt": 1}))
        .await;
    assert_eq!(code, 200, "{ev}");
    let soon = fx.create().in_secs(1200).id().await;
    let mut later = Vec::new();
    for i in 0..20 {
        later.push(fx.create().in_secs(7200 + i * 60).id().await);
    }
    let elsewhere = fx.create().service("support").in_secs(7200).id().await;

    let sales = [("service", "sales")];
    let (code, body) = bulk(e, "acme", &[("service", "sales"), ("dryRun", "true")], None).await;
    assert_eq!(code, 200, "{body}");
    // Two handed off (QUEUED), one soon, twenty later; the one with an agent is not counted.
    assert_eq!(body["data"]["matched"], 23, "{body}");
    assert_eq!(
        fx.env
            .count("SELECT count(*) FROM callbacks WHERE state = 'COMPLETED'")
            .await,
        0
    );
    let (code, body) = bulk(e, "acme", &sales, None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["cancelled"], 23, "{body}");
    assert_eq!(body["data"]["more"], false);
    assert_eq!(body["data"]["results"], json!([]));
    // Handed off: control entries; soon due: fenced; nothing owed.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let controls = fx.env.ids_in(fx.env.control_stream()).await;
        let owed = fx
            .env
            .count("SELECT count(*) FROM callbacks WHERE control_pending")
            .await;
        if owed == 0 && now[..2].iter().all(|id| controls.contains(id)) {
            assert!(
                !controls.contains(agent) && !controls.contains(&soon),
                "{controls:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "owed {owed}, controls {controls:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut voice = fx.env.voice().await;
    let fence: Option<String> = redis::cmd("GET")
        .arg(format!("{{{}}}:sub:{soon}:1", fx.env.voice_stream()))
        .query_async(&mut voice)
        .await
        .unwrap();
    assert_eq!(fence.as_deref(), Some("cancelled"));
    // Nothing left to cancel; the other service's callback untouched.
    let (_, body) = bulk(e, "acme", &[("service", "sales"), ("dryRun", "true")], None).await;
    assert_eq!(body["data"]["matched"], 0);
    assert_eq!(fx.retrieve(&elsewhere).await["callbackState"], "SCHEDULED");

    // By ids: dry run, then the real one, outcome per id.
    let mixed = json!({"ids": [elsewhere, agent, later[0], "nope", 7]});
    let (code, body) = bulk(e, "acme", &[("dryRun", "true")], Some(mixed.clone())).await;
    assert_eq!(
        (code, body["data"]["matched"].clone()),
        (200, json!(1)),
        "{body}"
    );
    let (code, body) = bulk(e, "acme", &[], Some(mixed)).await;
    assert_eq!(code, 200, "{body}");
    let outcomes: Vec<&str> = body["data"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "CANCELLED",
            "NOT_CANCELLABLE",
            "NOT_CANCELLABLE",
            "INVALID_ID",
            "INVALID_ID"
        ]
    );
    assert_eq!(body["data"]["cancelled"], 1);

    // Bad bulk requests change nothing.
    let many: Vec<String> = (0..1001)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let bad: Vec<(Query<'_>, Option<Value>)> = vec![
        (vec![], None),
        (vec![("dryRun", "true")], None),
        (vec![("dryRun", "maybe"), ("service", "sales")], None),
        (vec![("sort", "created"), ("service", "sales")], None),
        (vec![("service", "sales")], Some(json!({"ids": [soon]}))),
        (vec![], Some(json!({"ids": []}))),
        (vec![], Some(json!({"ids": many}))),
        (vec![], Some(json!({"ids": "x"}))),
        (vec![], Some(json!([soon]))),
    ];
    for (q, b) in bad {
        let (code, body) = bulk(e, "acme", &q, b.clone()).await;
        assert_eq!(code, 400, "{q:?} {b:?}: {body}");
    }

    // One callback: reschedule (the public API's checks), then cancel.
    let one = fx.create().in_secs(3600).id().await;
    let path = format!("{BASE}/acme/callbacks/{one}");
    let to = harness::in_secs(10800);
    let (code, body) = e
        .admin_post(
            &format!("{path}/reschedule"),
            json!({"desiredTime": to, "userData": {"note": "moved"}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, detail) = e.admin_get(&path).await;
    assert_eq!(detail["data"]["callback"]["userData"]["note"], "moved");
    assert_eq!(
        detail["data"]["callback"]["desiredTime"],
        body["data"]["desiredTime"]
    );
    for bad in [
        json!({"desiredTime": "soon"}),
        json!({}),
        json!({"id": one}),
    ] {
        assert_eq!(
            e.admin_post(&format!("{path}/reschedule"), bad).await.0,
            400
        );
    }
    let past = json!({"desiredTime": harness::in_secs(-3600)});
    assert_eq!(
        e.admin_post(&format!("{path}/reschedule"), past).await.0,
        400
    );
    assert_eq!(
        e.admin_post(&format!("{path}/cancel"), json!({})).await.0,
        200
    );
    assert_eq!(
        e.admin_post(&format!("{path}/cancel"), json!({})).await.0,
        400
    );
    let moved = json!({"desiredTime": harness::in_secs(7200)});
    assert_eq!(
        e.admin_post(&format!("{path}/reschedule"), moved).await.0,
        409
    );
}

/// The `VmRSS` of process `pid`, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 100,000 callbacks exported as CSV: every row once, quoting intact, and the server's RSS
/// bounded while it streams (sampled every 20 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_of_100k_rows_streams_at_bounded_memory() {
    let fx = Fixture::start(harness::open_service(json!({}))).await;
    let e = &fx.engage;
    let pg = fx.env.pg().await;
    pg.batch_execute(
        "INSERT INTO callbacks (id, tenant_id, service, state, reason, phone_number, phone_e164,
                                desired_time, dispatch_at, scheduled, user_data)
         SELECT gen_random_uuid(), CASE WHEN i % 10 = 0 THEN 'globex' ELSE 'acme' END, 'sales',
                CASE WHEN i % 3 = 0 THEN 'COMPLETED' ELSE 'SCHEDULED' END,
                CASE WHEN i % 3 = 0 THEN 'CANCELLED' END,
                '+1 555 ' || i, '1555' || i,
                now() + make_interval(secs => i), now() + make_interval(secs => i), true,
                jsonb_build_object('n', i, 'note', 'a, \"quoted\"\nline ' || i, 'pad', repeat('x', 200))
         FROM generate_series(1, 111111) i;
         ANALYZE callbacks;",
    )
    .await
    .unwrap();
    let pid = e.proc.child.id();
    // Warm the server's pool and allocator with a small export first.
    let (code, _) = export(e, "acme", &[("phone", "+15551")]).await;
    assert_eq!(code, 200);
    let before = rss_kb(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kb(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = std::time::Instant::now();
    let resp = e
        .http
        .get(format!("{}{BASE}/acme/callbacks?format=csv", e.internal))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    let mut chunks = 0;
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        body.extend_from_slice(&chunk.unwrap());
        chunks += 1;
    }
    let took = started.elapsed();
    sampling.abort();
    let after = rss_kb(pid);
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "FIGURE export_100k bytes={} chunks={chunks} secs={:.1} rss_before_kb={before} \
         rss_peak_kb={peak} rss_after_kb={after}",
        body.len(),
        took.as_secs_f64()
    );
    let mut reader = csv::Reader::from_reader(body.as_slice());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header[0], "id");
    assert_eq!(header.last().unwrap(), "userData");
    let mut seen = std::collections::HashSet::new();
    let mut last_desired = String::new();
    for record in reader.records() {
        let r = record.unwrap();
        assert!(seen.insert(r[0].to_string()), "{} twice", &r[0]);
        assert!(r[6] >= *last_desired, "out of order");
        last_desired = r[6].to_string();
        let data: Value = serde_json::from_str(&r[12]).unwrap();
        let n = data["n"].as_i64().unwrap();
        assert_ne!(n % 10, 0, "globex's row {n} exported");
        assert_eq!(data["note"], format!("a, \"quoted\"\nline {n}"));
        assert_eq!(r[5], format!("+1555{n}"));
    }
    assert_eq!(seen.len(), 100_000);
    // The body is ~40 MB; buffering it (or the rows) would show as that much more RSS.
    assert!(peak - before < 32 * 1024, "RSS grew {} kB", peak - before);
    let (code, _) = export(e, "acme", &[("limit", "5")]).await;
    assert_eq!(code, 400);
}
