//! Messages of a session, keyed by session id and sequence number.
//!
//! A new message takes the next sequence number with a compare-and-swap
//! insert (no lock, no transaction). A reply still being written has status
//! `Streaming` and a marker in `messages_streaming`; at start every marked
//! message is turned `Failed` (a crash interrupted it), so history never shows
//! a reply that will not finish.

use uuid::Uuid;

use crate::codec;
use crate::error::{Result, StorageError};
use crate::keys;
use crate::sessions::{Message, MessageStatus, Page, Role, Session, ToolUse};
use crate::store::Store;

pub struct Messages<'a> {
    store: &'a Store,
}

/// A question and its reply's placeholder, just appended, with their
/// session as read right after.
#[derive(Debug)]
pub struct Exchange {
    pub question: Message,
    /// The placeholder (`Streaming`).
    pub reply: Message,
    pub session: Session,
}

impl<'a> Messages<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Messages { store }
    }

    /// Appends a message with the next sequence number. Not yet durable:
    /// call [`Store::durable`] before acknowledging it (or use [`Self::append`]).
    pub fn append_nowait(
        &self,
        session: Uuid,
        role: Role,
        text: String,
        status: MessageStatus,
        tools: Vec<ToolUse>,
    ) -> Result<Message> {
        let next = self.store.sessions().message_count(session)? + 1;
        let message = self.insert_from(next, new_message(session, role, text, status, tools))?;
        self.check_session(session, &[&message])?;
        Ok(message)
    }

    /// Appends a question and its reply's placeholder (`Streaming`) with
    /// the next two sequence numbers: one look for the last number and one
    /// read of the session serve both (the session as it is now comes
    /// back with them: what the question is answered against). Not yet
    /// durable.
    pub fn append_exchange_nowait(&self, session: Uuid, question: String) -> Result<Exchange> {
        let next = self.store.sessions().message_count(session)? + 1;
        let question = self.insert_from(
            next,
            new_message(
                session,
                Role::User,
                question,
                MessageStatus::Complete,
                vec![],
            ),
        )?;
        let reply = self.insert_from(question.seq + 1, placeholder(session))?;
        let session = self.check_session(session, &[&question, &reply])?;
        Ok(Exchange {
            question,
            reply,
            session,
        })
    }

    /// Inserts `message` with the first free sequence number from `seq` on
    /// (a compare-and-swap insert: a concurrent append takes the next).
    fn insert_from(&self, mut seq: u64, mut message: Message) -> Result<Message> {
        let t = self.store.trees();
        let streaming = message.status == MessageStatus::Streaming;
        loop {
            message.seq = seq;
            let key = keys::message(message.session_id, seq);
            // The marker first: a marker without its message is harmless at
            // start, a streaming message without its marker would stay
            // `streaming` forever after a crash.
            if streaming {
                t.messages_streaming.insert(key, &[])?;
            }
            let value = codec::encode(&message)?;
            let taken = match t
                .messages
                .compare_and_swap(key, None::<&[u8]>, Some(value))?
            {
                Ok(()) => return Ok(message),
                Err(e) => e.current,
            };
            // The number was taken. The marker goes only if what took it
            // is not streaming: a streaming reply there (a concurrent
            // append's placeholder) has put the same marker, and needs it.
            if streaming && !is_streaming(taken.as_deref()) {
                t.messages_streaming.remove(key)?;
            }
            seq += 1;
        }
    }

    /// Finds whether the session of messages just inserted was deleted
    /// meanwhile: then they must not stay as orphans. (A deletion removes
    /// the session's record before it scans its messages, so a session
    /// read here after the insert either is gone, or its deletion's scan
    /// finds these messages.) The session itself is not rewritten: its
    /// last activity is its newest message's (`Sessions::activity`).
    /// Returns the session as read.
    fn check_session(&self, session: Uuid, inserted: &[&Message]) -> Result<Session> {
        if let Some(found) = self.store.sessions().get(session)? {
            return Ok(found);
        }
        let t = self.store.trees();
        for message in inserted {
            let key = keys::message(session, message.seq);
            t.messages.remove(key)?;
            t.messages_streaming.remove(key)?;
        }
        Err(StorageError::NotFound)
    }

    /// Appends a message; durable when it returns.
    pub async fn append(
        &self,
        session: Uuid,
        role: Role,
        text: String,
        status: MessageStatus,
        tools: Vec<ToolUse>,
    ) -> Result<Message> {
        let message = self.append_nowait(session, role, text, status, tools)?;
        self.store.durable().await?;
        Ok(message)
    }

    /// Replaces a stored message (a reply that finished, was cancelled or
    /// failed); durable when it returns.
    pub async fn update(&self, message: &Message) -> Result<()> {
        let t = self.store.trees();
        let key = keys::message(message.session_id, message.seq);
        let value = codec::encode(message)?;
        // Only over an existing message (atomically): a session deleted
        // meanwhile stays deleted.
        let replaced = t
            .messages
            .fetch_and_update(key, |old| old.map(|_| value.clone()))?;
        if replaced.is_none() {
            t.messages_streaming.remove(key)?;
            return Err(StorageError::NotFound);
        }
        if message.status != MessageStatus::Streaming {
            t.messages_streaming.remove(key)?;
        }
        self.store.durable().await
    }

    pub fn get(&self, session: Uuid, seq: u64) -> Result<Option<Message>> {
        codec::get(&self.store.trees().messages, &keys::message(session, seq))
    }

    /// Messages with `seq > after`, oldest first, at most `limit`; `next` is
    /// the `after` of the following page when there is one.
    pub fn list(&self, session: Uuid, after: u64, limit: usize) -> Result<Page<Message>> {
        let t = self.store.trees();
        let start = keys::message(session, after.saturating_add(1));
        let end = keys::prefix_end(&keys::session(session));
        let mut items = Vec::with_capacity(limit.min(100));
        let mut more = false;
        for entry in t.messages.range(start.to_vec()..end) {
            let (_, value) = entry?;
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(codec::decode::<Message>(&value)?);
        }
        let next = if more {
            items.last().map(|m: &Message| m.seq.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// The message `id` of `session`, looked for from the newest back to
    /// the first created before `not_before` (Unix ms): a bounded scan for
    /// a recent message known only by its id.
    pub fn find_recent(&self, session: Uuid, id: Uuid, not_before: u64) -> Result<Option<Message>> {
        find_recent_in(&self.store.trees().messages, session, id, not_before)
    }
    /// Turns every reply left `Streaming` by a crash into `Failed`. Run at
    /// start, before anything streams. Returns how many.
    pub fn fail_interrupted(&self) -> Result<usize> {
        let t = self.store.trees();
        let mut failed = 0;
        for key in t.messages_streaming.iter().keys() {
            let key = key?;
            if let Some(value) = t.messages.get(&key)? {
                let mut message: Message = codec::decode(&value)?;
                if message.status == MessageStatus::Streaming {
                    message.status = MessageStatus::Failed;
                    t.messages.insert(&key, codec::encode(&message)?)?;
                    failed += 1;
                }
            }
            t.messages_streaming.remove(&key)?;
        }
        Ok(failed)
    }
}

/// [`Messages::find_recent`] over the `messages` tree itself (the
/// migrations run before there is a `Store`).
pub(crate) fn find_recent_in(
    messages: &sled::Tree,
    session: Uuid,
    id: Uuid,
    not_before: u64,
) -> Result<Option<Message>> {
    for entry in messages.scan_prefix(keys::session(session)).rev() {
        let (_, value) = entry?;
        let message: Message = codec::decode(&value)?;
        if message.id == id {
            return Ok(Some(message));
        }
        if message.created_at < not_before {
            break;
        }
    }
    Ok(None)
}

/// Whether a stored value is a message still streaming (one that cannot
/// be read counts as streaming: its marker stays, which is harmless).
fn is_streaming(value: Option<&[u8]>) -> bool {
    match value.map(codec::decode::<Message>) {
        Some(Ok(message)) => message.status == MessageStatus::Streaming,
        Some(Err(_)) => true,
        None => false,
    }
}

/// A reply's placeholder: empty, `streaming`, until its run stores it.
fn placeholder(session: Uuid) -> Message {
    new_message(
        session,
        Role::Assistant,
        String::new(),
        MessageStatus::Streaming,
        vec![],
    )
}

fn new_message(
    session: Uuid,
    role: Role,
    text: String,
    status: MessageStatus,
    tools: Vec<ToolUse>,
) -> Message {
    Message {
        id: Uuid::now_v7(),
        session_id: session,
        seq: 0,
        role,
        text,
        status,
        tools,
        created_at: crate::now_millis(),
        replay: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserId;

    #[tokio::test]
    async fn append_list_and_count() {
        let store = Store::temporary().unwrap();
        let s = store
            .sessions()
            .create(UserId::new(), "t".into(), None)
            .await
            .unwrap();
        for i in 0..5 {
            let m = store
                .messages()
                .append(
                    s.id,
                    Role::User,
                    format!("m{i}"),
                    MessageStatus::Complete,
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(m.seq, i + 1);
        }
        assert_eq!(store.sessions().message_count(s.id).unwrap(), 5);
        let page = store.messages().list(s.id, 0, 2).unwrap();
        assert_eq!(page.items.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(page.next.as_deref(), Some("2"));
        let page = store.messages().list(s.id, 2, 10).unwrap();
        assert_eq!(
            page.items.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(page.next, None);
        assert!(store.messages().list(s.id, 5, 10).unwrap().items.is_empty());
        assert_eq!(store.messages().get(s.id, 3).unwrap().unwrap().text, "m2");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_get_distinct_seqs() {
        let store = Store::temporary().unwrap();
        let s = store
            .sessions()
            .create(UserId::new(), "t".into(), None)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .messages()
                        .append(
                            s.id,
                            Role::User,
                            format!("{i}"),
                            MessageStatus::Complete,
                            vec![],
                        )
                        .await
                        .unwrap()
                        .seq
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn interrupted_replies_fail_at_start_and_finished_ones_do_not() {
        let store = Store::temporary().unwrap();
        let s = store
            .sessions()
            .create(UserId::new(), "t".into(), None)
            .await
            .unwrap();
        let msgs = store.messages();
        let mut done = msgs
            .append(
                s.id,
                Role::Assistant,
                String::new(),
                MessageStatus::Streaming,
                vec![],
            )
            .await
            .unwrap();
        let cut = msgs
            .append(
                s.id,
                Role::Assistant,
                "half".into(),
                MessageStatus::Streaming,
                vec![],
            )
            .await
            .unwrap();
        done.text = "whole".into();
        done.status = MessageStatus::Complete;
        msgs.update(&done).await.unwrap();
        assert_eq!(msgs.fail_interrupted().unwrap(), 1);
        assert_eq!(
            msgs.get(s.id, cut.seq).unwrap().unwrap().status,
            MessageStatus::Failed
        );
        assert_eq!(
            msgs.get(s.id, done.seq).unwrap().unwrap().status,
            MessageStatus::Complete
        );
        assert_eq!(msgs.fail_interrupted().unwrap(), 0);
    }

    /// Two exchanges appended at once on one session race for numbers:
    /// the loser of a number never removes the marker of the streaming
    /// reply that won it. Found by the crash loop (`palaver-bench crash`):
    /// a whole answer over HTTP racing a WebSocket question removed the
    /// other reply's marker, and a crash then left that reply `streaming`
    /// for good.
    #[tokio::test]
    async fn a_reply_that_loses_its_number_leaves_the_winners_marker() {
        let store = Store::temporary().unwrap();
        let s = store
            .sessions()
            .create(UserId::new(), "t".into(), None)
            .await
            .unwrap();
        let msgs = store.messages();
        // One exchange: its placeholder took seq 2 (streaming, marked).
        let exchange = msgs.append_exchange_nowait(s.id, "first".into()).unwrap();
        // The session comes back as read after the inserts.
        assert_eq!(exchange.session.id, s.id);
        assert_eq!(exchange.session.title, s.title);
        let winner = exchange.reply;
        assert_eq!(winner.seq, 2);
        // Another exchange's placeholder, computed the same next number.
        let loser = msgs.insert_from(2, placeholder(s.id)).unwrap();
        assert_eq!(loser.seq, 3);
        let t = store.trees();
        assert!(t
            .messages_streaming
            .contains_key(keys::message(s.id, 2))
            .unwrap());
        assert!(t
            .messages_streaming
            .contains_key(keys::message(s.id, 3))
            .unwrap());
        // A crash now: both replies fail at the next start.
        assert_eq!(msgs.fail_interrupted().unwrap(), 2);
        for seq in [2, 3] {
            assert_eq!(
                msgs.get(s.id, seq).unwrap().unwrap().status,
                MessageStatus::Failed
            );
        }
        // A question that loses a number to a finished message leaves no
        // marker behind.
        let question = msgs
            .append_exchange_nowait(s.id, "next".into())
            .unwrap()
            .question;
        msgs.insert_from(question.seq, placeholder(s.id)).unwrap();
        assert!(!t
            .messages_streaming
            .contains_key(keys::message(s.id, question.seq))
            .unwrap());
    }

    #[tokio::test]
    async fn recent_messages_are_found_by_id_within_the_bound() {
        let store = Store::temporary().unwrap();
        let s = store
            .sessions()
            .create(UserId::new(), "t".into(), None)
            .await
            .unwrap();
        let msgs = store.messages();
        let first = msgs
            .append(
                s.id,
                Role::User,
                "a".into(),
                MessageStatus::Complete,
                vec![],
            )
            .await
            .unwrap();
        let last = msgs
            .append(
                s.id,
                Role::User,
                "b".into(),
                MessageStatus::Complete,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            msgs.find_recent(s.id, first.id, 0).unwrap(),
            Some(first.clone())
        );
        assert_eq!(
            msgs.find_recent(s.id, last.id, u64::MAX).unwrap(),
            Some(last)
        );
        // Older than the bound: not looked at.
        assert_eq!(msgs.find_recent(s.id, first.id, u64::MAX).unwrap(), None);
        assert_eq!(msgs.find_recent(Uuid::now_v7(), first.id, 0).unwrap(), None);
    }

    #[tokio::test]
    async fn no_message_outlives_its_session() {
        let store = Store::temporary().unwrap();
        let s = store
            .sessions()
            .create(UserId::new(), "t".into(), None)
            .await
            .unwrap();
        store.sessions().delete(s.id).await.unwrap();
        let late = store
            .messages()
            .append(
                s.id,
                Role::User,
                "late".into(),
                MessageStatus::Streaming,
                vec![],
            )
            .await;
        assert!(matches!(late, Err(StorageError::NotFound)));
        assert!(store.messages().list(s.id, 0, 10).unwrap().items.is_empty());
        assert_eq!(store.messages().fail_interrupted().unwrap(), 0);
    }

    #[tokio::test]
    async fn deleting_the_session_deletes_its_messages() {
        let store = Store::temporary().unwrap();
        let s = store
            .sessions()
            .create(UserId::new(), "t".into(), None)
            .await
            .unwrap();
        let m = store
            .messages()
            .append(
                s.id,
                Role::User,
                "x".into(),
                MessageStatus::Complete,
                vec![],
            )
            .await
            .unwrap();
        store.sessions().delete(s.id).await.unwrap();
        assert!(store.messages().list(s.id, 0, 10).unwrap().items.is_empty());
        assert!(matches!(
            store.messages().update(&m).await,
            Err(StorageError::NotFound)
        ));
    }
}
