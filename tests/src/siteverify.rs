//! A fake reCAPTCHA `siteverify` endpoint over real HTTP (`FakeSiteverify`), speaking the
//! protocol Engage uses: `POST application/x-www-form-urlencoded secret=…&response=…` answered
//! with `{success, challenge_ts, hostname, error-codes}`. It knows the tokens it issued,
//! accepts each once (a second use is `timeout-or-duplicate`, as Google answers), checks the
//! secret, and can be switched to answer 500 or to hang.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::post};
use serde_json::json;

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Verifies as `siteverify` does.
    Normal,
    /// Answers 500 to everything.
    Fail,
    /// Never answers.
    Hang,
}

#[derive(Debug)]
struct Inner {
    secret: String,
    issued: Mutex<HashSet<String>>,
    used: Mutex<HashSet<String>>,
    mode: Mutex<Mode>,
    calls: AtomicU64,
}

/// A running fake `siteverify` (stops when dropped).
#[derive(Debug)]
pub struct FakeSiteverify {
    inner: Arc<Inner>,
    /// `http://127.0.0.1:{port}/recaptcha/api/siteverify`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSiteverify {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSiteverify {
    /// Starts the fake on a free port; `secret` is the only secret it accepts.
    pub async fn start(secret: &str) -> Self {
        let inner = Arc::new(Inner {
            secret: secret.to_string(),
            issued: Mutex::default(),
            used: Mutex::default(),
            mode: Mutex::new(Mode::Normal),
            calls: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/recaptcha/api/siteverify", post(verify))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake siteverify");
        let port = listener.local_addr().expect("local addr").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            inner,
            url: format!("http://127.0.0.1:{port}/recaptcha/api/siteverify"),
            task,
        }
    }

    /// A new token the fake will accept once (what a browser's widget would hand the app): as
    /// long as Google's reCAPTCHA v2 tokens (about 560 characters).
    pub fn issue(&self) -> String {
        self.issue_sized(560)
    }

    /// A new token of `len` characters (at least 36) of the URL-safe base64 alphabet that
    /// reCAPTCHA, hCaptcha and Turnstile tokens use (v3 and hCaptcha tokens exceed 1,500).
    pub fn issue_sized(&self, len: usize) -> String {
        let mut token = format!("03A{}", uuid::Uuid::new_v4().simple());
        while token.len() < len {
            token.push_str(&uuid::Uuid::new_v4().simple().to_string());
            token.push('_');
        }
        token.truncate(len.max(36));
        lock(&self.inner.issued).insert(token.clone());
        token
    }

    /// Switches how the fake answers.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.inner.mode) = mode;
    }

    /// Requests received so far.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn verify(State(inner): State<Arc<Inner>>, body: String) -> axum::response::Response {
    inner.calls.fetch_add(1, Ordering::SeqCst);
    let mode = *lock(&inner.mode);
    match mode {
        Mode::Fail => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        Mode::Hang => std::future::pending::<()>().await,
        Mode::Normal => {}
    }
    let form = parse_form(&body);
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let refuse = |code: &str| axum::Json(json!({"success": false, "error-codes": [code]}));
    if field("secret").as_deref() != Some(inner.secret.as_str()) {
        return refuse("invalid-input-secret").into_response();
    }
    let Some(token) = field("response").filter(|t| !t.is_empty()) else {
        return refuse("missing-input-response").into_response();
    };
    if lock(&inner.used).contains(&token) {
        return refuse("timeout-or-duplicate").into_response();
    }
    if !lock(&inner.issued).remove(&token) {
        return refuse("invalid-input-response").into_response();
    }
    lock(&inner.used).insert(token);
    axum::Json(
        json!({"success": true, "challenge_ts": jiff::Timestamp::now().to_string(),
        "hostname": "localhost"}),
    )
    .into_response()
}

/// `a=1&b=x%20y+z` → pairs, percent- and plus-decoded.
fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
