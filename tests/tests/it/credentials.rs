//! Per-tenant credentials and CAPTCHA through the real `engage serve` (docs/credentials.md):
//! the admin API never shows a secret and refuses bad input whole; tenants never touch each
//! other's records; the database holds only ciphertext bound to its tenant and kind; rotation
//! keeps every record readable; creates of a `captcha_required` service are verified against a
//! fake `siteverify` before anything is stored or counted.

use std::time::{Duration, Instant};

use harness::{
    Engage, Fixture, TestEnv, message,
    siteverify::{FakeSiteverify, Mode},
};
use serde_json::{Value, json};

/// The CAPTCHA secret the tests store and the fake verifier expects.
const SECRET: &str = "captcha-secret-6LeIxAcT";

/// A service-account body with a fresh RSA key (`openssl genpkey`; no key is committed).
fn service_account(project: &str) -> Value {
    json!({"type": "service_account", "project_id": project, "private_key_id": "kid-1",
        "private_key": harness::fake_fcm::generate_key(), "client_email": format!("push@{project}.iam.gserviceaccount.com"),
        "client_id": "1234", "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token"})
}

fn path(tenant: &str, kind: &str) -> String {
    format!("/ges/v1/tenants/{tenant}/credentials/{kind}")
}

/// `PUT` of a tenant's record of `kind`; (status, body).
async fn put(e: &Engage, tenant: &str, kind: &str, body: Value) -> (u16, Value) {
    e.admin_put(&path(tenant, kind), body).await
}

/// A fixture whose service requires a CAPTCHA verified by `fake` (siteverify timeout 700 ms),
/// with `settings` added.
async fn captcha_fixture(fake: &FakeSiteverify, settings: Value) -> Fixture {
    let env = TestEnv::new()
        .with("CAPTCHA_VERIFY_URL", &fake.url)
        .with("CAPTCHA_TIMEOUT_MS", "700");
    let mut all = json!({"captcha_required": true});
    all.as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    Fixture::with(env, &[], "acme", "sales", all).await
}

/// A create on the fixture's service with `token`; (status, body).
async fn create_with(fx: &Fixture, token: &str) -> (u16, Value) {
    fx.create().field("captchaToken", json!(token)).send().await
}

#[tokio::test]
async fn reads_show_public_fields_and_never_a_secret() {
    let fx = Fixture::start(json!({})).await;
    let e = &fx.engage;
    let (code, body) = put(e, "acme", "fcm", service_account("proj-a")).await;
    assert_eq!(code, 200, "{body}");
    let d = &body["data"];
    assert_eq!(
        (&d["configured"], &d["projectId"], &d["privateKeyId"]),
        (&json!(true), &json!("proj-a"), &json!("kid-1"))
    );
    assert_eq!(d["keyId"].as_str().unwrap().len(), 8);
    let (_, got) = e.admin_get(&path("acme", "fcm")).await;
    let email = &got["data"]["clientEmail"];
    assert_eq!(email, "push@proj-a.iam.gserviceaccount.com");
    let captcha = json!({"secret": SECRET, "siteKey": "site-1"});
    let (code, stored) = put(e, "acme", "captcha", captcha).await;
    assert_eq!((code, &stored["data"]["siteKey"]), (200, &json!("site-1")));
    let (_, read) = e.admin_get(&path("acme", "captcha")).await;
    for shown in [body, got, stored, read].map(|v| v.to_string()) {
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(
            !shown.contains(SECRET) && !shown.contains("ecret\""),
            "{shown}"
        );
    }
    let (code, body) = e.admin_delete(&path("acme", "fcm")).await;
    let unconfigured = (200, &json!(false));
    assert_eq!((code, &body["data"]["configured"]), unconfigured, "{body}");
    assert_eq!(
        fx.env
            .count("SELECT count(*) FROM tenant_credentials")
            .await,
        1
    );
}

