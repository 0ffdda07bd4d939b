//! Reschedule (the v3 extension `POST /engagement/v3/callbacks/reschedule`, the code the GMS
//! `PUT` shares), attacked: the slot counts move exactly, a full slot or closed hours refuse
//! and change nothing, a moved callback reaches the voice stream at its new time only (also
//! when raced against the worker's hand-off, and when Redis refuses the index write), one place
//! goes to one of many concurrent movers, and a frozen PostgreSQL answers a bounded 503 that
//! leaves the callback whole.

use std::time::{Duration, Instant};

use futures::future::join_all;
use harness::{
    Engage, Fixture, PrivatePostgres, PrivateRedis, TestEnv, WorkerProc, in_secs, next_phone,
    open_service, wire,
};
use redis::AsyncCommands;
use serde_json::{Value, json};

const RESCHEDULE: &str = "/engagement/v3/callbacks/reschedule";

/// `POST …/reschedule` with `body`; (status, envelope).
async fn reschedule(e: &Engage, key: &str, body: Value) -> (u16, Value) {
    e.post(key, RESCHEDULE, body).await
}

/// `POST …/reschedule` of `id` to `to` with the fixture's key; (status, envelope).
async fn move_to(fx: &Fixture, id: &str, to: jiff::Timestamp) -> (u16, Value) {
    reschedule(
        &fx.engage,
        &fx.key,
        json!({"id": id, "desiredTime": wire(to)}),
    )
    .await
}

/// The places booked per slot start (only slots holding any), in time order.
async fn booked(env: &TestEnv) -> Vec<(String, i64)> {
    env.pg()
        .await
        .query(
            "SELECT to_char(slot_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI'), booked::bigint
             FROM slot_bookings WHERE booked > 0 ORDER BY slot_start",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn minute(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M").to_string()
}

#[tokio::test]
async fn reschedule_moves_the_slot_place_and_the_desired_time() {
    let fx = Fixture::start(open_service(
        json!({"slot_minutes": 15, "slot_capacity": 3}),
    ))
    .await;
    let (old, new) = (harness::day_at(2, 10), harness::day_at(2, 12));
    let id = fx
        .create()
        .at(&wire(old))
        .user_data(json!({"a": 1, "b": 2}))
        .id()
        .await;
    assert_eq!(booked(&fx.env).await, vec![(minute(old), 1)]);
    let body = json!({"id": id, "desiredTime": wire(new), "userData": {"a": null, "c": "x"}});
    let (code, answer) = reschedule(&fx.engage, &fx.key, body).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["data"]["desiredTime"], wire(new));
    assert_eq!(
        booked(&fx.env).await,
        vec![(minute(new), 1)],
        "old freed, new taken"
    );
    let cb = fx.retrieve(&id).await;
    assert_eq!(cb["desiredTime"], wire(new));
    assert_eq!(cb["callbackState"], "SCHEDULED");
    assert_eq!(cb["userData"], json!({"b": 2, "c": "x"}));
    // Properties alone: the time and the places stay.
    let body = json!({"id": id, "userData": {"b": null}});
    let (code, answer) = reschedule(&fx.engage, &fx.key, body).await;
    assert_eq!(code, 200, "{answer}");
    assert!(answer["data"].get("desiredTime").is_none(), "{answer}");
    assert_eq!(fx.retrieve(&id).await["userData"], json!({"c": "x"}));
    assert_eq!(booked(&fx.env).await, vec![(minute(new), 1)]);
    // Within its own full slot: its own place is given back and taken again.
    let full = Fixture::start(open_service(
        json!({"slot_minutes": 60, "slot_capacity": 1}),
    ))
    .await;
    let id = full.create().at(&wire(old)).id().await;
    let later = old + jiff::SignedDuration::from_mins(30);
    let body = json!({"id": id, "desiredTime": wire(later)});
    assert_eq!(reschedule(&full.engage, &full.key, body).await.0, 200);
    assert_eq!(booked(&full.env).await, vec![(minute(old), 1)]);
}

