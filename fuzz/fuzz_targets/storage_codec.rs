//! The storage codec: bytes read back from the database as each record
//! type (`codec::decode`: version byte, then postcard) must give a value
//! or `StorageError::Corrupt`, never a panic; a decoded value re-encodes
//! to bytes that decode to the same encoding (no value the codec accepts
//! is one it cannot write back). Decoded messages and tracks go on
//! through the views the API builds from them. Every key decoder of
//! `keys.rs` and the listing cursor get the same bytes; a decoded
//! composite key rebuilds to the same bytes.
//!
//! Input: byte 0 picks the record type or key decoder; the rest is the
//! stored value (or key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palaver_storage::codec::{self, Record};
use palaver_storage::{
    keys, ApiKey, Family, Message, QuotaCounter, Session, StorageError, Track, TrackAnalysis, User,
};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 11 {
        0 => {
            if let Some(user) = record::<User>(bytes) {
                let _ = user.external.as_ref().map(ToString::to_string);
            }
        }
        1 => {
            record::<Family>(bytes);
        }
        2 => {
            record::<ApiKey>(bytes);
        }
        3 => {
            record::<Session>(bytes);
        }
        // 5: a reply with its events (the seed's choice; same decoder).
        4 | 5 => {
            if let Some(message) = record::<Message>(bytes) {
                // What history and `message` events show of it.
                let view = palaver_actors::protocol::MessageView::from(&message);
                serde_json::to_string(&view).expect("a message view serializes");
                let _ = palaver_actors::protocol::message_json(&message);
            }
        }
        6 => {
            record::<QuotaCounter>(bytes);
        }
        7 => {
            if let Some(track) = record::<Track>(bytes) {
                let view = palaver::http::tracks::track_view(&track);
                serde_json::to_string(&view).expect("a track view serializes");
            }
        }
        8 => {
            record::<TrackAnalysis>(bytes);
        }
        9 => key_decoders(bytes),
        _ => {
            if let Ok(cursor) = std::str::from_utf8(bytes) {
                if let Some(suffix) = keys::cursor_decode(cursor) {
                    assert_eq!(keys::cursor_encode(&suffix), cursor.to_ascii_lowercase());
                }
            }
        }
    }
});

/// Decodes `bytes` as an `R`; a value must survive a re-encoding.
fn record<R: Record>(bytes: &[u8]) -> Option<R> {
    match codec::decode::<R>(bytes) {
        Ok(value) => {
            let encoded = codec::encode(&value).expect("a decoded record encodes");
            let again: R = codec::decode(&encoded).expect("its encoding decodes");
            assert_eq!(
                codec::encode(&again).expect("encodes"),
                encoded,
                "{} changes on a second round trip",
                R::TREE
            );
            Some(value)
        }
        Err(StorageError::Corrupt { tree, .. }) => {
            assert_eq!(tree, R::TREE);
            None
        }
        Err(other) => panic!("decoding a {} gave {other:?}", R::TREE),
    }
}

fn key_decoders(key: &[u8]) {
    if let Some((kind, id)) = keys::deletion_from(key) {
        assert_eq!(keys::deletion(kind, id).as_slice(), key);
    }
    if let Some(user) = keys::user_from(key) {
        assert_eq!(keys::user(user).as_slice(), key);
    }
    let _ = keys::uuid_from(key);
    if let Some((issuer, id)) = keys::external_user_from(key) {
        assert_eq!(keys::external_user(issuer, id), key);
    }
    if let Some((at, user)) = keys::demo_expiry_from(key) {
        assert_eq!(keys::demo_expiry(at, user).as_slice(), key);
    }
    let _ = keys::user_api_key_from(key);
    let _ = keys::user_session_id(key);
    let _ = keys::user_track_id(key);
    let _ = keys::message_seq(key);
}
