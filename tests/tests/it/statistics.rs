//! The GWS statistics proxy and EWT mode3 (issue 16, docs/statistics.md) through the real
//! `engage serve` HTTP path against `harness::FakeGws`, a real HTTP fake of GWS's OAuth and
//! statistics endpoints: answers, the cross-replica cache and `max-age`, credentials missing
//! or rejected, GWS failing or hanging, tenant isolation, token refresh, Redis down, and the
//! exact requests of the published JavaScript client.

use std::time::{Duration, Instant};

use harness::{Engage, FakeGws, GwsMode, PrivateRedis, TestEnv, message, send};
use redis::AsyncCommands;
use serde_json::{Value, json};
use shared::credentials::{GwsCredentials, Vault};

const PATH: &str = "/engagement/v3/statistics/operations/get-statistic-ex";

/// A get-statistic-ex body asking for `name` on the queue `sales`.
fn body(name: &str) -> Value {
    json!({"data": {"statistics": [
        {"name": name, "objectId": "sales", "objectType": "Queue"}]}})
}

/// Posts `body` with an optional `cache-control`.
async fn ask(e: &Engage, key: &str, body: &Value, cache: Option<&str>) -> (u16, Value) {
    let mut req = e
        .http
        .post(format!("{}{PATH}", e.external))
        .header("x-api-key", key)
        .json(body);
    if let Some(c) = cache {
        req = req.header("cache-control", c);
    }
    send(req).await
}

/// Registers the fake as `tenant`'s GWS: with the admin API when this build serves it, else
/// sealed by the test process with the environment's `CREDENTIALS_KEY` (the same vault code).
async fn register(env: &TestEnv, e: &Engage, tenant: &str, gws: &FakeGws) {
    let path = format!("/ges/v1/tenants/{tenant}/credentials/gws");
    let (code, answer) = e.admin_put(&path, gws.credentials()).await;
    if code == 200 {
        return;
    }
    assert_eq!(code, 404, "{answer}");
    let cfg = shared::config::Config::from_vars(env.vars.clone()).unwrap();
    let vault = Vault::new(&cfg.credentials, Duration::ZERO).unwrap();
    let record: GwsCredentials = serde_json::from_value(json!({
        "client_id": gws.client_id, "client_secret": gws.client_secret,
        "auth_url": gws.url, "statistics_url": format!("{}/statistics/v3", gws.url)}))
    .unwrap();
    let pool = shared::db::pool(&cfg.db).unwrap();
    let client = pool.get().await.unwrap();
    vault.store(&client, tenant, &record).await.unwrap();
}

/// `engage serve`, tenant `acme` with a key and the fake registered as its GWS.
async fn setup(env: TestEnv) -> (TestEnv, Engage, String, FakeGws) {
    let gws = FakeGws::start().await;
    let (env, e, key) = harness::serve_tenant(env, "acme").await;
    register(&env, &e, "acme", &gws).await;
    (env, e, key, gws)
}

#[tokio::test]
async fn answers_are_gws_data_and_cached_across_replicas() {
    let (env, a, key, gws) = setup(TestEnv::new()).await;
    let b = Engage::start(&env, &[]).await;
    gws.set_value("CurrNumberWaitingCalls", json!(7));
    let (code, answer) = ask(&a, &key, &body("CurrNumberWaitingCalls"), None).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"]["message"], "Successful");
    let stat = &answer["data"]["data"]["statistics"][0];
    assert_eq!(stat["value"], 7, "{answer}");
    assert_eq!(
        answer["data"]["status"]["code"], 0,
        "GWS's own status passes through"
    );
    // The same body, keys in another order and spaced, on the other replica: from the cache.
    let reordered: Value = serde_json::from_str(
        r#"{ "data": { "statistics": [ {"objectType":"Queue", "objectId":"sales",
             "name":"CurrNumberWaitingCalls"} ] } }"#,
    )
    .unwrap();
    let (code, again) = ask(&b, &key, &reordered, None).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["data"], answer["data"]);
    assert_eq!(gws.stat_calls(), 1, "the second replica asked GWS again");
    assert_eq!(gws.token_calls(), 1);
    // Another body is another entry.
    assert_eq!(ask(&b, &key, &body("Other"), None).await.0, 200);
    assert_eq!(gws.stat_calls(), 2);
}

