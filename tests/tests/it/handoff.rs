//! The complete voice hand-off (docs/voice-platform.md#stream-entries): every setting and
//! reporting field in the entry, USERORIGINATED entries, priority escalation in queue positions
//! and in the entry (docs/decisions.md#priority-escalation), and `ors-sim` rejecting an entry
//! that breaks the contract.

use std::time::{Duration, Instant};

use harness::{Engage, Proc, TestEnv, WorkerProc, next_phone, open_service, stream_entries};
use jiff::Timestamp;
use serde_json::{Value, json};

/// The entry of callback `id` (waits up to 10 s for it).
async fn entry_of(env: &TestEnv, id: &str) -> (String, std::collections::BTreeMap<String, String>) {
    let mut voice = env.voice().await;
    let started = Instant::now();
    loop {
        let entries = stream_entries(&mut voice, env.voice_stream()).await;
        if let Some(e) = entries.into_iter().find(|(_, f)| f["callback_id"] == id) {
            return e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no entry for {id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms(t: &Value) -> i64 {
    t.as_str()
        .and_then(|s| s.parse::<Timestamp>().ok())
        .expect("a wire time")
        .as_millisecond()
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// The arithmetic of docs/decisions.md#priority-escalation: interval 2 s, increment 1, limit 6.
fn escalated(base: i64, waited_ms: i64) -> i64 {
    (base + waited_ms.max(0) / 2_000).min(6.max(base))
}

/// A, base 0, and B, newer by ~1 s, base 5 (and user data), wait with no worker running; both
/// are handed off together, each entry with its priority escalated to the hand-off. B leads
/// until A reaches the limit 6, 12 s after its desired time (B, at 6 since 2 s after its own,
/// ties then and the older goes first): A's position turns from 2 to 1 exactly then, and never
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_escalation_overtakes_exactly_when_the_arithmetic_says() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let settings = json!({
        "priority": 0, "priority_increment": 1, "priority_interval_seconds": 2,
        "priority_limit": 6
    });
    let key = engage
        .provision("esc", "care", open_service(settings))
        .await;
    let a = engage
        .create(&key)
        .service("care")
        .phone(&next_phone())
        .id()
        .await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let b = engage
        .create(&key)
        .service("care")
        .phone(&next_phone())
        .field("priority", json!(5))
        .user_data(json!({"k": "v"}))
        .id()
        .await;
    let ta = ms(&engage.retrieve(&key, &a).await["desiredTime"]);
    let tb = ms(&engage.retrieve(&key, &b).await["desiredTime"]);
    assert!(
        tb - ta < 3_000,
        "B must be newer by less than 3 s (no tie at 5)"
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let _worker = WorkerProc::start(&env, &[]).await;

    // Each entry carries the priority escalated to its hand-off time (the claim, at most a
    // moment before the XADD that names the entry).
    for (id, base, since) in [(&a, 0, ta), (&b, 5, tb)] {
        let (entry_id, f) = entry_of(&env, id).await;
        let xadd_ms: i64 = entry_id.split('-').next().unwrap().parse().unwrap();
        let got: i64 = f["priority"].parse().unwrap();
        let range = escalated(base, xadd_ms - 500 - since)..=escalated(base, xadd_ms - since);
        assert!(range.contains(&got), "{id}: {got} not in {range:?}: {f:?}");
        assert!(got > base || base == 5, "A waited past a step: {f:?}");
        assert_eq!(f["priority_increment"], "1", "{f:?}");
        assert_eq!(f["priority_interval_seconds"], "2", "{f:?}");
        assert_eq!(f["priority_limit"], "6", "{f:?}");
        // Entries of one hand-off batch differ in their optional fields (B alone has data).
        assert_eq!(f.contains_key("user_data"), base == 5, "{f:?}");
    }
    for id in [&a, &b] {
        engage
            .wait_for(&key, id, 10, |cb| cb.get("positionInQueue").is_some())
            .await;
    }

    // A's position around the moment it reaches the limit: 2 before, 1 after.
    let flip = ta + 12_000;
    assert!(
        now_ms() < flip - 1_500,
        "the machine was too slow to watch the flip"
    );
    let (mut before, mut after) = (0, 0);
    while now_ms() < flip + 1_500 {
        let asked = now_ms();
        let pos = engage.retrieve(&key, &a).await["positionInQueue"].clone();
        let answered = now_ms();
        if answered < flip {
            assert_eq!(pos, 2, "B leads until {flip} (asked at {asked})");
            before += 1;
        } else if asked >= flip {
            assert_eq!(pos, 1, "A leads from {flip} (asked at {asked})");
            after += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        before > 0 && after > 0,
        "watched {before} before, {after} after"
    );
    let b_pos = engage.retrieve(&key, &b).await;
    assert_eq!(b_pos["positionInQueue"], 2, "{b_pos}");
}

/// Every service setting GES passes on and every reporting field of the create reach the
/// entry, named as docs/voice-platform.md#stream-entries says; absent ones are left out; a
/// USERORIGINATED entry says so, carries the push targets and nothing to dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_carries_every_setting_and_reporting_field() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let full = json!({
        "display_number": "+18005550100", "display_name": "Acme Care",
        "callback_application": "CB_Care", "application_stream": "Development",
        "route_point": "5000", "survey_rp": "6000", "dial_prefix": "9"
    });
    let key = engage.provision("ho", "care", open_service(full)).await;
    engage
        .service(
            "ho",
            "push",
            open_service(json!({"call_direction": "USERORIGINATED"})),
        )
        .await;
    let id = engage
        .create(&key)
        .service("care")
        .phone("+15550100077")
        .fields(json!({
            "cbOfferType": "ASAP", "inboundVQ": "VQ_inbound", "offerThreshold": 90,
            "channel": "web", "offerTiming": "ON-HOURS", "cbOriginationIxnId": "ixn-42",
            "userData": {"order": "A-1"}
        }))
        .id()
        .await;
    let (_, f) = entry_of(&env, &id).await;
    for (k, v) in [
        ("display_number", "+18005550100"),
        ("display_name", "Acme Care"),
        ("callback_application", "CB_Care"),
        ("application_stream", "Development"),
        ("route_point", "5000"),
        ("survey_rp", "6000"),
        ("dial_number", "915550100077"),
        ("call_direction", "USERTERMINATED"),
        ("cb_offer_type", "ASAP"),
        ("inbound_vq", "VQ_inbound"),
        ("offer_threshold", "90"),
        ("channel", "web"),
        ("offer_timing", "ON-HOURS"),
        ("cb_origination_ixn_id", "ixn-42"),
        ("user_data", r#"{"order":"A-1"}"#),
        ("priority", "0"),
    ] {
        assert_eq!(f.get(k).map(String::as_str), Some(v), "{k}: {f:?}");
    }
    assert!(
        !f.contains_key("priority_increment"),
        "no escalation: {f:?}"
    );

    let bare = engage
        .create(&key)
        .service("push")
        .phone(&next_phone())
        .field(
            "pushTargets",
            json!([{"channel": "FCM", "target": "device-token"}]),
        )
        .id()
        .await;
    let (_, f) = entry_of(&env, &bare).await;
    assert_eq!(f["call_direction"], "USERORIGINATED", "{f:?}");
    for absent in [
        "push_targets",
        "dial_number",
        "route_point",
        "display_name",
        "user_data",
        "inbound_vq",
    ] {
        assert!(!f.contains_key(absent), "{absent} left out: {f:?}");
    }
    assert!(f.values().all(|v| !v.is_empty()), "no empty values: {f:?}");

    // Escalation settings out of range are refused by name, and change nothing.
    for (bad, column) in [
        (json!({"priority_increment": -1}), "priority_increment"),
        (json!({"priority_increment": 2001}), "priority_increment"),
        (
            json!({"priority_interval_seconds": 0}),
            "priority_interval_seconds",
        ),
        (
            json!({"priority_interval_seconds": "soon"}),
            "priority_interval_seconds",
        ),
    ] {
        let (code, body) = engage
            .admin_put("/ges/v1/tenants/ho/services/care", bad.clone())
            .await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(harness::message(&body).contains(column), "{bad}: {body}");
    }
    let (_, kept) = engage.admin_get("/ges/v1/tenants/ho/services/care").await;
    assert!(kept.to_string().contains("CB_Care"), "{kept}");
}

/// `ors-sim` checks every entry against the contract: an entry lacking a required field
/// (written by hand) is rejected, logged and counted, and never played, while the worker's
/// entries pass and complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ors_sim_rejects_an_entry_missing_a_required_field() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision("rej", "care", open_service(json!({})))
        .await;
    let group = format!("{}-sim", env.id);
    let sim = Proc::spawn(
        &env,
        "ors-sim",
        &[
            "--agents",
            "2",
            "--handle-ms",
            "100",
            "--dist",
            "fixed",
            "--group",
            &group,
        ],
        &[],
    );
    let good = engage
        .create(&key)
        .service("care")
        .phone(&next_phone())
        .id()
        .await;
    let (_, f) = entry_of(&env, &good).await;
    engage
        .wait_for(&key, &good, 15, |cb| cb["callbackState"] == "COMPLETED")
        .await;

    // The same entry without `priority`, and one without `dial_number`, for a SCHEDULED callback.
    let held = engage
        .create(&key)
        .service("care")
        .phone(&next_phone())
        .in_secs(3_600)
        .id()
        .await;
    let mut voice = env.voice().await;
    let mut bad_ids = Vec::new();
    for missing in ["priority", "dial_number"] {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(env.voice_stream()).arg("*");
        for (k, v) in &f {
            if k != missing {
                // Aimed at the held callback, so playing it would show in its state.
                let v = v.replace(&good, &held);
                cmd.arg(k).arg(v);
            }
        }
        let entry_id: String = cmd.query_async(&mut voice).await.expect("XADD");
        bad_ids.push((entry_id, missing));
    }
    let started = Instant::now();
    let out = loop {
        let out = sim.output();
        if out.matches("REJECTED").count() >= 2 {
            break out;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (entry_id, missing) in &bad_ids {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("REJECTED entry {entry_id} ")))
            .unwrap_or_else(|| panic!("no rejection of {entry_id}: {out}"));
        assert!(line.contains(missing), "{line}");
    }
    assert!(out.contains("(2 rejected so far)"), "{out}");
    // Not played: no event reached the callback (it stays SCHEDULED, an hour ahead).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cb = engage.retrieve(&key, &held).await;
    assert_eq!(cb["callbackState"], "SCHEDULED", "{cb}");
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(env.voice_stream())
        .arg(&group)
        .query_async(&mut voice)
        .await
        .expect("XPENDING");
    assert_eq!(
        pending.first(),
        Some(&redis::Value::Int(0)),
        "rejected entries are acked: {pending:?}"
    );
}

/// The position of `me` among `all` (id, base, desired ms) at `now` by the rule of
/// docs/decisions.md#priority-escalation (increment 1, interval 1 s, limit 4).
fn rule_position(all: &[(String, i64, i64)], me: &str, now: i64) -> i64 {
    let eff = |b: i64, t: i64| (b + (now - t).max(0) / 1_000).min(4.max(b));
    let (_, bx, tx) = all.iter().find(|(id, ..)| id == me).expect("member");
    let ex = eff(*bx, *tx);
    let ahead = all
        .iter()
        .filter(|(id, b, t)| id != me && (eff(*b, *t) > ex || (eff(*b, *t) == ex && t < tx)))
        .count();
    ahead as i64 + 1
}

/// Twelve callbacks of mixed base priorities, queued 250 ms apart, escalating by 1 a second up
/// to 4: every position read over 6 s is the rule's at the moment it was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_positions_follow_the_escalation_rule_for_mixed_priorities() {
    positions_follow_the_rule(TestEnv::new()).await;
}

/// The same on a Redis cluster (the position script's keys share the view's slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_positions_follow_the_escalation_rule_on_a_cluster() {
    let env = TestEnv::new()
        .with("REDIS_URL", harness::cluster())
        .with("REDIS_CLUSTER", "true");
    positions_follow_the_rule(env).await;
}

async fn positions_follow_the_rule(env: TestEnv) {
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let settings = json!({
        "priority_increment": 1, "priority_interval_seconds": 1, "priority_limit": 4
    });
    let key = engage
        .provision("mix", "care", open_service(settings))
        .await;
    let mut all = Vec::new();
    for base in [0, 3, 1, 4, 0, 2, 3, 0, 1, 5, 0, 2] {
        let id = engage
            .create(&key)
            .service("care")
            .phone(&next_phone())
            .field("priority", json!(base))
            .id()
            .await;
        let t = ms(&engage.retrieve(&key, &id).await["desiredTime"]);
        all.push((id, base, t));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (id, ..) in &all {
        engage
            .wait_for(&key, id, 10, |cb| cb.get("positionInQueue").is_some())
            .await;
    }
    let until = now_ms() + 6_000;
    let mut checked = 0;
    while now_ms() < until {
        for (id, ..) in &all {
            let asked = now_ms();
            let got = engage.retrieve(&key, id).await["positionInQueue"].as_i64();
            let answered = now_ms();
            // Steps may fall while the request runs: the rule at any moment of it is right.
            let allowed: Vec<i64> = (asked..=answered)
                .step_by(10)
                .chain([answered])
                .map(|t| rule_position(&all, id, t))
                .collect();
            assert!(
                got.is_some_and(|p| allowed.contains(&p)),
                "{id}: {got:?}, the rule says {allowed:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 24, "only {checked} positions read");
}
