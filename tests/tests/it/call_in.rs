//! Click-To-Call-In (issue 16, docs/call-in.md) through the real binaries: no two live
//! requests share a (number, code) pair under 100 concurrent creates; exhaustion is a 429 and
//! expiry frees pairs; the voice platform's match consumes a request once (two concurrent
//! matches: one 200), never across tenants, never expired, never with a wrong code or caller,
//! never without its token; bad inputs are 400 and store nothing; the published JavaScript
//! client's exact requests are answered in its `CallInRequest` model; the `call-in` and
//! `ors-events` function binaries serve the create and the match.

use std::collections::HashSet;

use harness::{Engage, Function, ORS_EVENTS_TOKEN, TestEnv, message};
use jiff::Timestamp;
use serde_json::{Value, json};

const CREATE: &str = "/engagement/v3/call-in/requests/create";
const MATCH: &str = "/ges/v1/call-in/match";

/// Ten numbers of a group: `+1650555{base}{0..9}` (`base` keeps tenants' pools apart).
fn numbers(base: u32) -> Vec<String> {
    (0..10).map(|i| format!("+1650555{base:03}{i}")).collect()
}

/// Creates or replaces call-in group `name` of `tenant` (also used by the attack tests).
pub(crate) async fn group(e: &Engage, tenant: &str, name: &str, spec: Value) {
    let (code, body) = e
        .admin_put(
            &format!("/ges/v1/tenants/{tenant}/call-in-groups/{name}"),
            spec,
        )
        .await;
    assert!(code == 200 || code == 201, "group put: {code} {body}");
}

