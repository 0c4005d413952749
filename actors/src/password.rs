//! Passwords: argon2id hashes in PHC string form.
//!
//! Parameters: m = 19 MiB, t = 2, p = 1, the OWASP Password Storage Cheat
//! Sheet's first argon2id recommendation. Each hash or verification costs tens
//! of milliseconds of one core, so callers run it on a blocking thread, never
//! on an I/O thread.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The minimum password length the server accepts (API.md §3).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password the server looks at, in bytes (API.md §3): longer
/// ones are refused before any hashing or throttling.
pub const MAX_PASSWORD_BYTES: usize = 1024;

const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("the password must be at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks the password policy (length in characters, not bytes).
pub fn validate(password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    Ok(())
}

/// Hashes a password (after [`validate`]) with a fresh random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    validate(password)?;
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC `hash`. A malformed hash never
/// matches. The comparison inside argon2 is constant-time.
pub fn verify(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horsE", &h));
    }

    #[test]
    fn salts_differ() {
        assert_ne!(
            hash("same password").unwrap(),
            hash("same password").unwrap()
        );
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(matches!(hash("seven77"), Err(PasswordError::TooShort)));
        // Eight characters, more bytes: the rule counts characters.
        assert!(validate("pässwörd").is_ok());
    }

    #[test]
    fn malformed_hash_never_matches() {
        assert!(!verify("anything", "not a phc string"));
        assert!(!verify("anything", ""));
    }
}
