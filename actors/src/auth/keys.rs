//! Signing keys: where they come from (config, key files, or a secret
//! generated once into the data directory) and their `kid`.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The file in the data directory that holds a generated HS256 secret.
pub const SECRET_FILE: &str = "jwt_secret";
const GENERATED_SECRET_BYTES: usize = 64;

/// The keys tokens are signed and verified with.
#[derive(Clone)]
pub enum KeySource {
    /// HS256: the current secret signs and verifies; previous ones only verify.
    Hs256 {
        secret: Vec<u8>,
        previous: Vec<Vec<u8>>,
    },
    /// RS256 from PEM files.
    Rs256 {
        private_pem: Vec<u8>,
        public_pem: Vec<u8>,
    },
    /// EdDSA (Ed25519) from PEM files.
    EdDsa {
        private_pem: Vec<u8>,
        public_pem: Vec<u8>,
    },
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        let kind = match self {
            KeySource::Hs256 { .. } => "HS256",
            KeySource::Rs256 { .. } => "RS256",
            KeySource::EdDsa { .. } => "EdDSA",
        };
        write!(f, "KeySource({kind}, [redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds {len} bytes, expected {GENERATED_SECRET_BYTES}; delete it to generate a new secret (every token becomes invalid)", path.display())]
    BadSecretFile { path: PathBuf, len: usize },
    #[error("invalid key: {0}")]
    Invalid(String),
}

/// A key id derived from the key itself, so it is stable across restarts:
/// the first 8 bytes of its SHA-256, in hex.
pub fn kid_for(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

/// The HS256 secret in `data_dir`, generated (64 random bytes, mode 0600) on
/// first use and read on every later one.
pub fn load_or_create_secret(data_dir: &Path) -> Result<Vec<u8>, KeyError> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::File::open(&path) {
        Ok(mut file) => {
            let mut secret = Vec::new();
            file.read_to_end(&mut secret)
                .map_err(|source| KeyError::Read {
                    path: path.clone(),
                    source,
                })?;
            if secret.len() != GENERATED_SECRET_BYTES {
                return Err(KeyError::BadSecretFile {
                    path,
                    len: secret.len(),
                });
            }
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(|source| KeyError::Create {
                path: path.clone(),
                source,
            })?;
            let mut secret = vec![0u8; GENERATED_SECRET_BYTES];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|source| KeyError::Create {
                    path: path.clone(),
                    source,
                })?;
            file.write_all(&secret)
                .and_then(|_| file.sync_all())
                .map_err(|source| KeyError::Create {
                    path: path.clone(),
                    source,
                })?;
            tracing::info!(path = %path.display(), "generated a new JWT signing secret");
            Ok(secret)
        }
        Err(source) => Err(KeyError::Read { path, source }),
    }
}

/// Reads a PEM key file.
pub fn read_pem(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_secret_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_secret(dir.path()).unwrap(), first);
    }

    #[test]
    fn a_damaged_secret_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SECRET_FILE), b"short").unwrap();
        assert!(matches!(
            load_or_create_secret(dir.path()),
            Err(KeyError::BadSecretFile { len: 5, .. })
        ));
    }

    #[test]
    fn kid_is_stable_and_distinguishes_keys() {
        assert_eq!(kid_for(b"a"), kid_for(b"a"));
        assert_ne!(kid_for(b"a"), kid_for(b"b"));
        assert_eq!(kid_for(b"a").len(), 16);
    }
}
