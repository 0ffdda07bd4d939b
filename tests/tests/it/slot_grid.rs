//! Slot counters stay true (issue 12, promise 7): changing a service's slot length never
//! overbooks, because places booked under the old grid count against the new slot their
//! desired time falls in (docs/slot-grid.md); cancel gives the place back whichever grid it
//! was booked on; the worker purges the counters of past days.

use std::time::{Duration, Instant};

use futures::future::join_all;
use harness::{Engage, TestEnv, local, wire};
use jiff::{Timestamp, ToSpan, civil::Date};
use serde_json::{Value, json};

const CANCEL: &str = "/engagement/v3/callbacks/cancel";

fn in_two_days() -> Date {
    Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(2.days())
        .expect("date in range")
}

/// Replaces capacity rule `r` with `slot_minutes`-long slots and these capacities on `day`.
async fn rule(e: &Engage, day: Date, slot_minutes: u16, slots: Value) {
    let (code, body) = e
        .admin_put(
            "/ges/v1/tenants/acme/capacity-rules/r",
            json!({"slot_minutes": slot_minutes,
                        "overrides": [{"date": day.to_string(), "slots": slots}]}),
        )
        .await;
    assert!(code == 200 || code == 201, "rule put: {code} {body}");
}

async fn book(e: &Engage, key: &str, phone: &str, at: Timestamp) -> (u16, Value) {
    e.create(key)
        .service("s")
        .phone(phone)
        .at(&wire(at))
        .send()
        .await
}

