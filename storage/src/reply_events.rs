//! Finished replies' events, so a client that comes back gets exactly what
//! it missed (API.md §7, "Positions, resume and several sockets"). One
//! record per reply, written once, in the same flush as the stored reply
//! (never a write per token); swept once its reply finished longer ago than
//! `ws.resume_window`, and removed with its session.
//!
//! A token is kept as its length in the reply's text, and the text is not
//! kept here at all: it is the reply's own (its message in `messages`, whose
//! place the log records), read back when the log is. The actors rebuild
//! each token's frame, byte for byte, from it. Other events are opaque text
//! here (this crate knows no wire types): the actors encode them once and
//! store them in the compact form they define.
//!
//! Version 1 of the record kept a copy of the text; such records (written
//! before the upgrade, within the last `ws.resume_window`) are still read.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{self, Record};
use crate::error::Result;
use crate::ids::UserId;
use crate::keys;
use crate::store::Store;

/// A finished reply's events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyLog {
    /// The reply's session: a resume finds only its own session's replies.
    pub session_id: Uuid,
    /// Who asked (the session's owner).
    pub user_id: UserId,
    /// When the reply was stored (Unix ms): the resume window counts from here.
    pub finished_at: u64,
    /// The reply's place in its session (its key in `messages`).
    pub seq: u64,
    /// The text of every token, in order: the start of the reply's stored
    /// text. Not stored with the log (the message holds it); [`ReplyEvents::get`]
    /// fills it in.
    #[serde(skip)]
    pub text: String,
    /// The numbered events, `events[i]` carrying `seq` `i + 1`.
    pub events: Vec<LoggedEvent>,
    /// What ended the reply, as sent (an `error`, then `done`), replayed
    /// after the events whatever the resume's position.
    pub ending: Vec<String>,
}

/// Version 1 of [`ReplyLog`]: the text kept in the log itself.
#[derive(Serialize, Deserialize)]
struct ReplyLogV1 {
    session_id: Uuid,
    user_id: UserId,
    finished_at: u64,
    text: String,
    events: Vec<LoggedEvent>,
    ending: Vec<String>,
}

impl Record for ReplyLogV1 {
    const TREE: &'static str = "reply_logs";
    const VERSION: u8 = 1;
}

/// One numbered event of a [`ReplyLog`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoggedEvent {
    /// A token: the next this many bytes of the log's `text`.
    Token(u32),
    /// Any other event, in the compact form the actors define.
    Frame(String),
}

impl Record for ReplyLog {
    const TREE: &'static str = "reply_logs";
    const VERSION: u8 = 2;
}

pub struct ReplyEvents<'a> {
    store: &'a Store,
}

