//! Callbacks API over real HTTP against `engage serve`: create, retrieve, cancel, validation,
//! tenancy, idempotency, and the Redis-after-commit rule.

use harness::{CREATE, Fixture, RETRIEVE, TestEnv};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

async fn setup() -> Fixture {
    Fixture::start(json!({"route_point": "5000"})).await
}

fn in_hours(h: i64) -> String {
    (Timestamp::now() + SignedDuration::from_hours(h)).to_string()
}

fn assert_ok_envelope(code: u16, body: &Value) {
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["code"], 200);
    assert_eq!(body["status"]["message"], "Successful");
    assert!(
        body["status"]["corrId"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn create_immediate_and_scheduled_then_retrieve() {
    let fx = setup().await;
    let (env, engage, key) = (&fx.env, &fx.engage, &fx.key);

    let (code, body) = fx
        .create()
        .phone("+1 555 010 0001")
        .user_data(json!({"orderId": 42, "not an identifier": true}))
        .field("language", json!("fr-CA"))
        .send()
        .await;
    assert_ok_envelope(code, &body);
    let immediate = body["data"]["id"].as_str().unwrap().to_string();

    let desired = "2030-01-01T10:00:00.000Z";
    let (code, body) = fx.create().phone("5550100").at(&in_hours(2)).send().await;
    assert_ok_envelope(code, &body);
    let scheduled = body["data"]["id"].as_str().unwrap().to_string();
    let _ = desired;

    let (code, body) = engage.post(key, RETRIEVE, json!({"id": immediate})).await;
    assert_ok_envelope(code, &body);
    let cb = &body["data"];
    assert_eq!(cb["id"], immediate.as_str());
    assert_eq!(cb["callbackState"], "QUEUED");
    assert_eq!(cb["serviceName"], "sales");
    assert_eq!(cb["phoneNumber"], "+1 555 010 0001");
    assert_eq!(cb["cbOfferType"], "ASAP");
    assert_eq!(cb["language"], "fr-CA");
    assert_eq!(
        cb["userData"],
        json!({"orderId": 42}),
        "non-identifier keys are dropped"
    );
    assert!(cb.get("callbackReason").is_none());

    let (code, body) = engage.post(key, RETRIEVE, json!({"id": scheduled})).await;
    assert_ok_envelope(code, &body);
    assert_eq!(body["data"]["callbackState"], "SCHEDULED");
    assert_eq!(body["data"]["cbOfferType"], "SCHEDULED");
    assert!(body["data"].get("positionInQueue").is_none());

    // Both are durable in PostgreSQL; the immediate one is indexed in Redis for dispatch, the
    // one due in two hours (beyond the 600 s schedule horizon) is left to the worker's
    // horizon loader (docs/derived-state.md#the-horizon).
    let n = env.count("SELECT count(*) FROM callbacks").await;
    assert_eq!(n, 2);
    let indexed = env.indexed(4).await;
    assert!(indexed.contains(&immediate), "the immediate one is indexed");
    assert!(
        !indexed.contains(&scheduled),
        "the one beyond the horizon is not"
    );
}

#[tokio::test]
async fn cancel_then_retrieve_is_completed_cancelled() {
    let fx = setup().await;
    let (env, engage, key) = (&fx.env, &fx.engage, &fx.key);
    let (_, body) = fx.create().phone("5550101").at(&in_hours(3)).send().await;
    let id = body["data"]["id"].as_str().unwrap().to_string();

    let (code, body) = engage.cancel(key, &id).await;
    assert_ok_envelope(code, &body);
    assert_eq!(body["data"]["id"], id.as_str());

    let (_, body) = engage.post(key, RETRIEVE, json!({"id": id})).await;
    assert_eq!(body["data"]["callbackState"], "COMPLETED");
    assert_eq!(body["data"]["callbackReason"], "CANCELLED");

    // A second cancel is refused and changes nothing.
    let (code, body) = engage.cancel(key, &id).await;
    harness::assert_refused((code, &body), 400, "already completed");

    // The cancel left the schedule index and wrote one history row.
    let events = env.count("SELECT count(*) FROM callback_events WHERE state = 'COMPLETED' AND reason = 'CANCELLED'").await;
    assert_eq!(events, 1);
    let mut redis = env.redis().await;
    let mut left = 0i64;
    for shard in 0..4 {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(format!("{{{}:sched:{shard}}}", env.id))
            .arg(&id)
            .query_async(&mut redis)
            .await
            .unwrap();
        left += i64::from(score.is_some());
    }
    assert_eq!(left, 0);
}

#[tokio::test]
async fn processing_callbacks_cannot_be_cancelled() {
    let fx = setup().await;
    let (env, engage, key) = (&fx.env, &fx.engage, &fx.key);
    let (_, body) = fx.create().phone("5550102").send().await;
    let id = body["data"]["id"].as_str().unwrap().to_string();
    env.pg()
        .await
        .execute(
            "UPDATE callbacks SET state = 'PROCESSING' WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    let (code, body) = engage.cancel(key, &id).await;
    harness::assert_refused((code, &body), 400, "PROCESSING");
    let (_, body) = engage.post(key, RETRIEVE, json!({"id": id})).await;
    assert_eq!(body["data"]["callbackState"], "PROCESSING");
}

#[tokio::test]
async fn api_keys_are_required_and_revocable() {
    let fx = setup().await;
    let (engage, key) = (&fx.engage, &fx.key);
    let body = json!({"serviceName": "sales", "phoneNumber": "5550103"});

    let (code, resp) = harness::send(
        engage
            .http
            .post(format!("{}{CREATE}", engage.external))
            .json(&body),
    )
    .await;
    assert_eq!(code, 401);
    assert_eq!(resp["status"]["code"], 401);
    assert_eq!(resp["status"]["message"], "x-api-key header is required");

    let (code, _) = engage
        .create("egk_not-a-real-key")
        .fields(body.clone())
        .send()
        .await;
    assert_eq!(code, 401);

    // Revoke the key through the admin API: it stops working at once.
    let (_, keys) = engage.admin_get("/ges/v1/tenants/acme/api-keys").await;
    let listed = keys["data"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("key").is_none(), "keys are never listed");
    let key_id = listed[0]["id"].as_str().unwrap();
    let (code, _) = engage
        .admin_delete(&format!("/ges/v1/tenants/acme/api-keys/{key_id}"))
        .await;
    assert_eq!(code, 200);
    let (code, resp) = engage.create(key).fields(body).send().await;
    assert_eq!(code, 401, "{resp}");
    assert_eq!(resp["status"]["message"], "invalid API key");
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let fx = setup().await;
    let (engage, key_a) = (&fx.engage, &fx.key);
    let key_b = engage.tenant("globex").await;
    engage.service("globex", "sales", json!({})).await;
    let (_, body) = engage
        .create(&key_b)
        .service("sales")
        .phone("5550104")
        .send()
        .await;
    let b_id = body["data"]["id"].as_str().unwrap().to_string();

    let (code, body) = engage.post(key_a, RETRIEVE, json!({"id": b_id})).await;
    assert_eq!(code, 404, "{body}");
    let (code, _) = engage.cancel(key_a, &b_id).await;
    assert_eq!(code, 404);
    // B's callback is untouched.
    let (_, body) = engage.post(&key_b, RETRIEVE, json!({"id": b_id})).await;
    assert_eq!(body["data"]["callbackState"], "QUEUED");
}

#[tokio::test]
async fn bad_inputs_get_clear_400s_and_change_nothing() {
    let fx = setup().await;
    let (env, engage, key) = (&fx.env, &fx.engage, &fx.key);
    engage
        .service("acme", "closed", json!({"enabled": false}))
        .await;
    engage
        .service("acme", "asap-only", json!({"scheduled_enabled": false}))
        .await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"phoneNumber": "5550100"}), "serviceName is required"),
        (json!({"serviceName": "sales"}), "phoneNumber is required"),
        (
            json!({"serviceName": 7, "phoneNumber": "5550100"}),
            "serviceName",
        ),
        (
            json!({"serviceName": "sales", "phoneNumber": 5550100}),
            "phoneNumber",
        ),
        (
            json!({"serviceName": "sales", "phoneNumber": "call me"}),
            "phoneNumber",
        ),
        (
            json!({"serviceName": "nope", "phoneNumber": "5550100"}),
            "unknown service nope",
        ),
        (
            json!({"serviceName": "closed", "phoneNumber": "5550100"}),
            "disabled",
        ),
        (
            json!({"serviceName": "asap-only", "phoneNumber": "5550100", "desiredTime": in_hours(1)}),
            "scheduled",
        ),
        (
            json!({"serviceName": "sales", "phoneNumber": "5550100", "desiredTime": "next tuesday"}),
            "desiredTime",
        ),
        (
            json!({"serviceName": "sales", "phoneNumber": "5550100", "desiredTime": "2030-01-01T10:00:00"}),
            "desiredTime",
        ),
        (
            json!({"serviceName": "sales", "phoneNumber": "5550100", "desiredTime": in_hours(-1)}),
            "in the past",
        ),
        (
            json!({"serviceName": "sales", "phoneNumber": "5550100", "desiredTime": in_hours(24 * 15)}),
            "days ahead",
        ),
        (
            json!({"serviceName": "sales", "phoneNumber": "5550100", "priority": "high"}),
            "priority",
        ),
        (
            json!({"serviceName": "sales", "phoneNumber": "5550100", "userData": "x"}),
            "userData",
        ),
        (
            json!({"serviceName": "sales", "phoneNumber": "5550100", "pushTargets": [{"channel": "APNS", "target": "t"}]}),
            "FCM",
        ),
        (json!(["not", "an", "object"]), "JSON object"),
    ];
    for (body, expect) in cases {
        let (code, resp) = engage.create(key).fields(body.clone()).send().await;
        assert_eq!(code, 400, "{body} → {resp}");
        assert_eq!(resp["status"]["code"], 400);
        let msg = resp["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains(expect),
            "{body}: message {msg:?} should mention {expect:?}"
        );
        assert!(resp.get("data").is_none());
    }
    for raw in ["{\"serviceName\":", "not json", ""] {
        let (code, resp) = harness::send(
            engage
                .http
                .post(format!("{}{CREATE}", engage.external))
                .header("x-api-key", key)
                .body(raw),
        )
        .await;
        assert_eq!(code, 400, "{raw:?} → {resp}");
    }
    for (body, expect) in [
        (json!({}), "id is required"),
        (json!({"id": "x"}), "not a callback id"),
        (json!({"id": 5}), "id"),
    ] {
        let (code, resp) = engage.post(key, RETRIEVE, body).await;
        assert_eq!(code, 400);
        assert!(
            resp["status"]["message"].as_str().unwrap().contains(expect),
            "{resp}"
        );
    }
    let (code, _) = engage
        .post(
            key,
            RETRIEVE,
            json!({"id": uuid::Uuid::now_v7().to_string()}),
        )
        .await;
    assert_eq!(code, 404);
    let n = env.count("SELECT count(*) FROM callbacks").await;
    assert_eq!(n, 0, "no bad request stored anything");
}

