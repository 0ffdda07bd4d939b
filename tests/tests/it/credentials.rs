//! Per-tenant credentials and CAPTCHA through the real `engage serve` (docs/credentials.md):
//! the admin API never shows a secret and refuses bad input whole; tenants never touch each
//! other's records; the database holds only ciphertext bound to its tenant and kind; rotation
//! keeps every record readable; creates of a `captcha_required` service are verified against a
//! fake `siteverify` before anything is stored or counted.

use harness::{
    Engage, Fixture, TestEnv,
    siteverify::{FakeSiteverify, Mode},
};
use serde_json::{Value, json};

/// A throwaway RSA key for service-account bodies (never used anywhere else).
const TEST_RSA_KEY: &str = include_str!("../../../shared/src/credentials/test-rsa-key.pem");
const SECRET: &str = "captcha-secret-6LeIxAcT";

fn service_account(project: &str) -> Value {
    json!({"type": "service_account", "project_id": project, "private_key_id": "kid-1",
        "private_key": TEST_RSA_KEY, "client_email": format!("push@{project}.iam.gserviceaccount.com"),
        "client_id": "1234", "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token"})
}

fn path(tenant: &str, kind: &str) -> String {
    format!("/ges/v1/tenants/{tenant}/credentials/{kind}")
}

/// A fixture whose service requires a CAPTCHA (and admits one create per window, so a
/// refused create that counted would show), verified by `fake` with `timeout_ms`.
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

#[tokio::test]
async fn reads_are_write_only_and_bad_input_stores_nothing() {
    let fx = Fixture::start(json!({})).await;
    let e = &fx.engage;
    let (code, body) = e
        .admin_put(&path("acme", "fcm"), service_account("proj-a"))
        .await;
    assert_eq!(code, 200, "{body}");
    let d = &body["data"];
    assert_eq!(
        (&d["configured"], &d["projectId"], &d["privateKeyId"]),
        (&json!(true), &json!("proj-a"), &json!("kid-1"))
    );
    assert_eq!(d["keyId"].as_str().unwrap().len(), 8);
    let (_, got) = e.admin_get(&path("acme", "fcm")).await;
    assert_eq!(
        got["data"]["clientEmail"],
        "push@proj-a.iam.gserviceaccount.com"
    );
    for shown in [body.to_string(), got.to_string()] {
        assert!(
            !shown.contains("PRIVATE KEY") && !shown.contains("privateKey\""),
            "{shown}"
        );
    }
    let (code, body) = e
        .admin_put(
            &path("acme", "captcha"),
            json!({"secret": SECRET, "siteKey": "site-1"}),
        )
        .await;
    assert_eq!(
        (code, &body["data"]["siteKey"]),
        (200, &json!("site-1")),
        "{body}"
    );
    assert!(!body.to_string().contains(SECRET));

    let mut bad_key = service_account("proj-b");
    bad_key["private_key"] =
        json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    let mut no_project = service_account("proj-b");
    no_project.as_object_mut().unwrap().remove("project_id");
    let gws = json!({"clientId": "c", "clientSecret": "s", "authUrl": "http://a", "statisticsUrl": "http://s"});
    let mut bad_url = gws.clone();
    bad_url["authUrl"] = json!("gws-auth:8080");
    let mut extra = gws.clone();
    extra["clientsecret"] = json!("typo");
    for (kind, body) in [
        ("fcm", bad_key),
        ("fcm", no_project),
        ("fcm", json!("not an object")),
        ("captcha", json!({"secret": ""})),
        ("captcha", json!({"siteKey": "only"})),
        ("gws", bad_url),
        ("gws", extra),
    ] {
        let (code, answer) = e.admin_put(&path("acme", kind), body.clone()).await;
        assert_eq!(code, 400, "{kind} {body}: {answer}");
    }
    // The refused fcm writes left the stored record as it was; gws was never stored.
    let (_, got) = e.admin_get(&path("acme", "fcm")).await;
    assert_eq!(got["data"]["projectId"], "proj-a");
    let (code, got) = e.admin_get(&path("acme", "gws")).await;
    assert_eq!((code, &got["data"]["configured"]), (200, &json!(false)));
    assert_eq!(e.admin_get(&path("acme", "smtp")).await.0, 404);
    assert_eq!(e.admin_get(&path("nobody", "fcm")).await.0, 404);
    assert_eq!(
        e.admin_put(&path("nobody", "captcha"), json!({"secret": "x"}))
            .await
            .0,
        404
    );
    let (code, body) = e.admin_delete(&path("acme", "fcm")).await;
    assert_eq!(
        (code, &body["data"]["configured"]),
        (200, &json!(false)),
        "{body}"
    );
    assert_eq!(
        fx.env
            .count("SELECT count(*) FROM tenant_credentials")
            .await,
        1
    );
}

