//! The one-box wiring (`engage/`): `engage serve --with-worker` runs both ports and the
//! dispatcher on one set of resources and stops all of them on one signal; the one cached
//! service lookup (`AppState::service`) that open-for, availability, queue-status and the wait
//! estimate share sees an admin change at once on the replica that made it.

use std::time::{Duration, Instant};

use harness::{Engage, TestEnv};
use reqwest::Method;
use serde_json::json;

const GRACE_MS: u64 = 3_000;

/// Polls until the process exits; panics with its output after `limit`.
async fn exit_within(e: &mut Engage, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = e.proc.child.try_wait().expect("try_wait") {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "still running {limit:?} after SIGTERM:\n{}",
        e.proc.output()
    );
}

#[tokio::test]
async fn serve_with_worker_stops_listeners_and_dispatcher_on_one_signal() {
    let env = TestEnv::new().with("SHUTDOWN_GRACE_MS", &GRACE_MS.to_string());
    let mut e = Engage::start(&env, &["--with-worker"]).await;
    let key = e.tenant("acme").await;
    e.service(
        "acme",
        "sales",
        json!({"route_point": "5000", "reject_out_of_hours": false}),
    )
    .await;
    let (code, body) = e
        .post(
            &key,
            "/engagement/v3/callbacks/create",
            json!({"serviceName": "sales", "phoneNumber": "5550100"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    e.proc.terminate();
    let status = exit_within(&mut e, Duration::from_millis(GRACE_MS + 8_000)).await;
    let out = e.proc.output();
    assert!(status.success(), "exit status {status:?}:\n{out}");
    assert!(
        out.contains("worker stopped"),
        "dispatcher not stopped:\n{out}"
    );
    for url in [&e.internal, &e.external] {
        let refused = e.http.get(format!("{url}/ges/v1/health/live")).send().await;
        assert!(refused.is_err(), "{url} still answers after exit");
    }
}

#[tokio::test]
async fn service_changes_reach_every_cached_lookup_at_once() {
    let env = TestEnv::new();
    let e = Engage::start(&env, &[]).await;
    let key = e.tenant("acme").await;
    let settings = json!({"slot_minutes": 15, "slot_capacity": 3, "reject_out_of_hours": false});
    e.service("acme", "s", settings.clone()).await;
    let paths = [
        "/engagement/v3/callbacks/availability/s",
        "/engagement/v3/callbacks/open-for/s",
        "/engagement/v3/callbacks/queue-status/s",
    ];
    // Read each twice: the second answer comes from the cache.
    for path in paths.iter().chain(&paths) {
        let (code, body) = e.get(&key, path).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let mut disabled = settings.clone();
    disabled["scheduled_enabled"] = json!(false);
    e.service("acme", "s", disabled).await;
    let (code, body) = e.get(&key, paths[0]).await;
    assert_eq!(code, 400, "availability after disabling scheduled: {body}");
    assert!(
        body.to_string().contains("does not offer scheduled"),
        "{body}"
    );
    let (code, _) = e
        .admin(Method::DELETE, "/ges/v1/tenants/acme/services/s", None)
        .await;
    assert!(code == 200 || code == 204, "delete: {code}");
    for path in paths {
        let (code, body) = e.get(&key, path).await;
        assert_eq!(code, 400, "{path} after delete: {body}");
        assert!(
            body.to_string().contains("unknown service"),
            "{path}: {body}"
        );
    }
}
