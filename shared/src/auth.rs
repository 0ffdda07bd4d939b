//! API keys and admin tokens: generation, hashing, constant-time comparison.
//!
//! Keys are 40 random alphanumeric characters (the GES example shape) prefixed `egk_` so a
//! leaked key is recognisable by secret scanners. Only their SHA-256 is stored (invariant 12).

use rand::{Rng, distr::Alphanumeric};
use sha2::{Digest, Sha256};

/// A fresh API key, shown once to the admin.
pub fn generate_key() -> String {
    let body: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("egk_{body}")
}

/// Shortest imported key: shorter values are guessable.
pub const IMPORT_MIN_LEN: usize = 16;
/// Longest imported key (the public port reads no longer `x-api-key`).
pub const IMPORT_MAX_LEN: usize = 256;

/// Checks an existing key brought in for import (docs/abuse.md#importing-existing-keys):
/// 16–256 printable ASCII characters without spaces (GES keys are 40 alphanumerics or a
/// UUID). The message never repeats the value.
pub fn validate_import(key: &str) -> Result<(), crate::Error> {
    if !(IMPORT_MIN_LEN..=IMPORT_MAX_LEN).contains(&key.len()) {
        return Err(crate::Error::invalid(format!(
            "key must be {IMPORT_MIN_LEN} to {IMPORT_MAX_LEN} characters long (it has {})",
            key.chars().count()
        )));
    }
    if let Some(pos) = key.chars().position(|c| !c.is_ascii_graphic()) {
        return Err(crate::Error::invalid(format!(
            "key may hold only printable ASCII characters without spaces \
             (character {} is not one)",
            pos + 1
        )));
    }
    Ok(())
}

/// SHA-256 of a key, as stored.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Compares two secrets without leaking where they differ (digests have equal length).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_hashes_stable() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 44);
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
        assert!(secrets_equal("same-token", "same-token"));
        assert!(!secrets_equal("same-token", "same-tokem"));
    }

    #[test]
    fn imported_keys_are_checked_without_echo() {
        assert!(validate_import("Ab3dEf6hIj9lMn2pQr5tUv8xYz1bCd4fGh7jKl0n").is_ok());
        assert!(validate_import("5f8e2c1a-7b3d-4e9f-8a6b-1c2d3e4f5a6b").is_ok());
        assert!(validate_import(&generate_key()).is_ok());
        for bad in [
            "short",
            "has a space in the middle of it",
            "tab\there-and-long-enough",
            "ünïcödé-characters-here",
            &"x".repeat(257),
        ] {
            let e = validate_import(bad).unwrap_err().to_string();
            assert!(!e.contains(bad), "{e}");
        }
    }
}
