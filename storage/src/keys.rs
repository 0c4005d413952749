//! Every key of every tree is built here: fixed-width big-endian composites, so
//! a range scan returns records in the order the key describes.
//!
//! | tree             | key                         | value                 |
//! |------------------|-----------------------------|-----------------------|
//! | `meta`           | ASCII name                  | per name (see `meta`) |
//! | `users`          | user id (16 bytes, UUID v7) | `User` (codec)        |
//! | `users_by_email` | lowercased email, UTF-8     | user id (16 bytes)    |

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
    fn email_key_is_case_and_space_insensitive() {
        assert_eq!(email(" Ann@Example.COM "), email("ann@example.com"));
        assert_eq!(
            String::from_utf8(email("Ann@Example.com")).unwrap(),
            "ann@example.com"
        );
    }
}
