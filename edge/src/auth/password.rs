//! Password hashes of users who sign in: Argon2id (RFC 9106) with the `argon2` crate's
//! defaults (19 MiB, 2 passes, 1 lane: OWASP's recommended minimum), as PHC strings, each with
//! its own random salt. A hash states its own parameters, so raising them later leaves the
//! stored hashes valid.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::sync::OnceLock;

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password accepted (bytes), so that hashing a hostile one costs no more.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a password is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// Too short or too long.
    #[error(
        "a password has at least {MIN_PASSWORD_CHARS} characters and at most \
         {MAX_PASSWORD_BYTES} bytes"
    )]
    Length,
    /// Hashing failed (no randomness for the salt...).
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// The PHC string of `password`'s Argon2id hash, with a fresh salt. Takes tens of
/// milliseconds of CPU and 19 MiB: call it off the async runtime.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::Length);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (`false` for an unreadable hash). As
/// costly as [`hash`]: call it off the async runtime.
pub fn verify(password: &str, hash: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A hash of no one's password, checked against when a name is unknown, so that an unknown
/// name costs the same time as a wrong password and the two cannot be told apart.
pub fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"no one's password, for unknown names", &salt)
            .map(|hash| hash.to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let stored = hash("correct horse battery").unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(verify("correct horse battery", &stored));
        assert!(!verify("correct horse batterz", &stored));
        assert!(!verify("correct horse battery", "not a hash"));
        assert_ne!(stored, hash("correct horse battery").unwrap(), "salted");
        assert!(!verify("anything at all", decoy()));
        assert!(matches!(hash("short"), Err(PasswordError::Length)));
        assert!(matches!(
            hash(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(PasswordError::Length)
        ));
    }
}
