//! Secrets from AWS Secrets Manager (feature `aws-secrets`, used by the Lambda builds).
//!
//! When `AWS_SECRETS_ID` names one or more secrets (comma-separated names or ARNs), each is
//! fetched once at start (once per Lambda cold start) through `aws-config`'s default chain
//! (region, credentials, and `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_SECRETS_MANAGER` for
//! emulators). A secret is a JSON object whose keys map to variables exactly as secret files
//! do: `DB-PASSWORD` sets `DB_PASSWORD`, `ADMIN_TOKEN` stays `ADMIN_TOKEN`, and
//! `voice-redis-ors-stream` (an object or a JSON string) expands to `VOICE_REDIS_*`.
//! Precedence: environment < `CONFIG_FOLDERS` files < Secrets Manager (later ids win).

use std::{collections::BTreeMap, time::Duration};

use aws_config::{BehaviorVersion, timeout::TimeoutConfig};

use crate::config::{Config, ConfigError, overlay_secret, source_with_folders};

/// The variable naming the secrets to load.
pub const SECRETS_ID_VAR: &str = "AWS_SECRETS_ID";

impl Config {
    /// [`Config::load`], plus the Secrets Manager secrets named in `AWS_SECRETS_ID` (if set).
    pub async fn load_with_aws() -> Result<Self, ConfigError> {
        let mut source = source_with_folders(std::env::vars())?;
        let ids: Vec<String> = source
            .get(SECRETS_ID_VAR)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !ids.is_empty() {
            let sdk = aws_config::defaults(BehaviorVersion::latest())
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(2))
                        .operation_timeout(Duration::from_secs(8))
                        .build(),
                )
                .load()
                .await;
            let client = aws_sdk_secretsmanager::Client::new(&sdk);
            for id in &ids {
                let out = client
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| {
                        ConfigError(format!(
                            "{SECRETS_ID_VAR}: cannot read secret {id:?}: {}",
                            aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                        ))
                    })?;
                let text = out.secret_string().ok_or_else(|| {
                    ConfigError(format!(
                        "{SECRETS_ID_VAR}: secret {id:?} has no string value (binary secrets are not supported)"
                    ))
                })?;
                overlay_secret_json(id, text, &mut source)?;
            }
        }
        Self::from_source(source)
    }
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
