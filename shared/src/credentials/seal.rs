//! AES-256-GCM sealing of credential records (`ring::aead`), under the current
//! `CREDENTIALS_KEY`, opened under it or a retired key (docs/credentials.md#encryption).
//!
//! Every seal draws a fresh random 96-bit nonce; the additional authenticated data binds the
//! ciphertext to its tenant and kind, so a row copied to another tenant or kind does not open.
//! A key is named by its id, the first 8 hex characters of its SHA-256, stored with each row
//! so opening picks the right key and rotation finds the rows still under an old one.

use base64::Engine;
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A record as stored: the id of the key that sealed it, its nonce, and the ciphertext with
/// its 16-byte tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the sealing key (8 hex characters).
    pub key_id: String,
    /// The 96-bit nonce drawn for this seal.
    pub nonce: Vec<u8>,
    /// Ciphertext followed by the GCM tag.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// One 256-bit key and its id.
struct Key {
    id: String,
    key: LessSafeKey,
}

/// The current key (seals and opens) and the retired ones (open only).
pub struct Keys {
    current: Key,
    retired: Vec<Key>,
    rng: SystemRandom,
}

/// Why a sealed record did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No configured key has the record's key id.
    #[error(
        "sealed under key {0}, which is neither CREDENTIALS_KEY nor in CREDENTIALS_KEYS_RETIRED"
    )]
    UnknownKey(String),
    /// The key is known but authentication failed: tampered, or copied from another tenant
    /// or kind.
    #[error("does not authenticate under key {0} (altered, or copied from another tenant or kind)")]
    Forged(String),
}

/// Decodes one key: the standard base64 of exactly 32 bytes (`openssl rand -base64 32`).
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "is not base64".to_string())?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("decodes to {} bytes, not 32", bytes.len()))
}

/// A new random key, base64 (what `CREDENTIALS_KEY` holds).
pub fn generate_key() -> anyhow::Result<String> {
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

/// The id of a key: the first 8 hex characters of its SHA-256.
pub fn key_id(key: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(key))[..8].to_string()
}

impl Key {
    fn new(bytes: &[u8; 32]) -> Result<Self, String> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| "is not an AES-256 key".to_string())?;
        Ok(Self {
            id: key_id(bytes),
            key: LessSafeKey::new(unbound),
        })
    }
}

impl Keys {
    /// The keys of `CREDENTIALS_KEY` and `CREDENTIALS_KEYS_RETIRED` (comma-separated); the
    /// error names the variable and the entry at fault, never a key.
    pub fn parse(current: &SecretString, retired: Option<&SecretString>) -> Result<Self, String> {
        let current = parse_key(current.expose_secret())
            .and_then(|k| Key::new(&k))
            .map_err(|e| {
                format!(
                    "CREDENTIALS_KEY {e}: it must be the base64 of 32 random bytes \
                     (e.g. `openssl rand -base64 32`)"
                )
            })?;
        let mut old = Vec::new();
        let list = retired
            .map(|r| r.expose_secret().to_string())
            .unwrap_or_default();
        for (i, text) in list.split(',').map(str::trim).enumerate() {
            if text.is_empty() {
                continue;
            }
            let key = parse_key(text).and_then(|k| Key::new(&k)).map_err(|e| {
                format!(
                    "CREDENTIALS_KEYS_RETIRED entry {} {e}: each entry must be the base64 of \
                     32 bytes, entries separated by commas",
                    i + 1
                )
            })?;
            if key.id != current.id && !old.iter().any(|k: &Key| k.id == key.id) {
                old.push(key);
            }
        }
        Ok(Self {
            current,
            retired: old,
            rng: SystemRandom::new(),
        })
    }

    /// Id of the current key (every seal is made under it).
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plain` under the current key with a fresh nonce, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> anyhow::Result<Sealed> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        let mut data = plain.to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut data,
            )
            .map_err(|_| anyhow::anyhow!("AES-GCM seal failed"))?;
        Ok(Sealed {
            key_id: self.current.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext: data,
        })
    }

    /// Opens a sealed record bound to `aad`, under the key its id names.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        let key = std::iter::once(&self.current)
            .chain(&self.retired)
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| OpenError::UnknownKey(sealed.key_id.clone()))?;
        let forged = || OpenError::Forged(sealed.key_id.clone());
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| forged())?;
        let mut data = sealed.ciphertext.clone();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(aad), &mut data)
            .map_err(|_| forged())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> SecretString {
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into()
    }

    #[test]
    fn keys_must_be_base64_of_32_bytes_and_errors_never_show_them() {
        let e = Keys::parse(&"not base64!".into(), None).err().unwrap();
        assert!(e.contains("CREDENTIALS_KEY is not base64"), "{e}");
        let e = Keys::parse(&b64(&[1; 16]), None).err().unwrap();
        assert!(e.contains("decodes to 16 bytes, not 32"), "{e}");
        let retired: SecretString = format!("{},c2hvcnQ=", b64(&[2; 32]).expose_secret()).into();
        let e = Keys::parse(&b64(&[1; 32]), Some(&retired)).err().unwrap();
        assert!(e.contains("CREDENTIALS_KEYS_RETIRED entry 2"), "{e}");
        assert!(!e.contains("c2hvcnQ"), "{e}");
    }

    #[test]
    fn a_seal_opens_only_with_its_aad_and_a_known_key() {
        let keys = Keys::parse(&b64(&[7; 32]), None).unwrap();
        let a = keys.seal(b"acme\0fcm", b"secret").unwrap();
        let b = keys.seal(b"acme\0fcm", b"secret").unwrap();
        assert_ne!(a.nonce, b.nonce, "a fresh nonce per seal");
        assert_eq!(a.key_id, key_id(&[7; 32]));
        assert_eq!(keys.open(&a, b"acme\0fcm").unwrap(), b"secret");
        assert!(matches!(
            keys.open(&a, b"beta\0fcm"),
            Err(OpenError::Forged(_))
        ));
        assert!(matches!(
            keys.open(&a, b"acme\0gws"),
            Err(OpenError::Forged(_))
        ));
        let mut flipped = a.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(keys.open(&flipped, b"acme\0fcm").is_err());
        let other = Keys::parse(&b64(&[8; 32]), None).unwrap();
        assert!(matches!(
            other.open(&a, b"acme\0fcm"),
            Err(OpenError::UnknownKey(_))
        ));
    }

    #[test]
    fn generated_keys_parse_and_differ() {
        let (a, b) = (generate_key().unwrap(), generate_key().unwrap());
        assert_ne!(a, b);
        assert!(Keys::parse(&a.into(), Some(&b.into())).is_ok());
    }

    #[test]
    fn retired_keys_open_but_never_seal() {
        let old = Keys::parse(&b64(&[1; 32]), None).unwrap();
        let sealed = old.seal(b"t\0captcha", b"x").unwrap();
        let retired = b64(&[1; 32]);
        let new = Keys::parse(&b64(&[2; 32]), Some(&retired)).unwrap();
        assert_eq!(new.open(&sealed, b"t\0captcha").unwrap(), b"x");
        assert_eq!(
            new.seal(b"t\0captcha", b"x").unwrap().key_id,
            new.current_id()
        );
    }
}
