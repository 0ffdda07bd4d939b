//! The GMS surface's reads and admin endpoints over real HTTP (docs/gms.md#queries,
//! #availability, #admin-endpoints): queries by id and by properties (negation, OR, per service
//! and across, never another tenant's callbacks), hostile keys and values, availability v1/v2
//! against v3 for the same window, the admin queue listing's window, watermark counts through
//! create, hand-off and cancel, and bulk cancel of a mix of ids.

use std::time::Duration;

use harness::{Engage, Fixture, TestEnv, WorkerProc, send, wire};
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde_json::{Value, json};

/// `GET` on the internal port as tenant `ccid`, with `query` pairs encoded.
async fn gms_get(e: &Engage, ccid: &str, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
    send(
        e.http
            .get(format!("{}{path}", e.internal))
            .header("ContactCenterId", ccid)
            .query(query),
    )
    .await
}

/// `POST` of a JSON body on the internal port as tenant `ccid`.
async fn gms_post(e: &Engage, ccid: &str, path: &str, body: Value) -> (u16, Value) {
    send(
        e.http
            .post(format!("{}{path}", e.internal))
            .header("ContactCenterId", ccid)
            .json(&body),
    )
    .await
}

const ACROSS: &str = "/genesys/1/service/callback";

/// The `_id`s of an answer (an array of records), sorted.
fn ids(body: &Value) -> Vec<String> {
    let mut out: Vec<String> = body
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {body}"))
        .iter()
        .map(|r| r["_id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn sorted(mut v: Vec<&String>) -> Vec<String> {
    v.sort();
    v.into_iter().cloned().collect()
}

/// Midnight UTC two days from now: always bookable.
fn day_after_tomorrow() -> Timestamp {
    let today = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    harness::local("UTC", today.checked_add(2.days()).unwrap(), 0, 0)
}

#[tokio::test]
async fn queries_negate_combine_and_stay_in_their_tenant() {
    let open = harness::open_service(json!({}));
    let fx = Fixture::start(open.clone()).await;
    let e = &fx.engage;
    e.service("acme", "support", open.clone()).await;
    let other = e.provision("globex", "sales", open).await;
    let number = "+12025550115";
    let live = fx
        .create()
        .phone(number)
        .in_secs(3600)
        .user_data(json!({"orderId": "42"}))
        .id()
        .await;
    let done = fx.create().phone(number).in_secs(7200).id().await;
    assert_eq!(fx.cancel(&done).await.0, 200);
    let gold = fx
        .create()
        .in_secs(3600)
        .user_data(json!({"tier": "gold"}))
        .id()
        .await;
    let support = e
        .create(&fx.key)
        .service("support")
        .phone(number)
        .in_secs(3600)
        .id()
        .await;
    let theirs = e
        .create(&other)
        .service("sales")
        .phone(number)
        .in_secs(3600)
        .id()
        .await;

    // Across services, with negation: the live ones of this number in both services.
    let q = [
        ("_customer_number", number),
        ("_callback_state", "!COMPLETED"),
    ];
    let (code, body) = gms_get(e, "acme", ACROSS, &q).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(ids(&body), sorted(vec![&live, &support]));
    let rec = body
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["_id"] == live.as_str())
        .unwrap();
    assert_eq!(rec["_service_name"], "sales");
    assert_eq!(rec["orderId"], "42");
    // Every callback of the number, the cancelled one too; never the other tenant's.
    let (_, body) = gms_get(e, "acme", ACROSS, &[("_customer_number", number)]).await;
    assert_eq!(ids(&body), sorted(vec![&live, &done, &support]));
    // Per service: the service in the path bounds the query.
    let path = format!("{ACROSS}/sales");
    let (_, body) = gms_get(e, "acme", &path, &[("_customer_number", number)]).await;
    assert_eq!(ids(&body), sorted(vec![&live, &done]));
    let (_, body) = gms_get(e, "acme", &path, &[("_callback_state", "COMPLETED")]).await;
    assert_eq!(ids(&body), vec![done.clone()]);
    assert_eq!(body[0]["_callback_reason"], "CANCELLED");
    // OR: either user-data value; AND of the same pairs: nothing.
    let pairs = [("orderId", "42"), ("tier", "gold")];
    let mut or = pairs.to_vec();
    or.push(("operand", "OR"));
    let (_, body) = gms_get(e, "acme", &path, &or).await;
    assert_eq!(ids(&body), sorted(vec![&live, &gold]));
    let (_, body) = gms_get(e, "acme", &path, &pairs).await;
    assert_eq!(ids(&body), Vec::<String>::new());
    // A negated user-data value matches callbacks without the key too.
    let (_, body) = gms_get(e, "acme", &path, &[("tier", "!gold")]).await;
    assert_eq!(ids(&body), sorted(vec![&live, &done]));
    // `max` bounds the answer.
    let (_, body) = gms_get(e, "acme", ACROSS, &[("max", "2")]).await;
    assert_eq!(body.as_array().unwrap().len(), 2);

    // By id: own → one record; another tenant's or an unknown one → [].
    let (code, body) = gms_get(e, "acme", ACROSS, &[("_id", &live)]).await;
    assert_eq!((code, ids(&body)), (200, vec![live.clone()]));
    let (code, body) = gms_get(e, "acme", ACROSS, &[("_id", &theirs)]).await;
    assert_eq!((code, body), (200, json!([])));
    let unknown = uuid::Uuid::now_v7().to_string();
    let (code, body) = gms_get(e, "acme", ACROSS, &[("_id", &unknown)]).await;
    assert_eq!((code, body), (200, json!([])));
    // The other tenant sees only its own callback of the same number.
    let (_, body) = gms_get(e, "globex", ACROSS, &[("_customer_number", number)]).await;
    assert_eq!(ids(&body), vec![theirs.clone()]);
    // An unknown service is 404 in GMS's shape.
    let (code, body) = gms_get(e, "acme", &format!("{ACROSS}/nope"), &[]).await;
    assert_eq!(code, 404, "{body}");
    assert!(body["exception"].as_str().unwrap().contains("Callback"));
}

#[tokio::test]
async fn hostile_keys_and_values_are_refused_or_match_nothing() {
    let fx = Fixture::start(harness::open_service(json!({}))).await;
    let e = &fx.engage;
    fx.create()
        .in_secs(3600)
        .user_data(json!({"k": "v"}))
        .id()
        .await;
    let big = "x".repeat(10 * 1024);
    let refused: Vec<(&str, &str)> = vec![
        ("_customer_number", "a\0b"),
        ("k", "\0"),
        ("_customer_number", &big),
        ("k", &big),
        ("a'b", "1"),
        ("k%", "1"),
        ("a\\b", "1"),
        ("_url", "x"),
        ("_id", "' OR 1=1 --"),
        ("_callback_state", "QUEUED' OR '1'='1"),
        ("max", "-1"),
        ("max", "100000"),
        ("operand", "XOR"),
        ("k", ""),
    ];
    for (k, v) in refused {
        let (code, body) = gms_get(e, "acme", ACROSS, &[(k, v)]).await;
        assert_eq!(code, 400, "{k}={v:.40}: {body}");
        assert!(body["message"].is_string(), "{body}");
    }
    for v in ["'", "%", "\\", "' OR '1'='1", "%' OR 1=1 --", "_", "*"] {
        for k in ["_customer_number", "k", "_callback_reason", "_service_name"] {
            let (code, body) = gms_get(e, "acme", ACROSS, &[(k, v)]).await;
            assert_eq!((code, &body), (200, &json!([])), "{k}={v}");
        }
    }
    // 21 pairs are too many; a huge key is refused, never a 500.
    let many: Vec<(&str, &str)> = (0..21).map(|_| ("k", "v")).collect();
    assert_eq!(gms_get(e, "acme", ACROSS, &many).await.0, 400);
    let long_key = "k".repeat(300);
    assert_eq!(gms_get(e, "acme", ACROSS, &[(&long_key, "v")]).await.0, 400);
    // Still one callback, untouched.
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 1);
}

