//! The typed credential records and the validation of what the admin API receives
//! (docs/credentials.md#records). Secrets are `SecretString`s: their `Debug` is redacted and
//! they are shown only to the code that uses them, never on a read.
//!
//! Validation reads the body field by field and its messages name fields, never values (a
//! value may be a secret pasted in the wrong place).

use ring::signature::RsaKeyPair;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};

use super::Kind;
use crate::error::Error;

/// Google's OAuth token endpoint, the default `token_uri` of a service account.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The longest text field (ids, e-mails, URLs), in bytes.
pub const MAX_FIELD: usize = 2048;
/// The longest PEM private key, in bytes (a 4096-bit RSA key is about 3.3 KB).
pub const MAX_PEM: usize = 16 * 1024;

/// A record kind the vault stores: its kind, what is sealed and what reads show.
pub trait Credential: DeserializeOwned + Send + Sync + 'static {
    /// The row kind.
    const KIND: Kind;
    /// Every field, secrets included: what is encrypted (and what [`DeserializeOwned`] reads
    /// back after decryption).
    fn sealed(&self) -> Value;
    /// The non-secret fields, shown on reads (camelCase, as the admin API spells them).
    fn public(&self) -> Value;
}

/// A Firebase service account (FCM HTTP v1 sender), from the JSON file Google issues.
#[derive(Debug, Clone, Deserialize)]
pub struct FcmCredentials {
    /// Firebase project id (`projects/{project_id}/messages:send`).
    pub project_id: String,
    /// The service account's e-mail (the JWT's `iss` and `sub`).
    pub client_email: String,
    /// Id of the private key (the JWT header's `kid`), when the file names it.
    pub private_key_id: Option<String>,
    /// RSA private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`); checked to parse.
    pub private_key: SecretString,
    /// OAuth token endpoint (the JWT's `aud`); default [`DEFAULT_TOKEN_URI`].
    pub token_uri: String,
}

/// A reCAPTCHA-compatible secret (the create path's `siteverify` check).
#[derive(Debug, Clone, Deserialize)]
pub struct CaptchaCredentials {
    /// The secret sent to `siteverify`.
    pub secret: SecretString,
    /// The public site key the apps embed (informational).
    pub site_key: Option<String>,
}

/// A GWS OAuth client (statistics proxy).
#[derive(Debug, Clone, Deserialize)]
pub struct GwsCredentials {
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: SecretString,
    /// Base URL of GWS authentication (token endpoint under it).
    pub auth_url: String,
    /// Base URL of GWS statistics.
    pub statistics_url: String,
}

impl Credential for FcmCredentials {
    const KIND: Kind = Kind::Fcm;
    fn sealed(&self) -> Value {
        json!({"project_id": self.project_id, "client_email": self.client_email,
            "private_key_id": self.private_key_id, "token_uri": self.token_uri,
            "private_key": self.private_key.expose_secret()})
    }
    fn public(&self) -> Value {
        json!({"projectId": self.project_id, "clientEmail": self.client_email,
            "privateKeyId": self.private_key_id, "tokenUri": self.token_uri})
    }
}

impl Credential for CaptchaCredentials {
    const KIND: Kind = Kind::Captcha;
    fn sealed(&self) -> Value {
        json!({"secret": self.secret.expose_secret(), "site_key": self.site_key})
    }
    fn public(&self) -> Value {
        json!({"siteKey": self.site_key})
    }
}

impl Credential for GwsCredentials {
    const KIND: Kind = Kind::Gws;
    fn sealed(&self) -> Value {
        json!({"client_id": self.client_id, "client_secret": self.client_secret.expose_secret(),
            "auth_url": self.auth_url, "statistics_url": self.statistics_url})
    }
    fn public(&self) -> Value {
        json!({"clientId": self.client_id, "authUrl": self.auth_url,
            "statisticsUrl": self.statistics_url})
    }
}

