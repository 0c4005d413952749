//! One question's lifecycle, the same whichever transport asked it (a
//! WebSocket `question` frame in `session.rs`, `POST …/messages/` in
//! `src/http/sessions.rs`):
//!
//! validate → reserve a place in the pool → admit (count) → store the
//! question and the reply's placeholder → submit → events.
//!
//! Each step refuses without leaving anything behind: an invalid question
//! is neither counted nor stored; a full pool answers `busy` before the
//! question is counted; a quota refusal stores nothing; a question that
//! cannot be stored gives its count back. The transports only map a
//! [`Refusal`] to their own wire form (an `error` frame or an HTTP error).

use std::sync::Arc;

use palaver_storage::{Exchange, Message, Session, StorageError, Store, UserId};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::analysis::{AnalysisPool, Cancel, Event, Job, Sink, Slot};
use crate::auth::now_secs;
use crate::quota::{Admission, Policy, QuotaRegistry, Standing};

/// Why a question was not taken.
#[derive(Debug)]
pub enum Refusal {
    /// Longer than `analysis.max_question_chars` characters.
    TooLong { max: usize },
    /// Empty or only whitespace.
    Empty,
    /// The analysis pool is full.
    Busy,
    /// Over the user's quota (nothing counted).
    Quota(Standing),
    /// The question could not be stored (its count was given back).
    Storage(StorageError),
}

impl Refusal {
    /// Refused because of what the client sent (the transports say so
    /// without blaming the server).
    pub fn is_invalid(&self) -> bool {
        matches!(self, Refusal::TooLong { .. } | Refusal::Empty)
    }
}

/// What a question needs from the server, borrowed for its first step.
pub struct Asking<'a> {
    pub store: &'a Store,
    pub quotas: &'a QuotaRegistry,
    pub pool: &'a AnalysisPool,
    /// `analysis.max_question_chars`.
    pub max_chars: usize,
}

/// Counts the question here (`Some`, the WebSocket) or not (`None`: the
/// HTTP middleware counted the request before its handler ran).
pub type Counting = Option<(UserId, Policy)>;

impl Asking<'_> {
    /// Validates, reserves a place in the pool and admits: one synchronous
    /// step, so a refusal at any point leaves nothing behind.
    pub fn reserve(&self, text: String, counting: Counting) -> Result<Reserved, Refusal> {
        validate(&text, self.max_chars)?;
        let slot = self.pool.reserve().map_err(|_| Refusal::Busy)?;
        let standing = match counting {
            None => None,
            Some((user, policy)) => match self.quotas.admit(user, policy, now_secs()) {
                Ok(Admission::Admitted(s)) => Some(s),
                Ok(Admission::Rejected(s)) => return Err(Refusal::Quota(s)),
                Err(e) => return Err(Refusal::Storage(e)),
            },
        };
        Ok(Reserved {
            slot,
            standing,
            counting,
            text,
            store: self.store.clone(),
            quotas: self.quotas.clone(),
        })
    }
}

/// The question's text is acceptable.
pub fn validate(text: &str, max_chars: usize) -> Result<(), Refusal> {
    if text.chars().count() > max_chars {
        return Err(Refusal::TooLong { max: max_chars });
    }
    if text.trim().is_empty() {
        return Err(Refusal::Empty);
    }
    Ok(())
}

/// A validated question with its place in the pool, counted if it is to be.
/// Dropping it gives the place back (the count stays: use [`Reserved::store`]).
pub struct Reserved {
    slot: Slot,
    standing: Option<Standing>,
    counting: Counting,
    text: String,
    store: Store,
    quotas: QuotaRegistry,
}

impl Reserved {
    /// Stores the question and the reply's placeholder (`streaming`, so a
    /// crash mid-reply leaves a `failed` reply, not none), both durable when
    /// it returns, with the count riding on the same flush. A failure gives
    /// the count back.
    pub async fn store(self, session: Uuid) -> Result<Stored, Refusal> {
        let Reserved {
            slot,
            standing,
            counting,
            text,
            store,
            quotas,
        } = self;
        match store_question(&store, session, text).await {
            Ok(exchange) => Ok(Stored {
                question: exchange.question,
                reply: exchange.reply,
                session: exchange.session,
                standing,
                slot,
            }),
            Err(e) => {
                if let Some((user, policy)) = counting {
                    if let Err(e) = quotas.refund(user, policy, now_secs()) {
                        tracing::error!(error = %e, "quota refund failed");
                    }
                }
                Err(Refusal::Storage(e))
            }
        }
    }
}

/// A stored question, ready to be answered.
pub struct Stored {
    pub question: Message,
    /// The placeholder reply (`streaming`).
    pub reply: Message,
    /// The session, as read when the question was stored (what the
    /// question is answered against).
    pub session: Session,
    /// Where the user stands after this question was counted.
    pub standing: Option<Standing>,
    slot: Slot,
}

impl Stored {
    /// Hands the question to the pool; its events arrive on the receiver,
    /// ending with exactly one `Done` (after the reply is stored).
    pub fn submit(self, cancel: Arc<Cancel>) -> mpsc::UnboundedReceiver<Event> {
        let (events, receiver) = mpsc::unbounded_channel();
        self.submit_to(cancel, Sink::Channel(events));
        receiver
    }

