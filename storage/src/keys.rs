//! Every key of every tree is built here: fixed-width big-endian composites, so
//! a range scan returns records in the order the key describes.
//!
//! | tree             | key                         | value                 |
//! |------------------|-----------------------------|-----------------------|
//! | `meta`           | ASCII name                  | per name (see `meta`) |
//! | `users`          | user id (16 bytes, UUID v7) | `User` (codec)        |
//! | `users_by_email` | lowercased email, UTF-8     | user id (16 bytes)    |
//! | `demo_expiry`    | expires_at (u64 BE) ‖ user id | empty               |
//! | `families`       | family id (16 bytes)        | `Family` (codec)      |
//! | `api_keys`       | key id (16 bytes, UUID v7)  | `ApiKey` (codec)      |
//! | `api_keys_by_hash` | SHA-256 of the key (32 bytes) | key id          |
//! | `api_keys_by_user` | user id ‖ key id          | empty                 |
//! | `quotas`         | user id (16 bytes)          | `QuotaCounter` (codec) |

use uuid::Uuid;

use crate::ids::UserId;

pub const META_SCHEMA_VERSION: &[u8] = b"schema_version";
pub const META_READY_PROBE: &[u8] = b"ready_probe";

/// Key of a user record.
pub fn user(id: UserId) -> [u8; 16] {
    *id.as_bytes()
}

/// Decodes a `users` key; `None` if it is not 16 bytes.
pub fn user_from(key: &[u8]) -> Option<UserId> {
    let bytes: [u8; 16] = key.try_into().ok()?;
    Some(UserId::from_bytes(bytes))
}

/// Decodes a 16-byte UUID (index values, key suffixes).
pub fn uuid_from(bytes: &[u8]) -> Option<Uuid> {
    let bytes: [u8; 16] = bytes.try_into().ok()?;
    Some(Uuid::from_bytes(bytes))
}

/// The prefix of every per-user index key.
pub fn user_prefix(user: UserId) -> [u8; 16] {
    *user.as_bytes()
}

/// Key of the demo-expiry index: sorts by expiry, so the sweep scans only
/// the expired prefix.
pub fn demo_expiry(expires_at: u64, user: UserId) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&expires_at.to_be_bytes());
    key[8..].copy_from_slice(user.as_bytes());
    key
}

pub fn demo_expiry_from(key: &[u8]) -> Option<(u64, UserId)> {
    let key: &[u8; 24] = key.try_into().ok()?;
    let at = u64::from_be_bytes(key[..8].try_into().ok()?);
    Some((at, UserId::from_bytes(key[8..].try_into().ok()?)))
}

pub fn family(id: Uuid) -> [u8; 16] {
    *id.as_bytes()
}

pub fn api_key(id: Uuid) -> [u8; 16] {
    *id.as_bytes()
}

/// Key of the per-user API key index.
pub fn user_api_key(user: UserId, key: Uuid) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(user.as_bytes());
    out[16..].copy_from_slice(key.as_bytes());
    out
}

pub fn user_api_key_from(key: &[u8]) -> Option<Uuid> {
    if key.len() != 32 {
        return None;
    }
    uuid_from(&key[16..])
}

/// Key of the email index: the address trimmed and lowercased, so that
/// `Ann@Example.com` and `ann@example.com` are the same account.
pub fn email(address: &str) -> Vec<u8> {
    normalize_email(address).into_bytes()
}

/// The canonical form of an email address used for uniqueness and lookup.
pub fn normalize_email(address: &str) -> String {
    address.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_key_round_trips() {
        let id = UserId::new();
        assert_eq!(user_from(&user(id)), Some(id));
        assert_eq!(user_from(b"short"), None);
    }

    #[test]
    fn user_keys_sort_by_creation() {
        let a = UserId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = UserId::new();
        assert!(user(a) < user(b));
    }

    #[test]
    fn demo_expiry_round_trips_and_sorts_by_time() {
        let (a, b) = (UserId::new(), UserId::new());
        assert_eq!(demo_expiry_from(&demo_expiry(42, a)), Some((42, a)));
        assert!(demo_expiry(41, b) < demo_expiry(42, a));
        assert!(demo_expiry(255, a) < demo_expiry(256, a));
        assert_eq!(demo_expiry_from(b"short"), None);
    }

    #[test]
    fn user_api_key_round_trips_under_the_user_prefix() {
        let (user, key) = (UserId::new(), Uuid::now_v7());
        let k = user_api_key(user, key);
        assert_eq!(user_api_key_from(&k), Some(key));
        assert!(k.starts_with(&user_prefix(user)));
        assert_eq!(uuid_from(&api_key(key)), Some(key));
        assert_eq!(uuid_from(&family(key)), Some(key));
    }

    #[test]
    fn email_key_is_case_and_space_insensitive() {
        assert_eq!(email(" Ann@Example.COM "), email("ann@example.com"));
        assert_eq!(
            String::from_utf8(email("Ann@Example.com")).unwrap(),
            "ann@example.com"
        );
    }
}
