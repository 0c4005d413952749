//! Every key of every tree is built here: fixed-width big-endian composites, so
//! a range scan returns records in the order the key describes.
//!
//! | tree             | key                         | value                 |
//! |------------------|-----------------------------|-----------------------|
//! | `meta`           | ASCII name                  | per name (see `meta`) |
//! | `users`          | user id (16 bytes, UUID v7) | `User` (codec)        |
//! | `users_by_email` | lowercased email, UTF-8     | user id (16 bytes)    |
//! | `users_by_external` | issuer name ‖ 0x00 ‖ external id, UTF-8 | user id (16 bytes) |
//! | `demo_expiry`    | expires_at (u64 BE) ‖ user id | empty               |
//! | `families`       | family id (16 bytes)        | `Family` (codec)      |
//! | `api_keys`       | key id (16 bytes, UUID v7)  | `ApiKey` (codec)      |
//! | `api_keys_by_hash` | SHA-256 of the key (32 bytes) | key id          |
//! | `api_keys_by_user` | user id ‖ key id          | empty                 |
//! | `quotas`         | user id (16 bytes)          | `QuotaCounter` (codec) |
//! | `sessions`       | session id (16 bytes, UUID v7) | `Session` (codec)  |
//! | `sessions_by_user` | user id ‖ created_at (u64 BE, ms) ‖ session id | empty |
//! | `messages`       | session id ‖ seq (u64 BE)   | `Message` (codec)     |
//! | `messages_streaming` | session id (16 bytes) | the lowest seq (u64 BE) a reply may have streamed at since the start |
//! |                  | (up to schema 4, one per reply: session id ‖ seq) | (empty) |
//! | `deletions`      | kind (1 byte) ‖ id (16 bytes) | empty: a deletion under way |
//! | `tracks`         | track id (16 bytes, UUID v7) | `Track` (codec)      |
//! | `tracks_by_user` | user id ‖ created_at (u64 BE, ms) ‖ track id | empty |
//! | `track_analyses` | track id (16 bytes)         | `TrackAnalysis` (codec) |

use uuid::Uuid;

use crate::ids::UserId;

pub const META_SCHEMA_VERSION: &[u8] = b"schema_version";
pub const META_READY_PROBE: &[u8] = b"ready_probe";

/// `deletions` kinds.
pub const DELETION_SESSION: u8 = b's';
pub const DELETION_USER: u8 = b'u';

/// Key of a deletion mark: its kind, then the id of what is being deleted.
pub fn deletion(kind: u8, id: [u8; 16]) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = kind;
    key[1..].copy_from_slice(&id);
    key
}

pub fn deletion_from(key: &[u8]) -> Option<(u8, [u8; 16])> {
    let (&kind, id) = key.split_first()?;
    Some((kind, id.try_into().ok()?))
}

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

/// Key of the external-identity index: the issuer's configured name (which
/// holds no NUL byte), a NUL, then the id the issuer gives the user. The
/// separator makes the pair unambiguous (`a` + `b:c` never meets `a:b` + `c`)
/// and keeps one issuer's users together.
pub fn external_user(issuer: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(issuer.len() + 1 + id.len());
    key.extend_from_slice(issuer.as_bytes());
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Decodes an `users_by_external` key into (issuer, id).
pub fn external_user_from(key: &[u8]) -> Option<(&str, &str)> {
    let split = key.iter().position(|&b| b == 0)?;
    let issuer = std::str::from_utf8(&key[..split]).ok()?;
    let id = std::str::from_utf8(&key[split + 1..]).ok()?;
    Some((issuer, id))
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

pub fn session(id: Uuid) -> [u8; 16] {
    *id.as_bytes()
}

/// Key of the per-user session index: sorts a user's sessions by creation.
pub fn user_session(user: UserId, created_at: u64, session: Uuid) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..16].copy_from_slice(user.as_bytes());
    key[16..24].copy_from_slice(&created_at.to_be_bytes());
    key[24..].copy_from_slice(session.as_bytes());
    key
}