/// v1, v2 and v3 availability of the same window answer the same numbers.
#[tokio::test]
async fn availability_v1_and_v2_agree_with_v3() {
    let fx =
        Fixture::start(json!({"slot_minutes": 15, "slot_capacity": 2, "max_days_ahead": 30})).await;
    let e = &fx.engage;
    let t0 = day_after_tomorrow();
    for at in [t0, t0, t0 + SignedDuration::from_mins(15)] {
        fx.create().at(&wire(at)).id().await;
    }
    let end = t0 + SignedDuration::from_hours(2);
    let window = format!("start={}&end={}", wire(t0), wire(end));
    for busy in ["false", "true"] {
        let (code, v3) = e
            .get(
                &fx.key,
                &format!("/engagement/v3/callbacks/availability/sales?{window}&reportBusy={busy}"),
            )
            .await;
        assert_eq!(code, 200, "{v3}");
        let v3 = v3["data"].clone();
        let q = [
            ("start", wire(t0)),
            ("end", wire(end)),
            ("report-busy", busy.into()),
        ];
        let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, v1) = gms_get(e, "acme", &format!("{ACROSS}/sales/availability"), &q).await;
        assert_eq!(code, 200, "{v1}");
        let v2path = "/genesys/2/service/callback/sales/availability";
        let (code, v2) = gms_get(e, "acme", v2path, &q).await;
        assert_eq!(code, 200, "{v2}");
        let slots = v3["slots"].as_array().unwrap();
        assert_eq!(slots.len(), if busy == "true" { 8 } else { 7 });
        let map: serde_json::Map<String, Value> = slots
            .iter()
            .map(|s| {
                (
                    s["utcTime"].as_str().unwrap().to_string(),
                    s["capacity"].clone(),
                )
            })
            .collect();
        assert_eq!(v1, Value::Object(map), "v1 = v3");
        assert_eq!(v2["durationMin"], 15);
        assert_eq!(v2["timezone"], "UTC");
        let v2slots = v2["slots"].as_array().unwrap();
        assert_eq!(v2slots.len(), slots.len());
        for (a, b) in v2slots.iter().zip(slots) {
            assert_eq!(a["utcTime"], b["utcTime"]);
            assert_eq!(a["capacity"], b["capacity"]);
            assert_eq!(a["total"], b["total"]);
            assert_eq!(a["localTime"], b["localTime"].as_str().unwrap()[..23]);
        }
        let second = &v2slots[if busy == "true" { 1 } else { 0 }];
        assert_eq!(
            (second["capacity"].clone(), second["total"].clone()),
            (json!(1), json!(2))
        );
    }
    // v2's localTime in the requested zone, without an offset.
    let q = [
        ("start-ms", t0.as_millisecond().to_string()),
        ("number-of-days", "1".into()),
        ("timezone", "Europe/Paris".into()),
        ("max-time-slots", "3".into()),
    ];
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, v2) = gms_get(
        e,
        "acme",
        "/genesys/2/service/callback/sales/availability",
        &q,
    )
    .await;
    assert_eq!(code, 200, "{v2}");
    // The first slot is full (left out): the first listed starts 15 minutes later.
    let first = t0 + SignedDuration::from_mins(15);
    let local = first.to_zoned(jiff::tz::TimeZone::get("Europe/Paris").unwrap());
    assert_eq!(v2["slots"].as_array().unwrap().len(), 3);
    assert_eq!(
        v2["slots"][0]["localTime"],
        local.strftime("%Y-%m-%dT%H:%M:%S%.3f").to_string()
    );
    // Bad parameters are 400s naming the GMS parameter; an unknown service is 404.
    let path = format!("{ACROSS}/sales/availability");
    for (q, named) in [
        (vec![("max-time-slots", "-1")], "max-time-slots"),
        (vec![("start", "tomorrow-ish")], "start"),
        (vec![("start", "2026-13-45T99:00:00Z")], "start"),
        (vec![("number-of-days", "100000")], "number-of-days"),
        (
            vec![("start-ms", "1"), ("start", "2030-01-01T00:00:00Z")],
            "start-ms",
        ),
        (vec![("end-ms", "99999999999999999999")], "end-ms"),
        (vec![("report-busy", "maybe")], "report-busy"),
    ] {
        let (code, body) = gms_get(e, "acme", &path, &q).await;
        assert_eq!(code, 400, "{q:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(named),
            "{q:?}: {body}"
        );
    }
    let huge = [
        ("start", "2030-01-01T00:00:00Z"),
        ("end", "2032-01-01T00:00:00Z"),
    ];
    assert_eq!(gms_get(e, "acme", &path, &huge).await.0, 400);
    let nope = format!("{ACROSS}/nope/availability");
    assert_eq!(gms_get(e, "acme", &nope, &[]).await.0, 404);
}