#[tokio::test]
async fn bad_input_is_a_400_and_stores_nothing() {
    let fx = Fixture::start(json!({})).await;
    let e = &fx.engage;
    assert_eq!(
        put(e, "acme", "fcm", service_account("proj-a")).await.0,
        200
    );
    let mut bad_key = service_account("proj-b");
    bad_key["private_key"] =
        json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    let mut no_project = service_account("proj-b");
    no_project.as_object_mut().unwrap().remove("project_id");
    let gws = json!({"clientId": "c", "clientSecret": "s", "authUrl": "http://a",
        "statisticsUrl": "http://s"});
    let (mut bad_url, mut typo) = (gws.clone(), gws.clone());
    bad_url["authUrl"] = json!("gws-auth:8080");
    typo["clientsecret"] = json!("typo");
    for (kind, body) in [
        ("fcm", bad_key),
        ("fcm", no_project),
        ("fcm", json!("not an object")),
        ("captcha", json!({"secret": ""})),
        ("captcha", json!({"secret": 12345})),
        ("captcha", json!({"siteKey": "only"})),
        ("gws", bad_url),
        ("gws", typo),
    ] {
        let (code, answer) = put(e, "acme", kind, body.clone()).await;
        assert_eq!(code, 400, "{kind} {body}: {answer}");
        assert!(!answer.to_string().contains("12345"), "{answer}");
    }
    // The stored fcm record is as it was; nothing else was stored.
    let (_, got) = e.admin_get(&path("acme", "fcm")).await;
    assert_eq!(got["data"]["projectId"], "proj-a");
    let (code, got) = e.admin_get(&path("acme", "gws")).await;
    assert_eq!((code, &got["data"]["configured"]), (200, &json!(false)));
    assert_eq!(
        fx.env
            .count("SELECT count(*) FROM tenant_credentials")
            .await,
        1
    );
    assert_eq!(e.admin_get(&path("acme", "smtp")).await.0, 404);
    assert_eq!(e.admin_get(&path("nobody", "fcm")).await.0, 404);
    assert_eq!(
        put(e, "nobody", "captcha", json!({"secret": "x"})).await.0,
        404
    );
    assert_eq!(e.admin_delete(&path("nobody", "captcha")).await.0, 404);
}

#[tokio::test]
async fn without_a_credentials_key_writes_answer_503_and_nothing_is_read() {
    let env = TestEnv::new();
    let mut env_vars = env.clone();
    env_vars.vars.remove("CREDENTIALS_KEY");
    let fx = Fixture::with(env_vars, &[], "acme", "sales", json!({})).await;
    let (code, body) = put(&fx.engage, "acme", "captcha", json!({"secret": "x"})).await;
    assert_eq!(code, 503, "{body}");
    assert!(message(&body).contains("CREDENTIALS_KEY"), "{body}");
    let (code, body) = fx.engage.admin_get(&path("acme", "captcha")).await;
    assert_eq!((code, &body["data"]["configured"]), (200, &json!(false)));
}

#[tokio::test]
async fn tenants_never_touch_each_others_records() {
    let fx = Fixture::start(json!({})).await;
    let e = &fx.engage;
    e.tenant("beta").await;
    let a = json!({"secret": SECRET, "siteKey": "a"});
    assert_eq!(put(e, "acme", "captcha", a).await.0, 200);
    let b = json!({"secret": "beta-secret-xyz", "siteKey": "b"});
    assert_eq!(put(e, "beta", "captcha", b).await.0, 200);
    let (_, read_b) = e.admin_get(&path("beta", "captcha")).await;
    assert_eq!(read_b["data"]["siteKey"], "b");
    assert_eq!(e.admin_delete(&path("beta", "captcha")).await.0, 200);
    let (_, a) = e.admin_get(&path("acme", "captcha")).await;
    let view = (&a["data"]["configured"], &a["data"]["siteKey"]);
    assert_eq!(view, (&json!(true), &json!("a")));
}

