//! Sessions (conversations) and their messages.
//!
//! A session's message count is derived from the last key of its messages
//! (seq numbers start at 1 and never repeat), never stored, so appending a
//! message is one insert with no read-modify-write of the session.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{self, Record};
use crate::deletions::Deletion;
use crate::error::{Result, StorageError};
use crate::ids::UserId;
use crate::keys;
use crate::reply_events::Replay;
use crate::store::Store;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub user_id: UserId,
    pub title: String,
    pub track_id: Option<Uuid>,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Unix milliseconds: creation or the last rename. A session's last
    /// activity also counts its newest message ([`Sessions::activity`]):
    /// a new message does not rewrite the session.
    pub updated_at: u64,
}

/// A session's message count and last activity (see [`Sessions::activity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activity {
    pub message_count: u64,
    /// Unix milliseconds.
    pub updated_at: u64,
}

impl Record for Session {
    const TREE: &'static str = "sessions";
    const VERSION: u8 = 1;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageStatus {
    Complete,
    Streaming,
    Cancelled,
    Failed,
}

/// One tool invocation recorded on an assistant message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolUse {
    pub tool: String,
    /// JSON text of the arguments.
    pub args: String,
    pub success: bool,
    /// JSON text of the result.
    pub result: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: Uuid,
    pub session_id: Uuid,
    /// 1, 2, 3, … within the session.
    pub seq: u64,
    pub role: Role,
    pub text: String,
    pub status: MessageStatus,
    pub tools: Vec<ToolUse>,
    /// Unix milliseconds.
    pub created_at: u64,
    /// A finished reply's events, for resumes (see [`crate::reply_events`]);
    /// none for questions, streaming replies and replies stored before
    /// schema 4 without a log.
    pub replay: Option<Replay>,
}

impl Record for Message {
    const TREE: &'static str = "messages";
    const VERSION: u8 = 2;
}

/// Version 1 of [`Message`], before replies kept their events (schema 4
/// rewrites every one, see `meta`).
#[derive(Serialize, Deserialize)]
pub(crate) struct MessageV1 {
    pub id: Uuid,
    pub session_id: Uuid,
    pub seq: u64,
    pub role: Role,
    pub text: String,
    pub status: MessageStatus,
    pub tools: Vec<ToolUse>,
    pub created_at: u64,
}

impl Record for MessageV1 {
    const TREE: &'static str = "messages";
    const VERSION: u8 = 1;
}

impl From<MessageV1> for Message {
    fn from(old: MessageV1) -> Self {
        Message {
            id: old.id,
            session_id: old.session_id,
            seq: old.seq,
            role: old.role,
            text: old.text,
            status: old.status,
            tools: old.tools,
            created_at: old.created_at,
            replay: None,
        }
    }
}

/// One page of a listing, and the cursor of the next one.
#[derive(Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

pub struct Sessions<'a> {
    store: &'a Store,
}

