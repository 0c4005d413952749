//! A finished reply's events, so a client that comes back gets exactly what
//! it missed (API.md §7, "Positions, resume and several sockets").
//!
//! They are part of the reply's own record ([`crate::Message::replay`]),
//! written with it when it is stored: no write of their own, no flush per
//! token, and nothing to sweep or to remove with a session. A resume checks
//! their age against `ws.resume_window` itself.
//!
//! A token is kept as its length in the reply's text (the tokens are the
//! start of that text, in order); other events are opaque text here (this
//! crate knows no wire types): the actors encode them once and store them in
//! the compact form they define, and rebuild every frame, byte for byte,
//! from these and the text.
//!
//! Schemas 2 and 3 kept them in a tree of their own (`reply_logs`, one
//! record per reply, versions 1 and 2 below); schema 4 moves each into its
//! reply (see `meta`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::Record;
use crate::ids::UserId;

/// A finished reply's numbered events and its ending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// When the reply was stored (Unix ms): the resume window counts from here.
    pub finished_at: u64,
    /// The numbered events, `events[i]` carrying `seq` `i + 1`.
    pub events: Vec<LoggedEvent>,
    /// What ended the reply before `done`, as sent (an `error`), replayed
    /// after the events whatever the resume's position. A log of schema 2
    /// or 3 (`usage` none) has its `done` as sent here too, last.
    pub ending: Vec<String>,
    /// The `done`'s usage, from which the actors rebuild it (with the
    /// reply's id and status and the number of events): a few bytes where
    /// the frame as sent is about 170, kept as long as the reply.
    pub usage: Option<ReplyUsage>,
}

/// What a reply's `done` reports beyond its id, status and last `seq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyUsage {
    pub tokens: u64,
    pub first_token_ms: u64,
    pub total_ms: u64,
}

impl Replay {
    /// The bytes of the reply's text its tokens carried, or `None` if the
    /// lengths do not fit in `text` (the replay is unusable).
    pub fn sent_text<'t>(&self, text: &'t str) -> Option<&'t str> {
        let sent = self
            .events
            .iter()
            .try_fold(0usize, |sum, event| match event {
                LoggedEvent::Token(len) => sum.checked_add(usize::try_from(*len).ok()?),
                LoggedEvent::Frame(_) => Some(sum),
            })?;
        text.get(..sent)
    }
}

/// One numbered event of a [`Replay`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoggedEvent {
    /// A token: the next this many bytes of the reply's text.
    Token(u32),
    /// Any other event, in the compact form the actors define.
    Frame(String),
}

/// Version 2 of the `reply_logs` record (schema 3): the reply's place in
/// its session instead of a copy of its text.
#[derive(Serialize, Deserialize)]
pub(crate) struct ReplyLogV2 {
    pub session_id: Uuid,
    pub user_id: UserId,
    pub finished_at: u64,
    pub seq: u64,
    pub events: Vec<LoggedEvent>,
    pub ending: Vec<String>,
}

impl Record for ReplyLogV2 {
    const TREE: &'static str = "reply_logs";
    const VERSION: u8 = 2;
}

/// Version 1 of the `reply_logs` record (schema 2): with a copy of the
/// tokens' text.
#[derive(Serialize, Deserialize)]
pub(crate) struct ReplyLogV1 {
    pub session_id: Uuid,
    pub user_id: UserId,
    pub finished_at: u64,
    pub text: String,
    pub events: Vec<LoggedEvent>,
    pub ending: Vec<String>,
}

impl Record for ReplyLogV1 {
    const TREE: &'static str = "reply_logs";
    const VERSION: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(events: Vec<LoggedEvent>) -> Replay {
        Replay {
            finished_at: 1,
            events,
            ending: vec![],
            usage: None,
        }
    }

    #[test]
    fn the_tokens_text_is_the_start_of_the_reply_or_nothing() {
        let tool = LoggedEvent::Frame("c{}".into());
        let r = replay(vec![
            tool.clone(),
            LoggedEvent::Token(5),
            LoggedEvent::Token(6),
        ]);
        assert_eq!(r.sent_text("Hello there, and more"), Some("Hello there"));
        assert_eq!(r.sent_text("Hello there"), Some("Hello there"));
        // Lengths past the text, or cutting a character: unusable.
        assert_eq!(r.sent_text("Hello"), None);
        let r = replay(vec![LoggedEvent::Token(1)]);
        assert_eq!(r.sent_text("é"), None);
        assert_eq!(replay(vec![tool]).sent_text("abc"), Some(""));
        let r = replay(vec![
            LoggedEvent::Token(u32::MAX),
            LoggedEvent::Token(u32::MAX),
        ]);
        assert_eq!(r.sent_text("abc"), None);
    }
}
