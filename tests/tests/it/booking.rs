//! Capacity-checked scheduled booking: no overbooking under 200 concurrent creates (with and
//! without Idempotency-Key), 429 with proposed slots, cancel frees the slot, business-hours
//! checks for scheduled and immediate creates, and bookings across DST changes.

use futures::future::join_all;
use harness::{Engage, TestEnv, local, wire};
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde_json::{Value, json};

const CREATE: &str = "/engagement/v3/callbacks/create";

fn noon_in_two_days() -> Timestamp {
    let today = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    local(
        "UTC",
        today.checked_add(2.days()).expect("date in range"),
        12,
        0,
    )
}

async fn create(
    e: &Engage,
    key: &str,
    service: &str,
    phone: &str,
    at: Option<Timestamp>,
    extra: Value,
) -> (u16, Value) {
    let mut body = json!({"serviceName": service, "phoneNumber": phone});
    if let Some(t) = at {
        body["desiredTime"] = json!(wire(t));
    }
    if let (Some(b), Some(x)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(x.clone());
    }
    e.create(key).fields(body).send().await
}

async fn booked(env: &TestEnv, service: &str, slot: Timestamp) -> i32 {
    env.pg()
        .await
        .query_opt(
            "SELECT booked FROM slot_bookings WHERE service = $1 AND slot_start = $2",
            &[&service, &slot],
        )
        .await
        .expect("slot_bookings query")
        .map_or(0, |r| r.get(0))
}

