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
}
