//! `FakeFcm`: a local stand-in for Google's OAuth token endpoint and FCM HTTP v1
//! (`messages:send`), over real HTTP, for the push tests (docs/push.md).
//!
//! The service account's RSA key pair is generated at start (`openssl genpkey`, never
//! committed); the token endpoint verifies each assertion's RS256 signature with the account's
//! public key and its claims (`iss`, `scope`, `aud`, `iat`, `exp` ≤ 1 h) before it issues an
//! access token; `messages:send` checks that token, the project and the message's shape (a
//! `token`, `data` whose values are all strings) and records what it accepted. Modes break it:
//! answer 500 a number of times, hang, reject the credentials, or answer 404 `UNREGISTERED`.

use std::{
    collections::HashSet,
    net::SocketAddr,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::signature::{self, KeyPair};
use serde_json::{Value, json};

/// The project every fake account belongs to.
pub const PROJECT: &str = "engage-test";
/// The OAuth scope FCM requires.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// How the fake misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything works.
    Normal,
    /// `messages:send` answers 500 this many more times, then works.
    Fail500(u32),
    /// `messages:send` never answers (the client's timeout must end it).
    Hang,
    /// The token endpoint refuses every assertion (`invalid_grant`).
    RejectCredentials,
    /// `messages:send` answers 404 `UNREGISTERED` (the app was uninstalled).
    Unregistered,
}

/// What the fake has seen.
#[derive(Debug, Default)]
pub struct Seen {
    /// Messages accepted (the `message` objects).
    pub accepted: Vec<Value>,
    /// Every `messages:send` request, answered or not.
    pub send_requests: u32,
    /// Access tokens issued.
    pub tokens_issued: u32,
    /// Why assertions or sends were refused.
    pub refusals: Vec<String>,
}

struct Inner {
    mode: Mutex<Mode>,
    seen: Mutex<Seen>,
    tokens: Mutex<HashSet<String>>,
    public_key: Vec<u8>,
    client_email: String,
    token_url: String,
}

/// A running fake (token endpoint + FCM) on a free local port.
pub struct FakeFcm {
    inner: Arc<Inner>,
    /// `FCM_URL` for Engage.
    pub url: String,
    /// The service-account JSON file to store as the tenant's FCM credentials.
    pub service_account: Value,
}

impl FakeFcm {
    /// Generates a service account and starts the fake.
    pub async fn start() -> Self {
        let pem = generate_key();
        let der = pem_der(&pem);
        let pair = signature::RsaKeyPair::from_pkcs8(&der).expect("generated key parses");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let url = format!("http://{addr}");
        let client_email = format!("push@{PROJECT}.iam.gserviceaccount.com");
        let token_url = format!("{url}/token");
        let inner = Arc::new(Inner {
            mode: Mutex::new(Mode::Normal),
            seen: Mutex::default(),
            tokens: Mutex::default(),
            public_key: pair.public_key().as_ref().to_vec(),
            client_email: client_email.clone(),
            token_url: token_url.clone(),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/messages:send", post(send))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let service_account = json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": client_email,
            "client_id": "1",
            "token_uri": token_url,
        });
        Self {
            inner,
            url,
            service_account,
        }
    }

    /// Changes how the fake behaves from now on.
    /// Rejecting the credentials also revokes every token issued (as a deleted key would).
    pub fn set_mode(&self, mode: Mode) {
        if mode == Mode::RejectCredentials {
            self.inner.tokens.lock().expect("tokens").clear();
        }
        *self.inner.mode.lock().expect("mode") = mode;
    }

    /// Runs `f` over what the fake has seen.
    pub fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.inner.seen.lock().expect("seen"))
    }

    /// The accepted messages for one device token and event.
    pub fn delivered(&self, device: &str, event: &str) -> usize {
        self.seen(|s| {
            s.accepted
                .iter()
                .filter(|m| m["token"] == device && m["data"]["event"] == event)
                .count()
        })
    }
}

/// A fresh 2048-bit RSA key as PKCS#8 PEM, from `openssl genpkey` (no key is committed).
pub fn generate_key() -> String {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl genpkey (the push tests need openssl)");
    assert!(out.status.success(), "openssl genpkey failed");
    String::from_utf8(out.stdout).expect("PEM is text")
}

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).expect("PEM body")
}

