//! The `meta` tree: the schema version, and the migrations run at open.
//!
//! Each migration brings the database from version `n - 1` to `n`; they run
//! in order, each recording its version when done, so an interrupted upgrade
//! resumes where it stopped.

use uuid::Uuid;

use crate::codec::{self, Record};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::messages::find_recent_in;
use crate::reply_events::{ReplyLogV1, ReplyLogV2};
use crate::sessions::{Message, MessageV1};
use crate::store::Trees;
use crate::users::{User, UserV1};
use crate::Replay;

/// The schema this build writes.
pub const CURRENT_SCHEMA_VERSION: u32 = 5;

type Migration = fn(&sled::Db, &Trees) -> Result<()>;

/// `MIGRATIONS[i]` upgrades a database from version `i + 1` to `i + 2`.
const MIGRATIONS: &[Migration] = &[
    drop_reply_events_v1,
    users_gain_external,
    replies_keep_their_events,
    markers_per_session,
];

/// 1 → 2: finished replies' logs moved from `reply_events` (keyed by
/// session and reply, with a time index in `reply_events_by_time`) to
/// `reply_logs` (keyed by reply, tokens kept as lengths of the reply's
/// text). Logs live only `ws.resume_window` (an hour by default), so the old
/// ones are dropped rather than converted: a resume of a reply that finished
/// before the upgrade is `resume_unavailable`, and the client reads the
/// reply from the history instead.
fn drop_reply_events_v1(db: &sled::Db, _: &Trees) -> Result<()> {
    for name in ["reply_events", "reply_events_by_time"] {
        db.drop_tree(name)?;
    }
    Ok(())
}

/// 2 → 3: user records gain `external` (none for every user stored before:
/// users from another issuer did not exist). Each record is rewritten in
/// place; a record already in its version-2 encoding (an interrupted run)
/// is left alone, so
/// running it twice is harmless.
fn users_gain_external(_: &sled::Db, trees: &Trees) -> Result<()> {
    for entry in trees.users.iter() {
        let (key, value) = entry?;
        if value.first() == Some(&User::VERSION) {
            continue;
        }
        let old: UserV1 = match value.split_first() {
            Some((1, body)) => postcard::from_bytes(body).map_err(|e| {
                StorageError::corrupt("users", format!("undecodable version-1 user: {e}"))
            })?,
            _ => return Err(StorageError::corrupt("users", "unknown record version")),
        };
        trees.users.insert(key, codec::encode(&User::from(old))?)?;
    }
    Ok(())
}

/// 3 → 4: a finished reply's events move from the `reply_logs` tree into
/// the reply's own message (one write per reply fewer). Every message is
/// rewritten in its version-2 encoding (`replay` none), then each log still
/// kept is folded into its reply, and the tree is dropped. A log whose
/// reply is gone, is not where the log says, or does not fit its text is
/// left out (its resume answered `resume_unavailable` before too). Messages
/// already rewritten and replies that already hold their events are left
/// alone, so an interrupted run resumes harmlessly.
fn replies_keep_their_events(db: &sled::Db, trees: &Trees) -> Result<()> {
    for entry in trees.messages.iter() {
        let (key, value) = entry?;
        if value.first() == Some(&MessageV1::VERSION) {
            let old: MessageV1 = codec::decode(&value)?;
            trees
                .messages
                .insert(key, codec::encode(&Message::from(old))?)?;
        }
    }
    if !db.tree_names().iter().any(|n| &n[..] == b"reply_logs") {
        return Ok(());
    }
    let logs = db.open_tree("reply_logs")?;
    for entry in logs.iter() {
        let (key, value) = entry?;
        let Some(reply) = keys::uuid_from(&key) else {
            continue;
        };
        // A log that cannot be read was of no use to a resume either.
        if let Some((message_key, replay)) = fold(trees, reply, &value) {
            codec::update::<Message>(&trees.messages, &message_key, |m| {
                m.replay.is_none() && {
                    m.replay = Some(replay.clone());
                    true
                }
            })?;
        }
    }
    db.drop_tree("reply_logs")?;
    Ok(())
}

