//! The queue view's two regions (docs/derived-state.md#queue-views): a served dequeue moves a
//! callback from the waiting region to the dequeued one in one `ZADD`, which the worker's late
//! hand-off write cannot undo; the dequeued region stays bounded; a retried callback waits
//! again; the view repair puts back a waiting callback stuck among the dequeues. End to end
//! with `engage serve --with-worker`, events sent as the voice platform sends them.

use std::time::{Duration, Instant};

use harness::{Engage, TestEnv, open_service};
use serde_json::json;
use shared::redis::{Keys, queue};
use uuid::Uuid;

use crate::attack_s39::regions;

const TENANT: &str = "qr";

fn view(env: &TestEnv) -> String {
    Keys::new(&env.id, 1).queue(TENANT, "svc")
}

async fn start(env: &TestEnv, extra: serde_json::Value) -> (Engage, String) {
    let engage = Engage::start(env, &["--with-worker"]).await;
    let key = engage.provision(TENANT, "svc", open_service(extra)).await;
    (engage, key)
}

/// Waits until `id` shows (or no longer shows, `shown` false) a position in queue.
async fn wait_position(engage: &Engage, key: &str, id: &str, shown: bool, secs: u64) {
    let started = Instant::now();
    loop {
        let cb = engage.retrieve(key, id).await;
        if cb.get("positionInQueue").is_some() == shown {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "position shown should be {shown} within {secs} s: {cb}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn event(engage: &Engage, id: &str, body: serde_json::Value) {
    let (code, resp) = engage.event(id, body).await;
    assert_eq!(code, 200, "{resp}");
    assert_eq!(resp["data"]["applied"], true, "{resp}");
}

/// The race the regions close: the voice platform's PROCESSING is applied before the worker's
/// queue-view write of the hand-off lands (the worker marks the row, then writes the view).
/// Before, the dequeue's `ZREM` found nothing and the late `ZADD NX` left a stray counted as
/// waiting until the sweep's repair; now the late write finds the member dequeued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_regions_a_hand_off_write_after_a_served_dequeue_adds_nothing() {
    let env = TestEnv::new();
    let (engage, key) = start(&env, json!({})).await;
    let id = engage.create_immediate(&key, "svc", 1, 0).await.remove(0);
    wait_position(&engage, &key, &id, true, 10).await;
    event(&engage, &id, json!({"state": "PROCESSING"})).await;
    let mut conn = env.redis().await;
    let view = view(&env);
    assert_eq!(regions(&mut conn, &view).await, (0, 1));
    // The worker's late write, exactly as `queue::enqueue` sends it.
    let added: i64 = redis::cmd("ZADD")
        .arg(&view)
        .arg("NX")
        .arg(queue::score(0, jiff::Timestamp::now().as_millisecond()))
        .arg(&id)
        .query_async(&mut conn)
        .await
        .expect("zadd");
    assert_eq!(added, 0, "the dequeued member is kept");
    assert_eq!(regions(&mut conn, &view).await, (0, 1));
    // The former history list is neither written nor needed.
    let old: i64 = redis::cmd("EXISTS")
        .arg(format!("{view}:done"))
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert_eq!(old, 0);
}

/// Many served dequeues: the dequeued region is trimmed back to `HISTORY` by the dequeue of
/// each callback whose id's low bits pick it, and never by anything else, so its size after
/// the last dequeue is known from the ids alone; nothing is left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_regions_the_dequeued_region_is_trimmed_to_the_history() {
    let env = TestEnv::new();
    let (engage, key) = start(&env, json!({})).await;
    const N: usize = 90;
    let ids = engage.create_immediate(&key, "svc", N, 0).await;
    let mut conn = env.redis().await;
    let view = view(&env);
    let started = Instant::now();
    while regions(&mut conn, &view).await.0 < N as i64 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not all queued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = queue::HISTORY as usize;
    let mut expected = 0;
    for id in &ids {
        event(&engage, id, json!({"state": "PROCESSING"})).await;
        let trims = Uuid::parse_str(id)
            .expect("id")
            .as_u128()
            .is_multiple_of(history as u128);
        expected = if trims {
            (expected + 1).min(history)
        } else {
            expected + 1
        };
    }
    assert_eq!(regions(&mut conn, &view).await, (0, expected as i64));
    // Newest first, one per dequeue, at the API host's times.
    let done: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
        .arg(&view)
        .arg("+inf")
        .arg(queue::DONE_BASE)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .expect("zrevrangebyscore");
    let last = ids.last().expect("ids");
    assert_eq!(&done[0].0, last);
    let now = jiff::Timestamp::now().as_millisecond();
    let newest = done[0].1 as i64 - queue::DONE_BASE;
    assert!((now - 60_000..=now).contains(&newest), "{newest} vs {now}");
    // Estimates read the dequeued region: nothing waits, so the wait is 0.
    let (code, body) = engage
        .get(
            &key,
            "/engagement/v3/estimated-wait-time?virtual-queues=svc&mode=mode1",
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"][0]["estimatedWaitTime"], 0, "{body}");
}

/// A served callback whose call then fails is retried: its dequeue goes (an unserved exit) and
/// its next attempt waits in the view again, with a position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_regions_a_retried_callback_waits_again() {
    let env = TestEnv::new();
    let extra = json!({"max_attempts": 2, "retry_delay_seconds": 0});
    let (engage, key) = start(&env, extra).await;
    let id = engage.create_immediate(&key, "svc", 1, 0).await.remove(0);
    wait_position(&engage, &key, &id, true, 10).await;
    event(&engage, &id, json!({"state": "PROCESSING", "attempt": 1})).await;
    let mut conn = env.redis().await;
    assert_eq!(regions(&mut conn, &view(&env)).await, (0, 1));
    let fail = json!({"state": "COMPLETED", "reason": "FAIL_CALL_TO_CUSTOMER", "attempt": 1});
    let (code, resp) = engage.event(&id, fail).await;
    assert_eq!(code, 200, "{resp}");
    assert_eq!(resp["data"]["attempt"], 2, "{resp}");
    wait_position(&engage, &key, &id, true, 15).await;
    assert_eq!(regions(&mut conn, &view(&env)).await, (1, 0));
}

/// A waiting callback whose member sits in the dequeued region (its retry's removal failed
/// before the next attempt's hand-off, whose `ZADD NX` then adds nothing): the sweep's view
/// repair moves it back down, so its position returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_regions_the_repair_moves_a_stuck_waiting_callback_back() {
    let env = TestEnv::new().with("WORKER_SWEEP_S", "1");
    let (engage, key) = start(&env, json!({})).await;
    let id = engage.create_immediate(&key, "svc", 1, 0).await.remove(0);
    wait_position(&engage, &key, &id, true, 10).await;
    let mut conn = env.redis().await;
    let view = view(&env);
    let _: i64 = redis::cmd("ZADD")
        .arg(&view)
        .arg("XX")
        .arg(queue::DONE_BASE + jiff::Timestamp::now().as_millisecond())
        .arg(&id)
        .query_async(&mut conn)
        .await
        .expect("zadd");
    wait_position(&engage, &key, &id, false, 1).await;
    wait_position(&engage, &key, &id, true, 20).await;
    assert_eq!(regions(&mut conn, &view).await, (1, 0));
}
