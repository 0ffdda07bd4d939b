//! The public (external) port: allowlist, ccid headers, body limits, envelope on every path.

use harness::{Engage, TestEnv};
use serde_json::json;

#[tokio::test]
async fn external_port_is_an_allowlist_in_the_envelope() {
    let (_env, engage, key) = harness::serve_tenant(TestEnv::new(), "acme").await;

    for path in [
        "/ges/v1/tenants",
        "/metrics",
        "/ges/v1/health/detail",
        "/nothing/here",
    ] {
        let (code, body) = harness::send(
            engage
                .http
                .get(format!("{}{path}", engage.external))
                .bearer_auth(harness::ADMIN_TOKEN),
        )
        .await;
        assert_eq!(code, 404, "{path} must not exist on the external port");
        assert_eq!(body["status"]["code"], 404);
        assert!(body["status"]["corrId"].is_string());
    }
    // The same admin route works on the internal port.
    let (code, _) = engage.admin_get("/ges/v1/tenants").await;
    assert_eq!(code, 200);

    // Every response carries a fresh correlation id, also as a header.
    let r1 = engage
        .http
        .get(format!("{}/x", engage.external))
        .send()
        .await
        .unwrap();
    let r2 = engage
        .http
        .get(format!("{}/x", engage.external))
        .send()
        .await
        .unwrap();
    let (h1, h2) = (
        r1.headers()["x-correlation-id"].clone(),
        r2.headers()["x-correlation-id"].clone(),
    );
    assert_ne!(h1, h2);
    let b1: serde_json::Value = r1.json().await.unwrap();
    assert_eq!(b1["status"]["corrId"], h1.to_str().unwrap());

    // Wrong method on a known route: 405 in the envelope, with the methods it takes in `Allow`.
    let (code, body) = engage.get(&key, "/engagement/v3/callbacks/create").await;
    harness::assert_refused((code, &body), 405, "method");
    let resp = engage
        .http
        .delete(format!(
            "{}/engagement/v3/callbacks/create",
            engage.external
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
}

#[tokio::test]
async fn ccid_headers_are_refused_on_the_external_port_only() {
    let (env, engage, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    engage.service("acme", "sales", json!({})).await;
    let body = json!({"serviceName": "sales", "phoneNumber": "5550100"});
    for header in ["ccid", "ContactCenterID"] {
        let create = engage.create(&key).fields(body.clone());
        let (code, resp) = create.header(header, "acme").send().await;
        assert_eq!(code, 400, "{header}: {resp}");
        assert!(resp["status"]["message"].as_str().unwrap().contains("ccid"));
    }
    // An empty header is allowed (GES ingress sets it empty).
    let create = engage.create(&key).fields(body.clone());
    let (code, _) = create.header("ccid", "").send().await;
    assert_eq!(code, 200);
    let n = env.count("SELECT count(*) FROM callbacks").await;
    assert_eq!(n, 1, "refused requests stored nothing");
}

#[tokio::test]
async fn body_limit_is_500_kb_external_and_10_mb_internal() {
    let (env, engage, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    engage.service("acme", "sales", json!({})).await;
    // ~600 KB of user data.
    let big = "x".repeat(600 * 1024);
    let body = json!({"serviceName": "sales", "phoneNumber": "5550100", "userData": {"blob": big}});

    let (code, resp) = engage.create(&key).fields(body.clone()).send().await;
    assert_eq!(code, 413, "{resp}");
    assert_eq!(resp["status"]["code"], 413);
    assert_eq!(
        invalid_content_length(&engage).await,
        1.0,
        "the declared-length refusal is counted"
    );

    // Chunked (no Content-Length) is cut at the limit too.
    let bytes = serde_json::to_vec(&body).unwrap();
    let stream = futures::stream::iter(
        bytes
            .chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    // The server answers 413 and closes while the client may still be writing, so the client
    // sees either the 413 or a broken pipe; either way nothing is stored.
    let chunked = engage
        .http
        .post(format!(
            "{}/engagement/v3/callbacks/create",
            engage.external
        ))
        .header("x-api-key", &key)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    match chunked {
        Ok(resp) => assert_eq!(resp.status().as_u16(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let n = env.count("SELECT count(*) FROM callbacks").await;
    assert_eq!(n, 0);

    let (code, resp) = harness::send(
        engage
            .http
            .post(format!(
                "{}/engagement/v3/callbacks/create",
                engage.internal
            ))
            .header("x-api-key", &key)
            .json(&body),
    )
    .await;
    assert_eq!(code, 200, "{resp}");

    // The chunked refusal is counted too unless the client's early close reached the server
    // first; the internal port's large body is not a violation.
    let after = invalid_content_length(&engage).await;
    assert!(
        (1.0..=2.0).contains(&after),
        "INVALID_CONTENT_LENGTH = {after}"
    );
}

async fn invalid_content_length(engage: &Engage) -> f64 {
    let metrics = engage.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("INVALID_CONTENT_LENGTH "))
        .and_then(|v| v.parse().ok())
        .expect("INVALID_CONTENT_LENGTH is exported")
}