fn watermark(body: &Value, service: &str) -> (i64, i64, i64) {
    let w = &body[service];
    let n = |k: &str| w[k].as_i64().unwrap_or_else(|| panic!("{k} in {body}"));
    assert_eq!(n("watermark"), n("waiting") + n("executing"), "{body}");
    (n("scheduled"), n("waiting"), n("executing"))
}

#[tokio::test]
async fn admin_queues_watermarks_and_bulk_cancel() {
    let fx = Fixture::dispatch(TestEnv::new(), "acme", "sales", json!({})).await;
    let e = &fx.engage;
    let other = e
        .provision("globex", "sales", harness::open_service(json!({})))
        .await;
    let wm = "/genesys/1/admin/callback/watermarks";
    let (code, body) = gms_get(e, "acme", wm, &[]).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(watermark(&body, "sales"), (0, 0, 0));

    let soon = fx.create().in_secs(7200).id().await;
    let later = fx.create().in_secs(30 * 3600).id().await;
    let done = fx.create().in_secs(3600).id().await;
    assert_eq!(fx.cancel(&done).await.0, 200);
    let theirs = e
        .create(&other)
        .service("sales")
        .phone("+12025550199")
        .in_secs(7200)
        .id()
        .await;

    // Queue listing: the default window (15 min back, 24 h ahead) and live states.
    let queues = "/genesys/1/admin/callback/queues";
    let (code, body) = gms_get(e, "acme", queues, &[]).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(ids(&body["sales"]), vec![soon.clone()]);
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let end = wire(Timestamp::now() + SignedDuration::from_hours(48));
    let q = [
        ("target", "sales"),
        ("end_time", end.as_str()),
        ("states", "SCHEDULED,COMPLETED"),
    ];
    let (_, body) = gms_get(e, "acme", queues, &q).await;
    assert_eq!(ids(&body["sales"]), sorted(vec![&soon, &later, &done]));
    let (_, body) = gms_get(
        e,
        "acme",
        queues,
        &[("end_time", end.as_str()), ("max", "1")],
    )
    .await;
    assert_eq!(ids(&body["sales"]), vec![soon.clone()]);
    for bad in [
        [("start_time", "soon")],
        [("states", "DONE")],
        [("max", "0")],
    ] {
        assert_eq!(gms_get(e, "acme", queues, &bad).await.0, 400, "{bad:?}");
    }

    let (_, body) = gms_get(e, "acme", wm, &[("service_name", "sales")]).await;
    assert_eq!(watermark(&body, "sales"), (2, 0, 0));
    // An immediate callback waits; handed off and taken by an agent, it executes.
    let _worker = WorkerProc::start(&fx.env, &[]).await;
    let now = fx.create().id().await;
    let (_, body) = gms_get(e, "acme", wm, &[]).await;
    let (_, waiting, _) = watermark(&body, "sales");
    assert_eq!(waiting, 1, "{body}");
    fx.env.wait_handoffs(1, Duration::from_secs(20)).await;
    let (code, ev) = e
        .event(&now, json!({"state": "PROCESSING", "attempt": 1}))
        .await;
    assert_eq!(code, 200, "{ev}");
    let (_, body) = gms_get(e, "acme", wm, &[("service_name", "sales")]).await;
    assert_eq!(watermark(&body, "sales"), (2, 0, 1));
    assert_eq!(body["sales"]["watermark"], 1);
    let (code, _) = gms_get(e, "acme", wm, &[("service_name", "nope")]).await;
    assert_eq!(code, 404);

    // Bulk cancel of a mix: only the tenant's own live callback is cancelled.
    let unknown = uuid::Uuid::now_v7().to_string();
    let cancel = "/genesys/1/admin/callback/cancel";
    let body =
        json!({"reason": "store closed", "ids": [soon, done, theirs, unknown, "nope", 42, now]});
    let (code, answer) = gms_post(e, "acme", cancel, body).await;
    assert_eq!(code, 200, "{answer}");
    let outcomes: Vec<&str> = answer["results"]
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
            "NOT_FOUND",
            "NOT_FOUND",
            "INVALID_ID",
            "INVALID_ID",
            "NOT_CANCELLABLE"
        ]
    );
    assert_eq!(answer["cancelled"], 1);
    assert_eq!(fx.retrieve(&soon).await["callbackReason"], "CANCELLED");
    assert_eq!(
        e.retrieve(&other, &theirs).await["callbackState"],
        "SCHEDULED"
    );
    let (_, body) = gms_get(e, "acme", wm, &[("service_name", "sales")]).await;
    assert_eq!(watermark(&body, "sales"), (1, 0, 1));
    // Bounds: no ids, too many, not an object.
    let many: Vec<String> = (0..101).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for bad in [
        json!({"ids": []}),
        json!({"ids": many}),
        json!([soon]),
        json!({"ids": "x"}),
    ] {
        assert_eq!(gms_post(e, "acme", cancel, bad).await.0, 400);
    }
}