#[tokio::test]
async fn a_full_slot_refuses_with_proposals_and_nothing_changes() {
    let fx = Fixture::start(open_service(
        json!({"slot_minutes": 15, "slot_capacity": 1}),
    ))
    .await;
    let (x, y) = (harness::day_at(2, 10), harness::day_at(2, 12));
    fx.create().at(&wire(x)).id().await;
    let b = fx
        .create()
        .at(&wire(y))
        .user_data(json!({"k": 1}))
        .id()
        .await;
    let before = booked(&fx.env).await;
    let body = json!({"id": b, "desiredTime": wire(x), "userData": {"k": 2}});
    let (code, answer) = reschedule(&fx.engage, &fx.key, body).await;
    assert_eq!(code, 429, "{answer}");
    let slots = answer["data"]["slots"].as_object().expect("proposals");
    assert!(
        !slots.is_empty() && !slots.contains_key(&wire(x)),
        "{answer}"
    );
    assert_eq!(booked(&fx.env).await, before, "counts unchanged");
    let cb = fx.retrieve(&b).await;
    assert_eq!(
        (cb["desiredTime"].clone(), cb["userData"].clone()),
        (json!(wire(y)), json!({"k": 1}))
    );
}

#[tokio::test]
async fn refusals_name_what_is_wrong_and_change_nothing() {
    let env = TestEnv::new();
    let e = Engage::start(&env, &[]).await;
    let key = e.tenant("acme").await;
    let all_day = json!([["00:00", "24:00"]]);
    let week = json!({"timezone": "UTC", "weekly": {"mon": all_day, "tue": all_day,
        "wed": all_day, "thu": all_day, "fri": all_day, "sat": all_day, "sun": []}});
    let (code, b) = e
        .admin_put("/ges/v1/tenants/acme/business-hours/week", week)
        .await;
    assert!(code == 200 || code == 201, "{b}");
    let settings = json!({"business_hours": "week", "reject_out_of_hours": true,
        "slot_minutes": 15, "slot_capacity": 5, "in_queue_checking": false});
    e.service("acme", "sales", settings).await;
    let sunday = (1..=8)
        .map(|d| harness::day_at(d, 12))
        .find(|t| t.to_zoned(jiff::tz::TimeZone::UTC).weekday() == jiff::civil::Weekday::Sunday)
        .unwrap();
    let monday = sunday + jiff::SignedDuration::from_hours(24);
    let id = e
        .create(&key)
        .service("sales")
        .phone(&next_phone())
        .at(&wire(monday))
        .id()
        .await;
    let before = booked(&env).await;
    let cases = [
        (
            json!({"id": id, "desiredTime": wire(sunday)}),
            400,
            "outside the business hours",
        ),
        (
            json!({"id": id, "desiredTime": "2000-01-01T00:00:00Z"}),
            400,
            "in the past",
        ),
        (json!({"id": id, "desiredTime": "soon"}), 400, "desiredTime"),
        (json!({"id": id}), 400, "nothing to change"),
        (
            json!({"id": id, "userData": {"not a name": 1}}),
            400,
            "not a valid name",
        ),
        (json!({"id": id, "userData": [1]}), 400, "userData"),
        (json!({"desiredTime": wire(monday)}), 400, "id is required"),
        (
            json!({"id": uuid::Uuid::now_v7().to_string(), "userData": {"a": 1}}),
            404,
            "no callback",
        ),
    ];
    for (body, status, says) in cases {
        let (code, answer) = reschedule(&e, &key, body.clone()).await;
        let msg = answer["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(code, status, "{body}: {answer}");
        assert!(msg.contains(says), "{body}: {msg}");
    }
    assert_eq!(booked(&env).await, before, "refusals change nothing");
    assert_eq!(e.retrieve(&key, &id).await["desiredTime"], wire(monday));
    // Another tenant's callback is not found.
    let other = e.tenant("other").await;
    let (code, _) = reschedule(&e, &other, json!({"id": id, "userData": {"a": 1}})).await;
    assert_eq!(code, 404);
    // Cancelled: 409, for a move and for properties.
    assert_eq!(e.cancel(&key, &id).await.0, 200);
    let later = monday + jiff::SignedDuration::from_hours(1);
    for body in [
        json!({"id": id, "desiredTime": wire(later)}),
        json!({"id": id, "userData": {"a": 1}}),
    ] {
        let (code, answer) = reschedule(&e, &key, body).await;
        assert_eq!(code, 409, "{answer}");
        let msg = answer["status"]["message"].as_str().unwrap();
        assert!(msg.contains("CANCELLED"), "{msg}");
    }
    assert_eq!(e.retrieve(&key, &id).await["desiredTime"], wire(monday));
    assert_eq!(
        booked(&env).await,
        vec![],
        "the cancel freed the place; nothing re-took it"
    );
}

/// The hand-off of callback `id` on the voice stream, waited for until `within`.
async fn handoff_of(env: &TestEnv, id: &str, within: Duration) -> Option<(Instant, Value)> {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some((_, f)) = env
            .handoffs()
            .await
            .into_iter()
            .find(|(_, f)| f["callback_id"] == id)
        {
            return Some((Instant::now(), json!(f)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_callback_reaches_the_voice_stream_at_its_new_time_only() {
    let fx = Fixture::dispatch(TestEnv::new(), "acme", "sales", json!({})).await;
    let w = WorkerProc::start(&fx.env, &[]).await;
    let old = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(4);
    let new = old + jiff::SignedDuration::from_secs(8);
    let id = fx.create().at(&wire(old)).id().await;
    let (code, answer) = move_to(&fx, &id, new).await;
    assert_eq!(code, 200, "{answer}");
    // Nothing at the old time (and up to a second before the new one).
    let quiet = (new - jiff::SignedDuration::from_secs(1)).duration_since(jiff::Timestamp::now());
    let early = handoff_of(&fx.env, &id, quiet.unsigned_abs()).await;
    assert!(early.is_none(), "handed off early: {early:?}");
    let (_, entry) = handoff_of(&fx.env, &id, Duration::from_secs(15))
        .await
        .expect("handed off");
    assert_eq!(entry["desired_time"], wire(new), "{entry}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (total, distinct, _) = fx.env.census().await;
    assert_eq!(
        (total, distinct),
        (1, 1),
        "worker log:\n{}",
        w.proc.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_raced_against_the_handoff_never_doubles_nor_goes_at_the_old_time() {
    let fx = Fixture::dispatch(TestEnv::new(), "acme", "sales", json!({})).await;
    let _w = WorkerProc::start(&fx.env, &[]).await;
    let n = 40;
    let new = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(12);
    let runs = (0..n).map(|i| {
        let fx = &fx;
        async move {
            // Due now: the worker hands it off while the reschedule runs.
            let id = fx.create().phone(&format!("+1555700{i:04}")).id().await;
            tokio::time::sleep(Duration::from_millis(((i % 8) * 5) as u64)).await;
            let body = json!({"id": id, "desiredTime": wire(new)});
            let (code, answer) = reschedule(&fx.engage, &fx.key, body).await;
            assert!(code == 200 || code == 409, "{answer}");
            (id, code)
        }
    });
    let outcomes = join_all(runs).await;
    let moved = outcomes.iter().filter(|(_, c)| *c == 200).count();
    println!(
        "FIGURE raced_reschedules moved={moved} refused_in_handoff={}",
        n as usize - moved
    );
    fx.env
        .wait_handoffs(n as usize, Duration::from_secs(40))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let entries = fx.env.handoffs().await;
    let (total, distinct, _) = fx.env.census().await;
    assert_eq!(
        (total, distinct),
        (n as usize, n as usize),
        "each exactly once"
    );
    for (id, code) in &outcomes {
        let (_, f) = entries
            .iter()
            .find(|(_, f)| &f["callback_id"] == id)
            .expect("handed off");
        if *code == 200 {
            assert_eq!(
                f["desired_time"],
                wire(new),
                "a moved callback went at its old time"
            );
        } else {
            assert_ne!(f["desired_time"], wire(new));
        }
    }
    let submitted = fx
        .env
        .count("SELECT count(*) FROM callbacks WHERE submitted_at IS NOT NULL")
        .await;
    assert_eq!(submitted, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_movers_into_the_last_place_one_wins_and_counts_stay_exact() {
    let fx = Fixture::start(open_service(
        json!({"slot_minutes": 15, "slot_capacity": 2}),
    ))
    .await;
    let x = harness::day_at(3, 9);
    fx.create().at(&wire(x)).id().await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(fx.create().at(&wire(harness::day_at(3, 10 + i))).id().await);
    }
    let tries = ids.iter().map(|id| move_to(&fx, id, x));
    let codes: Vec<u16> = join_all(tries).await.into_iter().map(|(c, _)| c).collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 7, "{codes:?}");
    let counts = booked(&fx.env).await;
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<i64>(), 9);
    assert_eq!(counts[0], (minute(x), 2));
    assert_eq!(counts.len(), 8, "the winner's old slot is free: {counts:?}");
    let held = fx
        .env
        .count("SELECT count(*) FROM callbacks WHERE slot_start IS NOT NULL")
        .await;
    assert_eq!(held, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refusing_writes_during_a_reschedule_still_dispatches_at_the_new_time() {
    let redis = PrivateRedis::new(false);
    let env = TestEnv::new().with("REDIS_URL", &redis.url());
    let fx = Fixture::dispatch(env, "acme", "sales", json!({})).await;
    let sweep = [
        ("WORKER_SWEEP_S", "2".to_string()),
        ("WORKER_SWEEP_GRACE_S", "2".to_string()),
    ];
    let w = WorkerProc::start(&fx.env, &sweep).await;
    let mut conn = redis.conn().await;
    harness::config_set(&mut conn, "maxmemory-policy", "noeviction").await;
    harness::config_set(&mut conn, "maxmemory", "1").await;
    // Never indexed (refused), then moved (the index write refused again).
    let old = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    let new = old + jiff::SignedDuration::from_secs(6);
    let id = fx.create().at(&wire(old)).id().await;
    let (code, answer) = move_to(&fx, &id, new).await;
    assert_eq!(code, 200, "{answer}");
    assert!(
        fx.engage
            .metric_sum("engage_redis_write_failed_total")
            .await
            >= 2.0,
        "void test"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    harness::config_set(&mut conn, "maxmemory", "0").await;
    let (at, entry) = handoff_of(&fx.env, &id, Duration::from_secs(40))
        .await
        .expect("swept");
    assert_eq!(entry["desired_time"], wire(new), "{entry}");
    let late = jiff::Timestamp::now().duration_since(new);
    println!("FIGURE swept_reschedule_late_ms={}", late.as_millis());
    assert!(jiff::Timestamp::now() >= new, "not before the new time");
    let _ = at;
    let (total, distinct, _) = fx.env.census().await;
    assert_eq!(
        (total, distinct),
        (1, 1),
        "worker log:\n{}",
        w.proc.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_postgres_answers_a_bounded_503_and_the_callback_stays_whole() {
    let pg = PrivatePostgres::new();
    let env = TestEnv::new()
        .with("DATABASE_URL", &pg.url())
        .with("REQUEST_TIMEOUT_MS", "2000")
        .with("CACHE_TTL_MS", "600000");
    let fx = Fixture::with(
        env,
        &[],
        "acme",
        "sales",
        open_service(json!({"slot_minutes": 15, "slot_capacity": 5})),
    )
    .await;
    let (old, new) = (harness::day_at(2, 10), harness::day_at(2, 12));
    let id = fx.create().at(&wire(old)).id().await;
    // Warm the service cache, then freeze.
    let (code, _) = reschedule(&fx.engage, &fx.key, json!({"id": id, "userData": {"w": 1}})).await;
    assert_eq!(code, 200);
    pg.freeze();
    let started = Instant::now();
    let (code, answer) = move_to(&fx, &id, new).await;
    let took = started.elapsed();
    pg.thaw();
    println!("FIGURE frozen_reschedule_answer_ms={}", took.as_millis());
    assert_eq!(code, 503, "{answer}");
    assert!(
        took <= Duration::from_millis(2_000 + 2_000 + 1_000),
        "{took:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Whole: one place, in the slot of the stored desired time.
    let cb = fx.retrieve(&id).await;
    let at: jiff::Timestamp = cb["desiredTime"].as_str().unwrap().parse().unwrap();
    assert!(at == old || at == new, "{cb}");
    assert_eq!(booked(&fx.env).await, vec![(minute(at), 1)]);
    let (code, answer) = move_to(&fx, &id, new).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(booked(&fx.env).await, vec![(minute(new), 1)]);
}

/// The submission dedupe key of attempt 1 (epoch 0) of `id`.
fn old_handoff_key(env: &TestEnv, id: &str) -> String {
    format!("{{{}}}:sub:{id}:1", env.voice_stream())
}

/// A move of a callback due soon fences its old hand-off before it commits: kept (24 h) when it
/// committed, so a worker that loaded the old time can never write it; lifted when the move
/// was refused, so the callback still goes out at its old time.
#[tokio::test]
async fn the_old_handoff_is_fenced_when_a_move_commits_and_freed_when_refused() {
    let fx = Fixture::start(open_service(
        json!({"slot_minutes": 15, "slot_capacity": 1}),
    ))
    .await;
    let full = harness::day_at(2, 10);
    fx.create().at(&wire(full)).id().await;
    let id = fx.create().at(&in_secs(120)).id().await;
    let mut voice = fx.env.voice().await;
    let key = old_handoff_key(&fx.env, &id);
    let (code, answer) = move_to(&fx, &id, full).await;
    assert_eq!(code, 429, "{answer}");
    let fence: Option<String> = voice.get(&key).await.unwrap();
    assert_eq!(fence, None, "a refused move lifts its fence");
    let to = harness::day_at(2, 12);
    let (code, answer) = move_to(&fx, &id, to).await;
    assert_eq!(code, 200, "{answer}");
    let fence: Option<String> = voice.get(&key).await.unwrap();
    assert_eq!(fence.as_deref(), Some("rescheduled"));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut voice)
        .await
        .unwrap();
    assert!(ttl > 3_600, "kept like any dedupe key: {ttl}");
    // A stale worker's write of the old time finds the key taken.
    let stale: bool = redis::cmd("SET")
        .arg(&key)
        .arg("1")
        .arg("NX")
        .query_async::<Option<String>>(&mut voice)
        .await
        .unwrap()
        .is_some();
    assert!(!stale);
    let epoch = fx
        .env
        .count(&format!(
            "SELECT handoff_epoch::bigint FROM callbacks WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(epoch, 1);
}

/// With `VOICE_REDIS_REPLICA_ACKS=1` and no replica in sync (the test voice Redis has none), a
/// move of a callback due soon must not commit on a fence a failover could lose: 503, the
/// callback unchanged, and the fence lifted again so it still goes out at its time. A move of
/// a callback not due soon needs no fence and goes through.
#[tokio::test]
async fn a_move_whose_fence_no_replica_holds_is_refused_and_changes_nothing() {
    let env = TestEnv::new()
        .with("VOICE_REDIS_REPLICA_ACKS", "1")
        .with("VOICE_REDIS_ACK_TIMEOUT_MS", "50");
    let fx = Fixture::with(env, &[], "acme", "sales", open_service(json!({}))).await;
    let soon = in_secs(120);
    let id = fx.create().at(&soon).id().await;
    let mut voice = fx.env.voice().await;
    let key = old_handoff_key(&fx.env, &id);
    let (code, answer) = move_to(&fx, &id, harness::day_at(2, 12)).await;
    assert_eq!(code, 503, "{answer}");
    let message = answer["status"]["message"].as_str().unwrap_or("");
    assert!(message.contains("replicas behind"), "{answer}");
    let fence: Option<String> = voice.get(&key).await.unwrap();
    assert_eq!(fence, None, "an unacknowledged fence is lifted");
    assert_eq!(
        fx.retrieve(&id).await["desiredTime"].as_str(),
        Some(soon.as_str())
    );
    let later = fx.create().at(&wire(harness::day_at(2, 9))).id().await;
    let (code, answer) = move_to(&fx, &later, harness::day_at(2, 13)).await;
    assert_eq!(code, 200, "{answer}");
}

/// A GMS `PUT` of `body` (JSON) on callback `id` of `service`; (status, body).
async fn gms_put(e: &Engage, service: &str, id: &str, body: Value) -> (u16, Value) {
    let url = format!("{}/genesys/1/service/callback/{service}/{id}", e.internal);
    harness::send(
        e.http
            .put(url)
            .header("ContactCenterId", "acme")
            .json(&body),
    )
    .await
}

/// The GMS `PUT` is a thin translation onto the same reschedule: `_new_desired_time` moves
/// (counts follow), `""` removes a property, a full slot refuses with `availability` and
/// changes nothing, another service's or an unknown id is 404, and v3 sees the result.
#[tokio::test]
async fn the_gms_put_reschedules_through_the_same_code() {
    let fx = Fixture::start(open_service(
        json!({"slot_minutes": 15, "slot_capacity": 1}),
    ))
    .await;
    let (x, y) = (harness::day_at(2, 10), harness::day_at(2, 12));
    fx.create().at(&wire(x)).id().await;
    let id = fx
        .create()
        .at(&wire(harness::day_at(2, 11)))
        .user_data(json!({"a": "1", "b": "2"}))
        .id()
        .await;
    let e = &fx.engage;
    let (code, answer) = gms_put(e, "sales", &id, json!({"_new_desired_time": wire(x)})).await;
    assert_eq!(code, 400, "{answer}");
    let availability = answer["availability"]
        .as_object()
        .expect("availability map");
    assert!(
        !availability.is_empty() && !availability.contains_key(&wire(x)),
        "{answer}"
    );
    let body =
        json!({"_new_desired_time": wire(y), "a": "", "c": "3", "_callback_state": "QUEUED"});
    let (code, answer) = gms_put(e, "sales", &id, body).await;
    assert_eq!(code, 200, "{answer}");
    let cb = fx.retrieve(&id).await;
    assert_eq!(cb["desiredTime"], wire(y));
    assert_eq!(cb["userData"], json!({"b": "2", "c": "3"}));
    assert_eq!(booked(&fx.env).await, vec![(minute(x), 1), (minute(y), 1)]);
    let (code, _) = gms_put(e, "other", &id, json!({"c": "4"})).await;
    assert_eq!(code, 404);
    let (code, _) = gms_put(e, "sales", "not-an-id", json!({"c": "4"})).await;
    assert_eq!(code, 404);
}
