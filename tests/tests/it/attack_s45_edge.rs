//! Review of the one-layer edge (7b6bdd5): the public port's checks keep their order (key rate,
//! then ccid headers, then the declared body size), their refusals stay inside the request
//! context (metrics), the internal port skips the public checks, and the CORS middleware tags
//! the client address before it resolves the key (the auth-failure limiter sees it).

use std::time::Duration;

use harness::TestEnv;
use reqwest::header::HeaderValue;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RETRIEVE: &str = "/engagement/v3/callbacks/retrieve";

/// Sends a request head declaring `content-length` over a raw connection, without its body,
/// and answers the status line of the response (within 3 s; "" when none).
async fn head_only(base: &str, extra: &str, declared: usize) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {RETRIEVE} HTTP/1.1\r\nHost: {addr}\r\ncontent-type: application/json\r\n\
         {extra}content-length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("head sent");
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut out))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    String::from_utf8_lossy(&out[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s45_public_checks_keep_their_order_and_metrics() {
    let (_env, e, key) = harness::serve_tenant(
        TestEnv::new()
            .with("API_KEY_RATE_PER_SECOND", "1")
            .with("API_KEY_BURST", "1"),
        "acme",
    )
    .await;
    let body = json!({"id": uuid::Uuid::new_v4().to_string()});
    let post = |key: &str, ccid: Option<&str>| {
        let mut r = e
            .http
            .post(format!("{}{RETRIEVE}", e.external))
            .header("x-api-key", key)
            .json(&body);
        if let Some(c) = ccid {
            r = r.header("ccid", c);
        }
        harness::send(r)
    };
    let failed_429 = |m: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("ges_http_failed_requests_total{") && l.contains("httpCode=\"429\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = failed_429(&e.metrics().await);
    // The ccid refusal spends the key's token: the rate is checked first.
    let (code, b) = post(&key, Some("acme")).await;
    harness::assert_refused((code, &b), 400, "ccid");
    let (code, b) = post(&key, None).await;
    assert_eq!(
        code, 429,
        "the refused request counted against the key: {b}"
    );
    // Over the rate with a ccid header: 429, not 400.
    let (code, b) = post(&key, Some("acme")).await;
    assert_eq!(code, 429, "rate before ccid: {b}");
    assert!(
        b["status"]["corrId"].is_string(),
        "inside the request context: {b}"
    );
    // Over the rate with an oversized declared body: 429, not 413.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let line = head_only(&e.external, &format!("x-api-key: {key}\r\n"), 600_000).await;
    assert!(
        line.starts_with("HTTP/1.1 429"),
        "rate before length: {line:?}"
    );
    // The 429s are counted by the request middleware.
    let after = failed_429(&e.metrics().await);
    assert!(after - before >= 3.0, "429s counted: {before} -> {after}");

    // ccid before the declared length (a fresh key, within its rate).
    let other = e.tenant("other").await;
    let line = head_only(
        &e.external,
        &format!("x-api-key: {other}\r\nccid: other\r\n"),
        600_000,
    )
    .await;
    assert!(
        line.starts_with("HTTP/1.1 400"),
        "ccid before length: {line:?}"
    );

    // The internal port: no ccid check and no key rate; the length check still applies.
    let internal = |ccid: bool| {
        let mut r = e
            .http
            .post(format!("{}{RETRIEVE}", e.internal))
            .header("x-api-key", &key)
            .json(&body);
        if ccid {
            r = r.header("ccid", "acme");
        }
        harness::send(r)
    };
    for _ in 0..3 {
        let (code, b) = internal(true).await;
        assert_eq!(code, 404, "internal: no ccid refusal, no key rate: {b}");
    }
    let line = head_only(
        &e.internal,
        &format!("x-api-key: {key}\r\nccid: acme\r\n"),
        20 * 1024 * 1024,
    )
    .await;
    assert!(
        line.starts_with("HTTP/1.1 413"),
        "internal length: {line:?}"
    );
}

/// The CORS middleware resolves the key itself (with an Origin header): the client address it
/// hands the failure limiter must already be tagged, from the trusted proxy's X-Forwarded-For.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s45_cors_path_charges_the_forwarded_client() {
    let (_env, e, _key) = harness::serve_tenant(
        TestEnv::new()
            .with("AUTH_FAILURE_LIMIT", "3")
            .with("TRUSTED_PROXIES", "127.0.0.1/32")
            .with("CORS_CACHE_SECONDS", "0"),
        "acme",
    )
    .await;
    let (code, b) = e
        .admin_put(
            "/ges/v1/tenants/acme/cors",
            json!({"allowed_origins":["https://o.example"]}),
        )
        .await;
    assert_eq!(code, 200, "{b}");
    let try_key = |xff: &'static str| {
        e.http
            .post(format!("{}{RETRIEVE}", e.external))
            .header("origin", "https://o.example")
            .header("x-api-key", format!("bad-{}", uuid::Uuid::new_v4()))
            .header("x-forwarded-for", HeaderValue::from_static(xff))
            .json(&json!({"id": uuid::Uuid::new_v4().to_string()}))
            .send()
    };
    for _ in 0..3 {
        let r = try_key("203.0.113.66").await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let r = try_key("203.0.113.66").await.unwrap();
    assert_eq!(r.status().as_u16(), 429, "the forwarded client is limited");
    let r = try_key("203.0.113.77").await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        401,
        "another client behind the proxy is not charged"
    );
}