impl<'a> Sessions<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Sessions { store }
    }

    /// Creates a session. Durable when it returns.
    pub async fn create(
        &self,
        user: UserId,
        title: String,
        track_id: Option<Uuid>,
    ) -> Result<Session> {
        let now = crate::now_millis();
        let session = Session {
            id: Uuid::now_v7(),
            user_id: user,
            title,
            track_id,
            created_at: now,
            updated_at: now,
        };
        let t = self.store.trees();
        t.sessions
            .insert(keys::session(session.id), codec::encode(&session)?)?;
        t.sessions_by_user.insert(
            keys::user_session(user, session.created_at, session.id),
            &[],
        )?;
        self.store.durable().await?;
        Ok(session)
    }

    pub fn get(&self, id: Uuid) -> Result<Option<Session>> {
        codec::get(&self.store.trees().sessions, &keys::session(id))
    }

    /// The session if it exists and belongs to `user` (else `None`: another
    /// user's session is indistinguishable from a missing one).
    pub fn get_owned(&self, user: UserId, id: Uuid) -> Result<Option<Session>> {
        Ok(self.get(id)?.filter(|s| s.user_id == user))
    }

    /// A user's sessions, newest first, `limit` at a time; `before` is the
    /// `next` cursor of the previous page.
    pub fn list(&self, user: UserId, before: Option<&str>, limit: usize) -> Result<Page<Session>> {
        let t = self.store.trees();
        let prefix = keys::user(user);
        let end = match before {
            Some(cursor) => {
                let suffix = keys::cursor_decode(cursor).ok_or(StorageError::BadCursor)?;
                let mut end = prefix.to_vec();
                end.extend_from_slice(&suffix);
                end
            }
            None => keys::prefix_end(&prefix),
        };
        let mut items = Vec::with_capacity(limit.min(100));
        let mut last_key = None;
        let mut next = None;
        for entry in t.sessions_by_user.range(prefix.to_vec()..end).rev() {
            let (key, _) = entry?;
            if items.len() == limit {
                // Something older remains: the page ends at the last key taken.
                next = last_key.map(|k: sled::IVec| keys::cursor_encode(&k[16..]));
                break;
            }
            let id = keys::user_session_id(&key)
                .ok_or_else(|| StorageError::corrupt("sessions_by_user", "bad key"))?;
            if let Some(session) = self.get(id)? {
                items.push(session);
                last_key = Some(key);
            }
        }
        Ok(Page { items, next })
    }

    /// Renames a session. Durable when it returns.
    pub async fn rename(&self, id: Uuid, title: String) -> Result<Session> {
        self.update(id, |s| {
            s.title = title.clone();
            s.updated_at = crate::now_millis();
        })
        .await
    }

    /// How many messages `session` has and when it was last active: its
    /// `updated_at` (creation, rename) or its newest message's creation,
    /// whichever is later. One read of the newest message.
    pub fn activity(&self, session: &Session) -> Result<Activity> {
        let last = self
            .store
            .trees()
            .messages
            .scan_prefix(keys::session(session.id))
            .next_back()
            .transpose()?;
        let Some((key, value)) = last else {
            return Ok(Activity {
                message_count: 0,
                updated_at: session.updated_at,
            });
        };
        let newest: Message = codec::decode(&value)?;
        Ok(Activity {
            message_count: keys::message_seq(&key).unwrap_or(0),
            updated_at: session.updated_at.max(newest.created_at),
        })
    }

    async fn update(&self, id: Uuid, change: impl Fn(&mut Session)) -> Result<Session> {
        let updated = codec::update(&self.store.trees().sessions, &keys::session(id), |s| {
            change(s);
            true
        })?
        .ok_or(StorageError::NotFound)?;
        self.store.durable().await?;
        Ok(updated)
    }

    /// Deletes a session and its messages. `false` if it did not exist.
    /// Durable when it returns.
    pub async fn delete(&self, id: Uuid) -> Result<bool> {
        if self.get(id)?.is_none() {
            return Ok(false);
        }
        // Marked first: a crash in the middle is finished at the next open.
        let mark = Deletion::Session(id);
        self.store.begin_deletion(mark)?;
        self.remove_by_id(id)?;
        self.store.end_deletion(mark)?;
        self.store.durable().await?;
        Ok(true)
    }

    /// Removes a session, whatever is left of it (its record may be gone
    /// already, its messages not); not waited on.
    pub(crate) fn remove_by_id(&self, id: Uuid) -> Result<()> {
        let index_key = self
            .get(id)?
            .map(|s| keys::user_session(s.user_id, s.created_at, id));
        match index_key {
            Some(key) => self.remove(&key, id),
            None => self.remove_contents(id),
        }
    }

    /// Deletes up to `limit` sessions last updated before `before` (Unix
    /// ms) with their messages (`storage.retention`): their ids, oldest
    /// activity first among those found. Durable when it returns. A session
    /// that cannot be read is left alone (and reported by the caller's
    /// other paths), never taken for idle.
    pub async fn delete_idle(&self, before: u64, limit: usize) -> Result<Vec<Uuid>> {
        let t = self.store.trees();
        let mut idle = Vec::new();
        for entry in t.sessions.iter() {
            let (_, value) = entry?;
            if let Ok(session) = codec::decode::<Session>(&value) {
                if let Some(at) = self.idle_since(&session, before) {
                    idle.push((at, session.id));
                }
            }
        }
        idle.sort_unstable();
        idle.truncate(limit);
        let mut deleted = Vec::with_capacity(idle.len());
        for (_, id) in idle {
            // Active since the scan (a question came in): it stays.
            match self.get(id)? {
                Some(s) if self.idle_since(&s, before).is_some() => {}
                _ => continue,
            }
            let mark = Deletion::Session(id);
            self.store.begin_deletion(mark)?;
            self.remove_by_id(id)?;
            self.store.end_deletion(mark)?;
            deleted.push(id);
        }
        if !deleted.is_empty() {
            self.store.durable().await?;
        }
        Ok(deleted)
    }

    /// When `session` was last active, if that is before `before` (a
    /// session whose newest message cannot be read is not idle).
    fn idle_since(&self, session: &Session, before: u64) -> Option<u64> {
        if session.updated_at >= before {
            return None;
        }
        let at = self.activity(session).ok()?.updated_at;
        (at < before).then_some(at)
    }

    /// Deletes every session of a user (when the user goes). Durable.
    pub async fn delete_all_for(&self, user: UserId) -> Result<usize> {
        let removed = self.remove_all_for(user)?;
        self.store.durable().await?;
        Ok(removed)
    }

    /// Removes every session of a user with its messages; not waited on.
    pub(crate) fn remove_all_for(&self, user: UserId) -> Result<usize> {
        let t = self.store.trees();
        let mut removed = 0;
        for index_key in t.sessions_by_user.scan_prefix(keys::user(user)).keys() {
            let index_key = index_key?;
            if let Some(id) = keys::user_session_id(&index_key) {
                self.remove(&index_key, id)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes a session's index entry, record, messages and streaming
    /// markers; not waited on.
    fn remove(&self, index_key: &[u8], id: Uuid) -> Result<()> {
        let t = self.store.trees();
        t.sessions_by_user.remove(index_key)?;
        self.remove_contents(id)
    }

    /// Removes a session's record, messages (its replies' events with
    /// them) and streaming markers.
    fn remove_contents(&self, id: Uuid) -> Result<()> {
        let t = self.store.trees();
        t.sessions.remove(keys::session(id))?;
        for key in t.messages_streaming.scan_prefix(keys::session(id)).keys() {
            t.messages_streaming.remove(key?)?;
        }
        for key in t.messages.scan_prefix(keys::session(id)).keys() {
            t.messages.remove(key?)?;
        }
        Ok(())
    }

    /// How many messages a session has (its last seq).
    pub fn message_count(&self, id: Uuid) -> Result<u64> {
        let last = self
            .store
            .trees()
            .messages
            .scan_prefix(keys::session(id))
            .keys()
            .next_back()
            .transpose()?;
        Ok(last.and_then(|k| keys::message_seq(&k)).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_get_owned_rename_delete() {
        let store = Store::temporary().unwrap();
        let (ann, bob) = (UserId::new(), UserId::new());
        let s = store
            .sessions()
            .create(ann, "First".into(), None)
            .await
            .unwrap();
        assert_eq!(store.sessions().get(s.id).unwrap(), Some(s.clone()));
        assert_eq!(
            store.sessions().get_owned(ann, s.id).unwrap(),
            Some(s.clone())
        );
        assert_eq!(store.sessions().get_owned(bob, s.id).unwrap(), None);
        let renamed = store
            .sessions()
            .rename(s.id, "Renamed".into())
            .await
            .unwrap();
        assert_eq!(renamed.title, "Renamed");
        assert!(renamed.updated_at >= s.updated_at);
        assert_eq!(store.sessions().message_count(s.id).unwrap(), 0);
        assert!(store.sessions().delete(s.id).await.unwrap());
        assert!(!store.sessions().delete(s.id).await.unwrap());
        assert_eq!(store.sessions().get(s.id).unwrap(), None);
        assert!(matches!(
            store.sessions().rename(s.id, "x".into()).await,
            Err(StorageError::NotFound)
        ));
    }

    #[tokio::test]
    async fn listing_is_newest_first_paged_and_per_user() {
        let store = Store::temporary().unwrap();
        let (ann, bob) = (UserId::new(), UserId::new());
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                store
                    .sessions()
                    .create(ann, format!("s{i}"), None)
                    .await
                    .unwrap()
                    .id,
            );
        }
        store
            .sessions()
            .create(bob, "bob's".into(), None)
            .await
            .unwrap();
        ids.reverse();
        let first = store.sessions().list(ann, None, 2).unwrap();
        assert_eq!(
            first.items.iter().map(|s| s.id).collect::<Vec<_>>(),
            ids[..2]
        );
        let second = store
            .sessions()
            .list(ann, first.next.as_deref(), 2)
            .unwrap();
        assert_eq!(
            second.items.iter().map(|s| s.id).collect::<Vec<_>>(),
            ids[2..4]
        );
        let third = store
            .sessions()
            .list(ann, second.next.as_deref(), 2)
            .unwrap();
        assert_eq!(
            third.items.iter().map(|s| s.id).collect::<Vec<_>>(),
            ids[4..]
        );
        assert_eq!(third.next, None);
        let all = store.sessions().list(ann, None, 50).unwrap();
        assert_eq!(all.items.len(), 5);
        assert_eq!(all.next, None);
        assert!(matches!(
            store.sessions().list(ann, Some("zz"), 2),
            Err(StorageError::BadCursor)
        ));
        assert_eq!(store.sessions().delete_all_for(ann).await.unwrap(), 5);
        assert!(store
            .sessions()
            .list(ann, None, 50)
            .unwrap()
            .items
            .is_empty());
        assert_eq!(store.sessions().list(bob, None, 50).unwrap().items.len(), 1);
    }

    #[tokio::test]
    async fn idle_sessions_go_oldest_first_with_their_messages() {
        let store = Store::temporary().unwrap();
        let ann = UserId::new();
        let mut ids = Vec::new();
        for title in ["old", "older", "fresh", "chatty"] {
            ids.push(
                store
                    .sessions()
                    .create(ann, title.into(), None)
                    .await
                    .unwrap()
                    .id,
            );
        }
        let (old, older, fresh, chatty) = (ids[0], ids[1], ids[2], ids[3]);
        let messages = store.messages();
        for id in [old, chatty] {
            messages
                .append(id, Role::User, "q".into(), MessageStatus::Complete, vec![])
                .await
                .unwrap();
        }
        // `old`'s message was its last activity, long ago.
        codec::update::<Message>(&store.trees().messages, &keys::message(old, 1), |m| {
            m.created_at = 2_000;
            true
        })
        .unwrap();
        // Created or renamed long ago: `older` before `old`'s message;
        // `chatty` before both, but its message is new; `fresh` now.
        for (id, at) in [(old, 1_500), (older, 1_000), (chatty, 500)] {
            codec::update::<Session>(&store.trees().sessions, &keys::session(id), |s| {
                s.updated_at = at;
                true
            })
            .unwrap();
        }
        let activity = |id| {
            let session = store.sessions().get(id).unwrap().unwrap();
            store.sessions().activity(&session).unwrap()
        };
        assert_eq!(
            activity(old),
            Activity {
                message_count: 1,
                updated_at: 2_000
            }
        );
        assert!(activity(chatty).updated_at > 2_000);
        let cutoff = crate::now_millis() - 60_000;
        let first = store.sessions().delete_idle(cutoff, 1).await.unwrap();
        assert_eq!(first, vec![older]);
        let rest = store.sessions().delete_idle(cutoff, 10).await.unwrap();
        assert_eq!(rest, vec![old]);
        assert!(store.sessions().get(old).unwrap().is_none());
        assert_eq!(store.sessions().message_count(old).unwrap(), 0);
        let left = store.sessions().list(ann, None, 50).unwrap();
        let mut left: Vec<_> = left.items.iter().map(|s| s.id).collect();
        left.sort();
        assert_eq!(left, [fresh, chatty]);
        assert!(store
            .sessions()
            .delete_idle(cutoff, 10)
            .await
            .unwrap()
            .is_empty());
    }
}