async fn token(State(s): State<Arc<Inner>>, body: axum::body::Bytes) -> Response {
    let form = form_fields(&body);
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let refused = |why: String| {
        s.seen.lock().expect("seen").refusals.push(why.clone());
        let body = json!({"error": "invalid_grant", "error_description": why});
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    };
    if *s.mode.lock().expect("mode") == Mode::RejectCredentials {
        return refused("credentials rejected (mode)".into());
    }
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return refused(format!("grant_type {}", field("grant_type")));
    }
    if let Err(why) = verify(&s, field("assertion")) {
        return refused(why);
    }
    let access = format!("ya29.{}", uuid::Uuid::new_v4().simple());
    s.tokens.lock().expect("tokens").insert(access.clone());
    s.seen.lock().expect("seen").tokens_issued += 1;
    axum::Json(json!({"access_token": access, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

/// The fields of an `application/x-www-form-urlencoded` body.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((percent_decode(k), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let (mut out, mut i) = (Vec::with_capacity(b.len()), 0);
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Verifies an assertion: RS256 signature by the account's key, then every claim.
fn verify(s: &Inner, jwt: &str) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, sig] = parts[..] else {
        return Err("assertion is not three parts".into());
    };
    let decode = |p: &str| {
        URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|e| format!("base64url: {e}"))
    };
    let header: Value = serde_json::from_slice(&decode(h)?).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let key =
        signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &s.public_key);
    key.verify(format!("{h}.{c}").as_bytes(), &decode(sig)?)
        .map_err(|_| "bad signature".to_string())?;
    let claims: Value = serde_json::from_slice(&decode(c)?).map_err(|e| e.to_string())?;
    let now = jiff::Timestamp::now().as_second();
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    let checks = [
        (claims["iss"] == s.client_email.as_str(), "iss"),
        (claims["scope"] == SCOPE, "scope"),
        (claims["aud"] == s.token_url.as_str(), "aud"),
        ((now - 60..=now + 60).contains(&iat), "iat"),
        (exp > now && exp - iat <= 3_600, "exp"),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, claim)) => Err(format!("claim {claim} wrong: {claims}")),
        None => Ok(()),
    }
}

async fn send(
    State(s): State<Arc<Inner>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    s.seen.lock().expect("seen").send_requests += 1;
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !s.tokens.lock().expect("tokens").contains(bearer) {
        return google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", None);
    }
    let mode = *s.mode.lock().expect("mode");
    match mode {
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
        }
        Mode::Fail500(n) if n > 0 => {
            *s.mode.lock().expect("mode") = if n == 1 {
                Mode::Normal
            } else {
                Mode::Fail500(n - 1)
            };
            return google_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", None);
        }
        Mode::Unregistered => {
            return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", Some("UNREGISTERED"));
        }
        _ => {}
    }
    match check_message(&project, &body) {
        Ok(message) => {
            s.seen.lock().expect("seen").accepted.push(message);
            let name = format!("projects/{project}/messages/{}", uuid::Uuid::new_v4());
            axum::Json(json!({"name": name})).into_response()
        }
        Err(why) => {
            s.seen.lock().expect("seen").refusals.push(why);
            google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", None)
        }
    }
}

/// The message of a well-formed `messages:send` body for the fake's project.
fn check_message(project: &str, body: &[u8]) -> Result<Value, String> {
    if project != PROJECT {
        return Err(format!("project {project}"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    let m = &v["message"];
    if m["token"].as_str().is_none_or(|t| t.is_empty()) {
        return Err(format!("message.token missing: {v}"));
    }
    let Some(data) = m["data"].as_object() else {
        return Err(format!("message.data missing: {v}"));
    };
    if let Some((k, _)) = data.iter().find(|(_, v)| !v.is_string()) {
        return Err(format!("data.{k} is not a string (FCM requires strings)"));
    }
    Ok(m.clone())
}

fn google_error(status: StatusCode, code: &str, fcm: Option<&str>) -> Response {
    let mut err = json!({"code": status.as_u16(), "message": code, "status": code});
    if let Some(e) = fcm {
        err["details"] = json!([{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": e
        }]);
    }
    (status, axum::Json(json!({"error": err}))).into_response()
}