/// The cached entry of the only statistics key of `env`, aged by `secs`.
async fn age_cache(env: &TestEnv, secs: i64) {
    let mut conn = env.redis().await;
    let keys: Vec<String> = conn.keys(format!("{}:gws:*", env.id)).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let raw: String = conn.get(&keys[0]).await.unwrap();
    let mut entry: Value = serde_json::from_str(&raw).unwrap();
    entry["at_ms"] = json!(entry["at_ms"].as_i64().unwrap() - secs * 1000);
    let _: () = conn.set_ex(&keys[0], entry.to_string(), 300).await.unwrap();
}

#[tokio::test]
async fn max_age_refreshes_older_answers_and_is_at_least_fifteen() {
    let (env, e, key, gws) = setup(TestEnv::new()).await;
    let q = body("CurrNumberWaitingCalls");
    assert_eq!(ask(&e, &key, &q, Some("max-age=15")).await.0, 200);
    age_cache(&env, 25).await;
    // 25 s old: good enough for max-age=30 and without the header.
    assert_eq!(ask(&e, &key, &q, Some("max-age=30")).await.0, 200);
    assert_eq!(ask(&e, &key, &q, None).await.0, 200);
    assert_eq!(gws.stat_calls(), 1);
    // Too old for max-age=20: asked again, and the fresh answer is cached.
    gws.set_value("CurrNumberWaitingCalls", json!(9));
    let (code, fresh) = ask(&e, &key, &q, Some("max-age=20")).await;
    assert_eq!(code, 200, "{fresh}");
    assert_eq!(fresh["data"]["data"]["statistics"][0]["value"], 9);
    assert_eq!(gws.stat_calls(), 2);
    assert_eq!(ask(&e, &key, &q, Some("max-age=20")).await.0, 200);
    assert_eq!(gws.stat_calls(), 2);
    for bad in ["max-age=5", "max-age=14", "max-age=soon", "max-age=-20"] {
        let (code, answer) = ask(&e, &key, &q, Some(bad)).await;
        assert_eq!(code, 400, "{bad}: {answer}");
        assert!(message(&answer).contains("max-age"), "{bad}: {answer}");
    }
    assert_eq!(gws.stat_calls(), 2, "a refused max-age reached GWS");
}