#[tokio::test]
async fn idempotent_create_under_concurrency() {
    let fx = setup().await;
    let (env, engage, key) = (&fx.env, &fx.engage, &fx.key);
    let body =
        json!({"serviceName": "sales", "phoneNumber": "5550105", "desiredTime": in_hours(5)});
    let requests = (0..20).map(|_| {
        let create = engage.create(key).fields(body.clone());
        create.idempotency_key("order-42").send()
    });
    let results = futures::future::join_all(requests).await;
    let ids: std::collections::BTreeSet<String> = results
        .iter()
        .map(|(code, body)| {
            assert_eq!(*code, 200, "{body}");
            body["data"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every response names the same callback");
    let n = env.count("SELECT count(*) FROM callbacks").await;
    assert_eq!(n, 1, "exactly one callback was stored");

    // Same key, different body → 409; no new callback.
    let (code, resp) = fx
        .create()
        .phone("5550106")
        .idempotency_key("order-42")
        .send()
        .await;
    assert_eq!(code, 409, "{resp}");
    // Keys are per tenant: another tenant may use the same key.
    let other = engage.tenant("initech").await;
    engage.service("initech", "sales", json!({})).await;
    let (code, _) = engage
        .create(&other)
        .fields(body)
        .idempotency_key("order-42")
        .send()
        .await;
    assert_eq!(code, 200);
    let n = env.count("SELECT count(*) FROM callbacks").await;
    assert_eq!(n, 2);
}

#[tokio::test]
async fn create_succeeds_while_redis_is_down() {
    // The service Redis points at a closed port: the booking is still committed (invariant 2)
    // and the failed index write is counted for the reconciler.
    let env = TestEnv::new().with(
        "REDIS_URL",
        &format!("redis://127.0.0.1:{}", harness::free_port()),
    );
    let fx = Fixture::with(env.clone(), &[], "acme", "sales", json!({})).await;
    let (engage, key) = (&fx.engage, &fx.key);
    let (code, body) = fx.create().phone("5550107").send().await;
    assert_eq!(code, 200, "{body}");
    let id = body["data"]["id"].as_str().unwrap();
    let (code, body) = engage.post(key, RETRIEVE, json!({"id": id})).await;
    assert_eq!(code, 200);
    assert_eq!(body["data"]["callbackState"], "QUEUED");
    let metrics = engage.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("engage_redis_write_failed_total{op=\"index\"} 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn create_and_cancel_on_a_redis_cluster() {
    let env = TestEnv::new()
        .with("REDIS_URL", harness::cluster())
        .with("REDIS_CLUSTER", "true")
        .with("REDIS_SCHEDULE_SHARDS", "8")
        .with("REDIS_SCHEDULE_HORIZON_S", "7200");
    let fx = Fixture::with(env.clone(), &[], "acme", "sales", json!({})).await;
    let (engage, key) = (&fx.engage, &fx.key);
    let mut ids = Vec::new();
    for i in 0..8 {
        let (code, body) = fx
            .create()
            .phone(&format!("555010{i}"))
            .at(&in_hours(1))
            .send()
            .await;
        assert_eq!(code, 200, "{body}");
        ids.push(body["data"]["id"].as_str().unwrap().to_string());
    }
    let (code, _) = engage.cancel(key, &ids[0]).await;
    assert_eq!(code, 200);
    // The index entries live on several cluster nodes; all but the cancelled one are there.
    let client =
        redis::cluster::ClusterClient::new(harness::cluster().split(',').collect::<Vec<_>>())
            .unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    let mut indexed = Vec::new();
    for shard in 0..8 {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("{{{}:sched:{shard}}}", env.id))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        indexed.extend(members);
    }
    indexed.sort();
    let mut expected: Vec<String> = ids[1..].to_vec();
    expected.sort();
    assert_eq!(indexed, expected);
}

#[tokio::test]
async fn concurrent_creates_are_each_committed_once() {
    // Exercises group commit: many creates in flight share multi-row inserts.
    let fx = setup().await;
    let env = &fx.env;
    let requests = (0..300).map(|i| fx.create().phone(&format!("+1212555{i:04}")).send());
    let results = futures::future::join_all(requests).await;
    let ids: std::collections::BTreeSet<String> = results
        .iter()
        .map(|(code, body)| {
            assert_eq!(*code, 200, "{body}");
            body["data"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 300);
    let n = env.count("SELECT count(*) FROM callbacks").await;
    assert_eq!(n, 300);
    // Every answered id is a committed row.
    let id_list: Vec<uuid::Uuid> = ids.iter().map(|s| s.parse().unwrap()).collect();
    let found: i64 = env
        .pg()
        .await
        .query_one(
            "SELECT count(*) FROM callbacks WHERE id = ANY($1)",
            &[&id_list],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, 300);
}