async fn setup(spec: Value) -> (TestEnv, Engage, String) {
    let (env, e, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    group(&e, "acme", "Support", spec).await;
    (env, e, key)
}

async fn matches(e: &Engage, body: Value) -> (u16, Value) {
    harness::send(
        e.http
            .post(format!("{}{MATCH}", e.internal))
            .bearer_auth(ORS_EVENTS_TOKEN)
            .json(&body),
    )
    .await
}

async fn live_rows(env: &TestEnv) -> i64 {
    let pg = env.pg().await;
    let row = pg
        .query_one(
            "SELECT count(*) FROM call_in_requests WHERE state = 'live'",
            &[],
        )
        .await
        .expect("count");
    row.get(0)
}

/// Live pairs held by more than one request, as PostgreSQL sees them.
async fn duplicate_live_pairs(env: &TestEnv) -> i64 {
    let pg = env.pg().await;
    let row = pg
        .query_one(
            "SELECT count(*) FROM (SELECT to_number, access_code FROM call_in_requests
               WHERE state = 'live' AND expires_at > now()
               GROUP BY 1, 2 HAVING count(*) > 1) d",
            &[],
        )
        .await
        .expect("duplicates");
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_share_a_live_pair() {
    let pool = numbers(100);
    let spec = json!({"numbers": pool, "access_codes": true, "code_length": 4});
    let (env, e, key) = setup(spec).await;
    let before = Timestamp::now().as_millisecond();
    let answers = futures::future::join_all(
        (0..100).map(|_| e.post(&key, CREATE, json!({"groupName": "Support"}))),
    )
    .await;
    let mut pairs = HashSet::new();
    for (code, body) in &answers {
        assert_eq!(*code, 200, "{body}");
        let d = &body["data"];
        let to = d["toPhoneNumber"].as_str().expect("toPhoneNumber");
        assert!(pool.iter().any(|n| n == to), "{to} is not in the pool");
        let access = d["accessCode"].as_i64().expect("accessCode is a number");
        assert!((1000..=9999).contains(&access), "{access}");
        let exp = d["expirationTime"].as_i64().expect("expirationTime");
        assert!(
            exp >= before + 299_000 && exp <= before + 310_000,
            "{exp}: epoch ms"
        );
        assert!(
            pairs.insert((to.to_string(), access)),
            "pair handed out twice: {body}"
        );
    }
    assert_eq!(live_rows(&env).await, 100);
    assert_eq!(duplicate_live_pairs(&env).await, 0);
    assert_eq!(e.metric_sum("ges_callin_created").await, 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exhaustion_is_429_and_expiry_frees_pairs() {
    let pool = numbers(200);
    let (env, e, key) = setup(json!({"numbers": pool, "lifetime_seconds": 2})).await;
    // Eleven at once on ten numbers without codes: ten numbers, each once, one 429.
    let answers = futures::future::join_all(
        (0..11).map(|_| e.post(&key, CREATE, json!({"groupName": "Support"}))),
    )
    .await;
    let ok: Vec<&Value> = answers
        .iter()
        .filter(|(c, _)| *c == 200)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(ok.len(), 10, "{answers:?}");
    let given: HashSet<&str> = ok
        .iter()
        .map(|b| b["data"]["toPhoneNumber"].as_str().unwrap())
        .collect();
    assert_eq!(given.len(), 10);
    assert!(ok.iter().all(|b| b["data"].get("accessCode").is_none()));
    let (code, refused) = answers.iter().find(|(c, _)| *c != 200).unwrap();
    assert_eq!(*code, 429, "{refused}");
    assert!(message(refused).contains("no free number"), "{refused}");
    let pg = env.pg().await;
    let all: i64 = pg
        .query_one("SELECT count(*) FROM call_in_requests", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(all, 10, "the refused request stored nothing");
    // Past the lifetime every pair is free again.
    tokio::time::sleep(std::time::Duration::from_millis(2_300)).await;
    for _ in 0..10 {
        let (code, body) = e.post(&key, CREATE, json!({"groupName": "Support"})).await;
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(live_rows(&env).await, 10);
    assert_eq!(duplicate_live_pairs(&env).await, 0);
    let (code, body) = e.post(&key, CREATE, json!({"groupName": "Support"})).await;
    assert_eq!(code, 429, "{body}");
}

/// A callback of the tenant, for `callbackServiceId`.
async fn callback(e: &Engage, tenant: &str, key: &str) -> String {
    e.service(
        tenant,
        "CB_Support",
        json!({"slot_minutes": 15, "slot_capacity": 10, "in_queue_checking": false}),
    )
    .await;
    let (code, body) = e
        .post(
            key,
            "/engagement/v3/callbacks/create",
            json!({"serviceName": "CB_Support", "phoneNumber": "+15551234567"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    body["data"]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_match_consumes_once_and_only_the_right_request() {
    let (_env, e, key) = setup(json!({"numbers": numbers(300), "access_codes": true})).await;
    let cb = callback(&e, "acme", &key).await;
    let body = json!({"groupName": "Support", "fromPhoneNumber": "+1 415 555 0100",
        "userData": {"orderId": "A-17", "bad key": 1}, "callbackServiceId": cb});
    let (code, made) = e.post(&key, CREATE, body).await;
    assert_eq!(code, 200, "{made}");
    let d = &made["data"];
    assert_eq!(d["fromPhoneNumber"], "+14155550100");
    assert_eq!(d["callbackServiceId"], cb.as_str());
    let (to, access) = (
        d["toPhoneNumber"].clone(),
        d["accessCode"].as_i64().unwrap(),
    );
    let asked =
        json!({"toPhoneNumber": to, "accessCode": access, "fromPhoneNumber": "+14155550100"});
    // Wrong code, wrong caller, withheld caller, no code: 404, and nothing consumed.
    let wrong = if access == 9999 { 1000 } else { access + 1 };
    for (field, value) in [
        ("accessCode", json!(wrong)),
        ("fromPhoneNumber", json!("+14155550101")),
        ("fromPhoneNumber", Value::Null),
        ("accessCode", Value::Null),
    ] {
        let mut b = asked.clone();
        b[field] = value;
        let (code, answer) = matches(&e, b).await;
        assert_eq!(code, 404, "{field}: {answer}");
    }
    // No token, a wrong token: 401.
    let url = format!("{}{MATCH}", e.internal);
    let (code, _) = harness::send(e.http.post(&url).json(&asked)).await;
    assert_eq!(code, 401);
    let (code, _) = harness::send(e.http.post(&url).bearer_auth("nope").json(&asked)).await;
    assert_eq!(code, 401);
    // Two matches at once (the code as keyed-in digits in one): exactly one 200.
    let mut as_text = asked.clone();
    as_text["accessCode"] = json!(access.to_string());
    let (a, b) = tokio::join!(matches(&e, asked.clone()), matches(&e, as_text));
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [200, 404], "{a:?} {b:?}");
    let won = if a.0 == 200 { a.1 } else { b.1 };
    let m = &won["data"];
    assert_eq!(m["id"], d["id"]);
    assert_eq!(m["ccid"], "acme");
    assert_eq!(m["callbackServiceId"], cb.as_str());
    assert_eq!(m["userData"], json!({"orderId": "A-17"}));
    let (code, _) = matches(&e, asked).await;
    assert_eq!(code, 404, "consumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_requests_and_other_tenants_never_match() {
    let (_env, e, key) = setup(json!({"numbers": numbers(400), "lifetime_seconds": 1})).await;
    let other = e.tenant("globex").await;
    group(
        &e,
        "globex",
        "Sales",
        json!({"numbers": numbers(500), "access_codes": true}),
    )
    .await;
    // A number pooled by one tenant cannot be pooled by another (nor another group): 409.
    let (code, body) = e
        .admin_put(
            "/ges/v1/tenants/globex/call-in-groups/Steal",
            json!({"numbers": [numbers(400)[3].clone()]}),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    let (code, _) = e
        .admin_get("/ges/v1/tenants/globex/call-in-groups/Steal")
        .await;
    assert_eq!(code, 404, "nothing stored");
    // acme's group does not exist for globex.
    let (code, body) = e
        .post(&other, CREATE, json!({"groupName": "Support"}))
        .await;
    assert_eq!(code, 400, "{body}");
    let (_, theirs) = e.post(&other, CREATE, json!({"groupName": "Sales"})).await;
    let (_, ours) = e.post(&key, CREATE, json!({"groupName": "Support"})).await;
    // acme's number with globex's code never matches; globex's request answers as globex.
    let (code, _) = matches(
        &e,
        json!({"toPhoneNumber": ours["data"]["toPhoneNumber"], "accessCode": theirs["data"]["accessCode"]}),
    )
    .await;
    assert_eq!(code, 404);
    let (code, m) = matches(
        &e,
        json!({"toPhoneNumber": theirs["data"]["toPhoneNumber"], "accessCode": theirs["data"]["accessCode"]}),
    )
    .await;
    assert_eq!(code, 200, "{m}");
    assert_eq!(m["data"]["ccid"], "globex");
    // Expired: 404.
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    let (code, _) = matches(&e, json!({"toPhoneNumber": ours["data"]["toPhoneNumber"]})).await;
    assert_eq!(code, 404, "expired");
}

#[tokio::test]
async fn bad_inputs_are_400_and_store_nothing() {
    let (env, e, key) = setup(json!({"numbers": numbers(600)})).await;
    let other_cb = {
        let k = e.tenant("globex").await;
        callback(&e, "globex", &k).await
    };
    let huge = "x".repeat(20_000);
    for (body, part) in [
        (json!({}), "groupName is required"),
        (json!({"groupName": ""}), "groupName is required"),
        (json!({"groupName": 7}), "groupName"),
        (
            json!({"groupName": "Nope"}),
            "unknown Click-To-Call-In group",
        ),
        (
            json!({"groupName": "Support", "fromPhoneNumber": "12"}),
            "fromPhoneNumber",
        ),
        (
            json!({"groupName": "Support", "fromPhoneNumber": 5}),
            "fromPhoneNumber",
        ),
        (json!({"groupName": "Support", "userData": [1]}), "userData"),
        (
            json!({"groupName": "Support", "userData": {"a": huge}}),
            "userData is too large",
        ),
        (
            json!({"groupName": "Support", "callbackServiceId": "x"}),
            "callbackServiceId",
        ),
        (
            json!({"groupName": "Support", "callbackServiceId": other_cb}),
            "callbackServiceId",
        ),
        (json!([1]), "JSON object"),
    ] {
        let (code, answer) = e.post(&key, CREATE, body.clone()).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert!(message(&answer).contains(part), "{body}: {answer}");
    }
    let pg = env.pg().await;
    let n: i64 = pg
        .query_one("SELECT count(*) FROM call_in_requests", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // Groups: bad specs are 400 and change nothing.
    for spec in [
        json!({"numbers": []}),
        json!({"numbers": ["123"]}),
        json!({"numbers": ["+16505550100", "650 555 0100"]}),
        json!({"numbers": ["+16505550100"], "code_length": 9}),
        json!({"numbers": ["+16505550100"], "lifetime_seconds": 0}),
        json!({"numbers": ["+16505550100"], "colour": "red"}),
        json!({"numbers": "+16505550100"}),
    ] {
        let (code, answer) = e
            .admin_put("/ges/v1/tenants/acme/call-in-groups/Support", spec.clone())
            .await;
        assert_eq!(code, 400, "{spec}: {answer}");
    }
    let (_, shown) = e
        .admin_get("/ges/v1/tenants/acme/call-in-groups/Support")
        .await;
    assert_eq!(shown["data"]["version"], 1, "{shown}");
    // Match: bad numbers and codes are 400.
    for body in [
        json!({}),
        json!({"toPhoneNumber": "12"}),
        json!({"toPhoneNumber": "+16505556000", "accessCode": "12a"}),
        json!({"toPhoneNumber": "+16505556000", "accessCode": -1}),
        json!({"toPhoneNumber": "+16505556000", "accessCode": [1]}),
    ] {
        let (code, answer) = matches(&e, body.clone()).await;
        assert_eq!(code, 400, "{body}: {answer}");
    }
}

/// Posts raw bytes the way engagement-client-js 9.0.84 (superagent 3.7.0) does
/// (`CallInApi.callInRequests`: `POST /call-in/requests/create`, `x-api-key`, JSON both ways).
async fn post_as_js_client(e: &Engage, key: &str, body: &str) -> (u16, Value) {
    harness::send(
        e.http
            .post(format!("{}{CREATE}", e.external))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("user-agent", "node-superagent/3.7.0")
            .body(body.to_string()),
    )
    .await
}

/// Checks `data` against the client's `CallInRequest` model: only its fields, each of its type.
fn assert_call_in_request(d: &Value) {
    let fields = [
        "id",
        "toPhoneNumber",
        "groupName",
        "expirationTime",
        "accessCode",
        "fromPhoneNumber",
        "callbackServiceId",
    ];
    for (k, v) in d.as_object().expect("data is an object") {
        assert!(fields.contains(&k.as_str()), "{k} is not in CallInRequest");
        let number = matches!(k.as_str(), "expirationTime" | "accessCode");
        assert!(if number { v.is_i64() } else { v.is_string() }, "{k}: {v}");
    }
}

#[tokio::test]
async fn the_published_js_client_requests_are_answered_in_its_model() {
    let (_env, e, key) =
        setup(json!({"numbers": numbers(700), "access_codes": true, "code_length": 6})).await;
    let cb = callback(&e, "acme", &key).await;
    // `new CallInRequestsParms("Support")`: the constructor sets only groupName; the other
    // fields are prototype defaults (undefined), which JSON.stringify leaves out.
    let (code, answer) = post_as_js_client(&e, &key, r#"{"groupName":"Support"}"#).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"]["code"], 200);
    assert_eq!(answer["status"]["message"], "Successful");
    assert!(answer["status"]["corrId"].is_string());
    let d = &answer["data"];
    assert_call_in_request(d);
    assert_eq!(d["groupName"], "Support");
    assert!(d.get("fromPhoneNumber").is_none() && d.get("callbackServiceId").is_none());
    assert!((100_000..=999_999).contains(&d["accessCode"].as_i64().unwrap()));
    // Every field set, in the order the model's properties are assigned.
    let full = format!(
        r#"{{"groupName":"Support","fromPhoneNumber":"+14155550100","userData":{{"orderId":"A-17","vip":true}},"callbackServiceId":"{cb}"}}"#
    );
    let (code, answer) = post_as_js_client(&e, &key, &full).await;
    assert_eq!(code, 200, "{answer}");
    let d = &answer["data"];
    assert_call_in_request(d);
    assert_eq!(d["fromPhoneNumber"], "+14155550100");
    assert_eq!(d["callbackServiceId"], cb.as_str());
    // The client's required-parameter check passes `{}` for an empty model: a 400 in its
    // CallInRequestsResponse400 shape.
    let (code, answer) = post_as_js_client(&e, &key, "{}").await;
    assert_eq!(code, 400);
    assert_eq!(answer["status"]["code"], 400);
    assert!(answer["status"]["corrId"].is_string() && answer.get("data").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_binaries_serve_create_and_match() {
    let env = TestEnv::new();
    let (env, e, key) = harness::serve_tenant(env, "acme").await;
    group(
        &e,
        "acme",
        "Support",
        json!({"numbers": numbers(800), "access_codes": true}),
    )
    .await;
    let create = Function::start(&env, "call-in", &[]).await;
    let (code, made) = create
        .post(&key, CREATE, json!({"groupName": "Support"}))
        .await;
    assert_eq!(code, 200, "{made}");
    let (code, _) = create.post(&key, MATCH, json!({})).await;
    assert_eq!(code, 404, "the match is not on the public function");
    let events = Function::start(&env, "ors-events", &[]).await;
    let d = &made["data"];
    let (code, m) = harness::send(
        events
            .http
            .post(format!("{}{MATCH}", events.url))
            .bearer_auth(ORS_EVENTS_TOKEN)
            .json(&json!({"toPhoneNumber": d["toPhoneNumber"], "accessCode": d["accessCode"]})),
    )
    .await;
    assert_eq!(code, 200, "{m}");
    assert_eq!(m["data"]["id"], d["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_requests_that_ended_long_ago() {
    let env = TestEnv::new()
        .with("WORKER_MAINTENANCE_S", "1")
        .with("WORKER_RETENTION_INTERVAL_S", "1");
    let (env, e, key) = harness::serve_tenant(env, "acme").await;
    group(&e, "acme", "Support", json!({"numbers": numbers(900)})).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (code, made) = e.post(&key, CREATE, json!({"groupName": "Support"})).await;
        assert_eq!(code, 200, "{made}");
        ids.push(uuid::Uuid::parse_str(made["data"]["id"].as_str().unwrap()).unwrap());
    }
    let pg = env.pg().await;
    // One expired 15 days ago, one matched 15 days ago, one live: only the first two go.
    pg.execute(
        "UPDATE call_in_requests SET expires_at = now() - interval '15 days' WHERE id = $1",
        &[&ids[0]],
    )
    .await
    .unwrap();
    pg.execute(
        "UPDATE call_in_requests SET state = 'consumed', consumed_at = now() - interval '15 days'
          WHERE id = $1",
        &[&ids[1]],
    )
    .await
    .unwrap();
    let _worker = harness::WorkerProc::start(&env, &[]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left: Vec<uuid::Uuid> = pg
            .query("SELECT id FROM call_in_requests", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        if left == [ids[2]] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "left: {left:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
