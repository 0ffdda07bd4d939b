//! Number rules through the admin API and their effect on create: permitted countries,
//! blocked patterns, premium-rate numbers, impossible numbers, normalisation and storage of
//! the E.164 form.

use harness::TestEnv;
use serde_json::json;

async fn e164_of(env: &TestEnv, id: &str) -> Option<String> {
    let id: uuid::Uuid = id.parse().expect("create returns a UUID");
    env.pg()
        .await
        .query_one("SELECT phone_e164 FROM callbacks WHERE id = $1", &[&id])
        .await
        .expect("the created callback is stored")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_rules_admin_and_create() {
    let (env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    let rule_path = "/ges/v1/tenants/acme/number-rules/north-america";
    let design = json!({"default_country":"US","permitted_countries":["US","CA"],
        "blocked_patterns":["^1900","5550000$"],"block_premium":true});

    // Admin API: create, show, replace, clear errors.
    let (code, body) = e.admin_put(rule_path, design.clone()).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["data"]["rule"], design);
    let (code, body) = e.admin_get(rule_path).await;
    assert_eq!(
        (code, body["data"]["version"].as_i64()),
        (200, Some(1)),
        "{body}"
    );
    let (code, body) = e
        .admin_put(
            rule_path,
            json!({"permitted_countries":["us","ca"],"blocked_patterns":["^1900","5550000$"]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["data"]["rule"]["permitted_countries"],
        json!(["US", "CA"])
    );
    assert_eq!(body["data"]["version"], 2);
    for (bad, says) in [
        (
            json!({"permitted_countries":["US"],"blocked_patterns":["^1(900"]}),
            "blocked_patterns: pattern \"^1(900\" is not a valid regular expression",
        ),
        (
            json!({"permitted_countries":["US"],"blocked_patterns":["(1{1000}){1000}"]}),
            "blocked_patterns: pattern \"(1{1000}){1000}\" is too complex",
        ),
        (json!({"permitted_countries":[]}), "at least one country"),
        (json!({"permitted_countries":["ZZ"]}), "\"ZZ\""),
        (
            json!({"permitted_countries":["US"],"blockPremium":true}),
            "blockPremium",
        ),
        (json!(["US"]), "body must be a JSON object"),
    ] {
        let (code, body) = e
            .admin_put("/ges/v1/tenants/acme/number-rules/bad", bad)
            .await;
        let msg = body["status"]["message"].as_str().unwrap_or_default();
        assert_eq!(code, 400, "{body}");
        assert!(msg.contains(says), "{msg} should contain {says}");
    }
    let (code, body) = e
        .admin_put("/ges/v1/tenants/nobody/number-rules/x", design.clone())
        .await;
    assert_eq!(
        (code, body["status"]["message"].as_str()),
        (404, Some("no tenant nobody"))
    );

    // Services reference rules that exist.
    let (code, body) = e
        .admin_put(
            "/ges/v1/tenants/acme/services/s",
            json!({"number_rule":"missing"}),
        )
        .await;
    harness::assert_refused((code, &body), 400, "no number rule missing");
    e.service(
        "acme",
        "na",
        json!({"number_rule":"north-america","in_queue_checking":false,
        "throttle_per_number_24h":0}),
    )
    .await;
    e.admin_put(
        "/ges/v1/tenants/acme/number-rules/uk",
        json!({"default_country":"GB","permitted_countries":["GB"]}),
    )
    .await;
    e.service(
        "acme",
        "uk",
        json!({"number_rule":"uk","in_queue_checking":false}),
    )
    .await;
    e.service("acme", "free", json!({"in_queue_checking":false}))
        .await;

    // Create under the rules: (service, number, expected status, message or stored E.164).
    let cases = [
        ("na", "(202) 555-0123", 200, "12025550123"),
        ("na", "+1 416 555 0123", 200, "14165550123"),
        (
            "na",
            "+44 20 7946 0958",
            400,
            "number not permitted: country GB",
        ),
        (
            "na",
            "+1 900 555 0123",
            400,
            "number matches a blocked pattern",
        ),
        (
            "na",
            "202 555 0000",
            400,
            "number matches a blocked pattern",
        ),
        ("na", "+1 202 55", 400, "impossible number"),
        ("na", "+1 011 555 0123", 400, "impossible number"),
        ("uk", "020 7946 0958", 200, "442079460958"),
        ("uk", "+44 909 879 0123", 400, "premium-rate number"),
        ("uk", "(202) 555-0123", 400, "impossible number"),
        ("free", "(202) 555-0124", 200, "12025550124"),
        ("free", "+44 20 7946 0959", 200, "442079460959"),
    ];
    for (service, number, want, what) in cases {
        let (code, body) = e.create(&key).service(service).phone(number).send().await;
        assert_eq!(code, want, "{service} {number}: {body}");
        if want == 200 {
            let id = body["data"]["id"].as_str().unwrap();
            assert_eq!(
                e164_of(&env, id).await.as_deref(),
                Some(what),
                "{service} {number}"
            );
        } else {
            let msg = body["status"]["message"].as_str().unwrap();
            assert!(msg.starts_with(what), "{service} {number}: {msg}");
        }
    }
    // Without a rule, a number that does not normalise is kept as given (E.164 column empty).
    let (code, body) = e.create(&key).service("free").phone("123-45").send().await;
    assert_eq!(code, 200, "{body}");
    let id = body["data"]["id"].as_str().unwrap();
    assert_eq!(e164_of(&env, id).await, None);
    let (_, body) = e
        .post(&key, "/engagement/v3/callbacks/retrieve", json!({"id": id}))
        .await;
    assert_eq!(body["data"]["phoneNumber"], "123-45");

    // A rule in use cannot be deleted; once unused it can.
    let (code, body) = e.admin_delete("/ges/v1/tenants/acme/number-rules/uk").await;
    harness::assert_refused((code, &body), 409, "used by service(s) uk");
    e.admin_delete("/ges/v1/tenants/acme/services/uk").await;
    let (code, _) = e.admin_delete("/ges/v1/tenants/acme/number-rules/uk").await;
    assert_eq!(code, 200);
    let (code, body) = e.admin_get("/ges/v1/tenants/acme/number-rules/uk").await;
    assert_eq!(
        (code, body["status"]["message"].as_str()),
        (404, Some("no number rule uk for tenant acme"))
    );
    let (code, body) = e.admin_get("/ges/v1/tenants/acme/number-rules").await;
    assert_eq!(code, 200);
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
}