/// Where an old log's reply is, and its events as the reply keeps them.
fn fold(trees: &Trees, reply: Uuid, value: &[u8]) -> Option<(Vec<u8>, Replay)> {
    let (session, seq, copy, finished_at, events, ending) = match *value.first()? {
        ReplyLogV1::VERSION => {
            let log: ReplyLogV1 = codec::decode(value).ok()?;
            // No place kept: found among its session's messages.
            let seq = find_recent_in(&trees.messages, log.session_id, reply, 0)
                .ok()??
                .seq;
            let copy = Some(log.text);
            (
                log.session_id,
                seq,
                copy,
                log.finished_at,
                log.events,
                log.ending,
            )
        }
        ReplyLogV2::VERSION => {
            let log: ReplyLogV2 = codec::decode(value).ok()?;
            (
                log.session_id,
                log.seq,
                None,
                log.finished_at,
                log.events,
                log.ending,
            )
        }
        _ => return None,
    };
    let replay = Replay {
        finished_at,
        events,
        ending,
        usage: None,
    };
    let key = keys::message(session, seq).to_vec();
    let message: Message = codec::get(&trees.messages, &key).ok()??;
    let sent = replay.sent_text(&message.text)?;
    let fits = message.id == reply && copy.is_none_or(|c| c == sent);
    fits.then_some((key, replay))
}

/// 4 → 5: a streaming marker per session (its value the lowest number a
/// reply of it may have streamed at since the start), not per reply
/// (session ‖ number, empty): each session's per-reply markers become one
/// at the lowest number they held, which the start then reads from. The
/// session's marker is written before the per-reply ones go, so an
/// interrupted run loses none, and running it twice is harmless. A build
/// of schema 4 would not read the new markers (it would drop them and leave
/// an interrupted reply `streaming`): the version is what refuses it.
fn markers_per_session(_: &sled::Db, trees: &Trees) -> Result<()> {
    let mut lowest: std::collections::BTreeMap<[u8; 16], u64> = Default::default();
    let mut per_reply = Vec::new();
    for key in trees.messages_streaming.iter().keys() {
        let key = key?;
        // Session id ‖ number; anything else (a session's marker, from an
        // interrupted run) stays as it is.
        let Some((session, seq)) = key.split_first_chunk::<16>() else {
            continue;
        };
        let Ok(seq) = <[u8; 8]>::try_from(seq) else {
            continue;
        };
        let seq = u64::from_be_bytes(seq);
        let from = lowest.entry(*session).or_insert(seq);
        *from = (*from).min(seq);
        per_reply.push(key);
    }
    for (session, from) in lowest {
        crate::messages::lower_marker(&trees.messages_streaming, session, from)?;
    }
    for key in per_reply {
        trees.messages_streaming.remove(key)?;
    }
    Ok(())
}

const _: () = assert!(MIGRATIONS.len() as u32 + 1 == CURRENT_SCHEMA_VERSION);

/// The version recorded in the database (0 for a database that has none).
pub(crate) fn schema_version(trees: &Trees) -> Result<u32> {
    match trees.meta.get(keys::META_SCHEMA_VERSION)? {
        None => Ok(0),
        Some(bytes) => {
            let raw: [u8; 4] = bytes
                .as_ref()
                .try_into()
                .map_err(|_| StorageError::corrupt("meta", "schema_version is not 4 bytes"))?;
            Ok(u32::from_be_bytes(raw))
        }
    }
}

fn set_schema_version(trees: &Trees, version: u32) -> Result<()> {
    trees
        .meta
        .insert(keys::META_SCHEMA_VERSION, &version.to_be_bytes())?;
    Ok(())
}

