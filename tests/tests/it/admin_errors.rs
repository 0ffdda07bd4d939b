//! Admin API errors are as clear as the public ones: each names what is wrong.

use harness::{ADMIN_TOKEN, Engage, TestEnv, send};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_errors_name_the_problem() {
    let env = TestEnv::new();
    let e = Engage::start(&env, &[]).await;
    e.tenant("acme").await;
    let raw = |method: Method, path: &str, body: &'static str| {
        send(
            e.http
                .request(method, format!("{}{path}", e.internal))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(body),
        )
    };
    let cases: Vec<(u16, serde_json::Value, &str)> = vec![
        {
            let (c, b) = raw(Method::POST, "/ges/v1/tenants", r#"{"id":"x"}"#).await;
            (c, b, "request body: missing field `name`")
        },
        {
            let (c, b) = raw(
                Method::POST,
                "/ges/v1/tenants",
                r#"{"id":"x","name":"n","nme":1}"#,
            )
            .await;
            (c, b, "request body: unknown field `nme`")
        },
        {
            let (c, b) = raw(Method::POST, "/ges/v1/tenants", "[1]").await;
            (c, b, "request body must be a JSON object")
        },
        {
            let (c, b) = raw(Method::POST, "/ges/v1/tenants", r#"["a"]"#).await;
            (c, b, "request body must be a JSON object")
        },
        {
            let (c, b) = raw(Method::POST, "/ges/v1/tenants", r#"{"id":"#).await;
            (c, b, "malformed JSON")
        },
        {
            let (c, b) = raw(
                Method::POST,
                "/ges/v1/tenants",
                r#"{"id":"acme","name":"again"}"#,
            )
            .await;
            (c, b, "tenant acme already exists")
        },
        {
            let (c, b) = raw(Method::DELETE, "/ges/v1/tenants", "").await;
            (c, b, "method DELETE is not allowed on /ges/v1/tenants")
        },
        {
            let (c, b) = raw(Method::GET, "/ges/v1/nothing", "").await;
            (c, b, "no such route: GET /ges/v1/nothing")
        },
        {
            let (c, b) = e.admin_get("/ges/v1/tenants/nobody/services").await;
            (c, b, "no tenant nobody")
        },
        {
            let (c, b) = e
                .admin_put(
                    "/ges/v1/tenants/acme/services/s",
                    json!({"slot_minutes": 20}),
                )
                .await;
            (c, b, "setting slot_minutes: must be 15, 30 or 60")
        },
        {
            let (c, b) = send(e.http.get(format!("{}/ges/v1/tenants", e.internal))).await;
            (c, b, "Authorization: Bearer <admin token> is required")
        },
        {
            let (c, b) = send(
                e.http
                    .get(format!("{}/ges/v1/tenants", e.internal))
                    .bearer_auth("not-the-token-at-all"),
            )
            .await;
            (c, b, "invalid admin token")
        },
    ];
    let expected = [400, 400, 400, 400, 400, 409, 405, 404, 404, 400, 401, 401];
    for ((code, body, says), want) in cases.into_iter().zip(expected) {
        let msg = body["status"]["message"].as_str().unwrap_or_default();
        assert_eq!(code, want, "{says}: {body}");
        assert!(msg.starts_with(says), "{msg:?} should start with {says:?}");
        assert_eq!(body["status"]["code"], want);
        assert!(body["status"]["corrId"].is_string());
    }
}