#[tokio::test]
async fn no_credentials_is_401_and_gws_is_never_asked() {
    let gws = FakeGws::start().await;
    let (_env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    let (code, answer) = ask(&e, &key, &body("X"), None).await;
    assert_eq!(code, 401, "{answer}");
    assert!(message(&answer).contains("GWS credentials"), "{answer}");
    assert_eq!(gws.token_calls() + gws.stat_calls(), 0);
}

#[tokio::test]
async fn rejected_credentials_are_401_and_counted() {
    let (_env, e, key, gws) = setup(TestEnv::new()).await;
    gws.set_mode(GwsMode::RejectCredentials);
    let before = e.metric_sum("GWS_INCORRECT_CLIENT_CREDENTIALS").await;
    let (code, answer) = ask(&e, &key, &body("X"), None).await;
    assert_eq!(code, 401, "{answer}");
    assert!(message(&answer).contains("rejected"), "{answer}");
    assert!(!answer.to_string().contains(&gws.client_secret));
    let after = e.metric_sum("GWS_INCORRECT_CLIENT_CREDENTIALS").await;
    assert_eq!(after - before, 1.0);
    assert_eq!(gws.stat_calls(), 0);
}

#[tokio::test]
async fn gws_failures_are_503_counted_and_never_cached() {
    let (_env, e, key, gws) = setup(TestEnv::new()).await;
    gws.set_mode(GwsMode::Fail);
    let before = e.metric_sum("GWS_SERVER_ERROR").await;
    let (code, answer) = ask(&e, &key, &body("X"), None).await;
    assert_eq!(code, 503, "{answer}");
    assert_eq!(e.metric_sum("GWS_SERVER_ERROR").await - before, 1.0);
    gws.set_mode(GwsMode::Answer);
    let (code, answer) = ask(&e, &key, &body("X"), None).await;
    assert_eq!(code, 200, "the failure was cached: {answer}");
    // GWS refusing the body itself is the caller's 400, with GWS's reason.
    let (code, answer) = ask(&e, &key, &json!({"data": {}}), None).await;
    assert_eq!(code, 400, "{answer}");
    assert!(message(&answer).contains("data.statistics"), "{answer}");
}

#[tokio::test]
async fn a_hanging_gws_answers_503_within_the_timeout() {
    let env = TestEnv::new().with("GWS_TIMEOUT_MS", "700");
    let (_env, e, key, gws) = setup(env).await;
    // A token first, so both calls are exercised: the statistics call hangs.
    assert_eq!(ask(&e, &key, &body("A"), None).await.0, 200);
    gws.set_mode(GwsMode::Hang);
    let started = Instant::now();
    let (code, answer) = ask(&e, &key, &body("B"), None).await;
    assert_eq!(code, 503, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(e.metric_sum("GWS_SERVER_ERROR").await >= 1.0);
}

#[tokio::test]
async fn a_tenant_never_gets_another_tenants_cached_answer() {
    let (env, e, key_a, gws) = setup(TestEnv::new()).await;
    let key_b = e.tenant("bravo").await;
    // The same GWS, the same client and the same body: still two answers.
    register(&env, &e, "bravo", &gws).await;
    gws.set_value("X", json!(1));
    assert_eq!(ask(&e, &key_a, &body("X"), None).await.0, 200);
    gws.set_value("X", json!(2));
    let (code, answer) = ask(&e, &key_b, &body("X"), None).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["data"]["data"]["statistics"][0]["value"], 2);
    assert_eq!(gws.stat_calls(), 2);
    // And tenant A still reads its own.
    let (_, answer) = ask(&e, &key_a, &body("X"), None).await;
    assert_eq!(answer["data"]["data"]["statistics"][0]["value"], 1);
}

#[tokio::test]
async fn tokens_are_reused_refreshed_before_expiry_and_after_a_401() {
    let (_env, e, key, gws) = setup(TestEnv::new()).await;
    for name in ["A", "B", "C"] {
        assert_eq!(ask(&e, &key, &body(name), None).await.0, 200);
    }
    assert_eq!((gws.token_calls(), gws.stat_calls()), (1, 3));
    // GWS forgot its tokens: one 401, one new token, the call retried once.
    gws.revoke_tokens();
    assert_eq!(ask(&e, &key, &body("D"), None).await.0, 200);
    assert_eq!((gws.token_calls(), gws.stat_calls()), (2, 5));
    // A token living 2 s is used for 1 s only.
    gws.set_token_ttl(2);
    gws.revoke_tokens();
    assert_eq!(ask(&e, &key, &body("E"), None).await.0, 200);
    let tokens = gws.token_calls();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(ask(&e, &key, &body("F"), None).await.0, 200);
    assert_eq!(gws.token_calls(), tokens + 1);
}

#[tokio::test]
async fn bodies_are_bounded_both_ways() {
    let env = TestEnv::new().with("GWS_MAX_BODY_BYTES", "2048");
    let (_env, e, key, gws) = setup(env).await;
    let big = json!({"data": {"statistics": [], "pad": "x".repeat(4096)}});
    let (code, answer) = ask(&e, &key, &big, None).await;
    assert_eq!(code, 413, "{answer}");
    gws.set_value("Big", json!("y".repeat(4096)));
    let (code, answer) = ask(&e, &key, &body("Big"), None).await;
    assert_eq!(code, 503, "{answer}");
    for raw in ["", "[]", "{", "42"] {
        let (code, answer) = send(
            e.http
                .post(format!("{}{PATH}", e.external))
                .header("x-api-key", &key)
                .body(raw.to_string()),
        )
        .await;
        assert_eq!(code, 400, "{raw:?}: {answer}");
    }
}

#[tokio::test]
async fn a_redis_failure_degrades_to_no_cache() {
    let mut redis = PrivateRedis::new(false);
    let d = harness::deps();
    let env = TestEnv::on(&d.database_url, &redis.url(), &d.voice_redis_url)
        .with("REDIS_TIMEOUT_MS", "300");
    let (_env, e, key, gws) = setup(env).await;
    redis.stop();
    for _ in 0..2 {
        let (code, answer) = ask(&e, &key, &body("X"), None).await;
        assert_eq!(code, 200, "{answer}");
    }
    assert_eq!(gws.stat_calls(), 2);
}

/// `GET /estimated-wait-time?mode=mode3` for `sales`: (estimate, resultCode, message).
async fn mode3(e: &Engage, key: &str) -> (i64, i64, String) {
    let path = "/engagement/v3/estimated-wait-time?virtual-queues=sales&mode=mode3";
    let (code, answer) = e.get(key, path).await;
    assert_eq!(code, 200, "{answer}");
    let item = &answer["data"][0];
    (
        item["estimatedWaitTime"].as_i64().unwrap(),
        item["resultCode"].as_i64().unwrap(),
        item["message"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn ewt_mode3_reads_the_services_statistic_from_gws() {
    let gws = FakeGws::start().await;
    // Credentials are read through a cache of CACHE_TTL_MS; none here, so the change shows.
    let env = TestEnv::new().with("CACHE_TTL_MS", "0");
    let (env, e, key) = harness::serve_tenant(env, "acme").await;
    e.service(
        "acme",
        "sales",
        json!({"ewt_statistic": "ExpectedWaitTime"}),
    )
    .await;
    gws.set_value("ExpectedWaitTime", json!(95));
    // No GWS yet: the in-band -1.
    let (secs, code, msg) = mode3(&e, &key).await;
    assert_eq!((secs, code), (-1, -1));
    assert!(msg.contains("no statistics source"), "{msg}");
    register(&env, &e, "acme", &gws).await;
    assert_eq!(mode3(&e, &key).await.0, 95);
    let asked = gws.bodies();
    assert_eq!(
        asked[0],
        json!({"data": {"statistics": [
            {"name": "ExpectedWaitTime", "objectId": "sales", "objectType": "Queue"}]}})
    );
    // Cached like the proxy's answers: GWS failing now changes nothing for 5 minutes.
    gws.set_mode(GwsMode::Fail);
    assert_eq!(mode3(&e, &key).await.0, 95);
    assert_eq!(gws.stat_calls(), 1);
}

#[tokio::test]
async fn ewt_mode3_without_a_statistic_or_with_gws_down_is_minus_one() {
    let (_env, e, key, gws) = setup(TestEnv::new()).await;
    e.service("acme", "sales", json!({})).await;
    let (secs, code, msg) = mode3(&e, &key).await;
    assert_eq!((secs, code), (-1, -1));
    assert!(msg.contains("ewt_statistic"), "{msg}");
    e.service("acme", "sales", json!({"ewt_statistic": "EWT"}))
        .await;
    gws.set_mode(GwsMode::Fail);
    // The service's settings are cached for CACHE_TTL_MS; wait until the change shows.
    let mut last = (0, 0, String::new());
    for _ in 0..40 {
        last = mode3(&e, &key).await;
        if last.2.contains("unavailable") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((last.0, last.1), (-1, -1), "{}", last.2);
    assert!(last.2.contains("unavailable"), "{}", last.2);
}

/// Posts exactly what engagement-client-js 9.0.84 `StatisticsApi.statistics(xApiKey,
/// {cacheControl})` sends (superagent 3.7.0): no body (its `postBody` is `null`), JSON content
/// type and accept, the `cache-control` header only when given.
async fn as_js_client(
    e: &Engage,
    key: &str,
    cache: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = e
        .http
        .post(format!("{}{PATH}", e.external))
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("user-agent", "node-superagent/3.7.0");
    if let Some(c) = cache {
        req = req.header("cache-control", c);
    }
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    send(req).await
}

/// The client's `StatisticsStatus401` / `StatisticsStatus500`: `{code: Number, message:
/// String, corrId: String}` under `status`, nothing else.
fn client_error_model(answer: &Value, code: u16) {
    let obj = answer.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["status"], "{answer}");
    assert_eq!(answer["status"]["code"], code);
    assert!(answer["status"]["message"].is_string());
    assert!(answer["status"]["corrId"].is_string());
}

#[tokio::test]
async fn the_published_js_clients_requests() {
    let gws = FakeGws::start().await;
    let env = TestEnv::new().with("CACHE_TTL_MS", "0");
    let (env, e, key) = harness::serve_tenant(env, "acme").await;
    // No credentials: StatisticsResponse401.
    let (code, answer) = as_js_client(&e, &key, Some("max-age=15"), None).await;
    assert_eq!(code, 401, "{answer}");
    client_error_model(&answer, 401);
    register(&env, &e, "acme", &gws).await;
    // The client cannot send a body: a clear 400 naming what GWS needs (docs/statistics.md).
    let (code, answer) = as_js_client(&e, &key, Some("max-age=15"), None).await;
    assert_eq!(code, 400, "{answer}");
    assert!(
        message(&answer).contains("request body is required"),
        "{answer}"
    );
    // The same headers with GWS's body: StatisticsResponse200 {status: SuccessStatus200,
    // data: Statistics (an object)}.
    for cache in [None, Some("max-age=15")] {
        let (code, answer) = as_js_client(&e, &key, cache, Some(&body("X"))).await;
        assert_eq!(code, 200, "{answer}");
        assert_eq!(answer["status"]["code"], 200);
        assert_eq!(answer["status"]["message"], "Successful");
        assert!(answer["status"]["corrId"].is_string());
        assert!(answer["data"].is_object(), "{answer}");
    }
    // A refused max-age is the client's 400 in the envelope.
    let (code, answer) = as_js_client(&e, &key, Some("max-age=5"), Some(&body("X"))).await;
    assert_eq!(code, 400);
    client_error_model(&answer, 400);
}
