//! The GWS client of the statistics proxy (docs/statistics.md#protocol): an OAuth
//! client-credentials token from the tenant's auth URL (`POST …/auth/v3/oauth/token`, Basic
//! client authentication, `grant_type=client_credentials`), cached per tenant and credentials
//! until shortly before it expires, then `POST …/statistics/v3/operations/get-statistic-ex`
//! with it as a bearer token. A 401 from the statistics call drops the token and retries once
//! with a fresh one. Every call is bounded by `GWS_TIMEOUT_MS`, every answer by
//! `GWS_MAX_BODY_BYTES`; redirects are not followed (the credentials go to the configured
//! host only).

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use base64::Engine;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::{config::GwsConfig, credentials::GwsCredentials, metrics};

/// Why GWS gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum GwsError {
    /// GWS refused the client credentials (token endpoint 4xx, or statistics 401/403 with a
    /// fresh token). Counted as `GWS_INCORRECT_CLIENT_CREDENTIALS`.
    #[error("GWS rejected the tenant's client credentials")]
    Rejected,
    /// GWS refused the request itself (statistics 4xx other than 401/403): the message is GWS's,
    /// cut to 200 characters.
    #[error("GWS refused the statistics request: {0}")]
    Refused(String),
    /// GWS failed: 5xx, timeout, unreachable, or an answer that is not a JSON object or is too
    /// large. Counted as `GWS_SERVER_ERROR`; the text is for the log.
    #[error("GWS statistics unavailable: {0}")]
    Server(String),
}

/// A bearer token and when to stop using it.
struct Token {
    bearer: SecretString,
    refresh_at: Instant,
}

/// The process's GWS client: one HTTP connection pool and the token cache.
pub struct Gws {
    http: reqwest::Client,
    tokens: moka::future::Cache<String, Arc<Token>>,
    max_body: usize,
}

static GWS: OnceLock<Gws> = OnceLock::new();

/// The process's client, built on first use from the configuration (read once at start).
pub fn client(cfg: &GwsConfig, request_timeout_ms: u64) -> &'static Gws {
    GWS.get_or_init(|| Gws::new(cfg, cfg.call_timeout(request_timeout_ms)))
}

