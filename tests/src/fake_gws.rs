//! A fake Genesys Web Services (GWS) for the statistics proxy: a real HTTP server on a free
//! local port speaking the two calls Engage makes (docs/statistics.md#protocol).
//!
//! - `POST /auth/v3/oauth/token`: OAuth 2 client credentials. Checks HTTP Basic client
//!   authentication against its one client and `grant_type=client_credentials`; issues random
//!   bearer tokens that expire after [`FakeGws::set_token_ttl`] seconds (default 3600).
//! - `POST /statistics/v3/operations/get-statistic-ex`: checks the bearer token (unknown or
//!   expired: 401), requires `{"data":{"statistics":[{name, objectId, objectType}, …]}}` (else
//!   400 in GWS's envelope) and answers each statistic with a `timestamp` and a `value` (the one
//!   set with [`FakeGws::set_value`], else 42).
//!
//! Modes ([`GwsMode`]): answer, 500 on every call, hang (never answer), reject the client
//! credentials. Every call is counted.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::Engine;
use serde_json::{Value, json};

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GwsMode {
    /// As GWS does.
    Answer,
    /// 500 on both endpoints.
    Fail,
    /// Never answers (the connection stays open).
    Hang,
    /// The token endpoint refuses the client (`401 invalid_client`).
    RejectCredentials,
}

#[derive(Default)]
struct Inner {
    mode: Mutex<Option<GwsMode>>,
    tokens: Mutex<HashMap<String, Instant>>,
    values: Mutex<HashMap<String, Value>>,
    bodies: Mutex<Vec<Value>>,
    token_calls: AtomicUsize,
    stat_calls: AtomicUsize,
    token_ttl_s: AtomicU64,
}

/// The running fake; stops with the test's runtime.
#[derive(Clone)]
pub struct FakeGws {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The one client id it knows.
    pub client_id: String,
    /// That client's secret.
    pub client_secret: String,
    inner: Arc<Inner>,
}

impl FakeGws {
    /// Starts a fake knowing one client, on a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake GWS port");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("fake GWS address")
        );
        let fake = Self {
            url,
            client_id: format!("engage-{}", uuid::Uuid::new_v4().simple()),
            client_secret: format!("s3cret-{}", uuid::Uuid::new_v4().simple()),
            inner: Arc::new(Inner::default()),
        };
        fake.inner.token_ttl_s.store(3600, Ordering::SeqCst);
        let app = Router::new()
            .route("/auth/v3/oauth/token", post(token))
            .route(
                "/statistics/v3/operations/get-statistic-ex",
                post(statistics),
            )
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// The admin API body registering this fake as a tenant's GWS.
    pub fn credentials(&self) -> Value {
        json!({"clientId": self.client_id, "clientSecret": self.client_secret,
               "authUrl": self.url, "statisticsUrl": format!("{}/statistics/v3", self.url)})
    }

    /// Switches how it answers.
    pub fn set_mode(&self, mode: GwsMode) {
        *self.inner.mode.lock().expect("fake GWS lock") = Some(mode);
    }

    /// Lifetime (`expires_in`) of the tokens it issues from now on.
    pub fn set_token_ttl(&self, secs: u64) {
        self.inner.token_ttl_s.store(secs, Ordering::SeqCst);
    }

    /// The value it answers for the statistic `name`.
    pub fn set_value(&self, name: &str, value: Value) {
        self.inner
            .values
            .lock()
            .expect("fake GWS lock")
            .insert(name.to_string(), value);
    }

    /// Forgets every token it issued (as after a GWS restart): the next statistics call is 401.
    pub fn revoke_tokens(&self) {
        self.inner.tokens.lock().expect("fake GWS lock").clear();
    }

    /// Token requests received.
    pub fn token_calls(&self) -> usize {
        self.inner.token_calls.load(Ordering::SeqCst)
    }

    /// Statistics requests received (with any token).
    pub fn stat_calls(&self) -> usize {
        self.inner.stat_calls.load(Ordering::SeqCst)
    }

    /// The statistics bodies received, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.inner.bodies.lock().expect("fake GWS lock").clone()
    }

    fn mode(&self) -> GwsMode {
        self.inner
            .mode
            .lock()
            .expect("fake GWS lock")
            .unwrap_or(GwsMode::Answer)
    }

    /// Hang and Fail, shared by both endpoints.
    async fn misbehave(&self) -> Option<Response> {
        match self.mode() {
            GwsMode::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                None
            }
            GwsMode::Fail => Some(gws_error(500, "internal server error")),
            _ => None,
        }
    }
}

fn gws_error(code: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"status": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

fn oauth_error(code: u16, error: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({"error": error}))).into_response()
}

/// `Authorization: Basic base64(id:secret)` → (id, secret).
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

async fn token(State(fake): State<FakeGws>, headers: HeaderMap, body: Bytes) -> Response {
    fake.inner.token_calls.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = fake.misbehave().await {
        return r;
    }
    let form = String::from_utf8_lossy(&body).to_string();
    if !form
        .split('&')
        .any(|p| p == "grant_type=client_credentials")
    {
        return oauth_error(400, "unsupported_grant_type");
    }
    let known = basic(&headers) == Some((fake.client_id.clone(), fake.client_secret.clone()));
    if !known || fake.mode() == GwsMode::RejectCredentials {
        return oauth_error(401, "invalid_client");
    }
    let ttl = fake.inner.token_ttl_s.load(Ordering::SeqCst);
    let token = uuid::Uuid::new_v4().simple().to_string();
    let expiry = Instant::now() + Duration::from_secs(ttl);
    fake.inner
        .tokens
        .lock()
        .expect("fake GWS lock")
        .insert(token.clone(), expiry);
    axum::Json(json!({"access_token": token, "token_type": "bearer",
                      "expires_in": ttl, "scope": "*"}))
    .into_response()
}

fn bearer_ok(fake: &FakeGws, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let tokens = fake.inner.tokens.lock().expect("fake GWS lock");
    tokens.get(token).is_some_and(|exp| *exp > Instant::now())
}

async fn statistics(State(fake): State<FakeGws>, headers: HeaderMap, body: Bytes) -> Response {
    fake.inner.stat_calls.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = fake.misbehave().await {
        return r;
    }
    if !bearer_ok(&fake, &headers) {
        return gws_error(401, "invalid or expired token");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return gws_error(400, "malformed JSON");
    };
    fake.inner
        .bodies
        .lock()
        .expect("fake GWS lock")
        .push(request.clone());
    let Some(asked) = request
        .pointer("/data/statistics")
        .and_then(Value::as_array)
    else {
        return gws_error(400, "data.statistics is required");
    };
    let values = fake.inner.values.lock().expect("fake GWS lock").clone();
    let now = jiff::Timestamp::now().as_millisecond();
    let answered: Vec<Value> = asked
        .iter()
        .map(|s| {
            let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
            json!({"name": name, "objectId": s.get("objectId"), "objectType": s.get("objectType"),
                   "timestamp": now, "value": values.get(name).cloned().unwrap_or(json!(42))})
        })
        .collect();
    axum::Json(json!({"status": {"code": 0, "message": "OK"},
                      "data": {"statistics": answered}}))
    .into_response()
}