/// Brings the database to [`CURRENT_SCHEMA_VERSION`]. A new database is
/// stamped with it; an older one is migrated; a newer one is refused.
pub(crate) fn migrate(db: &sled::Db, trees: &Trees) -> Result<()> {
    let found = schema_version(trees)?;
    if found > CURRENT_SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            found,
            supported: CURRENT_SCHEMA_VERSION,
        });
    }
    if found == 0 {
        // Nothing stored yet is older than the current layout: a database
        // without a version is a new one (every tree was just created).
        if trees.users.is_empty() {
            return set_schema_version(trees, CURRENT_SCHEMA_VERSION);
        }
        return Err(StorageError::corrupt(
            "meta",
            "records exist but no schema_version is recorded",
        ));
    }
    for version in found..CURRENT_SCHEMA_VERSION {
        tracing::info!(from = version, to = version + 1, "migrating storage");
        MIGRATIONS[(version - 1) as usize](db, trees)?;
        set_schema_version(trees, version + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn a_new_database_is_stamped_current() {
        let store = Store::temporary().unwrap();
        assert_eq!(store.schema_version().unwrap(), CURRENT_SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let store = Store::temporary().unwrap();
        set_schema_version(store.trees(), CURRENT_SCHEMA_VERSION + 1).unwrap();
        let err = migrate(store.db(), store.trees()).unwrap_err();
        assert!(matches!(err, StorageError::SchemaTooNew { .. }), "{err:?}");
    }

    #[test]
    fn version_1_reply_logs_are_dropped() {
        let store = Store::temporary().unwrap();
        let old = store.db().open_tree("reply_events").unwrap();
        old.insert(b"k", b"v").unwrap();
        set_schema_version(store.trees(), 1).unwrap();
        migrate(store.db(), store.trees()).unwrap();
        assert_eq!(
            schema_version(store.trees()).unwrap(),
            CURRENT_SCHEMA_VERSION
        );
        let names = store.db().tree_names();
        assert!(
            !names.iter().any(|n| &n[..] == b"reply_events"),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| &n[..] == b"reply_events_by_time"));
    }

    #[test]
    fn version_1_users_gain_no_external_identity() {
        #[derive(serde::Serialize)]
        struct V1<'a> {
            id: crate::UserId,
            email: &'a str,
            password_hash: &'a str,
            is_active: bool,
            is_demo: bool,
            demo_expires_at: Option<u64>,
            created_at: u64,
        }
        let store = Store::temporary().unwrap();
        let id = crate::UserId::new();
        let mut old = vec![1u8];
        old.extend(
            postcard::to_stdvec(&V1 {
                id,
                email: "ann@example.com",
                password_hash: "hash",
                is_active: false,
                is_demo: true,
                demo_expires_at: Some(77),
                created_at: 5,
            })
            .unwrap(),
        );
        let trees = store.trees();
        trees.users.insert(keys::user(id), old).unwrap();
        set_schema_version(trees, 1).unwrap();
        migrate(store.db(), trees).unwrap();
        assert_eq!(schema_version(trees).unwrap(), CURRENT_SCHEMA_VERSION);
        let user = store.users().get(id).unwrap().unwrap();
        assert_eq!(
            (
                user.email.as_str(),
                user.is_active,
                user.is_demo,
                user.demo_expires_at,
                user.created_at,
                user.external.clone()
            ),
            ("ann@example.com", false, true, Some(77), 5, None)
        );
        // A second run (an interrupted upgrade resumed) changes nothing.
        users_gain_external(store.db(), trees).unwrap();
        assert_eq!(store.users().get(id).unwrap().unwrap(), user);
    }

    #[test]
    fn version_3_replies_take_in_their_logs() {
        use crate::reply_events::LoggedEvent;
        use crate::{MessageStatus, Role, UserId};
        let store = Store::temporary().unwrap();
        let (trees, db) = (store.trees(), store.db());
        let session = Uuid::now_v7();
        let v1 = |seq: u64, role: Role, text: &str| {
            let m = MessageV1 {
                id: Uuid::now_v7(),
                session_id: session,
                seq,
                role,
                text: text.into(),
                status: MessageStatus::Complete,
                tools: vec![],
                created_at: 7,
            };
            let id = m.id;
            trees
                .messages
                .insert(keys::message(session, seq), codec::encode(&m).unwrap())
                .unwrap();
            id
        };
        let question = v1(1, Role::User, "hi");
        let by_place = v1(2, Role::Assistant, "Hello there");
        let by_copy = v1(3, Role::Assistant, "Good day");
        let misfit = v1(4, Role::Assistant, "Hi");
        let unlogged = v1(5, Role::Assistant, "Bye");
        let events = |lens: &[u32]| lens.iter().map(|&l| LoggedEvent::Token(l)).collect();
        let logs = db.open_tree("reply_logs").unwrap();
        let put = |id: Uuid, bytes: Vec<u8>| logs.insert(id.as_bytes(), bytes).unwrap();
        let v2 = |seq: u64, lens: &[u32]| ReplyLogV2 {
            session_id: session,
            user_id: UserId::new(),
            finished_at: 100 + seq,
            seq,
            events: events(lens),
            ending: vec![format!("done {seq}")],
        };
        put(by_place, codec::encode(&v2(2, &[5, 6])).unwrap());
        let copy = ReplyLogV1 {
            session_id: session,
            user_id: UserId::new(),
            finished_at: 103,
            text: "Good day".into(),
            events: events(&[4, 4]),
            ending: vec!["done 3".into()],
        };
        put(by_copy, codec::encode(&copy).unwrap());
        // Lengths past its text; a log whose reply is gone; garbage.
        put(misfit, codec::encode(&v2(4, &[5])).unwrap());
        put(Uuid::now_v7(), codec::encode(&v2(9, &[1])).unwrap());
        put(Uuid::now_v7(), vec![9, 9, 9]);
        set_schema_version(trees, 3).unwrap();
        migrate(db, trees).unwrap();
        assert_eq!(schema_version(trees).unwrap(), CURRENT_SCHEMA_VERSION);
        assert!(!db.tree_names().iter().any(|n| &n[..] == b"reply_logs"));
        let messages = store.messages().list(session, 0, 10).unwrap().items;
        let replays: Vec<_> = messages.iter().map(|m| (m.id, m.replay.clone())).collect();
        let replay = |finished_at, lens: &[u32], done: &str| Replay {
            finished_at,
            events: events(lens),
            ending: vec![done.into()],
            usage: None,
        };
        assert_eq!(
            replays,
            vec![
                (question, None),
                (by_place, Some(replay(102, &[5, 6], "done 2"))),
                (by_copy, Some(replay(103, &[4, 4], "done 3"))),
                (misfit, None),
                (unlogged, None),
            ]
        );
        assert_eq!(messages[1].text, "Hello there");
        // A second run (an interrupted upgrade resumed) changes nothing.
        replies_keep_their_events(db, trees).unwrap();
        assert_eq!(
            store.messages().list(session, 0, 10).unwrap().items,
            messages
        );
    }

    #[test]
    fn a_current_database_is_left_alone() {
        let store = Store::temporary().unwrap();
        migrate(store.db(), store.trees()).unwrap();
        assert_eq!(
            schema_version(store.trees()).unwrap(),
            CURRENT_SCHEMA_VERSION
        );
    }

    #[tokio::test]
    async fn markers_of_one_reply_become_their_sessions_at_the_lowest_number() {
        use crate::{MessageStatus, Role, UserId};
        let store = Store::temporary().unwrap();
        let (db, trees) = (store.db(), store.trees());
        let sessions = store.sessions();
        let a = sessions
            .create(UserId::new(), "a".into(), None)
            .await
            .unwrap();
        let b = sessions
            .create(UserId::new(), "b".into(), None)
            .await
            .unwrap();
        // Replies left streaming by a crash of a schema-4 build, each with
        // its own marker: two in `a` (numbers 2 and 4), one in `b`.
        let msgs = store.messages();
        for (session, streaming) in [(a.id, [false, true, false, true]), (b.id, [true; 4])] {
            for streaming in streaming {
                let status = if streaming {
                    MessageStatus::Streaming
                } else {
                    MessageStatus::Complete
                };
                msgs.append(session, Role::Assistant, "x".into(), status, vec![])
                    .await
                    .unwrap();
            }
        }
        // (Appending marked the sessions the new way: start from the old.)
        trees.messages_streaming.clear().unwrap();
        for (session, seq) in [(a.id, 4), (a.id, 2), (b.id, 3)] {
            trees
                .messages_streaming
                .insert(keys::message(session, seq), &[])
                .unwrap();
        }
        set_schema_version(trees, 4).unwrap();
        migrate(db, trees).unwrap();
        assert_eq!(schema_version(trees).unwrap(), CURRENT_SCHEMA_VERSION);
        let markers: Vec<_> = trees
            .messages_streaming
            .iter()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        let marker =
            |session: Uuid, from: u64| (session.as_bytes().to_vec(), from.to_be_bytes().to_vec());
        let mut expected = vec![marker(a.id, 2), marker(b.id, 3)];
        expected.sort();
        assert_eq!(markers, expected);
        // Run again (an interrupted migration): nothing changes.
        markers_per_session(db, trees).unwrap();
        assert_eq!(trees.messages_streaming.len(), 2);
        // The start fails what the old markers covered: a's 2 and 4, b's
        // 3 and 4 (b's 1 and 2 had no marker: left as they were).
        assert_eq!(msgs.fail_interrupted().unwrap(), 4);
        use crate::messages::tests::status;
        assert_eq!(status(&msgs, a.id, 2), MessageStatus::Failed);
        assert_eq!(status(&msgs, a.id, 4), MessageStatus::Failed);
        assert_eq!(status(&msgs, b.id, 2), MessageStatus::Streaming);
        assert_eq!(status(&msgs, b.id, 3), MessageStatus::Failed);
        assert!(trees.messages_streaming.is_empty());
    }
}
