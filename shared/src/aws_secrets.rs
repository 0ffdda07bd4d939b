//! Secrets from AWS Secrets Manager (feature `aws-secrets`, used by the Lambda builds).
//!
//! Only the fetch (`Config::load_with_aws`) needs the feature and the AWS SDK; the mapping of a
//! secret's JSON onto variables is plain code, compiled and tested in every build.
//!
//! When `AWS_SECRETS_ID` names one or more secrets (comma-separated names or ARNs), each is
//! fetched once at start (once per Lambda cold start) through `aws-config`'s default chain
//! (region, credentials, and `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_SECRETS_MANAGER` for
//! emulators). A secret is a JSON object whose keys map to variables exactly as secret files
//! do: `DB-PASSWORD` sets `DB_PASSWORD`, `ADMIN_TOKEN` stays `ADMIN_TOKEN`, and
//! `voice-redis-ors-stream` (an object or a JSON string) expands to `VOICE_REDIS_*`.
//! Precedence: environment < `CONFIG_FOLDERS` files < Secrets Manager (later ids win).

use std::collections::BTreeMap;

use crate::config::{ConfigError, comma_list, overlay_secret};

/// The variable naming the secrets to load.
pub const SECRETS_ID_VAR: &str = "AWS_SECRETS_ID";

#[cfg(feature = "aws-secrets")]
mod fetch {
    use std::time::Duration;

    use aws_config::{BehaviorVersion, timeout::TimeoutConfig};
    use aws_sdk_secretsmanager::{Client, error::DisplayErrorContext};
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

    use super::{SECRETS_ID_VAR, overlay_secret_json, secret_ids};
    use crate::config::{Config, ConfigError, source_with_folders};

    impl Config {
        /// [`Config::load`], plus the Secrets Manager secrets named in `AWS_SECRETS_ID` (if set).
        pub async fn load_with_aws() -> Result<Self, ConfigError> {
            let mut source = source_with_folders(std::env::vars())?;
            let ids = secret_ids(&source);
            if !ids.is_empty() {
                let client = client().await;
                for id in &ids {
                    let text = secret_string(&client, id).await?;
                    overlay_secret_json(id, &text, &mut source)?;
                }
            }
            Self::from_source(source)
        }
    }

    /// A Secrets Manager client from the default chain, with HTTPS on rustls with ring (the TLS
    /// stack of the rest of Engage; the SDK's default client would build aws-lc).
    async fn client() -> Client {
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_timeout(Duration::from_secs(8))
            .build();
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https)
            .timeout_config(timeouts)
            .load()
            .await;
        Client::new(&sdk)
    }

    /// The string value of one secret.
    async fn secret_string(client: &Client, id: &str) -> Result<String, ConfigError> {
        let out = client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| {
                ConfigError(format!(
                    "{SECRETS_ID_VAR}: cannot read secret {id:?}: {}",
                    DisplayErrorContext(&e)
                ))
            })?;
        out.secret_string().map(str::to_string).ok_or_else(|| {
            ConfigError(format!(
                "{SECRETS_ID_VAR}: secret {id:?} has no string value (binary secrets are not supported)"
            ))
        })
    }
}

/// The secret names or ARNs listed in `AWS_SECRETS_ID` (comma-separated, blanks skipped).
pub fn secret_ids(source: &BTreeMap<String, String>) -> Vec<String> {
    source
        .get(SECRETS_ID_VAR)
        .map(String::as_str)
        .map(comma_list)
        .unwrap_or_default()
}

/// Applies one secret's JSON object to the variables (the same mapping as secret files).
pub fn overlay_secret_json(
    id: &str,
    json: &str,
    source: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| {
            ConfigError(format!(
                "{SECRETS_ID_VAR}: secret {id:?} is not a JSON object of key/value pairs: {e}"
            ))
        })?;
    for (key, value) in obj {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => continue,
            other => other.to_string(),
        };
        overlay_secret(&key, &text, source)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::config::Config;

    #[test]
    fn secret_keys_map_like_secret_files() {
        let mut source: BTreeMap<String, String> = [
            ("DATABASE_URL", "postgres://u:env@h/d"),
            ("DB_PASSWORD", "from-env"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        overlay_secret_json(
            "engage/prod",
            r#"{"DB-PASSWORD":"s3cret","ADMIN_TOKEN":"0123456789abcdef-admin",
                "DB_POOL_SIZE":4,"voice-redis-ors-stream":{"servername":"voice","port":10000},
                "UNUSED":null}"#,
            &mut source,
        )
        .unwrap();
        let cfg = Config::from_source(source).unwrap();
        assert_eq!(cfg.db.password.unwrap().expose_secret(), "s3cret");
        assert_eq!(
            cfg.http.admin_token.unwrap().expose_secret(),
            "0123456789abcdef-admin"
        );
        assert_eq!(cfg.db.pool_size, 4);
        assert_eq!(cfg.voice.url(&cfg.redis), "redis://voice:10000");
    }

    #[test]
    fn secret_ids_are_split_on_commas_and_blanks_skipped() {
        let source: BTreeMap<String, String> =
            [(SECRETS_ID_VAR.to_string(), " a , ,arn:aws:x:b,".to_string())].into();
        assert_eq!(secret_ids(&source), ["a", "arn:aws:x:b"]);
        assert!(secret_ids(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_secret_that_is_not_an_object_is_named_in_the_error() {
        let mut source = BTreeMap::new();
        let err = overlay_secret_json("engage/bad", "plain text", &mut source)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("engage/bad") && err.contains(SECRETS_ID_VAR),
            "{err}"
        );
    }
}