impl<'a> ReplyEvents<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        ReplyEvents { store }
    }

    /// Keeps a finished reply's log. Not durable: it rides on the flush of
    /// the reply's own update, which follows.
    pub fn put_nowait(&self, reply: Uuid, log: &ReplyLog) -> Result<()> {
        self.store
            .trees()
            .reply_logs
            .insert(keys::reply_log(reply), codec::encode(log)?)?;
        Ok(())
    }

    /// Forgets a reply's log (its session went while it was stored).
    pub fn remove(&self, reply: Uuid) -> Result<()> {
        self.store
            .trees()
            .reply_logs
            .remove(keys::reply_log(reply))?;
        Ok(())
    }

    /// The log of a reply of `session`, if one is kept, with its text (read
    /// from the reply's message; no log if that is gone).
    pub fn get(&self, session: Uuid, reply: Uuid) -> Result<Option<ReplyLog>> {
        let Some(bytes) = self.store.trees().reply_logs.get(keys::reply_log(reply))? else {
            return Ok(None);
        };
        if bytes.first() == Some(&ReplyLogV1::VERSION) {
            let v1: ReplyLogV1 = codec::decode(&bytes)?;
            return Ok((v1.session_id == session).then_some(ReplyLog {
                session_id: v1.session_id,
                user_id: v1.user_id,
                finished_at: v1.finished_at,
                seq: 0,
                text: v1.text,
                events: v1.events,
                ending: v1.ending,
            }));
        }
        let mut log: ReplyLog = codec::decode(&bytes)?;
        if log.session_id != session {
            return Ok(None);
        }
        let Some(message) = self
            .store
            .messages()
            .get(session, log.seq)?
            .filter(|m| m.id == reply)
        else {
            return Ok(None);
        };
        // The tokens sent are the start of the stored text (a run keeps no
        // token it could not send, and the log is cut to what was sent).
        let sent = log.events.iter().fold(0usize, |sum, event| match event {
            LoggedEvent::Token(len) => sum.saturating_add(*len as usize),
            LoggedEvent::Frame(_) => sum,
        });
        log.text = message.text.get(..sent).unwrap_or(&message.text).to_owned();
        Ok(Some(log))
    }

    /// Removes the logs of replies that finished before `before` (Unix ms).
    /// Only replies that started before it can have, so the scan stops at
    /// the first key created after it. Durable at the next flush (losing a
    /// sweep to a crash only delays it). Returns how many were removed.
    pub fn sweep(&self, before: u64) -> Result<usize> {
        let tree = &self.store.trees().reply_logs;
        let mut removed = 0;
        for entry in tree.range(..keys::uuid_v7_floor(before)) {
            let (key, value) = entry?;
            // A log that cannot be read is of no use to a resume either.
            let expired =
                codec::decode::<ReplyLog>(&value).map_or(true, |l| l.finished_at < before);
            if expired && tree.remove(key)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(session: Uuid, finished_at: u64) -> ReplyLog {
        ReplyLog {
            session_id: session,
            user_id: UserId::new(),
            finished_at,
            seq: 2,
            text: "Hello there".into(),
            events: vec![LoggedEvent::Token(5), LoggedEvent::Token(6)],
            ending: vec![r#"{"type":"done"}"#.into()],
        }
    }

    /// Stores reply `id` as message `seq` of `session` with `text`, as a
    /// finished run leaves it.
    fn stored_reply(store: &Store, session: Uuid, seq: u64, id: Uuid, text: &str) {
        let message = crate::Message {
            id,
            session_id: session,
            seq,
            role: crate::Role::Assistant,
            text: text.into(),
            status: crate::MessageStatus::Complete,
            tools: vec![],
            created_at: 0,
        };
        store
            .trees()
            .messages
            .insert(
                keys::message(session, seq),
                codec::encode(&message).unwrap(),
            )
            .unwrap();
    }

    /// A reply id created at `millis` (Unix ms), as `Uuid::now_v7` makes them.
    fn reply_at(millis: u64) -> Uuid {
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            millis / 1000,
            (millis % 1000) as u32 * 1_000_000,
        );
        Uuid::new_v7(ts)
    }

    #[tokio::test]
    async fn logs_are_found_by_their_own_session_only_and_swept_by_finish_time() {
        let store = Store::temporary().unwrap();
        let logs = store.reply_events();
        let s = Uuid::now_v7();
        let (old, long, new) = (reply_at(1_000), reply_at(1_500), reply_at(5_000));
        for (seq, id) in [(2, old), (4, long), (6, new)] {
            stored_reply(&store, s, seq, id, "Hello there");
        }
        let kept = log(s, 1_200);
        logs.put_nowait(old, &kept).unwrap();
        // Started before the cut but finished after it: kept.
        logs.put_nowait(
            long,
            &ReplyLog {
                seq: 4,
                ..log(s, 2_500)
            },
        )
        .unwrap();
        logs.put_nowait(
            new,
            &ReplyLog {
                seq: 6,
                ..log(s, 5_100)
            },
        )
        .unwrap();
        assert_eq!(logs.get(s, old).unwrap(), Some(kept));
        // Another session's id finds nothing.
        assert_eq!(logs.get(Uuid::now_v7(), old).unwrap(), None);
        assert_eq!(logs.sweep(2_000).unwrap(), 1);
        assert_eq!(logs.get(s, old).unwrap(), None);
        assert!(logs.get(s, long).unwrap().is_some());
        assert!(logs.get(s, new).unwrap().is_some());
        assert_eq!(logs.sweep(2_000).unwrap(), 0);
        assert_eq!(logs.sweep(3_000).unwrap(), 1);
        assert!(logs.get(s, new).unwrap().is_some());
    }

    #[tokio::test]
    async fn the_text_is_read_from_the_reply_not_kept_twice() {
        let store = Store::temporary().unwrap();
        let logs = store.reply_events();
        let s = Uuid::now_v7();
        let reply = Uuid::now_v7();
        // The stored text may run past what was sent (nothing here does,
        // but the log says how much was): the tokens' part is taken.
        stored_reply(&store, s, 2, reply, "Hello there, and more");
        logs.put_nowait(reply, &log(s, 1_000)).unwrap();
        let raw = store
            .trees()
            .reply_logs
            .get(keys::reply_log(reply))
            .unwrap()
            .unwrap();
        assert!(
            !raw.windows(5).any(|w| w == b"Hello"),
            "no copy of the text"
        );
        assert_eq!(logs.get(s, reply).unwrap().unwrap().text, "Hello there");
        // Another message at that place (not the reply): no log.
        stored_reply(&store, s, 2, Uuid::now_v7(), "Hello there");
        assert_eq!(logs.get(s, reply).unwrap(), None);
        // The message gone: no log.
        store.trees().messages.remove(keys::message(s, 2)).unwrap();
        assert_eq!(logs.get(s, reply).unwrap(), None);
    }

    #[tokio::test]
    async fn a_log_of_the_first_version_is_read_with_its_own_text() {
        let store = Store::temporary().unwrap();
        let s = Uuid::now_v7();
        let reply = Uuid::now_v7();
        let v1 = ReplyLogV1 {
            session_id: s,
            user_id: UserId::new(),
            finished_at: 1_000,
            text: "Hello there".into(),
            events: vec![LoggedEvent::Token(5), LoggedEvent::Token(6)],
            ending: vec![r#"{"type":"done"}"#.into()],
        };
        store
            .trees()
            .reply_logs
            .insert(keys::reply_log(reply), codec::encode(&v1).unwrap())
            .unwrap();
        // No message needed: the text is in the record.
        let read = store.reply_events().get(s, reply).unwrap().unwrap();
        assert_eq!(read.text, "Hello there");
        assert_eq!(read.events, v1.events);
        assert_eq!(read.ending, v1.ending);
        assert_eq!(
            store.reply_events().get(Uuid::now_v7(), reply).unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_deleted_session_takes_the_logs_of_its_replies() {
        let store = Store::temporary().unwrap();
        let session = store
            .sessions()
            .create(UserId::new(), "t".into(), None)
            .await
            .unwrap();
        let (_, reply) = store
            .messages()
            .append_exchange_nowait(session.id, "hi".into())
            .unwrap();
        store
            .reply_events()
            .put_nowait(reply.id, &log(session.id, 1_000))
            .unwrap();
        store.sessions().delete(session.id).await.unwrap();
        assert_eq!(
            store.reply_events().get(session.id, reply.id).unwrap(),
            None
        );
        assert!(store.trees().reply_logs.is_empty());
    }
}
