//! Session 21's attacker review of issue 14 (abuse resistance, TLS) and the voice hand-off of
//! issue 15: each test here is an attack that once succeeded, kept as the proof of its fix.

use harness::{Fixture, TestEnv};
use rand::{Rng, distr::Alphanumeric};
use reqwest::header::HeaderValue;
use serde_json::json;

const OPEN_FOR: &str = "/engagement/v3/callbacks/open-for/sales";

fn random_key() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// `GET open-for` with a random key and `X-Forwarded-For` given as raw bytes: the status.
async fn try_random_key(fx: &Fixture, xff: &[u8]) -> u16 {
    fx.engage
        .http
        .get(format!("{}{OPEN_FOR}", fx.engage.external))
        .header("x-api-key", random_key())
        .header("x-forwarded-for", HeaderValue::from_bytes(xff).unwrap())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A proxy such as nginx (`$proxy_add_x_forwarded_for`) appends the client's address to the
/// client's own `X-Forwarded-For` in ONE header line. A client that puts a non-ASCII byte in
/// its header made the whole line unreadable, so its failures were charged to the proxy's
/// address: one attacker locked out every other client behind the proxy (429 for them).
#[tokio::test]
async fn a_non_ascii_forwarded_for_cannot_charge_the_proxy_for_its_failures() {
    let env = TestEnv::new()
        .with("AUTH_FAILURE_LIMIT", "3")
        .with("TRUSTED_PROXIES", "127.0.0.1/32");
    let fx = Fixture::with(env, &[], "acme", "sales", json!({"route_point": "5000"})).await;
    let forged = b"9.9.9.\xff, 203.0.113.66";
    for _ in 0..3 {
        assert_eq!(try_random_key(&fx, forged).await, 401);
    }
    assert_eq!(
        try_random_key(&fx, forged).await,
        429,
        "the attacker is limited"
    );
    assert_eq!(
        try_random_key(&fx, b"203.0.113.66").await,
        429,
        "and it is the attacker's own address that is limited"
    );
    assert_eq!(
        try_random_key(&fx, b"203.0.113.77").await,
        401,
        "another client behind the proxy is not limited by the attacker's failures"
    );
}

/// A service's `language` went to every stream entry unchecked: `""` was accepted by the admin
/// API, and each of the service's callbacks was handed off with `language=""`, an entry the
/// voice platform's contract check (ors-sim) rejects: the callback was never played. A blank
/// language is now refused when the settings are written, and changes nothing.
#[tokio::test]
async fn a_blank_service_language_is_refused_before_it_reaches_the_voice_platform() {
    let (_env, e, _key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    for blank in ["", "   "] {
        let (code, body) = e
            .admin_put(
                "/ges/v1/tenants/acme/services/mute",
                json!({"language": blank}),
            )
            .await;
        assert_eq!(code, 400, "language {blank:?}: {body}");
        assert!(body.to_string().contains("language"), "{body}");
        let (code, body) = e
            .admin_post(
                "/ges/v1/tenants/acme/callback-settings",
                json!([{"name": "mute", "language": blank}]),
            )
            .await;
        assert_eq!(code, 400, "publish, language {blank:?}: {body}");
    }
    let (code, body) = e.admin_get("/ges/v1/tenants/acme/services/mute").await;
    assert_eq!(code, 404, "nothing was stored: {body}");
}

/// A create that sends `"routePoint": ""` or `"surveyRP": ""` (form builders send empty
/// fields) overrode the service's routing point with nothing: the entry went out without
/// `route_point`, so the voice platform had nowhere to route the call. A blank override now
/// leaves the service's value in place, and blank reporting texts (`"channel": " "`, which
/// went out as is) are left out of the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_route_point_in_the_create_does_not_erase_the_services() {
    let env = TestEnv::new();
    let engage = harness::Engage::start(&env, &["--with-worker"]).await;
    let key = engage
        .provision(
            "rp",
            "care",
            harness::open_service(json!({"route_point": "5000", "survey_rp": "6000"})),
        )
        .await;
    let id = engage
        .create(&key)
        .service("care")
        .phone(&harness::next_phone())
        .fields(json!({
            "routePoint": "", "surveyRP": " ", "channel": " ", "inboundVQ": "",
            "cbOriginationIxnId": "  "
        }))
        .id()
        .await;
    let mut voice = env.voice().await;
    let started = std::time::Instant::now();
    let fields = loop {
        let entries = harness::stream_entries(&mut voice, env.voice_stream()).await;
        if let Some((_, f)) = entries.into_iter().find(|(_, f)| f["callback_id"] == id) {
            break f;
        }
        assert!(started.elapsed().as_secs() < 10, "no entry for {id}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        fields.get("route_point").map(String::as_str),
        Some("5000"),
        "{fields:?}"
    );
    assert_eq!(
        fields.get("survey_rp").map(String::as_str),
        Some("6000"),
        "{fields:?}"
    );
    // Blank reporting texts are left out (the platform's contract refuses blank texts).
    for blank in ["channel", "inbound_vq", "cb_origination_ixn_id"] {
        assert!(!fields.contains_key(blank), "{blank}: {fields:?}");
    }
}

/// `GES_URL` without a scheme (`engage:3050`, an easy slip in a manifest) was accepted, and
/// every stream entry then carried an `events_url` the voice platform's contract refuses
/// (ors-sim rejects any that is not http(s)): no callback was ever played, and nothing said
/// why. The configuration now refuses it at start, naming the variable.
#[test]
fn a_ges_url_without_http_scheme_is_refused_at_start() {
    let env = TestEnv::new();
    for bad in ["engage:3050", "ftp://engage:3050", "http://", " "] {
        let out = std::process::Command::new(harness::binary("engage"))
            .arg("migrate")
            .env_clear()
            .envs(&env.vars)
            .env("GES_URL", bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "GES_URL {bad:?} accepted: {stderr}");
        assert!(stderr.contains("GES_URL"), "{bad:?}: {stderr}");
    }
}