#[tokio::test]
async fn tenants_never_touch_each_others_records_and_rows_hold_only_ciphertext() {
    let fake = FakeSiteverify::start(SECRET).await;
    let fx = captcha_fixture(&fake, json!({})).await;
    let e = &fx.engage;
    let key_b = e.tenant("beta").await;
    e.service("beta", "sales", json!({"captcha_required": true}))
        .await;
    assert_eq!(
        e.admin_put(
            &path("acme", "captcha"),
            json!({"secret": SECRET, "siteKey": "a"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        e.admin_put(
            &path("beta", "captcha"),
            json!({"secret": "beta-secret-xyz", "siteKey": "b"})
        )
        .await
        .0,
        200
    );
    assert_eq!(e.admin_delete(&path("beta", "captcha")).await.0, 200);
    let (_, a) = e.admin_get(&path("acme", "captcha")).await;
    assert_eq!(
        (&a["data"]["configured"], &a["data"]["siteKey"]),
        (&json!(true), &json!("a"))
    );

    let pg = fx.env.pg().await;
    let row = pg
        .query_one(
            "SELECT ciphertext, public::text FROM tenant_credentials WHERE tenant_id = 'acme'",
            &[],
        )
        .await
        .unwrap();
    let (cipher, public): (Vec<u8>, String) = (row.get(0), row.get(1));
    let needle = SECRET.as_bytes();
    assert!(
        !cipher.windows(needle.len()).any(|w| w == needle),
        "secret in clear"
    );
    assert!(!public.contains(SECRET), "{public}");

    // acme's row copied to beta does not decrypt there: beta's create is refused (503), it is
    // never verified with acme's secret.
    pg.execute(
        "INSERT INTO tenant_credentials (tenant_id, kind, key_id, nonce, ciphertext, public)
         SELECT 'beta', kind, key_id, nonce, ciphertext, public FROM tenant_credentials
         WHERE tenant_id = 'acme' AND kind = 'captcha'",
        &[],
    )
    .await
    .unwrap();
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
    // acme's own record still works.
    let (code, body) = fx.create().field("captchaToken", json!(token)).send().await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn a_captcha_create_is_verified_once_before_anything_is_stored() {
    let fake = FakeSiteverify::start(SECRET).await;
    let fx = captcha_fixture(&fake, json!({"throttle_per_service_1": 1})).await;
    let e = &fx.engage;
    // No secret for the tenant yet: refused as misconfigured, not passed.
    let (code, body) = fx
        .create()
        .field("captchaToken", json!(fake.issue()))
        .send()
        .await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["status"]["message"]
            .as_str()
            .unwrap()
            .contains("no CAPTCHA secret"),
        "{body}"
    );
    assert_eq!(
        e.admin_put(&path("acme", "captcha"), json!({"secret": SECRET}))
            .await
            .0,
        200
    );

    let (code, body) = fx.create().send().await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["status"]["message"]
            .as_str()
            .unwrap()
            .contains("captchaToken"),
        "{body}"
    );
    let (code, body) = fx
        .create()
        .field("captchaToken", json!("forged-token"))
        .send()
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["status"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid-input-response"),
        "{body}"
    );

    for mode in [Mode::Hang, Mode::Fail] {
        fake.set_mode(mode);
        let started = std::time::Instant::now();
        let (code, body) = fx
            .create()
            .field("captchaToken", json!(fake.issue()))
            .send()
            .await;
        assert_eq!(code, 503, "{mode:?}: {body}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{mode:?}"
        );
    }
    fake.set_mode(Mode::Normal);
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 0);

    // Nothing above was counted: the one create the window admits passes.
    let token = fake.issue();
    let id = fx
        .create()
        .field("captchaToken", json!(token))
        .idempotency_key("k-1")
        .id()
        .await;
    let (code, body) = fx.create().field("captchaToken", json!(token)).send().await;
    assert_eq!(code, 400, "the same token twice: {body}");
    assert!(
        body["status"]["message"]
            .as_str()
            .unwrap()
            .contains("timeout-or-duplicate"),
        "{body}"
    );
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 1);
    assert_eq!(fx.retrieve(&id).await["id"], json!(id));
}