/// The row holds no secret in clear, and a copy of it under another tenant does not decrypt
/// there: that tenant's create is refused (503), never verified with the first one's secret.
#[tokio::test]
async fn rows_hold_only_ciphertext_bound_to_their_tenant() {
    let fake = FakeSiteverify::start(SECRET).await;
    let fx = captcha_fixture(&fake, json!({})).await;
    let e = &fx.engage;
    let key_b = e.tenant("beta").await;
    e.service("beta", "sales", json!({"captcha_required": true}))
        .await;
    assert_eq!(
        put(e, "acme", "captcha", json!({"secret": SECRET})).await.0,
        200
    );
    let pg = fx.env.pg().await;
    let sql = "SELECT ciphertext, public::text FROM tenant_credentials WHERE tenant_id = 'acme'";
    let row = pg.query_one(sql, &[]).await.unwrap();
    let (cipher, public): (Vec<u8>, String) = (row.get(0), row.get(1));
    let needle = SECRET.as_bytes();
    assert!(
        !cipher.windows(needle.len()).any(|w| w == needle),
        "secret in clear"
    );
    assert!(!public.contains(SECRET), "{public}");
    let copy = "INSERT INTO tenant_credentials (tenant_id, kind, key_id, nonce, ciphertext, public)
        SELECT 'beta', kind, key_id, nonce, ciphertext, public FROM tenant_credentials
        WHERE tenant_id = 'acme' AND kind = 'captcha'";
    pg.execute(copy, &[]).await.unwrap();
    let token = fake.issue();
    let (code, body) = e
        .create(&key_b)
        .service("sales")
        .phone("+12025550100")
        .field("captchaToken", json!(token))
        .send()
        .await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(fake.calls(), 0, "never verified");
    let (code, body) = create_with(&fx, &token).await;
    assert_eq!(code, 200, "acme's own record still works: {body}");
}

#[tokio::test]
async fn missing_forged_and_unverifiable_tokens_are_refused() {
    let fake = FakeSiteverify::start(SECRET).await;
    let fx = captcha_fixture(&fake, json!({})).await;
    // No secret for the tenant yet: refused as misconfigured, never passed.
    let (code, body) = create_with(&fx, &fake.issue()).await;
    assert_eq!(code, 503, "{body}");
    assert!(message(&body).contains("no CAPTCHA secret"), "{body}");
    assert_eq!(
        put(&fx.engage, "acme", "captcha", json!({"secret": SECRET}))
            .await
            .0,
        200
    );
    let (code, body) = fx.create().send().await;
    assert_eq!(code, 400, "{body}");
    assert!(message(&body).contains("captchaToken"), "{body}");
    let (code, body) = create_with(&fx, "forged-token").await;
    assert_eq!(code, 400, "{body}");
    assert!(message(&body).contains("invalid-input-response"), "{body}");
    for mode in [Mode::Hang, Mode::Fail] {
        fake.set_mode(mode);
        let started = Instant::now();
        let (code, body) = create_with(&fx, &fake.issue()).await;
        assert_eq!(code, 503, "{mode:?}: {body}");
        assert!(started.elapsed() < Duration::from_secs(5), "{mode:?}");
    }
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 0);
}

/// Refused creates count against no limit (the service admits one create per window), a valid
/// token passes once, and the same token again is refused as siteverify says.
#[tokio::test]
async fn a_token_is_verified_once_and_refusals_consume_nothing() {
    let fake = FakeSiteverify::start(SECRET).await;
    let fx = captcha_fixture(&fake, json!({"throttle_per_service_1": 1})).await;
    assert_eq!(
        put(&fx.engage, "acme", "captcha", json!({"secret": SECRET}))
            .await
            .0,
        200
    );
    assert_eq!(create_with(&fx, "forged-token").await.0, 400);
    fake.set_mode(Mode::Fail);
    assert_eq!(create_with(&fx, &fake.issue()).await.0, 503);
    fake.set_mode(Mode::Normal);
    let token = fake.issue();
    let id = fx.create().field("captchaToken", json!(token)).id().await;
    let (code, body) = create_with(&fx, &token).await;
    assert_eq!(code, 400, "the same token twice: {body}");
    assert!(message(&body).contains("timeout-or-duplicate"), "{body}");
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 1);
    assert_eq!(fx.retrieve(&id).await["id"], json!(id));
}