pub fn user_session_id(key: &[u8]) -> Option<Uuid> {
    if key.len() != 40 {
        return None;
    }
    uuid_from(&key[24..])
}

pub fn track(id: Uuid) -> [u8; 16] {
    *id.as_bytes()
}

/// Key of the per-user track index: sorts a user's tracks by upload.
pub fn user_track(user: UserId, created_at: u64, track: Uuid) -> [u8; 40] {
    user_session(user, created_at, track)
}

pub fn user_track_id(key: &[u8]) -> Option<Uuid> {
    user_session_id(key)
}

/// Key of a message: its session, then its sequence number.
pub fn message(session: Uuid, seq: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(session.as_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub fn message_seq(key: &[u8]) -> Option<u64> {
    let key: &[u8; 24] = key.try_into().ok()?;
    Some(u64::from_be_bytes(key[16..].try_into().ok()?))
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: no key is greater; an unbounded scan is what is meant.
    vec![0xff; prefix.len() + 1]
}

/// An opaque listing cursor: a key suffix in lowercase hex.
pub fn cursor_encode(suffix: &[u8]) -> String {
    hex::encode(suffix)
}

pub fn cursor_decode(cursor: &str) -> Option<Vec<u8>> {
    if !cursor.len().is_multiple_of(2) || cursor.is_empty() || cursor.len() > 128 {
        return None;
    }
    hex::decode(cursor).ok()
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
    fn deletion_key_round_trips() {
        let id = *Uuid::new_v4().as_bytes();
        assert_eq!(
            deletion_from(&deletion(DELETION_USER, id)),
            Some((DELETION_USER, id))
        );
        assert_eq!(deletion_from(b"s-short"), None);
        assert_eq!(deletion_from(b""), None);
    }

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
    fn external_user_key_round_trips_and_is_unambiguous() {
        let key = external_user("django", "42");
        assert_eq!(external_user_from(&key), Some(("django", "42")));
        assert_ne!(external_user("a", "b:c"), external_user("a:b", "c"));
        assert_ne!(external_user("ab", "c"), external_user("a", "bc"));
        // An id may hold anything, a NUL included: the issuer ends at the first.
        assert_eq!(
            external_user_from(&external_user("kc", "x\0y")),
            Some(("kc", "x\0y"))
        );
        // One issuer's users sort together.
        assert!(external_user("a", "zzz") < external_user("b", ""));
        assert_eq!(external_user_from(b"no-separator"), None);
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
        assert!(k.starts_with(&super::user(user)));
        assert_eq!(uuid_from(&api_key(key)), Some(key));
        assert_eq!(uuid_from(&family(key)), Some(key));
    }

    #[test]
    fn session_and_message_keys_round_trip_and_sort() {
        let (user, a, b) = (UserId::new(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(user_session_id(&user_session(user, 5, a)), Some(a));
        assert!(user_session(user, 5, b) < user_session(user, 6, a));
        assert!(user_session(user, 5, a).starts_with(&super::user(user)));
        assert_eq!(message_seq(&message(a, 300)), Some(300));
        assert!(message(a, 255) < message(a, 256));
        assert!(message(a, 1).starts_with(&session(a)));
    }

    #[test]
    fn track_keys_round_trip_under_the_user_prefix() {
        let (user, a, b) = (UserId::new(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(user_track_id(&user_track(user, 7, a)), Some(a));
        assert!(user_track(user, 7, b) < user_track(user, 8, a));
        assert!(user_track(user, 7, a).starts_with(&super::user(user)));
        assert_eq!(uuid_from(&track(a)), Some(a));
        assert_eq!(user_track_id(b"short"), None);
    }

    #[test]
    fn prefix_end_and_cursors() {
        assert_eq!(prefix_end(&[1, 2]), vec![1, 3]);
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
        let bytes = [0u8, 15, 255, 16];
        assert_eq!(cursor_decode(&cursor_encode(&bytes)), Some(bytes.to_vec()));
        assert_eq!(cursor_decode("zz"), None);
        assert_eq!(cursor_decode("abc"), None);
        assert_eq!(cursor_decode(""), None);
        assert_eq!(cursor_decode("é0"), None);
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
