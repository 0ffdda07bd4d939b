//! Group admission (docs/throttling.md#group-admission): several creates asked in one script
//! call are decided as if each had its own call, and an admission whose create gave up before
//! its verdict arrived is given back. The HTTP exactness tests (`throttle.rs`, the
//! `attack_s28*` rounds) run their concurrent bursts through the same groups.

use std::time::Duration;

use harness::TestEnv;
use shared::redis::{
    Keys,
    admission::Admissions,
    throttle::{self, Limit, Limits, ThrottleKeys, Verdict},
};
use uuid::Uuid;

use super::{
    attack_s28_windows::{act, env},
    attack_s28d_windows::hget,
};

const STRICT_MAX_3: Limits = Limits {
    per_service_1: (0, 0),
    per_service_2: (0, 0),
    per_number_24h: 0,
    in_queue: 1,
    max_queued: 3,
};

fn keys(env: &TestEnv, service: &str) -> ThrottleKeys {
    let tk = ThrottleKeys::new(&Keys::new(&env.id, 4), "acme", service);
    assert_eq!(tk.act(), act(env, service));
    tk
}

fn handle(env: &TestEnv) -> shared::redis::RedisHandle {
    let cfg = shared::Config::from_vars(env.vars.clone()).expect("config");
    shared::redis::service(&cfg.redis).expect("redis handle")
}

/// Seeds an empty state for `tk` (nothing active in PostgreSQL).
async fn seed_empty(h: &shared::redis::RedisHandle, tk: &ThrottleKeys, limits: &Limits) {
    let mut conn = h.conn().await.unwrap();
    let now = jiff::Timestamp::now().as_millisecond();
    throttle::seed(&mut conn, tk, limits, &[], &[], (60, now))
        .await
        .unwrap();
}

fn kind(v: &Verdict) -> &'static str {
    match v {
        Verdict::Admitted => "admitted",
        Verdict::Counted => "counted",
        Verdict::NeedsSeed(_) => "seed",
        Verdict::Busy(_) => "busy",
        Verdict::Rejected(r) => match r.limit {
            Limit::InQueue { .. } => "in_queue",
            Limit::MaxQueued { .. } => "max_queued",
            _ => "other limit",
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_admission_decides_each_request_after_the_ones_before_it() {
    let env = env();
    let (h, tk) = (handle(&env), keys(&env, "g"));
    let mut conn = h.conn().await.unwrap();
    let ids: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    // Two requests for number A (strict: one active each), then B, C, D against a cap of 3.
    let numbers = ["A", "A", "B", "C", "D", "B"];
    let requests: Vec<(Uuid, &str)> = ids.iter().copied().zip(numbers).collect();

    // Unseeded: the first asks for the seed, the others wait for it; nothing counts.
    let first = throttle::check_many(&mut conn, &tk, &STRICT_MAX_3, &requests)
        .await
        .unwrap();
    let kinds: Vec<_> = first.iter().map(|v| kind(v.as_ref().unwrap())).collect();
    assert_eq!(kinds, ["seed", "busy", "busy", "busy", "busy", "busy"]);
    assert_eq!(
        hget(&env, "g", &harness::throttle_field(&ids[0].to_string())).await,
        None
    );

    seed_empty(&h, &tk, &STRICT_MAX_3).await;
    let verdicts = throttle::check_many(&mut conn, &tk, &STRICT_MAX_3, &requests)
        .await
        .unwrap();
    let kinds: Vec<_> = verdicts.iter().map(|v| kind(v.as_ref().unwrap())).collect();
    assert_eq!(
        kinds,
        [
            "admitted",
            "in_queue",
            "admitted",
            "admitted",
            "max_queued",
            "in_queue"
        ]
    );
    assert_eq!(hget(&env, "g", "~count").await.as_deref(), Some("3"));
    assert_eq!(hget(&env, "g", "n:A").await.as_deref(), Some("1"));
    for refused in [1, 4, 5] {
        let field = harness::throttle_field(&ids[refused].to_string());
        assert_eq!(hget(&env, "g", &field).await, None, "{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_admission_gives_back_an_admission_whose_create_gave_up() {
    let env = env();
    let (h, tk) = (handle(&env), keys(&env, "gone"));
    seed_empty(&h, &tk, &STRICT_MAX_3).await;
    let admissions = Admissions::spawn(h.clone());

    // Redis holds every command for 300 ms; the create gives up after 50 ms, before its
    // verdict arrives (the script still runs and admits it once Redis resumes).
    let mut redis = env.redis().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(300)
        .arg("ALL")
        .query_async(&mut redis)
        .await
        .unwrap();
    let id = Uuid::new_v4();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        admissions.check(&tk, &STRICT_MAX_3, id, "A"),
    )
    .await;
    assert!(gave_up.is_err(), "answered during the pause: {gave_up:?}");

    // After the pause the admission is counted, then given back (an empty field).
    let field = harness::throttle_field(&id.to_string());
    let mut last = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = hget(&env, "gone", &field).await;
        if last.as_deref() == Some("") {
            break;
        }
    }
    assert_eq!(last.as_deref(), Some(""), "admission not given back");
    assert_eq!(hget(&env, "gone", "~count").await.as_deref(), Some("0"));
    assert_eq!(hget(&env, "gone", "n:A").await.as_deref(), Some("0"));

    // The number is free again: the next create of it is admitted.
    let next = admissions
        .check(&tk, &STRICT_MAX_3, Uuid::new_v4(), "A")
        .await
        .unwrap();
    assert_eq!(next, Verdict::Admitted);
}
