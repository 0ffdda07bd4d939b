//! `GET /engagement/v3/callbacks/availability/{service}`: every parameter, their conflicts,
//! reportBusy, maxTimeSlots, and slots across daylight-saving changes (New York, Paris).

use harness::{Engage, TestEnv, local, wire};
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde_json::{Value, json};

/// Midnight UTC two days from now: always bookable, never "now".
fn day_after_tomorrow() -> Timestamp {
    let today = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let d = today.checked_add(2.days()).expect("date in range");
    local("UTC", d, 0, 0)
}

async fn avail(e: &Engage, key: &str, service: &str, query: &str) -> (u16, Value) {
    e.get(
        key,
        &format!("/engagement/v3/callbacks/availability/{service}?{query}"),
    )
    .await
}

fn slots(body: &Value) -> Vec<Value> {
    body["data"]["slots"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn message(body: &Value) -> String {
    body["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn availability_parameters() {
    let (_env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    e.service(
        "acme",
        "s",
        json!({"slot_minutes":15,"slot_capacity":3,"max_days_ahead":30}),
    )
    .await;
    let t0 = day_after_tomorrow();
    let t2h = t0 + SignedDuration::from_hours(2);

    // start + end: 8 quarter hours, remaining = total = 3.
    let (code, body) = avail(
        &e,
        &key,
        "s",
        &format!("start={}&end={}", wire(t0), wire(t2h)),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let list = slots(&body);
    assert_eq!(list.len(), 8);
    assert_eq!(
        list[0],
        json!({"utcTime": wire(t0), "localTime": format!("{}+00:00", &wire(t0)[..23]), "capacity": 3, "total": 3})
    );
    assert_eq!(
        list[7]["utcTime"],
        wire(t0 + SignedDuration::from_mins(105))
    );
    assert_eq!(body["data"]["durationMin"], 15);
    assert_eq!(body["data"]["timezone"], "UTC");

    // startMS + endMS give the same slots.
    let q = format!(
        "startMS={}&endMS={}",
        t0.as_millisecond(),
        t2h.as_millisecond()
    );
    let (_, ms) = avail(&e, &key, "s", &q).await;
    assert_eq!(slots(&ms), list);

    // numberOfDays: one UTC day of quarter hours.
    let (_, body) = avail(&e, &key, "s", &format!("start={}&numberOfDays=1", wire(t0))).await;
    assert_eq!(slots(&body).len(), 96);
    // Fourteen days of quarter hours in one answer.
    let (_, body) = avail(
        &e,
        &key,
        "s",
        &format!("start={}&numberOfDays=14", wire(t0)),
    )
    .await;
    assert_eq!(slots(&body).len(), 14 * 96);
    // startMS + numberOfDays.
    let (_, body) = avail(
        &e,
        &key,
        "s",
        &format!("startMS={}&numberOfDays=1", t0.as_millisecond()),
    )
    .await;
    assert_eq!(slots(&body).len(), 96);

    // Neither end nor numberOfDays: the slot containing start.
    let mid = t0 + SignedDuration::from_mins(20);
    let (_, body) = avail(&e, &key, "s", &format!("start={}", wire(mid))).await;
    assert_eq!(slots(&body).len(), 1);
    assert_eq!(
        slots(&body)[0]["utcTime"],
        wire(t0 + SignedDuration::from_mins(15))
    );

    // maxTimeSlots caps the list.
    let (_, body) = avail(
        &e,
        &key,
        "s",
        &format!("start={}&numberOfDays=1&maxTimeSlots=5", wire(t0)),
    )
    .await;
    assert_eq!(slots(&body).len(), 5);
    assert_eq!(
        slots(&body)[4]["utcTime"],
        wire(t0 + SignedDuration::from_mins(60))
    );

    // timezone: local start, localTime rendered in the zone with its offset.
    let zone = "Asia/Kolkata";
    let date = t0.to_zoned(jiff::tz::TimeZone::UTC).date();
    let (_, body) = avail(
        &e,
        &key,
        "s",
        &format!("start={date}T10:00:00.000&numberOfDays=1&timezone={zone}"),
    )
    .await;
    let list = slots(&body);
    assert_eq!(list.len(), 96);
    assert_eq!(list[0]["utcTime"], wire(local(zone, date, 10, 0)));
    assert_eq!(list[0]["localTime"], format!("{date}T10:00:00.000+05:30"));
    assert_eq!(body["data"]["timezone"], zone);

    // Default start is now: the slots returned are bookable ones.
    let (code, body) = avail(&e, &key, "s", "numberOfDays=1").await;
    assert_eq!(code, 200);
    let first: Timestamp = slots(&body)[0]["utcTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first + SignedDuration::from_mins(15) > Timestamp::now());
    // Nothing past max_days_ahead.
    let far = t0 + SignedDuration::from_hours(24 * 40);
    let (_, body) = avail(
        &e,
        &key,
        "s",
        &format!("start={}&numberOfDays=1", wire(far)),
    )
    .await;
    assert!(slots(&body).is_empty());

    // Conflicts and malformed values: 400 naming the parameters.
    let s0 = wire(t0);
    for (query, named) in [
        (format!("start={s0}&startMS=1"), "start and startMS"),
        (format!("start={s0}&end={s0}&endMS=1"), "end and endMS"),
        (
            format!("start={s0}&end={s0}&numberOfDays=1"),
            "end and numberOfDays",
        ),
        (
            format!("start={s0}&endMS=1&numberOfDays=1"),
            "endMS and numberOfDays",
        ),
        ("start=yesterday".into(), "start"),
        (format!("start={s0}&end=later"), "end"),
        ("startMS=abc".into(), "startMS"),
        (format!("start={s0}&endMS=x"), "endMS"),
        (format!("start={s0}&numberOfDays=-2"), "numberOfDays"),
        ("timezone=Nowhere/Land".into(), "timezone"),
        ("maxTimeSlots=0".into(), "maxTimeSlots"),
        ("maxTimeSlots=many".into(), "maxTimeSlots"),
        ("reportBusy=maybe".into(), "reportBusy"),
        (
            format!(
                "start={s0}&end={}",
                wire(t0 - SignedDuration::from_hours(1))
            ),
            "before",
        ),
    ] {
        let (code, body) = avail(&e, &key, "s", &query).await;
        assert_eq!(code, 400, "{query}: {body}");
        assert!(
            message(&body).contains(named),
            "{query}: {}",
            message(&body)
        );
    }
    let (code, body) = avail(&e, &key, "nosuch", "").await;
    assert_eq!(code, 400);
    assert!(message(&body).contains("unknown service"));
}

#[tokio::test]
async fn report_busy_lists_full_slots() {
    let (_env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    e.service("acme", "s", json!({"slot_minutes":60,"slot_capacity":2}))
        .await;
    let t0 = day_after_tomorrow() + SignedDuration::from_hours(9);
    let book = |t: Timestamp, n: u32| {
        let body =
            json!({"serviceName":"s","phoneNumber":format!("555010{n}"),"desiredTime":wire(t)});
        let e = &e;
        let key = key.clone();
        async move { e.create(&key).fields(body).send().await }
    };
    for n in 0..2 {
        let (code, body) = book(t0 + SignedDuration::from_mins(10), n).await;
        assert_eq!(code, 200, "{body}");
    }
    let (code, body) = book(t0 + SignedDuration::from_mins(70), 3).await;
    assert_eq!(code, 200, "{body}");
    let q = format!(
        "start={}&end={}",
        wire(t0),
        wire(t0 + SignedDuration::from_hours(3))
    );
    let (_, body) = avail(&e, &key, "s", &q).await;
    let caps: Vec<(Value, Value)> = slots(&body)
        .iter()
        .map(|s| (s["capacity"].clone(), s["total"].clone()))
        .collect();
    assert_eq!(caps, vec![(json!(1), json!(2)), (json!(2), json!(2))]);
    let (_, body) = avail(&e, &key, "s", &format!("{q}&reportBusy=true")).await;
    let list = slots(&body);
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["utcTime"], wire(t0));
    assert_eq!(
        (list[0]["capacity"].clone(), list[0]["total"].clone()),
        (json!(0), json!(2))
    );
    assert_eq!(list[1]["capacity"], 1);
    // maxTimeSlots counts the busy slots it lists.
    let (_, body) = avail(
        &e,
        &key,
        "s",
        &format!("{q}&reportBusy=true&maxTimeSlots=1"),
    )
    .await;
    assert_eq!(slots(&body).len(), 1);
}

/// The slots returned for the local day `date` of `zone`.
async fn day_slots(
    e: &Engage,
    key: &str,
    service: &str,
    zone: &str,
    date: jiff::civil::Date,
) -> Vec<Value> {
    let (code, body) = avail(
        e,
        key,
        service,
        &format!("start={date}T00:00:00.000&numberOfDays=1&timezone={zone}"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    slots(&body)
}

#[tokio::test]
async fn availability_across_dst() {
    let (_env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    for zone in ["America/New_York", "Europe/Paris"] {
        let harness::DstDays {
            spring_at,
            spring,
            fall_at,
            fall,
            name,
            ..
        } = e.hours_on_dst_days("acme", zone, "24:00").await;
        // Hourly slots, capacity 1 (the service's own columns).
        let svc = format!("hourly-{name}");
        e.service("acme", &svc, json!({"business_hours": name, "slot_minutes": 60, "slot_capacity": 1, "max_days_ahead": 366})).await;

        // Spring: 23 slots; none starts in the skipped hour; the jump is one real hour.
        let list = day_slots(&e, &key, &svc, zone, spring).await;
        assert_eq!(list.len(), 23, "{zone} spring: {list:?}");
        let utc: Vec<Timestamp> = list
            .iter()
            .map(|s| s["utcTime"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(
            utc.windows(2)
                .all(|w| w[1].duration_since(w[0]) == SignedDuration::from_hours(1))
        );
        assert!(utc.contains(&spring_at), "a slot starts at the transition");
        let skipped = spring_at
            .to_zoned(jiff::tz::TimeZone::get(zone).unwrap())
            .hour()
            - 1;
        assert!(list.iter().all(|s| {
            !s["localTime"]
                .as_str()
                .unwrap()
                .contains(&format!("T{skipped:02}:"))
        }));

        // Fall: 25 slots; the repeated hour appears twice, with two offsets.
        let list = day_slots(&e, &key, &svc, zone, fall).await;
        assert_eq!(list.len(), 25, "{zone} fall: {list:?}");
        let repeated = fall_at
            .to_zoned(jiff::tz::TimeZone::get(zone).unwrap())
            .hour();
        let twice: Vec<&Value> = list
            .iter()
            .filter(|s| s["localTime"].as_str().unwrap()[11..13] == format!("{repeated:02}"))
            .collect();
        assert_eq!(twice.len(), 2, "{zone}: {twice:?}");
        assert_ne!(twice[0]["localTime"], twice[1]["localTime"]);
        assert_eq!(twice[1]["utcTime"], wire(fall_at));

        // Quarter hours with a capacity rule: the override of each date applies to both copies
        // of the repeated hour.
        let rule = format!("rule-{name}");
        let slots_of = |h: u8| (0..4).map(move |q| (format!("{h:02}{:02}", q * 15), json!(2)));
        let fall_caps: serde_json::Map<String, Value> = slots_of(repeated as u8).collect();
        let (code, body) = e
            .admin_put(
                &format!("/ges/v1/tenants/acme/capacity-rules/{rule}"),
                json!({
            "slot_minutes": 15,
            "overrides": [{"date": fall.to_string(), "slots": fall_caps}]}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        let svc = format!("ruled-{name}");
        e.service(
            "acme",
            &svc,
            json!({"business_hours": name, "capacity_rule": rule, "max_days_ahead": 366}),
        )
        .await;
        let list = day_slots(&e, &key, &svc, zone, fall).await;
        assert_eq!(list.len(), 8, "{zone}: {list:?}");
        assert!(list.iter().all(|s| s["total"] == 2 && s["capacity"] == 2));
        let utc: Vec<Timestamp> = list
            .iter()
            .map(|s| s["utcTime"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(utc[4], fall_at, "second copy starts at the transition");
        assert_eq!(utc[3] + SignedDuration::from_mins(15), utc[4]);
    }
}