/// Remaining capacity of each slot of `[from, to)` as availability reports it.
async fn remaining(e: &Engage, key: &str, from: Timestamp, to: Timestamp) -> Vec<(String, i64)> {
    let (code, body) = e
        .get(
            key,
            &format!(
                "/engagement/v3/callbacks/availability/s?start={}&end={}&reportBusy=true",
                wire(from),
                wire(to)
            ),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    body["data"]["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .map(|s| {
            (
                s["utcTime"].as_str().unwrap().to_string(),
                s["capacity"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn changing_slot_length_never_overbooks() {
    let (env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    let day = in_two_days();
    let at = |m: i8| local("UTC", day, 12, m);
    rule(&e, day, 60, json!({"1200": 2})).await;
    e.service("acme", "s", json!({"capacity_rule": "r"})).await;

    // The 12:00 hour is full with two bookings in its second half.
    let (code, first) = book(&e, &key, "+15550000001", at(35)).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(book(&e, &key, "+15550000002", at(45)).await.0, 200);
    assert_eq!(book(&e, &key, "+15550000003", at(10)).await.0, 429);

    // Half-hour slots: 12:30 has 3 places, 2 already taken by the bookings at 12:35 and
    // 12:45; of 40 concurrent creates into it exactly one gets in.
    rule(&e, day, 30, json!({"1200": 2, "1230": 3})).await;
    let calls = (0..40).map(|i| {
        let e = &e;
        let key = &key;
        async move { book(e, key, &format!("+1555100{i:04}"), at(40)).await.0 }
    });
    let codes = join_all(calls).await;
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    assert_eq!(
        remaining(&e, &key, at(0), at(0) + 1.hour()).await,
        vec![(wire(at(0)), 2), (wire(at(30)), 0)]
    );
    // The first half hour holds nothing yet: two places.
    assert_eq!(book(&e, &key, "+15550000004", at(5)).await.0, 200);
    assert_eq!(book(&e, &key, "+15550000005", at(10)).await.0, 200);
    assert_eq!(book(&e, &key, "+15550000006", at(15)).await.0, 429);
    assert_eq!(
        remaining(&e, &key, at(0), at(0) + 1.hour()).await,
        vec![(wire(at(0)), 0), (wire(at(30)), 0)]
    );

    // Cancelling a booking of the old grid gives its place back in the new one.
    let (code, body) = e
        .post(&key, CANCEL, json!({"id": first["data"]["id"]}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        remaining(&e, &key, at(30), at(30) + 30.minutes()).await,
        vec![(wire(at(30)), 1)]
    );
    assert_eq!(book(&e, &key, "+15550000007", at(50)).await.0, 200);
    assert_eq!(book(&e, &key, "+15550000008", at(55)).await.0, 429);

    // Back to one-hour slots of 5: the hour holds 5 callbacks booked on two grids (12:05,
    // 12:10, 12:40, 12:45, 12:50), so it is full.
    rule(&e, day, 60, json!({"1200": 5})).await;
    assert_eq!(
        remaining(&e, &key, at(0), at(0) + 1.hour()).await,
        vec![(wire(at(0)), 0)]
    );
    assert_eq!(book(&e, &key, "+15550000009", at(20)).await.0, 429);
    let held = env
        .count("SELECT count(*) FROM callbacks WHERE service = 's' AND state <> 'COMPLETED'")
        .await;
    assert_eq!(held, 5);
}

#[tokio::test]
async fn worker_purges_counters_of_past_days() {
    let env = TestEnv::new()
        .with("WORKER_MAINTENANCE_S", "1")
        .with("WORKER_RETENTION_INTERVAL_S", "1");
    let e = Engage::start(&env, &["--with-worker"]).await;
    let pg = env.pg().await;
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
    let past = now - 72.hours();
    let future = now + 24.hours();
    for t in [past, future] {
        pg.execute(
            "INSERT INTO slot_bookings (tenant_id, service, slot_start, booked)
             VALUES ('acme', 's', $1, 1)",
            &[&t],
        )
        .await
        .expect("insert counter");
    }
    let started = Instant::now();
    loop {
        let left: Vec<Timestamp> = pg
            .query(
                "SELECT slot_start FROM slot_bookings ORDER BY slot_start",
                &[],
            )
            .await
            .expect("counters")
            .iter()
            .map(|r| r.get(0))
            .collect();
        if left.len() == 1 {
            assert_eq!(left[0], future, "only the future counter stays");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "past counters not purged: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(e);
}

/// Always-open business hours in `zone` (the slot grid follows its wall clock).
async fn hours_in(e: &Engage, zone: &str) {
    let all_day = json!([["00:00", "24:00"]]);
    let weekly: serde_json::Map<String, Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| ((*d).to_string(), all_day.clone()))
        .collect();
    let (code, body) = e
        .admin_put(
            "/ges/v1/tenants/acme/business-hours/bh",
            json!({"timezone": zone, "weekly": weekly}),
        )
        .await;
    assert!(code == 200 || code == 201, "hours put: {code} {body}");
}

#[tokio::test]
async fn moving_the_grid_to_another_zone_never_overbooks() {
    let (_env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    let day = in_two_days();
    hours_in(&e, "UTC").await;
    e.service(
        "acme",
        "s",
        json!({"business_hours": "bh", "slot_minutes": 60, "slot_capacity": 1}),
    )
    .await;
    let (code, booked) = book(&e, &key, "+15550000001", local("UTC", day, 12, 10)).await;
    assert_eq!(code, 200, "{booked}");
    assert_eq!(
        book(&e, &key, "+15550000002", local("UTC", day, 12, 50))
            .await
            .0,
        429
    );

    // Kolkata is UTC+05:30: hourly slots now start at half past the UTC hour. The slot
    // 11:30-12:30 UTC already holds the 12:10 booking; 12:30-13:30 is free.
    hours_in(&e, "Asia/Kolkata").await;
    assert_eq!(
        book(&e, &key, "+15550000003", local("UTC", day, 11, 45))
            .await
            .0,
        429
    );
    assert_eq!(
        book(&e, &key, "+15550000004", local("UTC", day, 12, 40))
            .await
            .0,
        200
    );
    assert_eq!(
        book(&e, &key, "+15550000005", local("UTC", day, 13, 0))
            .await
            .0,
        429
    );

    // Cancel gives the old grid's place back to the new slot.
    let (code, body) = e
        .post(&key, CANCEL, json!({"id": booked["data"]["id"]}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        book(&e, &key, "+15550000006", local("UTC", day, 11, 45))
            .await
            .0,
        200
    );
}
