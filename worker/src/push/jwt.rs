//! The Google service-account assertion (docs/push.md#oauth): an RS256 JWT signed with the
//! account's PKCS#8 RSA key (ring), claims `iss` = the account's e-mail, `scope` = Firebase
//! Messaging, `aud` = the token URI, `iat` = now, `exp` = now + 1 h (Google's maximum). It is
//! exchanged at the token URI for an OAuth access token
//! (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`).

use base64::{Engine, engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{rand::SystemRandom, signature};
use serde_json::json;

/// The OAuth scope of FCM HTTP v1.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// Lifetime of an assertion, seconds (Google refuses more than an hour).
pub const ASSERTION_TTL_S: i64 = 3_600;

/// What signing needs of a service account.
#[derive(Clone, Copy)]
pub struct Signer<'a> {
    /// `client_email`: the assertion's issuer.
    pub client_email: &'a str,
    /// `private_key_id`: the header's `kid` when known.
    pub private_key_id: Option<&'a str>,
    /// `private_key`: PEM of a PKCS#8 RSA key.
    pub private_key_pem: &'a str,
    /// `token_uri`: the assertion's audience.
    pub token_uri: &'a str,
}

/// Why no assertion could be made (the stored key is unusable).
#[derive(Debug, thiserror::Error)]
#[error("service-account key unusable: {0}")]
pub struct KeyError(&'static str);

/// The signed assertion for `now_s` (seconds since the epoch).
pub fn assertion(s: Signer<'_>, now_s: i64) -> Result<String, KeyError> {
    let der = pem_der(s.private_key_pem)?;
    let key = signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|_| KeyError("not an RSA PKCS#8 private key"))?;
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = s.private_key_id.filter(|k| !k.is_empty()) {
        header["kid"] = kid.into();
    }
    let claims = json!({
        "iss": s.client_email,
        "scope": FCM_SCOPE,
        "aud": s.token_uri,
        "iat": now_s,
        "exp": now_s + ASSERTION_TTL_S,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| KeyError("signing failed"))?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` PEM (the form of a downloaded service-account
/// file, whose JSON escapes the newlines).
fn pem_der(pem: &str) -> Result<Vec<u8>, KeyError> {
    let body = pem
        .split("-----BEGIN PRIVATE KEY-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END PRIVATE KEY-----").next())
        .ok_or(KeyError("no PKCS#8 PEM block (BEGIN PRIVATE KEY)"))?;
    let b64: String = body
        .replace("\\n", "")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD
        .decode(b64)
        .map_err(|_| KeyError("PEM body is not base64"))
}

#[cfg(test)]
mod tests {
    use ring::signature::KeyPair;

    use super::*;

    /// The assertion verifies with the account's public key and carries Google's claims.
    #[test]
    fn the_assertion_is_rs256_with_the_claims_google_requires() {
        let pem = &generate_key();
        let s = Signer {
            client_email: "push@p.iam.gserviceaccount.com",
            private_key_id: Some("k1"),
            private_key_pem: pem,
            token_uri: "https://oauth2.googleapis.com/token",
        };
        let jwt = assertion(s, 1_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let pair = signature::RsaKeyPair::from_pkcs8(&pem_der(pem).unwrap()).unwrap();
        let public = signature::UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            pair.public_key().as_ref(),
        );
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        public.verify(input.as_bytes(), &sig).unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}));
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            json!({"iss": s.client_email, "scope": FCM_SCOPE, "aud": s.token_uri,
                "iat": 1_000, "exp": 4_600})
        );
        // A different message does not verify: the signature covers header and claims.
        assert!(public.verify(b"x.y", &sig).is_err());
    }

    /// A fresh key from `openssl genpkey`: no private key is committed, not even a test one.
    fn generate_key() -> String {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl genpkey (this test needs openssl)");
        assert!(out.status.success(), "openssl genpkey failed");
        String::from_utf8(out.stdout).expect("PEM is text")
    }

    #[test]
    fn a_key_that_is_not_pkcs8_is_refused_without_panicking() {
        let s = Signer {
            client_email: "a@b",
            private_key_id: None,
            private_key_pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            token_uri: "http://t",
        };
        assert!(assertion(s, 0).is_err());
        let s = Signer {
            private_key_pem: "nothing",
            ..s
        };
        assert!(assertion(s, 0).is_err());
    }
}
