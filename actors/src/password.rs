//! Passwords: argon2id hashes in PHC string form.
//!
//! Parameters: m = 19 MiB, t = 2, p = 1, the OWASP Password Storage Cheat
//! Sheet's first argon2id recommendation. Each hash or verification costs tens
//! of milliseconds of one core, so callers run it on a blocking thread, never
//! on an I/O thread.
//!
//! The 19 MiB of working memory are kept and reused, never freed: allocated
//! and freed per hash, on whichever blocking thread ran it, glibc's malloc
//! kept them in its per-thread arenas (its mmap threshold rises to the size
//! of a freed block, so the next came from an arena, not a fresh mapping,
//! and arenas rarely give memory back): a 30-minute soak with a login every
//! 5 s had 16 arenas holding 19–58 MiB each, the server's RSS swinging
//! between 170 and 490 MB. Kept here, the memory is at most one buffer per
//! hash that ever ran at once (the callers' permits bound that: 3 × cores),
//! typically one or two.

use std::sync::Mutex;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

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

/// argon2's working memory, kept between hashes (see the module's
/// documentation): buffers of `MEMORY_KIB` blocks only.
struct WorkingMemory {
    kept: Mutex<Vec<Vec<Block>>>,
}

impl WorkingMemory {
    const fn new() -> Self {
        WorkingMemory {
            kept: Mutex::new(Vec::new()),
        }
    }

    /// A buffer of `blocks` blocks: a kept one when it is our size.
    fn take(&self, blocks: usize) -> Vec<Block> {
        let kept = (blocks == MEMORY_KIB as usize)
            .then(|| self.kept.lock().ok()?.pop())
            .flatten();
        kept.unwrap_or_else(|| vec![Block::default(); blocks])
    }

    /// Keeps `memory` for the next hash if it is our size (else frees it).
    fn give(&self, memory: Vec<Block>) {
        if memory.len() == MEMORY_KIB as usize {
            if let Ok(mut kept) = self.kept.lock() {
                kept.push(memory);
            }
        }
    }
}

static WORKING_MEMORY: WorkingMemory = WorkingMemory::new();

/// `argon2` over `password` and `salt` into a fresh output, in kept working
/// memory when the parameters are ours.
fn compute(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: Salt<'_>,
) -> argon2::password_hash::Result<Output> {
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    let mut memory = WORKING_MEMORY.take(argon2.params().block_count());
    let len = argon2
        .params()
        .output_len()
        .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(len, |out| {
        Ok(argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..])?)
    });
    WORKING_MEMORY.give(memory);
    output
}

/// Hashes a password (after [`validate`]) with a fresh random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    validate(password)?;
    let salt = SaltString::generate(&mut OsRng);
    let argon2 = argon2();
    let hashed = compute(&argon2, password.as_bytes(), salt.as_salt()).and_then(|output| {
        Ok(PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(argon2.params())?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        }
        .to_string())
    });
    hashed.map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC `hash`. A malformed hash never
/// matches. The comparison is constant-time (`Output`'s equality).
pub fn verify(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let argon2 = (|| {
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).ok()?;
        Some(Argon2::new(algorithm, version, params))
    })();
    match argon2 {
        Some(argon2) => {
            compute(&argon2, password.as_bytes(), salt).is_ok_and(|computed| computed == expected)
        }
        None => false,
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
    fn hashes_are_the_argon2_crates_own_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash("correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2().verify_password(b"correct horse", &parsed).is_ok());
        let salt = SaltString::generate(&mut OsRng);
        let theirs = argon2()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(verify("correct horse", &theirs));
        assert!(!verify("correct horsE", &theirs));
        // Other parameters (a hash made elsewhere) verify too, in memory of
        // their own.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse", &salt)
        .unwrap()
        .to_string();
        assert!(verify("correct horse", &small));
        assert!(!verify("wrong horse", &small));
    }

    #[test]
    fn working_memory_is_reused_not_multiplied() {
        let pool = WorkingMemory::new();
        let ours = MEMORY_KIB as usize;
        let first = pool.take(ours);
        let at = first.as_ptr();
        pool.give(first);
        let again = pool.take(ours);
        assert_eq!(again.as_ptr(), at, "the kept buffer is handed out again");
        // Two at once: a second buffer, and both are kept after.
        let second = pool.take(ours);
        assert_ne!(second.as_ptr(), at);
        pool.give(again);
        pool.give(second);
        assert_eq!(pool.kept.lock().unwrap().len(), 2);
        // Another size (a hash made with other parameters) is never kept.
        let small = pool.take(1024);
        assert_eq!(small.len(), 1024);
        pool.give(small);
        assert_eq!(pool.kept.lock().unwrap().len(), 2);
    }

    #[test]
    fn malformed_hash_never_matches() {
        assert!(!verify("anything", "not a phc string"));
        assert!(!verify("anything", ""));
    }
}
