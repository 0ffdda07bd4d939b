//! The FCM HTTP v1 client (docs/push.md#oauth): an OAuth access token per tenant from a signed
//! service-account assertion ([`super::jwt`]), cached until a minute before it expires, and
//! `POST {FCM_URL}/v1/projects/{project_id}/messages:send`. One call, one message, one
//! [`Delivery`]: what the outbox does next (done, again later, or never) is decided here from
//! FCM's answer; the retries themselves are the outbox's (`worker::push`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::jwt;
use shared::config::PushConfig;

/// A tenant's service account, as the sender needs it.
pub struct Account<'a> {
    /// Firebase project the messages go to.
    pub project_id: &'a str,
    /// How the assertion is signed.
    pub signer: jwt::Signer<'a>,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// FCM accepted it.
    Sent,
    /// Not now: FCM or the token endpoint failed, timed out, throttled (with its `Retry-After`)
    /// or refused the credentials, which an administrator may still fix.
    Retry {
        /// FCM's `Retry-After`, when it gave one.
        after: Option<Duration>,
        /// What went wrong (no token, no key material).
        why: String,
    },
    /// Never: FCM refused the message itself (400) or the token is gone (404 `UNREGISTERED`).
    Rejected {
        /// FCM's status and error code.
        why: String,
    },
}

struct Cached {
    token: SecretString,
    until: Instant,
    account: [u8; 32],
}

/// One token request at a time per tenant: the messages of a pass that find no cached token
/// wait for it (and for its failure, when it fails) instead of each requesting their own.
type Fetching = Arc<tokio::sync::Mutex<Option<(Instant, Delivery)>>>;

/// The FCM client of one process (tokens cached per tenant).
pub struct Fcm {
    http: reqwest::Client,
    base: String,
    tokens: Mutex<HashMap<String, Cached>>,
    fetching: Mutex<HashMap<String, Fetching>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Fcm {
    /// A client for `FCM_URL` whose every request gives up after `FCM_TIMEOUT_MS`.
    pub fn new(cfg: &PushConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.fcm_timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.fcm_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            base: cfg.fcm_url.trim_end_matches('/').to_string(),
            tokens: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `message` (the `message` object of `messages:send`) for `tenant`.
    pub async fn send(&self, tenant: &str, account: &Account<'_>, message: &Value) -> Delivery {
        let token = match self.token(tenant, account).await {
            Ok(t) => t,
            Err(d) => return d,
        };
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.base, account.project_id
        );
        let body = serde_json::json!({ "message": message });
        let answer = self
            .http
            .post(url)
            .bearer_auth(token.expose_secret())
            .json(&body)
            .send()
            .await;
        let resp = match answer {
            Ok(r) => r,
            Err(e) => return retry(None, format!("FCM unreachable: {}", kind(&e))),
        };
        let status = resp.status();
        if status.is_success() {
            return Delivery::Sent;
        }
        let after = retry_after(resp.headers());
        let code = error_code(resp).await;
        match status.as_u16() {
            401 | 403 => {
                self.forget(tenant);
                retry(
                    after,
                    format!("FCM refused the access token ({status}, {code})"),
                )
            }
            429 | 500..=599 => retry(after, format!("FCM answered {status} ({code})")),
            _ => Delivery::Rejected {
                why: format!("FCM answered {status} ({code})"),
            },
        }
    }

    fn forget(&self, tenant: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.remove(tenant);
        }
    }

    /// The tenant's cached token for these credentials, when still good.
    fn cached(&self, tenant: &str, fp: &[u8; 32]) -> Option<SecretString> {
        let t = self.tokens.lock().ok()?;
        let c = t.get(tenant)?;
        (c.account == *fp && c.until > Instant::now()).then(|| c.token.clone())
    }

    /// The tenant's cached access token, or a new one from the token URI: one request at a
    /// time per tenant, whose token (or failure) the concurrent callers share
    /// (docs/push.md#oauth).
    async fn token(&self, tenant: &str, account: &Account<'_>) -> Result<SecretString, Delivery> {
        let fp = fingerprint(account);
        if let Some(token) = self.cached(tenant, &fp) {
            return Ok(token);
        }
        let asked = Instant::now();
        let slot = self.fetching.lock().map_or_else(
            |_| Fetching::default(),
            |mut m| m.entry(tenant.to_string()).or_default().clone(),
        );
        let mut last_failure = slot.lock().await;
        if let Some(token) = self.cached(tenant, &fp) {
            return Ok(token);
        }
        if let Some((at, failed)) = last_failure.as_ref()
            && *at >= asked
        {
            return Err(failed.clone());
        }
        let got = self.fetch_token(tenant, account, fp).await;
        *last_failure = got.as_ref().err().map(|d| (Instant::now(), d.clone()));
        got
    }

    /// A new access token from the token URI, cached for the tenant.
    async fn fetch_token(
        &self,
        tenant: &str,
        account: &Account<'_>,
        fp: [u8; 32],
    ) -> Result<SecretString, Delivery> {
        let now = jiff::Timestamp::now().as_second();
        let assertion = jwt::assertion(account.signer, now).map_err(|e| Delivery::Retry {
            after: None,
            why: e.to_string(),
        })?;
        let answer = self
            .http
            .post(account.signer.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| retry(None, format!("token endpoint unreachable: {}", kind(&e))))?;
        let status = answer.status();
        if !status.is_success() {
            let after = retry_after(answer.headers());
            let code = error_code(answer).await;
            return Err(retry(
                after,
                format!("token endpoint answered {status} ({code})"),
            ));
        }
        let t: TokenAnswer = answer
            .json()
            .await
            .map_err(|_| retry(None, "token endpoint answered no access_token".into()))?;
        // Refreshed a minute before it runs out (Google's tokens live an hour).
        // Google's tokens live at most an hour; a larger `expires_in` (u64::MAX) is not
        // believed, and would overflow `Instant`.
        let life = t
            .expires_in
            .unwrap_or(3_600)
            .min(3_600)
            .saturating_sub(60)
            .max(1);
        let token = SecretString::from(t.access_token);
        if let Ok(mut m) = self.tokens.lock() {
            m.insert(
                tenant.to_string(),
                Cached {
                    token: token.clone(),
                    until: Instant::now() + Duration::from_secs(life),
                    account: fp,
                },
            );
        }
        Ok(token)
    }
}

fn retry(after: Option<Duration>, why: String) -> Delivery {
    Delivery::Retry { after, why }
}

/// Identifies the credentials a cached token was made with: new credentials, new token.
fn fingerprint(a: &Account<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        a.project_id,
        a.signer.client_email,
        a.signer.token_uri,
        a.signer.private_key_id.unwrap_or(""),
        a.signer.private_key_pem,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// A request failure in words that carry no URL parameters or secrets.
fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

/// `Retry-After` in seconds (FCM's form), at most an hour.
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let s: u64 = h
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(s.min(3_600)))
}

/// The error code of a Google error answer (`error.status`, or `error` of an OAuth answer), cut
/// short; never the body itself.
async fn error_code(resp: reqwest::Response) -> String {
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    let details = v["error"]["details"].as_array().and_then(|d| {
        d.iter()
            .find_map(|x| x["errorCode"].as_str().map(str::to_string))
    });
    let code = details
        .or_else(|| v["error"]["status"].as_str().map(str::to_string))
        .or_else(|| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| "no error code".into());
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}
