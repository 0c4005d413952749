//! Deletions that survive a crash, and the start-up check for records whose
//! owner is gone.
//!
//! Deleting a session (its messages) or a user (everything it owns) takes
//! many writes, and no sled transaction may span them on these paths (see
//! DESIGN.md, Storage). So a deletion first writes a mark to the
//! `deletions` tree, then removes, then removes the mark; [`Store::open`]
//! finishes every deletion whose mark it finds, so a crash in the middle
//! leaves no orphan messages, sessions or keys that outlive the next start.
//!
//! The start-up check also collects what a race with a user's deletion can
//! leave behind without a crash (an API key created, a session created or a
//! quota counter written back while the user was being deleted): records
//! whose user no longer exists. It reads every quota counter, API key and
//! session index entry once (not every message).

use uuid::Uuid;

use crate::error::Result;
use crate::ids::UserId;
use crate::keys;
use crate::store::Store;

/// What a mark says is being deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    Session(Uuid),
    User(UserId),
}

impl Deletion {
    fn key(self) -> [u8; 17] {
        match self {
            Deletion::Session(id) => keys::deletion(keys::DELETION_SESSION, *id.as_bytes()),
            Deletion::User(id) => keys::deletion(keys::DELETION_USER, *id.as_bytes()),
        }
    }

    fn from_key(key: &[u8]) -> Option<Deletion> {
        let (kind, id) = keys::deletion_from(key)?;
        match kind {
            keys::DELETION_SESSION => Some(Deletion::Session(Uuid::from_bytes(id))),
            keys::DELETION_USER => Some(Deletion::User(UserId::from_bytes(id))),
            _ => None,
        }
    }
}

/// What the start-up check did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Deletions a crash interrupted, finished now.
    pub deletions: usize,
    /// Records of users that no longer exist, removed.
    pub orphans: usize,
}

impl Store {
    /// Marks a deletion as under way (written before its first removal, in
    /// the same log, so a crash after any removal finds the mark).
    pub(crate) fn begin_deletion(&self, what: Deletion) -> Result<()> {
        self.trees().deletions.insert(what.key(), &[])?;
        Ok(())
    }

    /// The deletion is complete (its removals precede this in the log).
    pub(crate) fn end_deletion(&self, what: Deletion) -> Result<()> {
        self.trees().deletions.remove(what.key())?;
        Ok(())
    }

    /// Finishes interrupted deletions and removes records whose user is
    /// gone; flushed when it returns. Run by [`Store::open`].
    pub(crate) fn recover(&self) -> Result<Recovered> {
        let mut found = Recovered::default();
        let t = self.trees();
        for key in t.deletions.iter().keys() {
            let key = key?;
            match Deletion::from_key(&key) {
                Some(Deletion::Session(id)) => self.sessions().remove_by_id(id)?,
                Some(Deletion::User(id)) => drop(self.remove_user_records(id)?),
                None => {}
            }
            t.deletions.remove(key)?;
            found.deletions += 1;
        }
        found.orphans = self.collect_orphans()? + self.tracks().collect_records()?;
        if found != Recovered::default() {
            self.flush()?;
        }
        // Files go once no durable record names them.
        found.orphans += self.tracks().collect_files()?;
        if found != Recovered::default() {
            tracing::warn!(
                deletions = found.deletions,
                orphans = found.orphans,
                "storage: finished interrupted deletions and removed orphaned records and files"
            );
        }
        Ok(found)
    }