/// The customer-number filter reads the V12 index and live-state filters the partial index of
/// live callbacks, on a table of realistic shape (20,000 callbacks of two tenants, mostly
/// completed): never a scan of the table.
#[tokio::test]
async fn customer_number_and_state_filters_use_an_index() {
    let fx = Fixture::start(harness::open_service(json!({}))).await;
    let pg = fx.env.pg().await;
    pg.batch_execute(
        "INSERT INTO callbacks (id, tenant_id, service, state, phone_number, desired_time,
                                dispatch_at, scheduled)
         SELECT gen_random_uuid(), CASE WHEN i % 2 = 0 THEN 'acme' ELSE 'globex' END, 'sales',
                CASE WHEN i % 50 = 0 THEN 'QUEUED' ELSE 'COMPLETED' END, '+1555' || i,
                now() - make_interval(mins => i), now() - make_interval(mins => i), true
         FROM generate_series(1, 20000) i;
         ANALYZE callbacks;",
    )
    .await
    .unwrap();
    let plan = |filter: &str| {
        let sql = format!(
            "EXPLAIN SELECT c.id FROM callbacks c WHERE c.tenant_id = 'acme' AND ({filter})
             ORDER BY c.desired_time DESC, c.id LIMIT 100"
        );
        let pg = &pg;
        async move {
            let rows = pg.query(&sql, &[]).await.unwrap();
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let by_number = plan("c.phone_number = '+15554000'").await;
    assert!(
        by_number.contains("callbacks_tenant_phone_idx"),
        "{by_number}"
    );
    let live = "c.state = ANY('{SCHEDULED,QUEUED,ROUTING,PROCESSING}'::text[])";
    let by_state = plan(live).await;
    // The partial index of live callbacks: V9's per service, or V16's for admin listings.
    assert!(
        by_state.contains("callbacks_service_idx") || by_state.contains("callbacks_admin_live_idx"),
        "{by_state}"
    );
    assert!(!by_state.contains("Seq Scan"), "{by_state}");
    let both = plan(&format!("c.phone_number = '+15554000' AND {live}")).await;
    assert!(both.contains("Index"), "{both}");
    assert!(!both.contains("Seq Scan"), "{both}");
}