#[tokio::test]
async fn an_idempotent_retry_answers_the_stored_create_without_a_second_verification() {
    let fake = FakeSiteverify::start(SECRET).await;
    let fx = captcha_fixture(&fake, json!({})).await;
    assert_eq!(
        fx.engage
            .admin_put(&path("acme", "captcha"), json!({"secret": SECRET}))
            .await
            .0,
        200
    );
    let token = fake.issue();
    let create = || {
        fx.create()
            .phone("+12025550142")
            .field("captchaToken", json!(token))
            .idempotency_key("retry-1")
    };
    let first = create().id().await;
    let calls = fake.calls();
    let again = create().id().await;
    assert_eq!((again, fake.calls()), (first, calls));
    // Another body under the same key is still a conflict.
    let (code, body) = fx
        .create()
        .phone("+12025550143")
        .field("captchaToken", json!(token))
        .idempotency_key("retry-1")
        .send()
        .await;
    assert_eq!(code, 409, "{body}");
}

#[tokio::test]
async fn a_wrong_tenant_secret_or_an_unreachable_verifier_refuses() {
    let fake = FakeSiteverify::start(SECRET).await;
    let fx = captcha_fixture(&fake, json!({})).await;
    assert_eq!(
        fx.engage
            .admin_put(
                &path("acme", "captcha"),
                json!({"secret": "not-the-secret"})
            )
            .await
            .0,
        200
    );
    let (code, body) = fx
        .create()
        .field("captchaToken", json!(fake.issue()))
        .send()
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["status"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid-input-secret"),
        "{body}"
    );
    drop(fake);
    let (code, body) = fx.create().field("captchaToken", json!("tok")).send().await;
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
    let fx = Fixture::with(
        env.clone(),
        &[],
        "acme",
        "sales",
        json!({"captcha_required": true}),
    )
    .await;
    let e = &fx.engage;
    assert_eq!(
        e.admin_put(&path("acme", "captcha"), json!({"secret": SECRET}))
            .await
            .0,
        200
    );
    assert_eq!(
        e.admin_put(&path("acme", "fcm"), service_account("p"))
            .await
            .0,
        200
    );
    let (_, before) = e.admin_get(&path("acme", "fcm")).await;
    let key = fx.key.clone();
    drop(fx);

    // The new key alone cannot read the old records (503), with the old one retired it can.
    let only_new = env.clone().with("CREDENTIALS_KEY", &new_key);
    let both = only_new.clone().with("CREDENTIALS_KEYS_RETIRED", &old_key);
    assert_eq!(captcha_create(&only_new, &key, &fake).await, 503);
    assert_eq!(captcha_create(&both, &key, &fake).await, 200);
    let report: Value = serde_json::from_str(&both.engage_cli(&["credentials", "rotate"])).unwrap();
    assert_eq!(report["rotated"], 2, "{report}");
    let again: Value = serde_json::from_str(&both.engage_cli(&["credentials", "rotate"])).unwrap();
    assert_eq!(again["rotated"], 0, "{again}");
    let under_new = format!(
        "SELECT count(*) FROM tenant_credentials WHERE key_id = '{}'",
        report["keyId"].as_str().unwrap()
    );
    assert_eq!(env.count(&under_new).await, 2);
    // The retired key dropped: everything still reads.
    assert_eq!(captcha_create(&only_new, &key, &fake).await, 200);
    let engage = Engage::start(&only_new, &[]).await;
    let (_, after) = engage.admin_get(&path("acme", "fcm")).await;
    assert_eq!(after["data"]["projectId"], before["data"]["projectId"]);
    assert_eq!(after["data"]["keyId"], report["keyId"]);
}

/// One CAPTCHA create on a server started on `env`; its status.
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