    /// Hands the question to the pool, its events going to `sink` (the
    /// reply hub, for the WebSocket).
    pub fn submit_to(self, cancel: Arc<Cancel>, sink: Sink) {
        self.slot.submit(Job {
            session: self.session,
            question: self.question,
            reply: self.reply,
            events: sink,
            cancel,
        });
    }
}

/// Stores a question and the placeholder of its reply (`streaming`), both
/// durable when it returns.
async fn store_question(
    store: &Store,
    session: Uuid,
    text: String,
) -> Result<Exchange, StorageError> {
    let exchange = store.messages().append_exchange_nowait(session, text)?;
    store.durable().await?;
    Ok(exchange)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::tests::boot;
    use palaver_storage::MessageStatus;

    const DEMO: fn() -> Policy = || Policy::Demo {
        limit: 2,
        ends_at: now_secs() + 900,
        lifetime: 900,
    };

    async fn setup() -> (crate::Booted, Store, Session) {
        let store = Store::temporary().unwrap();
        let booted = boot(store.clone());
        let session = store
            .sessions()
            .create(UserId::new(), "s".into(), None)
            .await
            .unwrap();
        (booted, store, session)
    }

    fn asking<'a>(booted: &'a crate::Booted, store: &'a Store) -> Asking<'a> {
        Asking {
            store,
            quotas: &booted.quotas,
            pool: &booted.pool,
            max_chars: 10,
        }
    }

    #[actix_rt::test]
    async fn invalid_questions_are_neither_counted_nor_stored() {
        let (booted, store, session) = setup().await;
        let user = UserId::new();
        let ask = asking(&booted, &store);
        for text in ["far too long a question", "   "] {
            let refused = ask
                .reserve(text.into(), Some((user, DEMO())))
                .err()
                .unwrap();
            assert!(refused.is_invalid(), "{refused:?}");
        }
        assert_eq!(
            booted.quotas.peek(user, DEMO(), now_secs()).unwrap().count,
            0
        );
        assert_eq!(store.sessions().message_count(session.id).unwrap(), 0);
    }

    #[actix_rt::test]
    async fn a_question_is_counted_stored_and_answered() {
        let (booted, store, session) = setup().await;
        let user = UserId::new();
        let ask = asking(&booted, &store);
        let reserved = ask.reserve("hello there".into(), Some((user, DEMO())));
        assert!(matches!(reserved, Err(Refusal::TooLong { max: 10 })));
        let reserved = ask
            .reserve("hi there".into(), Some((user, DEMO())))
            .unwrap();
        let stored = reserved.store(session.id).await.unwrap();
        assert_eq!(stored.standing.unwrap().count, 1);
        assert_eq!(stored.question.text, "hi there");
        assert_eq!(stored.reply.status, MessageStatus::Streaming);
        let reply_id = stored.reply.id;
        assert_eq!(stored.session.id, session.id);
        let mut events = stored.submit(Arc::default());
        let mut text = String::new();
        loop {
            match events.recv().await.expect("events until done") {
                Event::Token(t) => text.push_str(&t),
                Event::Done { reply, .. } => {
                    assert_eq!(reply.id, reply_id);
                    assert_eq!(reply.status, MessageStatus::Complete);
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(text, "hi there");
        let page = store.messages().list(session.id, 0, 10).unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.items[1].text, "hi there");
    }

    #[actix_rt::test]
    async fn over_the_quota_nothing_is_stored_and_the_uncounted_path_skips_counting() {
        let (booted, store, session) = setup().await;
        let user = UserId::new();
        let ask = asking(&booted, &store);
        for _ in 0..2 {
            let r = ask.reserve("q".into(), Some((user, DEMO()))).unwrap();
            r.store(session.id).await.unwrap();
        }
        let refused = ask.reserve("q".into(), Some((user, DEMO()))).err().unwrap();
        assert!(matches!(refused, Refusal::Quota(s) if s.count == 2));
        assert_eq!(store.sessions().message_count(session.id).unwrap(), 4);
        // Counted elsewhere (HTTP): admitted whatever the count.
        let r = ask.reserve("q".into(), None).unwrap();
        assert!(r.store(session.id).await.unwrap().standing.is_none());
    }

    #[actix_rt::test]
    async fn a_full_pool_is_busy_before_anything_is_counted() {
        let (booted, store, session) = setup().await;
        let user = UserId::new();
        let ask = asking(&booted, &store);
        // The test pool: four places (`max_streams`). Hold every one.
        let mut held = Vec::new();
        while let Ok(r) = ask.reserve("q".into(), None) {
            held.push(r);
            assert!(held.len() <= 64, "the pool never fills");
        }
        let refused = ask.reserve("q".into(), Some((user, DEMO()))).err().unwrap();
        assert!(matches!(refused, Refusal::Busy));
        assert_eq!(
            booted.quotas.peek(user, DEMO(), now_secs()).unwrap().count,
            0
        );
        assert_eq!(store.sessions().message_count(session.id).unwrap(), 0);
    }
}
