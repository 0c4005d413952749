//! Messages of a session, keyed by session id and sequence number.
//!
//! A new message takes the next sequence number with a compare-and-swap
//! insert (no lock, no transaction). A reply still being written has status
//! `Streaming`, and its session a marker in `messages_streaming`: the lowest
//! number a reply of the session may have streamed at since the server
//! started. At start every marked session's messages from there on that are
//! still `Streaming` are turned `Failed` (a crash interrupted them), so
//! history never shows a reply that will not finish; then the markers go.
//! A session is marked once per run (numbers only grow), not set and
//! cleared around every reply: two writes per reply fewer
//! (docs/BENCHMARKS.md; schema 5, which turned the markers of one reply
//! each into their sessions').

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use crate::codec;
use crate::error::{Result, StorageError};
use crate::keys;
use crate::sessions::{Message, MessageStatus, Page, Role, Session, ToolUse};
use crate::store::Store;

pub struct Messages<'a> {
    store: &'a Store,
}

/// The sessions marked in this run and the number each marker says (see
/// the module's comment): a reply needs no write of its own when its
/// session's marker is already at or below its number.
#[derive(Default)]
pub(crate) struct StreamingMarks(Mutex<HashMap<Uuid, u64>>);

impl StreamingMarks {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How many sessions' markers a run remembers before it forgets them all
/// (a forgotten one costs a read and a write the next time its session
/// streams; the marker itself is never lost).
const REMEMBERED_MARKS: usize = 100_000;

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
        if message.status == MessageStatus::Streaming {
            // The marker first: a marker with no streaming message after it
            // is harmless at start, a streaming message without one would
            // stay `streaming` forever after a crash. (Written to the log
            // before the message, it is durable with it or before.) The
            // message's number will be `seq` or, lost to a concurrent
            // append, a later one: covered either way.
            self.mark_streaming(message.session_id, seq)?;
        }
        loop {
            message.seq = seq;
            let key = keys::message(message.session_id, seq);
            let value = codec::encode(&message)?;
            match t
                .messages
                .compare_and_swap(key, None::<&[u8]>, Some(value))?
            {
                Ok(()) => return Ok(message),
                Err(_) => seq += 1,
            }
        }
    }

    /// Makes sure a reply streaming at `seq` or later in `session` is found
    /// at the next start: lowers the session's marker to `seq` unless this
    /// run marked it at `seq` or below already (then nothing is written,
    /// which is every reply but a session's first of the run). Under the
    /// marks' lock, so a concurrent append of the same session finds the
    /// marker written before it goes on to insert its own reply.
    fn mark_streaming(&self, session: Uuid, seq: u64) -> Result<()> {
        let mut marks = self.store.streaming_marks().lock();
        if marks.get(&session).is_some_and(|&from| from <= seq) {
            return Ok(());
        }
        let lowest = lower_marker(
            &self.store.trees().messages_streaming,
            *session.as_bytes(),
            seq,
        )?;
        if marks.len() >= REMEMBERED_MARKS {
            marks.clear();
        }
        marks.insert(session, lowest);
        Ok(())
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
        // (A marker left behind is harmless: at the next start it finds
        // no message and goes.)
        let t = self.store.trees();
        for message in inserted {
            t.messages.remove(keys::message(session, message.seq))?;
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
        // The session's streaming marker stays until the next start (see
        // the module's comment).
        let replaced = t
            .messages
            .fetch_and_update(key, |old| old.map(|_| value.clone()))?;
        if replaced.is_none() {
            return Err(StorageError::NotFound);
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
    /// Turns every reply left `Streaming` by a crash into `Failed`: in each
    /// marked session, its messages from the marker's number on. Run at
    /// start, before anything streams; the markers go. Returns how many.
    pub fn fail_interrupted(&self) -> Result<usize> {
        let t = self.store.trees();
        let mut failed = 0;
        for entry in t.messages_streaming.iter() {
            let (key, value) = entry?;
            // From the marker's number (one that cannot be read: the whole
            // session) to the session's end; a key that is no session id
            // marks nothing.
            if let Ok(session) = Uuid::from_slice(&key) {
                let from = marked_from(value.as_ref()).unwrap_or(0);
                failed += self.fail_streaming_from(session, from)?;
            }
            t.messages_streaming.remove(&key)?;
        }
        self.store.streaming_marks().lock().clear();
        Ok(failed)
    }

    /// Turns `session`'s messages from `from` on that are still
    /// `Streaming` into `Failed`; how many.
    fn fail_streaming_from(&self, session: Uuid, from: u64) -> Result<usize> {
        let t = self.store.trees();
        let (start, end) = (
            keys::message(session, from),
            keys::prefix_end(&keys::session(session)),
        );
        let mut failed = 0;
        for entry in t.messages.range(start.to_vec()..end) {
            let (message_key, value) = entry?;
            let mut message: Message = codec::decode(&value)?;
            if message.status == MessageStatus::Streaming {
                message.status = MessageStatus::Failed;
                t.messages.insert(&message_key, codec::encode(&message)?)?;
                failed += 1;
            }
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

/// Lowers the session's streaming marker to `seq` (writes it if there is
/// none); returns what it holds now.
pub(crate) fn lower_marker(markers: &sled::Tree, session: [u8; 16], seq: u64) -> Result<u64> {
    let mut lowest = seq;
    markers.fetch_and_update(session, |old| {
        lowest = old.and_then(marked_from).map_or(seq, |from| from.min(seq));
        Some(lowest.to_be_bytes().to_vec())
    })?;
    Ok(lowest)
}

/// The number a session's streaming marker holds.
fn marked_from(value: impl AsRef<[u8]>) -> Option<u64> {
    <[u8; 8]>::try_from(value.as_ref())
        .ok()
        .map(u64::from_be_bytes)
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
pub(crate) mod tests {
    use super::*;
    use crate::UserId;

    /// A fresh store with one session in it.
    async fn with_session() -> (Store, Session) {
        let store = Store::temporary().unwrap();
        let session = store
            .sessions()
            .create(UserId::new(), "t".into(), None)
            .await
            .unwrap();
        (store, session)
    }

    #[tokio::test]
    async fn append_list_and_count() {
        let (store, s) = with_session().await;
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
        let (store, s) = with_session().await;
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
        let (store, s) = with_session().await;
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
        assert_eq!(status(&msgs, s.id, cut.seq), MessageStatus::Failed);
        assert_eq!(status(&msgs, s.id, done.seq), MessageStatus::Complete);
        assert_eq!(msgs.fail_interrupted().unwrap(), 0);
    }

    /// A stored message's status.
    pub(crate) fn status(msgs: &Messages<'_>, session: Uuid, seq: u64) -> MessageStatus {
        msgs.get(session, seq).unwrap().unwrap().status
    }

    /// The session's streaming marker, if any.
    fn marker(store: &Store, session: Uuid) -> Option<u64> {
        let t = store.trees();
        let value = t.messages_streaming.get(keys::session(session)).unwrap()?;
        marked_from(value)
    }

    /// Two exchanges appended at once on one session race for numbers:
    /// the reply that loses its number is covered by its session's marker
    /// all the same. (With a marker per reply, found by the crash loop,
    /// `palaver-bench crash`: the loser removed the marker of the reply
    /// that won its number, and a crash then left that reply `streaming`
    /// for good.)
    #[tokio::test]
    async fn a_reply_that_loses_its_number_is_covered_by_its_sessions_marker() {
        let (store, s) = with_session().await;
        let msgs = store.messages();
        // One exchange: its placeholder took seq 2 (streaming, marked).
        let exchange = msgs.append_exchange_nowait(s.id, "first".into()).unwrap();
        // The session comes back as read after the inserts.
        assert_eq!(exchange.session.id, s.id);
        assert_eq!(exchange.session.title, s.title);
        let winner = exchange.reply;
        assert_eq!(winner.seq, 2);
        assert_eq!(marker(&store, s.id), Some(2));
        // Another exchange's placeholder, computed the same next number.
        let loser = msgs.insert_from(2, placeholder(s.id)).unwrap();
        assert_eq!(loser.seq, 3);
        assert_eq!(marker(&store, s.id), Some(2));
        // A crash now: both replies fail at the next start, the marker goes.
        assert_eq!(msgs.fail_interrupted().unwrap(), 2);
        for seq in [2, 3] {
            assert_eq!(status(&msgs, s.id, seq), MessageStatus::Failed);
        }
        assert_eq!(marker(&store, s.id), None);
    }

    /// A session is marked once per run: later replies (higher numbers)
    /// write no marker; a start clears the markers and what the run
    /// remembers of them, so the next run marks afresh.
    #[tokio::test]
    async fn a_session_is_marked_once_per_run_at_its_first_replys_number() {
        let store = Store::temporary().unwrap();
        let sessions = store.sessions();
        let s1 = sessions
            .create(UserId::new(), "a".into(), None)
            .await
            .unwrap();
        let s2 = sessions
            .create(UserId::new(), "b".into(), None)
            .await
            .unwrap();
        let msgs = store.messages();
        let first = msgs.append_exchange_nowait(s1.id, "q".into()).unwrap();
        msgs.update(&Message {
            status: MessageStatus::Complete,
            ..first.reply
        })
        .await
        .unwrap();
        let second = msgs.append_exchange_nowait(s1.id, "q".into()).unwrap();
        assert_eq!(second.reply.seq, 4);
        assert_eq!(marker(&store, s1.id), Some(2), "the first reply's number");
        assert_eq!(marker(&store, s2.id), None, "no reply, no marker");
        // Finished replies are left alone; the one still streaming fails.
        assert_eq!(msgs.fail_interrupted().unwrap(), 1);
        assert_eq!(status(&msgs, s1.id, 2), MessageStatus::Complete);
        assert_eq!(status(&msgs, s1.id, 4), MessageStatus::Failed);
        assert_eq!(marker(&store, s1.id), None);
        // The next run marks the session again, at its new reply.
        let third = msgs.append_exchange_nowait(s1.id, "q".into()).unwrap();
        assert_eq!(marker(&store, s1.id), Some(third.reply.seq));
    }

    #[tokio::test]
    async fn recent_messages_are_found_by_id_within_the_bound() {
        let (store, s) = with_session().await;
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
        let (store, s) = with_session().await;
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
        let (store, s) = with_session().await;
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
