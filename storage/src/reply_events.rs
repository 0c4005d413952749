//! Finished replies' events, so a client that comes back gets exactly what
//! it missed (API.md §7, "Positions, resume and several sockets"). One
//! record per reply, written once, in the same flush as the stored reply
//! (never a write per token); swept once its reply finished longer ago than
//! `ws.resume_window`, and removed with its session.
//!
//! A token is kept as its length in the reply's text, which the log holds
//! once: the actors rebuild its frame, byte for byte, from it. Other events
//! are opaque text here (this crate knows no wire types): the actors encode
//! them once and store them in the compact form they define.

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
    /// The text of every token, in order.
    pub text: String,
    /// The numbered events, `events[i]` carrying `seq` `i + 1`.
    pub events: Vec<LoggedEvent>,
    /// What ended the reply, as sent (an `error`, then `done`), replayed
    /// after the events whatever the resume's position.
    pub ending: Vec<String>,
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
    const VERSION: u8 = 1;
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

    /// The log of a reply of `session`, if one is kept.
    pub fn get(&self, session: Uuid, reply: Uuid) -> Result<Option<ReplyLog>> {
        let log: Option<ReplyLog> =
            codec::get(&self.store.trees().reply_logs, &keys::reply_log(reply))?;
        Ok(log.filter(|log| log.session_id == session))
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
            text: "Hello there".into(),
            events: vec![LoggedEvent::Token(5), LoggedEvent::Token(6)],
            ending: vec![r#"{"type":"done"}"#.into()],
        }
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
        let kept = log(s, 1_200);
        logs.put_nowait(old, &kept).unwrap();
        // Started before the cut but finished after it: kept.
        logs.put_nowait(long, &log(s, 2_500)).unwrap();
        logs.put_nowait(new, &log(s, 5_100)).unwrap();
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