impl Gws {
    fn new(cfg: &GwsConfig, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            http,
            tokens: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
            max_body: cfg.gws_max_body_bytes,
        }
    }

    /// Posts `body` to the tenant's get-statistic-ex and returns GWS's JSON answer.
    pub async fn get_statistic_ex(
        &self,
        tenant: &str,
        creds: &GwsCredentials,
        body: &Value,
    ) -> Result<Value, GwsError> {
        let key = token_key(tenant, creds);
        let token = self.token(&key, creds).await?;
        match self.post_statistics(creds, &token, body).await? {
            Some(answer) => Ok(answer),
            None => {
                // 401: the token may have been revoked or expired early; one fresh try.
                self.tokens.invalidate(&key).await;
                let token = self.token(&key, creds).await?;
                self.post_statistics(creds, &token, body)
                    .await?
                    .ok_or_else(rejected)
            }
        }
    }

    /// The cached token, or a new one (concurrent callers of one key share one request).
    async fn token(&self, key: &str, creds: &GwsCredentials) -> Result<Arc<Token>, GwsError> {
        let fetch = || async { self.fetch_token(creds).await.map(Arc::new) };
        let get = |k: String| {
            let fut = fetch();
            async move { self.tokens.try_get_with(k, fut).await }
        };
        let token = get(key.to_string()).await.map_err(unshare)?;
        if token.refresh_at > Instant::now() {
            return Ok(token);
        }
        self.tokens.invalidate(key).await;
        get(key.to_string()).await.map_err(unshare)
    }

    async fn fetch_token(&self, creds: &GwsCredentials) -> Result<Token, GwsError> {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            creds.client_id,
            creds.client_secret.expose_secret()
        ));
        let sent = self
            .http
            .post(token_url(&creds.auth_url))
            .header("authorization", format!("Basic {basic}"))
            .header("accept", "application/json")
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| server(format!("token request failed: {}", without_url(e))))?;
        let status = sent.status().as_u16();
        let body = self.read(sent).await?;
        if (400..500).contains(&status) && !unavailable(status) {
            return Err(rejected());
        }
        if status != 200 {
            return Err(server(format!("token endpoint answered {status}")));
        }
        let granted: Granted = serde_json::from_slice(&body)
            .map_err(|_| server("token endpoint answered no access_token".into()))?;
        Ok(granted.into_token())
    }

    /// `Ok(None)` on 401 (retry with a fresh token).
    async fn post_statistics(
        &self,
        creds: &GwsCredentials,
        token: &Token,
        body: &Value,
    ) -> Result<Option<Value>, GwsError> {
        let sent = self
            .http
            .post(statistics_url(&creds.statistics_url))
            .bearer_auth(token.bearer.expose_secret())
            .header("accept", "application/json")
            .json(body)
            .send()
            .await
            .map_err(|e| server(format!("statistics request failed: {}", without_url(e))))?;
        let status = sent.status().as_u16();
        let bytes = self.read(sent).await?;
        match status {
            200 => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v @ Value::Object(_)) => Ok(Some(v)),
                _ => Err(server("statistics answer is not a JSON object".into())),
            },
            401 => Ok(None),
            403 => Err(rejected()),
            s if unavailable(s) => Err(server(format!("statistics endpoint answered {s}"))),
            400..=499 => Err(GwsError::Refused(gws_message(&bytes, status))),
            _ => Err(server(format!("statistics endpoint answered {status}"))),
        }
    }

    /// The body, at most `GWS_MAX_BODY_BYTES` (a longer one is a server error).
    async fn read(&self, mut resp: reqwest::Response) -> Result<Bytes, GwsError> {
        let mut buf = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| server(format!("reading GWS's answer failed: {}", without_url(e))))?
        {
            if buf.len() + chunk.len() > self.max_body {
                return Err(server(format!(
                    "GWS answer over GWS_MAX_BODY_BYTES ({} bytes)",
                    self.max_body
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.into())
    }
}

/// The longest a GWS token is used, whatever its `expires_in` says (a day).
const MAX_TOKEN_LIFE_S: u64 = 86_400;

/// The token endpoint's answer (RFC 6749 §5.1).
#[derive(Deserialize)]
struct Granted {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Granted {
    /// Used until a minute before expiry (half its life when shorter than two minutes).
    fn into_token(self) -> Token {
        // At most a day: an absurd `expires_in` (u64::MAX) would overflow `Instant`.
        let life = self.expires_in.unwrap_or(300).min(MAX_TOKEN_LIFE_S);
        let use_for = if life >= 120 { life - 60 } else { life / 2 };
        Token {
            bearer: SecretString::from(self.access_token),
            refresh_at: Instant::now() + Duration::from_secs(use_for),
        }
    }
}

/// 4xx answers that say "not now" (request timeout, throttled), not "wrong credentials" or
/// "wrong body": the caller gets a 503 to retry later.
fn unavailable(status: u16) -> bool {
    matches!(status, 408 | 429)
}

/// Tenant plus a hash of the credentials: a changed secret or URL never reuses a token.
fn token_key(tenant: &str, creds: &GwsCredentials) -> String {
    let mut h = Sha256::new();
    for part in [
        creds.auth_url.as_str(),
        creds.client_id.as_str(),
        creds.client_secret.expose_secret(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let tail: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{tenant}\u{0}{tail}")
}

/// `auth_url` as given when it ends with `/oauth/token`; else `/oauth/token` or
/// `/auth/v3/oauth/token` appended to it.
pub fn token_url(auth_url: &str) -> String {
    completed(auth_url, "/auth/v3", "/oauth/token")
}

/// `statistics_url` as given when it ends with `/get-statistic-ex`; else the operation path
/// appended to it (after `/statistics/v3` when the URL does not end with it).
pub fn statistics_url(statistics_url: &str) -> String {
    completed(
        statistics_url,
        "/statistics/v3",
        "/operations/get-statistic-ex",
    )
}

/// `url` (without trailing `/`) when it already ends with `operation`; else `operation`
/// appended, after `api` when the URL does not end with it.
fn completed(url: &str, api: &str, operation: &str) -> String {
    let base = url.trim_end_matches('/');
    if base.ends_with(operation) {
        base.to_string()
    } else if base.ends_with(api) {
        format!("{base}{operation}")
    } else {
        format!("{base}{api}{operation}")
    }
}

/// GWS's `status.message` (or the status code), at most 200 characters.
fn gws_message(body: &[u8], status: u16) -> String {
    let msg = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/status/message")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("HTTP {status}"));
    msg.chars().take(200).collect()
}

/// reqwest's error text without the URL (it may carry a query string).
fn without_url(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    format!("{kind}: {}", e.without_url())
}

fn server(detail: String) -> GwsError {
    ::metrics::counter!(metrics::GWS_SERVER_ERROR).increment(1);
    GwsError::Server(detail)
}

fn rejected() -> GwsError {
    ::metrics::counter!(metrics::GWS_INCORRECT_CLIENT_CREDENTIALS).increment(1);
    GwsError::Rejected
}

/// moka shares one error between the callers it coalesced; each gets a copy (already counted).
fn unshare(e: Arc<GwsError>) -> GwsError {
    match &*e {
        GwsError::Rejected => GwsError::Rejected,
        GwsError::Refused(m) => GwsError::Refused(m.clone()),
        GwsError::Server(m) => GwsError::Server(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_accept_a_base_or_the_full_endpoint() {
        for base in ["https://g.example", "https://g.example/"] {
            assert_eq!(token_url(base), "https://g.example/auth/v3/oauth/token");
            assert_eq!(
                statistics_url(base),
                "https://g.example/statistics/v3/operations/get-statistic-ex"
            );
        }
        assert_eq!(
            token_url("https://g.example/auth/v3"),
            "https://g.example/auth/v3/oauth/token"
        );
        assert_eq!(
            token_url("https://g.example/auth/v3/oauth/token"),
            "https://g.example/auth/v3/oauth/token"
        );
        assert_eq!(
            statistics_url("https://g.example/statistics/v3"),
            "https://g.example/statistics/v3/operations/get-statistic-ex"
        );
        assert_eq!(
            statistics_url("https://g.example/x/operations/get-statistic-ex"),
            "https://g.example/x/operations/get-statistic-ex"
        );
    }

    #[test]
    fn tokens_are_used_until_shortly_before_expiry() {
        let t = |secs| {
            Granted {
                access_token: "t".into(),
                expires_in: Some(secs),
            }
            .into_token()
            .refresh_at
            .duration_since(Instant::now())
            .as_secs()
        };
        assert!((3538..=3540).contains(&t(3600)), "{}", t(3600));
        assert!((29..=30).contains(&t(60)));
        assert_eq!(t(0), 0);
        let day = MAX_TOKEN_LIFE_S - 60;
        assert!((day - 2..=day).contains(&t(u64::MAX)), "{}", t(u64::MAX));
    }

    #[test]
    fn gws_messages_are_short() {
        let long = format!(
            r#"{{"status":{{"code":400,"message":"{}"}}}}"#,
            "x".repeat(500)
        );
        assert_eq!(gws_message(long.as_bytes(), 400).len(), 200);
        assert_eq!(gws_message(b"not json", 404), "HTTP 404");
    }
}