    /// Removes quota counters, API keys and sessions of users that do not
    /// exist. Not waited on.
    fn collect_orphans(&self) -> Result<usize> {
        let t = self.trees();
        let gone = |user: UserId| -> Result<bool> { Ok(!t.users.contains_key(keys::user(user))?) };
        let mut orphans = 0;
        for key in t.quotas.iter().keys() {
            let key = key?;
            let orphaned = match keys::user_from(&key) {
                Some(user) => gone(user)?,
                None => true,
            };
            if orphaned {
                t.quotas.remove(key)?;
                orphans += 1;
            }
        }
        // Both indexes are keyed user id first: each user is looked up once
        // per index, however many keys or sessions it has.
        let mut missing: Vec<UserId> = Vec::new();
        for index in [&t.api_keys_by_user, &t.sessions_by_user] {
            let mut last = None;
            for key in index.iter().keys() {
                let key = key?;
                let Some(user) = key.get(..16).and_then(keys::user_from) else {
                    continue;
                };
                if last != Some(user) {
                    last = Some(user);
                    if gone(user)? && !missing.contains(&user) {
                        missing.push(user);
                    }
                }
            }
        }
        for user in missing {
            orphans += self.api_keys().remove_all_for(user)?;
            orphans += self.sessions().remove_all_for(user)?;
        }
        Ok(orphans)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{ApiKey, MessageStatus, NewUser, QuotaCounter, Role, StoreConfig};
    use std::path::Path;

    /// A store on disk in `dir` (reopened by tests of what a restart does).
    pub(crate) fn open(dir: &Path) -> Store {
        Store::open(&StoreConfig {
            path: dir.to_path_buf(),
            cache_bytes: 8 << 20,
            fsync: false,
        })
        .unwrap()
    }

    /// A stored user with `email`.
    pub(crate) async fn user(store: &Store, email: &str) -> UserId {
        store
            .users()
            .create(NewUser {
                email: email.into(),
                password_hash: String::new(),
                is_demo: false,
                demo_expires_at: None,
            })
            .await
            .unwrap()
            .id
    }

    #[tokio::test]
    async fn a_session_deletion_cut_by_a_crash_is_finished_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (session, kept) = {
            let store = open(dir.path());
            let ann = user(&store, "ann@example.com").await;
            let session = store
                .sessions()
                .create(ann, "a".into(), None)
                .await
                .unwrap();
            let kept = store
                .sessions()
                .create(ann, "b".into(), None)
                .await
                .unwrap();
            for s in [session.id, kept.id] {
                for text in ["q", "a"] {
                    store
                        .messages()
                        .append(s, Role::User, text.into(), MessageStatus::Complete, vec![])
                        .await
                        .unwrap();
                }
            }
            // What a crash after the record's removal leaves: the mark, and
            // the messages.
            store.begin_deletion(Deletion::Session(session.id)).unwrap();
            store
                .trees()
                .sessions
                .remove(keys::session(session.id))
                .unwrap();
            store.flush().unwrap();
            (session.id, kept.id)
        };
        let store = open(dir.path());
        assert_eq!(
            store.messages().list(session, 0, 10).unwrap().items.len(),
            0
        );
        assert!(store.trees().deletions.is_empty());
        assert_eq!(store.messages().list(kept, 0, 10).unwrap().items.len(), 2);
        assert!(store.sessions().get(kept).unwrap().is_some());
    }

    #[tokio::test]
    async fn a_user_purge_cut_by_a_crash_is_finished_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let ann = {
            let store = open(dir.path());
            let ann = user(&store, "ann@example.com").await;
            let s = store
                .sessions()
                .create(ann, "a".into(), None)
                .await
                .unwrap();
            store
                .messages()
                .append(
                    s.id,
                    Role::User,
                    "q".into(),
                    MessageStatus::Complete,
                    vec![],
                )
                .await
                .unwrap();
            // Crashed right after the mark and the counter's removal.
            store.begin_deletion(Deletion::User(ann)).unwrap();
            store.quotas().remove(ann).unwrap();
            store.flush().unwrap();
            ann
        };
        let store = open(dir.path());
        assert!(store.users().get(ann).unwrap().is_none());
        assert!(store
            .users()
            .find_by_email("ann@example.com")
            .unwrap()
            .is_none());
        assert_eq!(store.sessions().list(ann, None, 10).unwrap().items.len(), 0);
        assert!(store.trees().messages.is_empty());
    }

    #[tokio::test]
    async fn records_of_missing_users_are_collected_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (ann, ghost) = {
            let store = open(dir.path());
            let ann = user(&store, "ann@example.com").await;
            let ghost = UserId::new();
            for owner in [ann, ghost] {
                store
                    .quotas()
                    .put(
                        owner,
                        &QuotaCounter {
                            count: 1,
                            window_start: 0,
                        },
                    )
                    .unwrap();
                store
                    .api_keys()
                    .create(&ApiKey {
                        id: Uuid::now_v7(),
                        user_id: owner,
                        name: "k".into(),
                        hash: *Uuid::new_v4().as_bytes().repeat(2).first_chunk().unwrap(),
                        created_at: 0,
                        last_used_at: None,
                    })
                    .await
                    .unwrap();
                store
                    .sessions()
                    .create(owner, "s".into(), None)
                    .await
                    .unwrap();
            }
            store.flush().unwrap();
            (ann, ghost)
        };
        let store = open(dir.path());
        assert!(store.quotas().get(ghost).unwrap().is_none());
        assert!(store.api_keys().list_for(ghost).unwrap().is_empty());
        assert!(store
            .sessions()
            .list(ghost, None, 10)
            .unwrap()
            .items
            .is_empty());
        assert!(store.quotas().get(ann).unwrap().is_some());
        assert_eq!(store.api_keys().list_for(ann).unwrap().len(), 1);
        assert_eq!(store.sessions().list(ann, None, 10).unwrap().items.len(), 1);
    }
}
