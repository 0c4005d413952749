//! Finished replies' events, as they were sent, so a client that comes back
//! gets exactly what it missed (API.md §7, "Positions, resume and several
//! sockets"). One record per reply, written once, in the same flush as the
//! stored reply (never a write per token); swept once its reply finished
//! longer ago than `ws.resume_window`, and removed with its session.
//!
//! The frames are opaque text here (this crate knows no wire types): the
//! actors encode them once and store them as sent.

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
    /// Who asked (the session's owner).
    pub user_id: UserId,
    /// When the reply was stored (Unix ms): the resume window counts from here.
    pub finished_at: u64,
    /// The numbered events, `events[i]` carrying `seq` `i + 1`, each in the
    /// compact form the actors define (what makes the frame as sent).
    pub events: Vec<String>,
    /// What ended the reply, as sent (an `error`, then `done`), replayed
    /// after the events whatever the resume's position.
    pub ending: Vec<String>,
}

impl Record for ReplyLog {
    const TREE: &'static str = "reply_events";
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
    pub fn put_nowait(&self, session: Uuid, reply: Uuid, log: &ReplyLog) -> Result<()> {
        let t = self.store.trees();
        // The index first: an index entry without its log is dropped by the
        // sweep; a log without its entry would never be swept.
        t.reply_events_by_time.insert(
            keys::reply_events_by_time(log.finished_at, session, reply),
            &[],
        )?;
        t.reply_events
            .insert(keys::reply_events(session, reply), codec::encode(log)?)?;
        Ok(())
    }

    /// Forgets a reply's log (its session went while it was stored).
    pub fn remove(&self, session: Uuid, reply: Uuid) -> Result<()> {
        self.store
            .trees()
            .reply_events
            .remove(keys::reply_events(session, reply))?;
        Ok(())
    }

    /// The log of a reply of `session`, if one is kept.
    pub fn get(&self, session: Uuid, reply: Uuid) -> Result<Option<ReplyLog>> {
        codec::get(
            &self.store.trees().reply_events,
            &keys::reply_events(session, reply),
        )
    }

    /// Removes the logs of replies that finished before `before` (Unix ms),
    /// and index entries whose log went with its session. Durable at the
    /// next flush (losing a sweep to a crash only delays it). Returns how
    /// many logs were removed.
    pub fn sweep(&self, before: u64) -> Result<usize> {
        let t = self.store.trees();
        let end = keys::reply_events_by_time(before, Uuid::nil(), Uuid::nil());
        let mut removed = 0;
        for key in t.reply_events_by_time.range(..end).keys() {
            let key = key?;
            if let Some((_, log_key)) = keys::reply_events_by_time_from(&key) {
                if t.reply_events.remove(log_key)?.is_some() {
                    removed += 1;
                }
            }
            t.reply_events_by_time.remove(key)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(finished_at: u64) -> ReplyLog {
        ReplyLog {
            user_id: UserId::new(),
            finished_at,
            events: vec![r#"{"seq":1}"#.into(), r#"{"seq":2}"#.into()],
            ending: vec![r#"{"type":"done"}"#.into()],
        }
    }

    #[tokio::test]
    async fn logs_are_kept_per_session_and_swept_by_age() {
        let store = Store::temporary().unwrap();
        let logs = store.reply_events();
        let (s, old, new) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        logs.put_nowait(s, old, &log(1_000)).unwrap();
        logs.put_nowait(s, new, &log(5_000)).unwrap();
        let kept = log(1_000);
        logs.put_nowait(s, old, &kept).unwrap();
        assert_eq!(logs.get(s, old).unwrap(), Some(kept));
        // Another session's id finds nothing.
        assert_eq!(logs.get(Uuid::now_v7(), old).unwrap(), None);
        assert_eq!(logs.sweep(2_000).unwrap(), 1);
        assert_eq!(logs.get(s, old).unwrap(), None);
        assert!(logs.get(s, new).unwrap().is_some());
        assert_eq!(logs.sweep(2_000).unwrap(), 0);
    }

    #[tokio::test]
    async fn a_deleted_session_takes_its_logs_and_the_sweep_drops_their_index() {
        let store = Store::temporary().unwrap();
        let session = store
            .sessions()
            .create(UserId::new(), "t".into(), None)
            .await
            .unwrap();
        let reply = Uuid::now_v7();
        store
            .reply_events()
            .put_nowait(session.id, reply, &log(1_000))
            .unwrap();
        store.sessions().delete(session.id).await.unwrap();
        assert_eq!(store.reply_events().get(session.id, reply).unwrap(), None);
        assert_eq!(store.trees().reply_events_by_time.len(), 1);
        assert_eq!(store.reply_events().sweep(u64::MAX).unwrap(), 0);
        assert!(store.trees().reply_events_by_time.is_empty());
    }
}