#[tokio::test]
async fn an_idempotent_retry_answers_the_stored_create_without_a_second_verification() {
    let fake = FakeSiteverify::start(SECRET).await;
    let fx = captcha_fixture(&fake, json!({})).await;
    assert_eq!(
        put(&fx.engage, "acme", "captcha", json!({"secret": SECRET}))
            .await
            .0,
        200
    );
    let token = fake.issue();
    let create = |phone: &str| {
        fx.create()
            .phone(phone)
            .field("captchaToken", json!(token))
            .idempotency_key("retry-1")
    };
    let first = create("+12025550142").id().await;
    let calls = fake.calls();
    let again = create("+12025550142").id().await;
    assert_eq!((again, fake.calls()), (first, calls));
    // Another body under the same key is still a conflict.
    let (code, body) = create("+12025550143").send().await;
    assert_eq!(code, 409, "{body}");
}

#[tokio::test]
async fn a_wrong_tenant_secret_or_an_unreachable_verifier_refuses() {
    let fake = FakeSiteverify::start(SECRET).await;
    let fx = captcha_fixture(&fake, json!({})).await;
    let wrong = json!({"secret": "not-the-secret"});
    assert_eq!(put(&fx.engage, "acme", "captcha", wrong).await.0, 200);
    let (code, body) = create_with(&fx, &fake.issue()).await;
    assert_eq!(code, 400, "{body}");
    assert!(message(&body).contains("invalid-input-secret"), "{body}");
    drop(fake);
    let (code, body) = create_with(&fx, "tok").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 0);
}

/// Rotation: add a key, retire the old one, rotate, drop the old one: every record stays
/// readable throughout, and a second rotation has nothing to do.
#[tokio::test]
async fn rotation_keeps_every_record_readable() {
    let fake = FakeSiteverify::start(SECRET).await;
    let env = TestEnv::new().with("CAPTCHA_VERIFY_URL", &fake.url);
    let old_key = env.vars["CREDENTIALS_KEY"].clone();
    let new_key = shared::credentials::seal::generate_key().unwrap();
    let settings = json!({"captcha_required": true});
    let fx = Fixture::with(env.clone(), &[], "acme", "sales", settings).await;
    assert_eq!(
        put(&fx.engage, "acme", "captcha", json!({"secret": SECRET}))
            .await
            .0,
        200
    );
    assert_eq!(
        put(&fx.engage, "acme", "fcm", service_account("p")).await.0,
        200
    );
    let key = fx.key.clone();
    drop(fx);
    // The new key alone cannot read the old records (503); with the old one retired it can.
    let only_new = env.clone().with("CREDENTIALS_KEY", &new_key);
    let both = only_new.clone().with("CREDENTIALS_KEYS_RETIRED", &old_key);
    assert_eq!(captcha_create(&only_new, &key, &fake).await, 503);
    assert_eq!(captcha_create(&both, &key, &fake).await, 200);
    let rotate = || serde_json::from_str::<Value>(&both.engage_cli(&["credentials", "rotate"]));
    let report = rotate().unwrap();
    assert_eq!(report["rotated"], 2, "{report}");
    assert_eq!(rotate().unwrap()["rotated"], 0, "idempotent");
    let new_id = report["keyId"].as_str().unwrap();
    let under_new = format!("SELECT count(*) FROM tenant_credentials WHERE key_id = '{new_id}'");
    assert_eq!(env.count(&under_new).await, 2);
    // The retired key dropped: everything still reads.
    assert_eq!(captcha_create(&only_new, &key, &fake).await, 200);
    let engage = Engage::start(&only_new, &[]).await;
    let (_, after) = engage.admin_get(&path("acme", "fcm")).await;
    assert_eq!(
        (&after["data"]["projectId"], &after["data"]["keyId"]),
        (&json!("p"), &json!(new_id))
    );
}

/// One CAPTCHA create on a server started on `env`; its status (200 or 503).
async fn captcha_create(env: &TestEnv, key: &str, fake: &FakeSiteverify) -> u16 {
    let engage = Engage::start(env, &[]).await;
    let (code, body) = engage
        .create(key)
        .service("sales")
        .phone("+12025550177")
        .field("captchaToken", json!(fake.issue()))
        .send()
        .await;
    assert!(code == 200 || code == 503, "{body}");
    code
}