/// A body's fields, read one by one; messages name the kind and the field only.
struct Fields<'a> {
    kind: Kind,
    obj: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn of(kind: Kind, body: &'a Value) -> Result<Self, Error> {
        match body {
            Value::Object(obj) => Ok(Self { kind, obj }),
            _ => Err(Error::invalid(format!(
                "{kind} credentials must be a JSON object"
            ))),
        }
    }

    /// Refuses fields other than `known` (a typo would otherwise store an incomplete record).
    fn only(&self, known: &[&str]) -> Result<(), Error> {
        match self.obj.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(Error::invalid(format!(
                "{} credentials: unknown field {:?} (expected {})",
                self.kind,
                k.chars().take(64).collect::<String>(),
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// An optional string of 1..=`max` bytes without control characters (`null` = absent).
    fn opt(&self, field: &str, max: usize) -> Result<Option<String>, Error> {
        let text = match self.obj.get(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s,
            Some(_) => return self.bad(field, "must be a string"),
        };
        let multiline = max == MAX_PEM;
        if text.trim().is_empty()
            || text.len() > max
            || text
                .chars()
                .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r')))
        {
            return self.bad(
                field,
                &format!("must be 1-{max} bytes of text without control characters"),
            );
        }
        Ok(Some(text.clone()))
    }

    /// A required string (see [`Self::opt`]).
    fn req(&self, field: &str, max: usize) -> Result<String, Error> {
        self.opt(field, max)?
            .map_or_else(|| self.bad(field, "is required"), Ok)
    }

    /// A required http(s) URL with a host.
    fn url(&self, field: &str) -> Result<String, Error> {
        let url = self.req(field, MAX_FIELD)?;
        if !is_http_url(&url) {
            return self.bad(field, "must be an http:// or https:// URL with a host");
        }
        Ok(url)
    }

    fn bad<T>(&self, field: &str, what: &str) -> Result<T, Error> {
        Err(Error::invalid(format!(
            "{} credentials: {field} {what}",
            self.kind
        )))
    }
}

/// Whether `url` is `http://` or `https://` (any case) followed by a host, without spaces.
pub fn is_http_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with(['/', '?', '#', ':']))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl FcmCredentials {
    /// Reads a Google service-account JSON file as downloaded (`type`, `project_id`,
    /// `private_key_id`, `private_key`, `client_email`, `token_uri`, …; other keys ignored).
    /// The private key must parse as an RSA PKCS#8 PEM.
    pub fn from_service_account(body: &Value) -> Result<Self, Error> {
        let f = Fields::of(Kind::Fcm, body)?;
        if let Some(t) = f.opt("type", MAX_FIELD)?
            && t != "service_account"
        {
            return f.bad("type", "must be \"service_account\"");
        }
        let client_email = f.req("client_email", MAX_FIELD)?;
        if !client_email.contains('@') {
            return f.bad(
                "client_email",
                "must be the service account's e-mail address",
            );
        }
        let private_key = f.req("private_key", MAX_PEM)?;
        if !rsa_pkcs8_pem(&private_key) {
            return f.bad(
                "private_key",
                "must be an RSA private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----), \
                 as in the service-account file",
            );
        }
        let token_uri = match f.opt("token_uri", MAX_FIELD)? {
            Some(uri) if !is_http_url(&uri) => {
                return f.bad(
                    "token_uri",
                    "must be an http:// or https:// URL with a host",
                );
            }
            uri => uri.unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string()),
        };
        Ok(Self {
            project_id: f.req("project_id", MAX_FIELD)?,
            client_email,
            private_key_id: f.opt("private_key_id", MAX_FIELD)?,
            private_key: private_key.into(),
            token_uri,
        })
    }

    /// The private key as DER (PKCS#8), for `ring::signature::RsaKeyPair::from_pkcs8`.
    pub fn private_key_der(&self) -> Option<Vec<u8>> {
        pem_der(self.private_key.expose_secret())
    }
}

impl CaptchaCredentials {
    /// Reads `{secret, siteKey?}`.
    pub fn from_body(body: &Value) -> Result<Self, Error> {
        let f = Fields::of(Kind::Captcha, body)?;
        f.only(&["secret", "siteKey"])?;
        Ok(Self {
            secret: f.req("secret", MAX_FIELD)?.into(),
            site_key: f.opt("siteKey", MAX_FIELD)?,
        })
    }
}

impl GwsCredentials {
    /// Reads `{clientId, clientSecret, authUrl, statisticsUrl}` (URLs http(s) with a host).
    pub fn from_body(body: &Value) -> Result<Self, Error> {
        let f = Fields::of(Kind::Gws, body)?;
        f.only(&["clientId", "clientSecret", "authUrl", "statisticsUrl"])?;
        Ok(Self {
            client_id: f.req("clientId", MAX_FIELD)?,
            client_secret: f.req("clientSecret", MAX_FIELD)?.into(),
            auth_url: f.url("authUrl")?,
            statistics_url: f.url("statisticsUrl")?,
        })
    }
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` PEM block (`\n` escapes as JSON carries
/// them are already decoded by the JSON parser).
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PRIVATE KEY-----")?
        .strip_suffix("-----END PRIVATE KEY-----")?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Whether `pem` holds an RSA key in PKCS#8 that `ring` accepts for signing.
fn rsa_pkcs8_pem(pem: &str) -> bool {
    pem_der(pem).is_some_and(|der| RsaKeyPair::from_pkcs8(&der).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captcha_and_gws_bodies_are_checked_field_by_field_without_echoing_values() {
        let ok = CaptchaCredentials::from_body(&json!({"secret": "s3cr3t", "siteKey": "k"}));
        assert_eq!(ok.unwrap().site_key.as_deref(), Some("k"));
        for (body, needle) in [
            (json!({"siteKey": "k"}), "secret is required"),
            (json!({"secret": 12345}), "secret must be a string"),
            (json!({"secret": ""}), "secret must be 1-"),
            (json!({"secret": "a\u{0}b"}), "secret must be 1-"),
            (
                json!({"secret": "x", "site_key": "k"}),
                "unknown field \"site_key\"",
            ),
            (json!(["x"]), "must be a JSON object"),
        ] {
            let e = CaptchaCredentials::from_body(&body)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(needle), "{body}: {e}");
            assert!(!e.contains("12345"), "{e}");
        }
        let gws = |auth: &str| {
            GwsCredentials::from_body(&json!({"clientId": "c", "clientSecret": "s",
                "authUrl": auth, "statisticsUrl": "https://gws.example/statistics"}))
        };
        assert!(gws("http://gws-auth:8080").is_ok());
        for bad in [
            "ftp://x",
            "http://",
            "https:///p",
            "gws.example",
            "http://a b",
        ] {
            let e = gws(bad).err().unwrap().to_string();
            assert!(e.contains("authUrl must be an http"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_service_account_needs_its_fields_and_an_rsa_key() {
        let base = json!({"type": "service_account", "project_id": "p",
            "client_email": "sa@p.iam.gserviceaccount.com", "private_key": "x"});
        let e = FcmCredentials::from_service_account(&base)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("private_key must be an RSA private key"), "{e}");
        let mut no_email = base.clone();
        no_email.as_object_mut().unwrap().remove("client_email");
        let e = FcmCredentials::from_service_account(&no_email)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("client_email is required"), "{e}");
        let mut wrong = base.clone();
        wrong["type"] = json!("authorized_user");
        let e = FcmCredentials::from_service_account(&wrong)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("type must be"), "{e}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = CaptchaCredentials::from_body(&json!({"secret": "hunter2-secret"})).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
