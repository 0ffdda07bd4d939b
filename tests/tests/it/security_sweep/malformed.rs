//! Malformed HTTP on the public port over raw TCP (reqwest would normalise these requests):
//! oversized and too many headers, conflicting framing, bodies over the limit, slow heads and
//! bodies (one, and 200 at once beside a real request), bad bytes in paths and queries,
//! absolute-form targets, `Host` oddities, path tricks aimed at internal routes, and JSON
//! nested far deeper than any parser's stack. Each answer within a bounded time, never a 5xx; answers
//! of the router in the envelope, answers hyper writes before a request exists bare
//! (docs/http-server.md#request-heads).

use std::time::{Duration, Instant};

use harness::{CREATE, Engage, TestEnv};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Longest any exchange may take before the test calls it a hang.
const BOUND: Duration = Duration::from_secs(10);

/// What came back on one connection.
#[derive(Debug)]
struct Answer {
    code: Option<u16>,
    body: Value,
    raw: String,
    took: Duration,
}

/// Whether an answer must be in the envelope.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// The router answered: the envelope.
    Envelope,
    /// hyper refused the head: no body.
    Bare,
    /// Not refused: any answer of the router (a document, or an envelope when >= 400).
    Served,
}

fn parse(out: &[u8], took: Duration) -> Answer {
    let raw = String::from_utf8_lossy(out).into_owned();
    let code = raw
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok());
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| serde_json::from_str(b).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    Answer {
        code,
        body,
        raw,
        took,
    }
}

/// Sends `request` (while reading, so an early answer is not lost) and reads to the close.
async fn exchange(addr: &str, request: Vec<u8>) -> Answer {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(BOUND, rd.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "no answer and no close within {BOUND:?}: {}",
        String::from_utf8_lossy(&out)
    );
    drop(writer);
    parse(&out, started.elapsed())
}

/// Asserts an answer: one of `codes`, in `shape`, never a 5xx.
#[track_caller]
fn check(what: &str, a: &Answer, codes: &[u16], shape: Shape) {
    let head = &a.raw[..a.raw.len().min(400)];
    let code = a
        .code
        .unwrap_or_else(|| panic!("{what}: no HTTP answer: {head:?}"));
    assert!(code < 500, "{what}: {head}");
    assert!(
        codes.contains(&code),
        "{what}: {code}, expected {codes:?}: {head}"
    );
    let enveloped = a.body["status"]["code"] == code && a.body["status"]["corrId"].is_string();
    match shape {
        Shape::Envelope => assert!(enveloped, "{what}: not in the envelope: {head}"),
        Shape::Bare => assert!(
            a.raw.ends_with("\r\n\r\n") || enveloped,
            "{what}: a body that is not the envelope: {head}"
        ),
        Shape::Served => assert!(
            code < 400 || enveloped,
            "{what}: not in the envelope: {head}"
        ),
    }
}

fn host(e: &Engage) -> String {
    e.external.trim_start_matches("http://").to_string()
}

