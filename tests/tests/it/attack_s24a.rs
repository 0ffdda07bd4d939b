//! Session 24's attacks (attacker A) on what sessions 23–24 built: the credentials vault and
//! its admin API, CAPTCHA on create, Click-To-Call-In, the GWS statistics proxy and EWT mode3,
//! and FCM push. Each test is an attack that broke something (fixed since) or a battery that
//! tried to and is kept as a guard.

use harness::{Fixture, TestEnv, message, siteverify::FakeSiteverify};
use serde_json::json;

/// Real CAPTCHA tokens are long: Google's reCAPTCHA v2 tokens are about 560 characters, v3
/// and hCaptcha tokens often over 1,500. A `captcha_required` service refused every one of
/// them with 400 "captchaToken is too long (at most 255 characters)": the CAPTCHA check
/// passed only the fake's short tokens.
#[tokio::test]
async fn captcha_tokens_of_real_length_are_verified_not_refused() {
    let fake = FakeSiteverify::start("s3cret").await;
    let env = TestEnv::new()
        .with("CAPTCHA_VERIFY_URL", &fake.url)
        .with("CAPTCHA_TIMEOUT_MS", "2000");
    let fx = Fixture::with(env, &[], "acme", "sales", json!({"captcha_required": true})).await;
    let (code, body) = fx
        .engage
        .admin_put(
            "/ges/v1/tenants/acme/credentials/captcha",
            json!({"secret": "s3cret"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    for len in [560, 2_000, 4_000] {
        let token = fake.issue_sized(len);
        let (code, body) = fx.create().field("captchaToken", json!(token)).send().await;
        assert_eq!(code, 200, "a {len}-character token: {body}");
        // Single use still holds.
        let (code, body) = fx.create().field("captchaToken", json!(token)).send().await;
        assert_eq!(code, 400, "{body}");
        assert!(message(&body).contains("timeout-or-duplicate"), "{body}");
    }
    // Still bounded: a token of 64 KiB is refused without asking the verifier.
    let calls = fake.calls();
    let (code, body) = fx
        .create()
        .field("captchaToken", json!("x".repeat(65_536)))
        .send()
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(message(&body).contains("captchaToken"), "{body}");
    assert_eq!(fake.calls(), calls);
    assert_eq!(fx.env.count("SELECT count(*) FROM callbacks").await, 3);
}
