//! Estimated wait time, queue status and position in queue, end to end with
//! `engage serve --with-worker` (and `ors-sim` for the accuracy run): estimates against the
//! waits callbacks then actually have, positions in priority-then-time order, and
//! `queue-status` withdrawing the immediate offer when now + ewt passes closing time.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use harness::{Engage, Proc, TestEnv, open_service};
use serde_json::{Value, json};

/// Waits until the callback is in its queue view (retrieve shows a position).
async fn wait_in_view(engage: &Engage, key: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let cb = engage.retrieve(key, id).await;
        if cb.get("positionInQueue").is_some() {
            return cb;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not queued: {cb}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn event(engage: &Engage, id: &str, state: &str) {
    let mut body = json!({"state": state});
    if state == "COMPLETED" {
        body["reason"] = json!("AGENT_CONNECTED");
    }
    let (code, resp) = engage.event(id, body).await;
    assert_eq!(code, 200, "{resp}");
}

/// `GET /estimated-wait-time` for one queue: (estimate, message).
async fn ewt(engage: &Engage, key: &str, queue: &str, mode: &str) -> (i64, Option<String>) {
    let (code, body) = engage
        .get(
            key,
            &format!("/engagement/v3/estimated-wait-time?virtual-queues={queue}&mode={mode}"),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let item = &body["data"][0];
    assert_eq!(item["virtualQueue"], queue, "{body}");
    // resultCode as the published client model defines it: 0 valid, -2 no agents, -1 unknown.
    let message = item["message"].as_str().unwrap_or_default();
    let code = match item["estimatedWaitTime"].as_i64() {
        Some(e) if e >= 0 => 0,
        _ if message.starts_with("no agent activity") => -2,
        _ => -1,
    };
    assert_eq!(item["resultCode"], code, "{body}");
    (
        item["estimatedWaitTime"].as_i64().expect("estimate"),
        item["message"].as_str().map(str::to_string),
    )
}

async fn queue_status(engage: &Engage, key: &str, queue: &str) -> Value {
    let (code, body) = engage
        .get(
            key,
            &format!("/engagement/v3/callbacks/queue-status/{queue}"),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    body["data"].clone()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ewt_estimates_track_actual_waits_with_the_simulator() {
    const BACKLOG: usize = 70;
    const MEASURED: usize = 55;
    let env = TestEnv::new();
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision("ewt", "care", open_service(json!({})))
        .await;
    let _sim = Proc::spawn(
        &env,
        "ors-sim",
        &[
            "--agents",
            "4",
            "--handle-ms",
            "1000",
            "--dist",
            "uniform",
            "--routing-ms",
            "20",
            "--group",
            &format!("{}-sim", env.id),
        ],
        &[],
    );
    // Warm-up: a backlog keeps the 4 agents busy; wait for a full dequeue history.
    let (est, msg) = ewt(&engage, &key, "care", "mode2").await;
    assert_eq!(
        (est, msg.as_deref()),
        (-1, Some("no wait-time history yet for this queue"))
    );
    engage.create_immediate(&key, "care", BACKLOG, 0).await;
    let pg = env.pg().await;
    let started = Instant::now();
    loop {
        let row = pg
            .query_one(
                "SELECT count(*) FROM callback_events WHERE state = 'PROCESSING'",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) >= 34 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no warm-up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Newcomers at about the service rate: the estimate just before each joins, against the
    // wait it then has (create → PROCESSING).
    let mut measured: Vec<(String, i64, jiff::Timestamp)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(260));
    for i in 0..MEASURED {
        tick.tick().await;
        let (est, msg) = ewt(&engage, &key, "care", "mode2").await;
        assert!(est > 0, "estimate {est} {msg:?}");
        let at = jiff::Timestamp::now();
        let id = engage
            .create(&key)
            .service("care")
            .phone(&format!("+1555{:07}", 9_000 + i))
            .id()
            .await;
        measured.push((id, est, at));
    }
    // Every measured callback reaches an agent.
    let ids: Vec<uuid::Uuid> = measured
        .iter()
        .map(|(id, ..)| id.parse().unwrap())
        .collect();
    let started = Instant::now();
    let served: HashMap<uuid::Uuid, jiff::Timestamp> = loop {
        let rows = pg
            .query(
                "SELECT callback_id, min(at) FROM callback_events
                 WHERE state = 'PROCESSING' AND callback_id = ANY($1) GROUP BY 1",
                &[&ids],
            )
            .await
            .unwrap();
        if rows.len() == ids.len() {
            break rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of {} served",
            rows.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let mut errors: Vec<f64> = Vec::new();
    for ((id, est, at), uid) in measured.iter().zip(&ids) {
        let actual = (served[uid].as_millisecond() - at.as_millisecond()) as f64 / 1000.0;
        let err = (*est as f64 - actual) / actual;
        println!(
            "FIGURE ewt callback {id} estimate {est} s actual {actual:.2} s error {:+.1} %",
            err * 100.0
        );
        errors.push(err);
    }
    let mut abs: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
    abs.sort_by(f64::total_cmp);
    let mean = errors.iter().sum::<f64>() / errors.len() as f64;
    println!(
        "FIGURE ewt n={} mean error {:+.1} % |error| p50 {:.1} % p90 {:.1} % max {:.1} %",
        errors.len(),
        mean * 100.0,
        percentile(&abs, 0.5) * 100.0,
        percentile(&abs, 0.9) * 100.0,
        percentile(&abs, 1.0) * 100.0
    );
    for (lo, hi) in [
        (-1.0, -0.25),
        (-0.25, -0.1),
        (-0.1, 0.0),
        (0.0, 0.1),
        (0.1, 0.25),
        (0.25, 10.0),
    ] {
        let n = errors.iter().filter(|e| **e >= lo && **e < hi).count();
        println!(
            "FIGURE ewt error in [{:+.0} %, {:+.0} %): {n}",
            lo * 100.0,
            hi * 100.0
        );
    }
    let outside: Vec<&f64> = errors.iter().filter(|e| e.abs() > 0.25).collect();
    assert!(
        outside.is_empty(),
        "estimates off by more than 25 %: {outside:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_follow_priority_then_time_and_move_up() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision("pos", "care", open_service(json!({})))
        .await;
    // 20 callbacks, priorities 0, 7, 3 in turn, each queued after the one before.
    let mut created: Vec<(String, i64, usize)> = Vec::new();
    for i in 0..20 {
        let priority = [0, 7, 3][i % 3];
        let id = engage
            .create(&key)
            .service("care")
            .phone(&format!("+1555{:07}", 100 + i))
            .field("priority", json!(priority))
            .id()
            .await;
        wait_in_view(&engage, &key, &id).await;
        created.push((id, priority, i));
    }
    let mut expected = created.clone();
    expected.sort_by_key(|(_, p, i)| (-p, *i));
    let check = |order: Vec<(String, i64, usize)>| {
        let engage = &engage;
        let key = &key;
        async move {
            let mut last_ewt = 0;
            for (n, (id, priority, _)) in order.iter().enumerate() {
                let cb = engage.retrieve(key, id).await;
                assert_eq!(
                    cb["positionInQueue"],
                    n as i64 + 1,
                    "priority {priority}: {cb}"
                );
                if let Some(e) = cb["estimatedWaitTime"].as_i64() {
                    assert!(e >= last_ewt, "{cb}");
                    last_ewt = e;
                }
            }
        }
    };
    check(expected.clone()).await;

    // The first three reach agents (PROCESSING), then complete: the rest move up.
    let started = Instant::now();
    for (id, ..) in &expected[..3] {
        event(&engage, id, "PROCESSING").await;
        let cb = engage.retrieve(&key, id).await;
        assert_eq!(
            (
                cb["positionInQueue"].as_i64(),
                cb["estimatedWaitTime"].as_i64()
            ),
            (Some(0), Some(0)),
            "{cb}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    check(expected[3..].to_vec()).await;
    // Three dequeues ~300 ms apart (longer on a loaded machine): the last in line waits
    // 16 × the mean interval, which lies between the elapsed time over 3 and over 2.
    let elapsed = started.elapsed().as_secs_f64();
    let last = engage.retrieve(&key, &expected[19].0).await;
    let e = last["estimatedWaitTime"].as_i64().expect("estimate");
    let (low, high) = (
        (16.0 * elapsed / 3.0).floor() as i64 - 1,
        (16.0 * elapsed / 2.0).ceil() as i64 + 1,
    );
    assert!(
        e >= 4 && (low..=high).contains(&e),
        "{last} (elapsed {elapsed:.2} s)"
    );
    for (id, ..) in &expected[..3] {
        event(&engage, id, "COMPLETED").await;
        let cb = engage.retrieve(&key, id).await;
        assert!(
            cb.get("positionInQueue").is_none() && cb.get("estimatedWaitTime").is_none(),
            "{cb}"
        );
    }
    // A cancelled callback in the middle leaves the line too.
    let (gone, ..) = expected[10].clone();
    let (code, body) = engage.cancel(&key, &gone).await;
    assert_eq!(code, 200, "{body}");
    let rest: Vec<_> = expected[3..]
        .iter()
        .filter(|(id, ..)| *id != gone)
        .cloned()
        .collect();
    check(rest).await;
}

/// Zone whose local time is around midday now (Etc/GMT zones: sign inverted).
fn midday_zone() -> String {
    let hour = i64::from(
        jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .hour(),
    );
    let offset = (12 - hour).clamp(-12, 14);
    match offset {
        0 => "Etc/GMT".to_string(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_status_withdraws_immediate_offer_before_closing() {
    let env = TestEnv::new().with("EWT_AGENT_ACTIVITY_WINDOW_S", "12");
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage.tenant("qs").await;
    // Open all day today, closing 3–4 minutes from now (local time around midday).
    let zone = midday_zone();
    let tz = jiff::tz::TimeZone::get(&zone).unwrap();
    let now = jiff::Timestamp::now().to_zoned(tz);
    let close = now
        .checked_add(jiff::SignedDuration::from_secs(240))
        .unwrap();
    let day = now.strftime("%Y-%m-%d").to_string();
    let hours = json!({"timezone": zone, "weekly": {},
        "exceptions": [{"date": day, "open": [["00:00", close.strftime("%H:%M").to_string()]]}]});
    let (code, body) = engage
        .admin_put("/ges/v1/tenants/qs/business-hours/main", hours)
        .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    engage
        .service(
            "qs",
            "care",
            open_service(json!({"business_hours": "main"})),
        )
        .await;
    engage
        .service("qs", "later", open_service(json!({"business_hours": "main", "immediate_enabled": false, "scheduled_enabled": true})))
        .await;

    // Bad requests and in-band problems.
    let (code, body) = engage
        .get(
            &key,
            "/engagement/v3/estimated-wait-time?virtual-queues=care&mode=mode9",
        )
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = engage.get(&key, "/engagement/v3/estimated-wait-time").await;
    assert_eq!(code, 400, "{body}");
    // include-calls-on-hold is a boolean (accepted, no effect: no callback is ever on hold).
    let on_hold = "/engagement/v3/estimated-wait-time?virtual-queues=care&include-calls-on-hold";
    let (code, body) = engage.get(&key, &format!("{on_hold}=maybe")).await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = engage.get(&key, &format!("{on_hold}=true")).await;
    assert_eq!(
        (code, &body["data"][0]["resultCode"]),
        (200, &json!(-1)),
        "{body}"
    );
    let (code, body) = engage
        .get(&key, "/engagement/v3/callbacks/queue-status/nope")
        .await;
    assert_eq!(
        (code, body["status"]["message"].as_str()),
        (400, Some("unknown service")),
        "{body}"
    );
    let (code, body) = engage
        .get(
            &key,
            "/engagement/v3/estimated-wait-time?virtual-queues=care,nope",
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["data"][0],
        json!({"virtualQueue": "care", "estimatedWaitTime": -1, "message": "no wait-time history yet for this queue", "resultCode": -1})
    );
    assert_eq!(
        body["data"][1],
        json!({"virtualQueue": "nope", "estimatedWaitTime": -1, "message": "unknown service", "resultCode": -1})
    );
    assert_eq!(
        ewt(&engage, &key, "care", "mode3").await,
        (
            -1,
            Some("no ewt_statistic set for this service".to_string())
        )
    );
    // No history yet: -1, still offered (nothing says the wait is long).
    let qs = queue_status(&engage, &key, "care").await;
    assert_eq!(
        qs,
        json!({"ewt": -1, "offerImmediateCallback": true, "offerScheduledCallback": true})
    );
    let qs = queue_status(&engage, &key, "later").await;
    assert_eq!(
        qs,
        json!({"ewt": -1, "offerImmediateCallback": false, "offerScheduledCallback": true})
    );

    // 12 queued; two reach agents 4 s apart: 10 wait, 4 s each → 40 s.
    let ids = engage.create_immediate(&key, "care", 12, 0).await;
    for id in &ids {
        wait_in_view(&engage, &key, id).await;
    }
    event(&engage, &ids[0], "PROCESSING").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    event(&engage, &ids[1], "PROCESSING").await;
    let (mode1, _) = ewt(&engage, &key, "care", "mode1").await;
    assert!((39..=41).contains(&mode1), "{mode1}");
    assert_eq!(ewt(&engage, &key, "care", "mode2").await.0, mode1);
    let qs = queue_status(&engage, &key, "care").await;
    assert_eq!(qs["ewt"], mode1, "{qs}");
    assert_eq!(qs["offerImmediateCallback"], true, "{qs}");

    // 60 more: 70 × 4 s = 280 s, past closing (at most 240 s away): no immediate offer.
    // Every one in the view (the last create to answer is not the last the worker queues).
    let more = engage.create_immediate(&key, "care", 60, 100).await;
    for id in &more {
        wait_in_view(&engage, &key, id).await;
    }
    let (code, open) = engage
        .get(&key, "/engagement/v3/callbacks/open-for/care")
        .await;
    assert_eq!(code, 200, "{open}");
    let open_for = open["data"]["openFor"].as_i64().unwrap();
    let qs = queue_status(&engage, &key, "care").await;
    let ewt_now = qs["ewt"].as_i64().unwrap();
    assert!(
        open_for > 0 && ewt_now > open_for,
        "ewt {ewt_now} open for {open_for}: {qs}"
    );
    assert_eq!(qs["offerImmediateCallback"], false, "{qs}");
    assert_eq!(qs["offerScheduledCallback"], true, "{qs}");

    // No agent took a waiting callback within the window: mode2 and queue-status say -1.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (est, msg) = ewt(&engage, &key, "care", "mode2").await;
    assert_eq!(
        (est, msg.as_deref()),
        (-1, Some("no agent activity in the last 12 s"))
    );
    assert!(ewt(&engage, &key, "care", "mode1").await.0 > 0);
    let qs = queue_status(&engage, &key, "care").await;
    assert_eq!(
        qs,
        json!({"ewt": -1, "offerImmediateCallback": false, "offerScheduledCallback": true})
    );
}
