//! Graceful lifecycle of a function binary, as Knative and Kubernetes drive it: on SIGTERM it
//! stops accepting connections, lets the request already in flight finish (here a real
//! `callbacks/create` whose body is still arriving when the signal lands), and exits 0 within
//! the grace time; idle keep-alive connections do not hold it.

use std::time::{Duration, Instant};

use harness::{Function, TestEnv};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const GRACE_MS: u64 = 5_000;

fn setup() -> (TestEnv, String) {
    let env = TestEnv::new().with("SHUTDOWN_GRACE_MS", &GRACE_MS.to_string());
    let key = env.provision(
        "acme",
        "sales",
        &json!({"route_point": "5000", "reject_out_of_hours": false}),
    );
    (env, key)
}

/// Waits for the process to exit; returns its status and how long that took.
async fn wait_exit(f: &mut Function, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = f.proc.child.try_wait().expect("try_wait") {
            return (status, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "still running {limit:?} after SIGTERM; output:\n{}",
        f.proc.output()
    );
}

/// True once a new TCP connection to `port` is refused.
async fn refuses_connections(port: u16, within: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn sigterm_finishes_the_in_flight_request_then_exits_zero() {
    let (env, key) = setup();
    let mut f = Function::start(&env, "callbacks-create", &[]).await;

    // A create whose headers and first half of body are sent before SIGTERM.
    let body = json!({"serviceName": "sales", "phoneNumber": "5550100"}).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut conn = TcpStream::connect(("127.0.0.1", f.port))
        .await
        .expect("connect");
    let request = format!(
        "POST /engagement/v3/callbacks/create HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/json\r\nx-api-key: {key}\r\ncontent-length: {}\r\n\r\n{head}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.expect("write");
    // Let the server read the headers and dispatch the request.
    tokio::time::sleep(Duration::from_millis(200)).await;

    f.proc.terminate();
    let signalled = Instant::now();
    assert!(
        refuses_connections(f.port, Duration::from_secs(3)).await,
        "new connections are still accepted after SIGTERM"
    );
    assert!(
        f.proc.child.try_wait().expect("try_wait").is_none(),
        "exited with a request in flight"
    );

    // The in-flight request completes normally.
    conn.write_all(tail.as_bytes()).await.expect("write rest");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut raw))
        .await
        .expect("response within 5 s")
        .expect("read");
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let json_body = raw.split("\r\n\r\n").nth(1).expect("body");
    let resp: Value = serde_json::from_str(json_body).expect("JSON body");
    let id = resp["data"]["id"]
        .as_str()
        .expect("callback id")
        .to_string();

    let (status, _) = wait_exit(&mut f, Duration::from_millis(GRACE_MS + 2_000)).await;
    assert!(
        status.success(),
        "exit status {status:?}: {}",
        f.proc.output()
    );
    assert!(signalled.elapsed() < Duration::from_millis(GRACE_MS + 2_000));

    // And the callback it answered for is durable.
    let pg = env.pg().await;
    let row = pg
        .query_one(
            "SELECT state FROM callbacks WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("callback row");
    assert_eq!(row.get::<_, String>(0), "QUEUED");
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_delay_exit() {
    let (env, key) = setup();
    let mut f = Function::start(&env, "callbacks-create", &[]).await;
    // The client keeps this connection open (keep-alive) after the answer.
    let (code, resp) = f
        .post(
            &key,
            "/engagement/v3/callbacks/create",
            json!({"serviceName": "sales", "phoneNumber": "5550101"}),
        )
        .await;
    assert_eq!(code, 200, "{resp}");

    f.proc.terminate();
    let (status, took) = wait_exit(&mut f, Duration::from_millis(GRACE_MS + 2_000)).await;
    assert!(
        status.success(),
        "exit status {status:?}: {}",
        f.proc.output()
    );
    assert!(
        took < Duration::from_millis(GRACE_MS / 2),
        "idle connection held the process for {took:?}"
    );
    assert!(f.proc.output().contains("shutdown signal"));
}