/// A GET of `target` with `headers` (each line without CRLF) and `Connection: close`.
fn get(target: &str, headers: &[String]) -> Vec<u8> {
    let mut req = format!("GET {target} HTTP/1.1\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("connection: close\r\n\r\n");
    req.into_bytes()
}

async fn serve() -> (TestEnv, Engage, String) {
    serve_with_header_timeout("1000").await
}

async fn serve_with_header_timeout(ms: &str) -> (TestEnv, Engage, String) {
    let env = TestEnv::new()
        .with("HEADER_READ_TIMEOUT_MS", ms)
        .with("REQUEST_TIMEOUT_MS", "2000")
        .with("AUTH_FAILURE_LIMIT", "0");
    let (env, e, key) = harness::serve_tenant(env, "acme").await;
    e.service("acme", "s", harness::open_service(serde_json::json!({})))
        .await;
    (env, e, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_refused_with_431() {
    let (_env, e, _key) = serve().await;
    let addr = host(&e);
    let h = format!("host: {addr}");
    let doc = "/engagement/v3/openapi.json";
    let big = get(
        doc,
        &[h.clone(), format!("x-filler: {}", "a".repeat(64 * 1024))],
    );
    check(
        "a 64 KiB header",
        &exchange(&addr, big).await,
        &[431],
        Shape::Bare,
    );
    let mut many = vec![h.clone()];
    many.extend((0..1000).map(|i| format!("x-h{i}: v")));
    check(
        "1000 headers",
        &exchange(&addr, get(doc, &many)).await,
        &[431],
        Shape::Bare,
    );
    let long = format!("{doc}?q={}", "a".repeat(100 * 1024));
    let a = exchange(&addr, get(&long, std::slice::from_ref(&h))).await;
    check("a 100 KiB request line", &a, &[414, 431], Shape::Bare);
    // Just under the limits is served.
    let fine = get(
        doc,
        &[h.clone(), format!("x-filler: {}", "a".repeat(16 * 1024))],
    );
    check(
        "a 16 KiB header",
        &exchange(&addr, fine).await,
        &[200],
        Shape::Served,
    );
    let mut ninety = vec![h];
    ninety.extend((0..90).map(|i| format!("x-h{i}: v")));
    check(
        "91 headers",
        &exchange(&addr, get(doc, &ninety)).await,
        &[200],
        Shape::Served,
    );
}

/// A POST of a create with `framing` header lines and `body` as given.
fn post(addr: &str, key: &str, framing: &[&str], body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {CREATE} HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {key}\r\n\
         content-type: application/json\r\nconnection: close\r\n"
    );
    for f in framing {
        req.push_str(f);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    [req.as_bytes(), body].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_framing_is_refused_and_stores_nothing() {
    let (env, e, key) = serve().await;
    let addr = host(&e);
    let body = br#"{"serviceName":"s","phoneNumber":"+12025550101"}"#;
    let n = body.len();
    let cases: Vec<(&str, Vec<&str>, &[u16], Shape)> = vec![
        (
            "conflicting Content-Length",
            vec!["content-length: 5", "content-length: 9"],
            &[400],
            Shape::Bare,
        ),
        (
            "a non-numeric Content-Length",
            vec!["content-length: 4x"],
            &[400],
            Shape::Bare,
        ),
        (
            "a negative Content-Length",
            vec!["content-length: -1"],
            &[400],
            Shape::Bare,
        ),
        (
            "an unknown transfer coding",
            vec!["transfer-encoding: gzip"],
            &[400],
            Shape::Bare,
        ),
    ];
    for (what, framing, codes, shape) in cases {
        let a = exchange(&addr, post(&addr, &key, &framing, body)).await;
        check(what, &a, codes, shape);
    }
    // Both Content-Length and chunked: refused, or chunked wins (RFC 9112 §6.3); never both.
    let chunked = format!("{n:x}\r\n{}\r\n0\r\n\r\n", String::from_utf8_lossy(body));
    let cl = format!("content-length: {}", n + 3);
    let a = exchange(
        &addr,
        post(
            &addr,
            &key,
            &[&cl, "transfer-encoding: chunked"],
            chunked.as_bytes(),
        ),
    )
    .await;
    check(
        "Content-Length with chunked",
        &a,
        &[200, 400],
        Shape::Served,
    );
    let stored = env.count("SELECT count(*) FROM callbacks").await;
    assert!(stored <= 1, "{stored} callbacks from one smuggling attempt");
    chunked_over_limit(&env, &addr, &key, stored).await;
}

async fn chunked_over_limit(env: &TestEnv, addr: &str, key: &str, stored: i64) {
    // A chunked body over the 500 KiB limit: 413 in the envelope, nothing stored.
    let big = format!(
        r#"{{"serviceName":"s","phoneNumber":"+12025550102","userData":{{"x":"{}"}}}}"#,
        "a".repeat(600 * 1024)
    );
    let mut framed = Vec::new();
    for chunk in big.as_bytes().chunks(16 * 1024) {
        framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    let a = exchange(
        addr,
        post(addr, key, &["transfer-encoding: chunked"], &framed),
    )
    .await;
    check("a chunked body over the limit", &a, &[413], Shape::Envelope);
    assert_eq!(env.count("SELECT count(*) FROM callbacks").await, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_cut_off() {
    let (env, e, key) = serve().await;
    let addr = host(&e);
    // A head dribbled one header every 200 ms: cut at HEADER_READ_TIMEOUT_MS (1 s).
    let started = Instant::now();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(format!("GET /engagement/v3/openapi.json HTTP/1.1\r\nhost: {addr}\r\n").as_bytes())
        .await
        .unwrap();
    let mut closed = false;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if s.write_all(format!("x-slow-{i}: v\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "a slow-loris head was still open after {took:?}");
    assert!(took < Duration::from_secs(4), "cut only after {took:?}");
    println!("slow-loris head cut after {took:?}");
    // A connection that sends nothing, and an idle keep-alive one, are closed too.
    let idle = exchange(&addr, Vec::new()).await;
    assert!(
        idle.took < Duration::from_secs(4),
        "idle connection kept {:?}",
        idle.took
    );
    let keep_alive = format!("GET /ges/v1/health/live HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    let a = exchange(&addr, keep_alive.into_bytes()).await;
    assert_eq!(a.code, Some(200), "{}", a.raw);
    assert!(
        a.took < Duration::from_secs(4),
        "idle keep-alive kept {:?}",
        a.took
    );
    // A slow body: the request's deadline (REQUEST_TIMEOUT_MS, 2 s) answers, nothing stored.
    slow_body(&addr, &key).await;
    assert_eq!(env.count("SELECT count(*) FROM callbacks").await, 0);
}

async fn slow_body(addr: &str, key: &str) {
    let started = Instant::now();
    let body = br#"{"serviceName":"s","phoneNumber":"+12025550103"}"#;
    let cl = format!("content-length: {}", body.len());
    let head = post(addr, key, &[&cl], b"");
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&head).await;
        for b in body {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(BOUND, rd.read_to_end(&mut out)).await;
    writer.abort();
    assert!(read.is_ok(), "a slow body held the request past {BOUND:?}");
    let a = parse(&out, started.elapsed());
    assert!(
        a.took < Duration::from_secs(6),
        "answered after {:?}",
        a.took
    );
    check("a slow body", &a, &[408], Shape::Envelope);
    assert!(
        harness::message(&a.body).contains("did not arrive"),
        "{}",
        a.raw
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bytes_in_paths_queries_and_headers_answer_400() {
    let (_env, e, key) = serve().await;
    let addr = host(&e);
    let h = format!("host: {addr}");
    let k = format!("x-api-key: {key}");
    let routed: &[(&str, &str)] = &[
        (
            "invalid UTF-8 in the path",
            "/engagement/v3/callbacks/open-for/%FF%FE",
        ),
        ("NUL in the path", "/engagement/v3/callbacks/open-for/s%00x"),
        (
            "invalid UTF-8 in the query",
            "/engagement/v3/callbacks/open-for/s?timezone=%FF",
        ),
        (
            "NUL in the query",
            "/engagement/v3/callbacks/open-for/s?timezone=UTC%00",
        ),
        (
            "NUL in a queue name",
            "/engagement/v3/estimated-wait-time?mode=mode1&virtual-queues=s%00",
        ),
        (
            "NUL in a service of availability",
            "/engagement/v3/callbacks/availability/s%00",
        ),
        (
            "NUL in a queue-status queue",
            "/engagement/v3/callbacks/queue-status/s%00",
        ),
    ];
    for (what, target) in routed {
        let a = exchange(&addr, get(target, &[h.clone(), k.clone()])).await;
        check(what, &a, &[400], Shape::Envelope);
    }
    bare_refusals(&addr, &h).await;
}

/// Heads hyper refuses before a request exists: 400 without a body.
async fn bare_refusals(addr: &str, h: &str) {
    let raw: Vec<(&str, Vec<u8>)> = vec![
        ("a raw 0xFF in the path", [b"GET /engagement/v3/openapi.json\xff HTTP/1.1\r\n".as_slice(), b"connection: close\r\n\r\n"].concat()),
        ("a raw NUL in the path", b"GET /engagement/v3/openapi\x00.json HTTP/1.1\r\nconnection: close\r\n\r\n".to_vec()),
        ("NUL in a header value", b"GET /engagement/v3/openapi.json HTTP/1.1\r\nx-a: a\x00b\r\nconnection: close\r\n\r\n".to_vec()),
        ("a space in a header name", b"GET /engagement/v3/openapi.json HTTP/1.1\r\nbad header: x\r\nconnection: close\r\n\r\n".to_vec()),
        ("a garbage request line", b"GARBAGE\r\n\r\n".to_vec()),
    ];
    for (what, req) in raw {
        check(what, &exchange(addr, req).await, &[400], Shape::Bare);
    }
    // HTTP/2 with prior knowledge on the HTTP/1 server: closed without an answer.
    let h2 = exchange(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()).await;
    assert!(
        h2.code.is_none_or(|c| c == 400),
        "an HTTP/2 preface: {}",
        h2.raw
    );
    // A key of bytes that are not text: refused as a missing key, in the envelope.
    let odd = [
        format!("GET /engagement/v3/callbacks/open-for/s HTTP/1.1\r\n{h}\r\nx-api-key: ")
            .as_bytes(),
        b"\xff\xfe\r\nconnection: close\r\n\r\n",
    ]
    .concat();
    check(
        "a binary API key",
        &exchange(addr, odd).await,
        &[401],
        Shape::Envelope,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_targets_and_hosts_never_reach_internal_routes() {
    let (_env, e, _key) = serve().await;
    let addr = host(&e);
    let internal = e.internal.trim_start_matches("http://");
    let h = format!("host: {addr}");
    let bearer = format!("authorization: Bearer {}", harness::ADMIN_TOKEN);
    let hidden = [
        format!("http://{internal}/metrics"),
        format!("http://{internal}/ges/v1/tenants"),
        "http://evil.example/ges/v1/health/detail".to_string(),
        "/ges/v1/health/../health/detail".into(),
        "/engagement/v3/../../metrics".into(),
        "//metrics".into(),
        "/./metrics".into(),
        "/metrics/".into(),
        "/METRICS".into(),
        "/%6Detrics".into(),
        "/ges/v1/health/detail%2F".into(),
        "/ges/v1/tenants?x=1".into(),
        "/ges/v1/ors/callbacks/x/events".into(),
    ];
    for target in &hidden {
        let a = exchange(&addr, get(target, &[h.clone(), bearer.clone()])).await;
        check(&format!("GET {target}"), &a, &[404], Shape::Envelope);
        let message = a.body["status"]["message"].as_str().unwrap_or("");
        assert!(message.starts_with("no such route"), "{target}: {}", a.raw);
    }
    served_oddities(&addr, internal, &h).await;
}

/// Odd but harmless targets and `Host` headers: served or refused, never a 5xx.
async fn served_oddities(addr: &str, internal: &str, h: &str) {
    let h = h.to_string();
    let doc = "/engagement/v3/openapi.json";
    let served: Vec<(&str, Vec<u8>)> = vec![
        (
            "an absolute-form target",
            get(
                &format!("http://evil.example{doc}"),
                std::slice::from_ref(&h),
            ),
        ),
        ("no Host", get(doc, &[])),
        (
            "two Hosts",
            get(doc, &[h.clone(), "host: evil.example".into()]),
        ),
        (
            "a Host with a path",
            get(doc, &[format!("host: {internal}/metrics")]),
        ),
        ("an empty Host", get(doc, &["host:".into()])),
        (
            "HTTP/1.0",
            format!("GET {doc} HTTP/1.0\r\n\r\n").into_bytes(),
        ),
        (
            "bare LF line ends",
            format!("GET {doc} HTTP/1.1\nhost: {addr}\nconnection: close\n\n").into_bytes(),
        ),
        (
            "an asterisk target",
            b"OPTIONS * HTTP/1.1\r\nconnection: close\r\n\r\n".to_vec(),
        ),
        (
            "CONNECT",
            format!("CONNECT {internal} HTTP/1.1\r\nhost: {internal}\r\nconnection: close\r\n\r\n")
                .into_bytes(),
        ),
    ];
    for (what, req) in served {
        check(
            what,
            &exchange(addr, req).await,
            &[200, 400, 404, 405],
            Shape::Served,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_refused_cleanly() {
    let (env, e, key) = serve().await;
    // 200,000 levels: under the public body limit, far over any parser's stack.
    let deep = format!(
        r#"{{"serviceName":"s","phoneNumber":"+12025550104","userData":{{"x":{}{}}}}}"#,
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    let (code, body) = harness::send(
        e.http
            .post(format!("{}{CREATE}", e.external))
            .header("x-api-key", &key)
            .header("content-type", "application/json")
            .body(deep.clone()),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["status"]["code"], 400);
    // The admin API (10 MB bodies) and the events route parse with the same limits.
    for path in [
        "/ges/v1/tenants/acme/services/deep",
        "/ges/v1/tenants/acme/business-hours/deep",
        "/ges/v1/tenants/acme/cors",
    ] {
        let (code, body) = e
            .admin(
                reqwest::Method::PUT,
                path,
                Some(serde_json::from_str::<Value>("[]").unwrap()),
            )
            .await;
        assert!(code == 400, "{path} with an array: {code} {body}");
        let (code, body) = harness::send(
            e.http
                .put(format!("{}{path}", e.internal))
                .bearer_auth(harness::ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(format!(
                    "{}{}",
                    "[".repeat(1_000_000),
                    "]".repeat(1_000_000)
                )),
        )
        .await;
        assert_eq!(code, 400, "{path}: {body}");
        assert_eq!(body["status"]["code"], 400);
    }
    assert_eq!(env.count("SELECT count(*) FROM callbacks").await, 0);
    // Still serving.
    let (code, _) = e.get(&key, "/engagement/v3/callbacks/queue-status/s").await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_slow_heads_neither_starve_requests_nor_stay_open() {
    let (_env, e, key) = serve_with_header_timeout("3000").await;
    let addr = host(&e);
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /engagement/v3/callbacks/create HTTP/1.1\r\nx-a: ")
            .await
            .unwrap();
        slow.push(s);
    }
    let opened = Instant::now();
    // A real request is answered while every slow head is still open.
    let (code, body) = e.get(&key, "/engagement/v3/callbacks/queue-status/s").await;
    assert_eq!(code, 200, "{body}");
    let answered = opened.elapsed();
    let mut probe = [0u8; 1];
    let open = tokio::time::timeout(Duration::from_millis(10), slow[0].read(&mut probe)).await;
    assert!(
        open.is_err() && answered < Duration::from_secs(3),
        "the request waited for the slow heads to be cut ({answered:?})"
    );
    // Every slow head is cut at HEADER_READ_TIMEOUT_MS (3 s).
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(opened.elapsed())).await;
    for mut s in slow {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
        match read {
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
            }
            Ok(Err(_)) => {} // reset: closed too
            Err(_) => panic!("a slow head was still open after 4.5 s"),
        }
    }
}
