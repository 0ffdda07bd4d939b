//! Session 24's attacks (attacker A) on what sessions 23–24 built: the credentials vault and
//! its admin API, CAPTCHA on create, Click-To-Call-In, the GWS statistics proxy and EWT mode3,
//! and FCM push. Each test is an attack that broke something (fixed since) or a battery that
//! tried to and is kept as a guard.

use std::time::{Duration, Instant};

use harness::{FakeGws, Fixture, GwsMode, TestEnv, message, siteverify::FakeSiteverify};
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

/// EWT mode3 asks GWS once per queue. With GWS hanging, the queues were asked one after the
/// other, each waiting `GWS_TIMEOUT_MS`: ten queues took ten timeouts, past the request's
/// deadline, and the whole answer was a 503 instead of the documented in-band `-1` per queue.
#[tokio::test]
async fn ewt_mode3_over_many_queues_with_gws_hanging_answers_in_band_in_time() {
    let gws = FakeGws::start().await;
    let env = TestEnv::new()
        .with("GWS_TIMEOUT_MS", "700")
        .with("REQUEST_TIMEOUT_MS", "3000");
    let (_env, e, key) = harness::serve_tenant(env, "acme").await;
    let (code, body) = e
        .admin_put("/ges/v1/tenants/acme/credentials/gws", gws.credentials())
        .await;
    assert_eq!(code, 200, "{body}");
    let names: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
    for name in &names {
        e.service("acme", name, json!({"ewt_statistic": "EWT"}))
            .await;
    }
    let path = format!(
        "/engagement/v3/estimated-wait-time?mode=mode3&virtual-queues={}",
        names.join(",")
    );
    // GWS answering: every queue gets its value, with one token for all of them.
    gws.set_value("EWT", json!(30));
    let (code, body) = e.get(&key, &path).await;
    assert_eq!(code, 200, "{body}");
    let items = body["data"].as_array().unwrap();
    assert_eq!(items.len(), 10, "{body}");
    assert!(items.iter().all(|i| i["estimatedWaitTime"] == 30), "{body}");
    assert_eq!(gws.token_calls(), 1);

    // GWS hanging (new statistic, so nothing is cached): in band, within the deadline.
    for name in &names {
        e.service("acme", name, json!({"ewt_statistic": "EWT2"}))
            .await;
    }
    gws.set_mode(GwsMode::Hang);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let started = Instant::now();
    let (code, body) = e.get(&key, &path).await;
    assert_eq!(code, 200, "after {:?}: {body}", started.elapsed());
    assert!(started.elapsed() < Duration::from_millis(2_900));
    let items = body["data"].as_array().unwrap();
    assert_eq!(items.len(), 10, "{body}");
    for item in items {
        assert_eq!(item["estimatedWaitTime"], -1, "{body}");
        assert!(
            item["message"].as_str().unwrap().contains("unavailable"),
            "{body}"
        );
    }
}