#[tokio::test]
async fn concurrent_creates_never_overbook_a_slot() {
    let (env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    e.service(
        "acme",
        "s",
        json!({"slot_minutes":15,"slot_capacity":10,"in_queue_checking":false}),
    )
    .await;
    let slot = noon_in_two_days();
    let at = slot + SignedDuration::from_mins(5);

    // 200 at once: half plain, half with an Idempotency-Key (the transactional path).
    let calls = (0..200).map(|i| {
        let body =
            json!({"serviceName":"s","phoneNumber":format!("+1555{i:07}"),"desiredTime":wire(at)});
        let mut req = e
            .http
            .post(format!("{}{CREATE}", e.external))
            .header("x-api-key", &key)
            .json(&body);
        if i % 2 == 0 {
            req = req.header("idempotency-key", format!("k-{i}"));
        }
        harness::send(req)
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|(c, _)| *c == 200).count();
    let full: Vec<&Value> = results
        .iter()
        .filter(|(c, _)| *c == 429)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        ok,
        10,
        "{:?}",
        results.iter().find(|(c, _)| *c != 200 && *c != 429)
    );
    assert_eq!(full.len(), 190);
    for body in &full {
        let proposed = body["data"]["slots"]
            .as_object()
            .unwrap_or_else(|| panic!("data.slots: {body}"));
        assert_eq!(proposed.len(), 5, "{body}");
        assert!(!proposed.contains_key(&wire(slot)));
        for (start, remaining) in proposed {
            let t: Timestamp = start.parse().unwrap();
            assert!(
                t.duration_since(slot).abs() <= SignedDuration::from_mins(45),
                "nearest slots: {start}"
            );
            assert_eq!(remaining, "10");
        }
    }
    assert_eq!(booked(&env, "s", slot).await, 10);
    let pg = env.pg().await;
    let held: i64 = pg
        .query_one(
            "SELECT count(*) FROM callbacks WHERE slot_start = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 10);

    // Availability agrees.
    let (_, body) = e
        .get(
            &key,
            &format!(
                "/engagement/v3/callbacks/availability/s?start={}&reportBusy=true",
                wire(slot)
            ),
        )
        .await;
    assert_eq!(body["data"]["slots"][0]["capacity"], 0);

    // Cancel one: the slot has room for exactly one more.
    let id = results.iter().find(|(c, _)| *c == 200).unwrap().1["data"]["id"].clone();
    let (code, body) = e.cancel(&key, id.as_str().unwrap()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(booked(&env, "s", slot).await, 9);
    let (code, body) = create(&e, &key, "s", "+15559999991", Some(at), json!({})).await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = create(&e, &key, "s", "+15559999992", Some(at), json!({})).await;
    assert_eq!(code, 429);
    // Cancelling twice frees nothing more.
    let (code, _) = e.cancel(&key, id.as_str().unwrap()).await;
    assert_eq!(code, 400);
    assert_eq!(booked(&env, "s", slot).await, 10);

    // An idempotent replay of a booked request answers the same id and books nothing.
    let winner = (0..200)
        .step_by(2)
        .zip(results.iter().step_by(2))
        .find(|(_, (c, _))| *c == 200);
    if let Some((i, (_, first))) = winner {
        let body =
            json!({"serviceName":"s","phoneNumber":format!("+1555{i:07}"),"desiredTime":wire(at)});
        let req = e
            .http
            .post(format!("{}{CREATE}", e.external))
            .header("x-api-key", &key)
            .header("idempotency-key", format!("k-{i}"))
            .json(&body);
        let (code, again) = harness::send(req).await;
        assert_eq!(code, 200);
        assert_eq!(again["data"]["id"], first["data"]["id"]);
        assert_eq!(booked(&env, "s", slot).await, 10);
    }
}

#[tokio::test]
async fn business_hours_gate_scheduled_and_immediate_creates() {
    let (env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    let noon = noon_in_two_days();
    let day = noon.to_zoned(jiff::tz::TimeZone::UTC).date();
    // Closed except 09:00-10:00 UTC on one day.
    let (code, body) = e
        .admin_put(
            "/ges/v1/tenants/acme/business-hours/bh",
            json!({
        "timezone":"UTC","exceptions":[{"date": day.to_string(), "open":[["09:00","10:00"]]}]}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    e.service(
        "acme",
        "strict",
        json!({"business_hours":"bh","slot_minutes":30,"slot_capacity":1}),
    )
    .await;
    e.service("acme", "lenient", json!({"business_hours":"bh","slot_minutes":30,"slot_capacity":1,"reject_out_of_hours":false})).await;

    // Immediate while closed: refused by the strict service, accepted by the lenient one.
    let (code, body) = create(&e, &key, "strict", "5550101", None, json!({})).await;
    harness::assert_refused((code, &body), 400, "closed");
    let (code, body) = create(&e, &key, "lenient", "5550102", None, json!({})).await;
    assert_eq!(code, 200, "{body}");

    // Scheduled outside hours.
    let (code, body) = create(&e, &key, "strict", "5550103", Some(noon), json!({})).await;
    harness::assert_refused((code, &body), 400, "outside the business hours");
    let (code, body) = create(&e, &key, "lenient", "5550104", Some(noon), json!({})).await;
    assert_eq!(code, 200, "{body}");
    let id: uuid::Uuid = body["data"]["id"].as_str().unwrap().parse().unwrap();
    let slot: Option<Timestamp> = env
        .pg()
        .await
        .query_one("SELECT slot_start FROM callbacks WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(slot, None, "out-of-hours bookings hold no slot");
    // alwaysCheckCapacity: there is no capacity out of hours → 429 proposing the open slots.
    let (code, body) = create(
        &e,
        &key,
        "lenient",
        "5550105",
        Some(noon),
        json!({"alwaysCheckCapacity": true}),
    )
    .await;
    assert_eq!(code, 429, "{body}");
    let nine = local("UTC", day, 9, 0);
    assert_eq!(
        body["data"]["slots"],
        json!({wire(nine): "1", wire(nine + SignedDuration::from_mins(30)): "1"})
    );

    // Inside hours: one place per slot.
    let (code, body) = create(
        &e,
        &key,
        "strict",
        "5550106",
        Some(nine + SignedDuration::from_mins(40)),
        json!({}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = create(
        &e,
        &key,
        "strict",
        "5550107",
        Some(nine + SignedDuration::from_mins(31)),
        json!({}),
    )
    .await;
    assert_eq!(code, 429);
    assert_eq!(body["data"]["slots"], json!({wire(nine): "1"}));
    assert_eq!(
        booked(&env, "strict", nine + SignedDuration::from_mins(30)).await,
        1
    );
}

#[tokio::test]
async fn bookings_across_dst() {
    let (env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    for zone in ["America/New_York", "Europe/Paris"] {
        let harness::DstDays {
            spring_at,
            fall_at,
            name,
            ..
        } = e.hours_on_dst_days("acme", zone, "24:00").await;
        let svc = format!("dst-{name}");
        e.service(
            "acme",
            &svc,
            json!({"business_hours": name, "slot_minutes": 60, "slot_capacity": 1,
            "max_days_ahead": 366, "in_queue_checking": false}),
        )
        .await;
        let mut phone = 0;
        let mut book = |t: Timestamp| {
            phone += 1;
            let (e, key, svc) = (&e, key.clone(), svc.clone());
            let number = format!("+3315550{phone:04}");
            async move { create(e, &key, &svc, &number, Some(t), json!({})).await }
        };

        // Fall back: the repeated hour is two slots. Thirty minutes before the transition and
        // thirty minutes after it read the same on the wall clock but are different slots.
        let first = fall_at - SignedDuration::from_mins(30);
        let second = fall_at + SignedDuration::from_mins(30);
        assert_eq!(book(first).await.0, 200);
        assert_eq!(book(second).await.0, 200);
        let (code, body) = book(first + SignedDuration::from_mins(10)).await;
        assert_eq!(code, 429, "{body}");
        let proposed = body["data"]["slots"].as_object().unwrap();
        assert!(
            !proposed.contains_key(&wire(fall_at))
                && !proposed.contains_key(&wire(fall_at - SignedDuration::from_hours(1)))
        );
        assert!(
            proposed.contains_key(&wire(fall_at + SignedDuration::from_hours(1))),
            "{body}"
        );
        assert_eq!(
            booked(&env, &svc, fall_at - SignedDuration::from_hours(1)).await,
            1
        );
        assert_eq!(booked(&env, &svc, fall_at).await, 1);

        // Spring forward: the slot before the gap runs into the transition; the next slot
        // starts at the transition (local 03:00).
        let before = spring_at - SignedDuration::from_mins(30);
        let after = spring_at + SignedDuration::from_mins(10);
        assert_eq!(book(before).await.0, 200);
        assert_eq!(book(after).await.0, 200);
        assert_eq!(book(after + SignedDuration::from_mins(30)).await.0, 429);
        assert_eq!(
            booked(&env, &svc, spring_at - SignedDuration::from_hours(1)).await,
            1
        );
        assert_eq!(booked(&env, &svc, spring_at).await, 1);
    }
}
