//! Admin API on the internal port and its CLI twins.

use harness::{ADMIN_TOKEN, Engage, TestEnv};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn admin_requires_the_bearer_token() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;
    let url = format!("{}/ges/v1/tenants", engage.internal);
    let (code, body) = harness::send(engage.http.get(&url)).await;
    harness::assert_refused((code, &body), 401, "Bearer");
    let (code, _) =
        harness::send(engage.http.get(&url).bearer_auth("wrong-token-wrong-token")).await;
    assert_eq!(code, 401);
    let (code, _) = harness::send(engage.http.get(&url).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn tenants_keys_and_services_lifecycle() {
    let env = TestEnv::new();
    let engage = Engage::start(&env, &[]).await;

    let (code, body) = engage
        .admin_post("/ges/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["data"]["id"], "acme");
    let (code, _) = engage
        .admin_post("/ges/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    assert_eq!(code, 409);
    let (code, body) = engage
        .admin_post("/ges/v1/tenants", json!({"id": "bad id!", "name": "x"}))
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, _) = engage
        .admin_post("/ges/v1/tenants", json!({"id": "x"}))
        .await;
    assert_eq!(code, 400, "missing name");

    // Keys: shown once, stored hashed.
    let (code, body) = engage
        .admin(Method::POST, "/ges/v1/tenants/acme/api-keys", None)
        .await;
    assert_eq!(code, 201, "{body}");
    let key = body["data"]["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("egk_") && key.len() == 44);
    let stored: Vec<u8> = env
        .pg()
        .await
        .query_one("SELECT key_hash FROM api_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.len(), 32, "only the SHA-256 is stored");
    let (code, _) = engage
        .admin(Method::POST, "/ges/v1/tenants/nobody/api-keys", None)
        .await;
    assert_eq!(code, 404);
    let (code, _) = engage
        .admin_delete("/ges/v1/tenants/acme/api-keys/not-a-uuid")
        .await;
    assert_eq!(code, 404);

    // Services: defaults applied, unknown columns kept, versioned, soft-deleted.
    let (code, body) = engage
        .admin_put(
            "/ges/v1/tenants/acme/services/sales",
            json!({"slot_capacity": 5, "Custom Column": "kept"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let s = &body["data"]["settings"];
    assert_eq!(s["slot_capacity"], 5);
    assert_eq!(s["slot_minutes"], 15);
    assert_eq!(s["ttl_seconds"], 86400);
    assert_eq!(s["Custom Column"], "kept");
    assert_eq!(body["data"]["version"], 1);
    let (code, body) = engage
        .admin_put(
            "/ges/v1/tenants/acme/services/sales",
            json!({"slot_capacity": 6}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["data"]["version"], 2);
    let (code, body) = engage
        .admin_put(
            "/ges/v1/tenants/acme/services/sales",
            json!({"slot_minutes": 20}),
        )
        .await;
    harness::assert_refused((code, &body), 400, "slot_minutes");
    let (_, body) = engage
        .admin_get("/ges/v1/tenants/acme/services/sales")
        .await;
    assert_eq!(
        body["data"]["settings"]["slot_capacity"], 6,
        "the bad PUT changed nothing"
    );
    let (_, body) = engage.admin_get("/ges/v1/tenants/acme/services").await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    let (code, _) = engage
        .admin_delete("/ges/v1/tenants/acme/services/sales")
        .await;
    assert_eq!(code, 200);
    let (code, _) = engage
        .admin_get("/ges/v1/tenants/acme/services/sales")
        .await;
    assert_eq!(code, 404);
    // A deleted service is unknown to create.
    let (code, body) = engage
        .create(&key)
        .service("sales")
        .phone("5550100")
        .send()
        .await;
    harness::assert_refused((code, &body), 400, "unknown service");
}

#[tokio::test]
async fn cli_twins_provision_a_working_tenant() {
    let env = TestEnv::new();
    let out: Value = serde_json::from_str(
        &env.engage_cli(&["tenant", "create", "--id", "cli", "--name", "CLI Co"]),
    )
    .unwrap();
    assert_eq!(out["id"], "cli");
    let key: Value = serde_json::from_str(
        &env.engage_cli(&["apikey", "create", "--tenant", "cli", "--label", "app"]),
    )
    .unwrap();
    let key = key["key"].as_str().unwrap().to_string();
    let file = std::env::temp_dir().join(format!("{}-svc.json", env.id));
    std::fs::write(&file, r#"{"name":"support","route_point":"7000"}"#).unwrap();
    let svc: Value = serde_json::from_str(&env.engage_cli(&[
        "service",
        "put",
        "--tenant",
        "cli",
        "--file",
        file.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(svc["name"], "support");
    assert_eq!(svc["settings"]["route_point"], "7000");

    let engage = Engage::start(&env, &[]).await;
    let (code, body) = engage
        .create(&key)
        .service("support")
        .phone("5550100")
        .send()
        .await;
    assert_eq!(code, 200, "{body}");
}
