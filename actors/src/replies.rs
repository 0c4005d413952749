//! The reply hub: every reply streaming to WebSocket clients, by session
//! (one at a time per session), with its events as sent and the sockets that
//! follow it (API.md §7, "Positions, resume and several sockets").
//!
//! A reply's run publishes each event here ([`Publisher`]): under one short
//! lock the event gets its `seq`, is encoded once, is appended to the
//! reply's log and is handed (never waited on) to every subscribed socket.
//! A resume takes the log's snapshot after its position and subscribes under
//! the same lock, so it sees every event exactly once. Each socket's own
//! actor queues what it is handed into its bounded outbox and closes itself
//! (1008) when that is full: one slow tab never slows the reply or another
//! tab.
//!
//! When the reply finishes, its log is stored with the reply (one record,
//! in the reply's own flush; see `analysis::run`) and leaves the hub once
//! `done` is published; a later resume reads it from storage while it is
//! within `ws.resume_window`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use palaver_storage::{LoggedEvent, MessageStatus, ReplyLog, Role, StorageError, Store, UserId};
use uuid::Uuid;

use crate::analysis::{Cancel, Event, Usage};
use crate::messages::ReplyFrame;
use crate::protocol::{ErrorCode, ServerFrame, Status};

/// A reply already streams on this session.
#[derive(Debug, PartialEq, Eq)]
pub struct InProgress;

/// A socket following a reply.
struct Subscriber {
    conn: u64,
    to: Recipient<ReplyFrame>,
}

/// A session's reply: claimed while its question is stored, then streaming.
struct Live {
    /// The reply's stop flag: `cancel` from any socket of the session.
    cancel: Arc<Cancel>,
    stream: Option<Stream>,
}

struct Stream {
    id: Uuid,
    /// The numbered events, as sent, with their `type`: `events[i]` has
    /// `seq` `i + 1`.
    events: Vec<(&'static str, Arc<str>)>,
    /// Each token's length, `None` for the other events: what the stored
    /// log keeps of them (the frames are rebuilt from the reply's text).
    token_lens: Vec<Option<u32>>,
    /// The `error` that ended the reply, once sent.
    ending: Vec<Arc<str>>,
    subscribers: Vec<Subscriber>,
}

impl Stream {
    /// Hands a frame to every subscriber (pruning the ones that are gone);
    /// how many there are.
    fn publish(&mut self, frame: ReplyFrame) -> usize {
        self.subscribers.retain(|s| s.to.connected());
        for s in &self.subscribers {
            s.to.do_send(frame.clone());
        }
        self.subscribers.len()
    }

    fn frame(&self, seq: u64, json: Arc<str>, part: Part) -> ReplyFrame {
        ReplyFrame {
            reply: self.id,
            seq,
            json,
            part,
        }
    }
}

/// What a frame is to the socket that receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The question's `message` (no `seq`).
    Message,
    /// A numbered event (`tool_call`, `tool_result`, `token`).
    Event(&'static str),
    /// The engine failed: `error` `analysis_failed` (`done` follows).
    Failed,
    /// `done`: the reply is stored; nothing of it follows.
    Done,
}

impl Part {
    /// The frame's `type` (metrics).
    pub fn kind(self) -> &'static str {
        match self {
            Part::Message => "message",
            Part::Event(kind) => kind,
            Part::Failed => "error",
            Part::Done => "done",
        }
    }
}

/// The answer to a `resume`.
pub enum Resume {
    /// The frames to send after `resumed`, and whether the reply is still
    /// streaming (its live events then follow as [`ReplyFrame`]s).
    Replay {
        live: bool,
        frames: Vec<(Part, u64, Arc<str>)>,
    },
    /// Not a resumable reply of this session (or past the window).
    Unavailable,
}

/// The hub, shared by every session actor (`SessionDeps`) and every reply's
/// run. A short mutex, never held across an await.
pub struct Replies {
    live: Mutex<HashMap<Uuid, Live>>,
    store: Store,
    /// `ws.resume_window`.
    window: Duration,
}

impl Replies {
    pub fn new(store: Store, window: Duration) -> Arc<Replies> {
        Arc::new(Replies {
            live: Mutex::new(HashMap::new()),
            store,
            window,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the session's one place for a reply (a question is starting);
    /// its stop flag, or `InProgress`.
    pub fn claim(&self, session: Uuid) -> Result<Arc<Cancel>, InProgress> {
        let mut live = self.lock();
        if live.contains_key(&session) {
            return Err(InProgress);
        }
        let cancel = Arc::new(Cancel::default());
        live.insert(
            session,
            Live {
                cancel: cancel.clone(),
                stream: None,
            },
        );
        Ok(cancel)
    }

    /// Gives the place back: the question did not start.
    pub fn release(&self, session: Uuid) {
        let mut live = self.lock();
        if live.get(&session).is_some_and(|l| l.stream.is_none()) {
            live.remove(&session);
        }
    }

    /// `cancel` from a socket of the session: stops its reply, if one is
    /// starting or streaming.
    pub fn cancel(&self, session: Uuid) {
        if let Some(live) = self.lock().get(&session) {
            live.cancel.by_client();
        }
    }

    /// The claimed question was stored: its reply streams to `subscribers`
    /// (the session's sockets now), each of which but `asker` (which sends
    /// it itself, before its `quota`) is handed the `message` frame.
    pub fn open(
        self: &Arc<Self>,
        session: Uuid,
        reply: Uuid,
        message: Arc<str>,
        asker: u64,
        subscribers: Vec<(u64, Recipient<ReplyFrame>)>,
    ) -> Publisher {
        let id_str: Arc<str> = reply.hyphenated().to_string().into();
        let mut stream = Stream {
            id: reply,
            events: Vec::new(),
            token_lens: Vec::new(),
            ending: Vec::new(),
            subscribers: Vec::with_capacity(subscribers.len()),
        };
        for (conn, to) in subscribers {
            if conn != asker {
                to.do_send(stream.frame(0, message.clone(), Part::Message));
            }
            stream.subscribers.push(Subscriber { conn, to });
        }
        let mut live = self.lock();
        let entry = live.entry(session).or_insert_with(|| Live {
            cancel: Arc::default(),
            stream: None,
        });
        entry.stream = Some(stream);
        Publisher {
            hub: self.clone(),
            session,
            reply,
            id_str,
            done: None,
        }
    }

    /// A socket closed: it follows nothing any more.
    pub fn unsubscribe(&self, session: Uuid, conn: u64) {
        if let Some(stream) = self
            .lock()
            .get_mut(&session)
            .and_then(|l| l.stream.as_mut())
        {
            stream.subscribers.retain(|s| s.conn != conn);
        }
    }

    /// A `resume` of `reply` after `after` by socket `conn` of `session`:
    /// from the hub if it streams (the socket then follows it), else from
    /// its stored log within the window, else, for a reply a restart
    /// interrupted, its `done` `failed`. Anything else is unavailable,
    /// whatever the reason (nothing about other sessions is revealed).
    pub fn resume(
        &self,
        session: Uuid,
        user: UserId,
        reply: Uuid,
        after: u64,
        conn: u64,
        to: Recipient<ReplyFrame>,
    ) -> Result<Resume, StorageError> {
        {
            let mut live = self.lock();
            if let Some(stream) = live
                .get_mut(&session)
                .and_then(|l| l.stream.as_mut())
                .filter(|s| s.id == reply)
            {
                let frames = replay(&stream.events, &stream.ending, after);
                stream.subscribers.retain(|s| s.conn != conn);
                stream.subscribers.push(Subscriber { conn, to });
                return Ok(Resume::Replay { live: true, frames });
            }
        }
        let now = palaver_storage::now_millis();
        let since = now.saturating_sub(self.window.as_millis() as u64);
        if let Some(log) = self.store.reply_events().get(session, reply)? {
            if log.user_id != user || log.finished_at < since {
                return Ok(Resume::Unavailable);
            }
            let Some(events) = expand_log(&log, reply) else {
                tracing::error!(reply_id = %reply, "a stored reply log does not match its text");
                return Ok(Resume::Unavailable);
            };
            let mut ending: Vec<Arc<str>> = log.ending.into_iter().map(Arc::from).collect();
            let done = ending.pop();
            let mut frames = replay(&events, &ending, after);
            frames.extend(done.map(|d| (Part::Done, 0, d)));
            return Ok(Resume::Replay {
                live: false,
                frames,
            });
        }
        // No log: a reply a restart interrupted (stored `failed` at start)
        // ends `failed`; its events were never stored.
        match self.store.messages().find_recent(session, reply, since)? {
            Some(m) if m.role == Role::Assistant && m.status == MessageStatus::Failed => {
                let done = ServerFrame::Done {
                    message_id: m.id.hyphenated().to_string().into(),
                    status: Status::Failed,
                    usage: Usage::default(),
                    last_seq: after,
                };
                Ok(Resume::Replay {
                    live: false,
                    frames: vec![(Part::Done, 0, done.to_json().into())],
                })
            }
            _ => Ok(Resume::Unavailable),
        }
    }
}

/// The frames a resume after `after` sends: the events with `seq > after`,
/// then the ending sent so far.
fn replay(
    events: &[(&'static str, Arc<str>)],
    ending: &[Arc<str>],
    after: u64,
) -> Vec<(Part, u64, Arc<str>)> {
    let from = usize::try_from(after)
        .unwrap_or(usize::MAX)
        .min(events.len());
    let mut frames: Vec<_> = events[from..]
        .iter()
        .enumerate()
        .map(|(i, (kind, json))| (Part::Event(kind), (from + i + 1) as u64, json.clone()))
        .collect();
    frames.extend(ending.iter().map(|e| (Part::Failed, 0, e.clone())));
    frames
}

/// The start every numbered event's frame has (the field order of
/// `ServerFrame`'s variants), written into `out`: stored logs keep only
/// what follows it.
fn frame_start(out: &mut String, kind: &str, id: &str, seq: u64) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(out, r#"{{"type":"{kind}","message_id":"{id}","seq":{seq},"#);
}

/// A numbered event as stored: a letter for its `type`, then its frame
/// without [`frame_start`] (a token's is about a fifth of its frame), or
/// `=` and the whole frame should it ever not start so. `scratch` is a
/// buffer the caller reuses from event to event.
fn compact(scratch: &mut String, kind: &str, id: &str, seq: u64, json: &str) -> String {
    let letter = match kind {
        "token" => 't',
        "tool_call" => 'c',
        "tool_result" => 'r',
        _ => '=',
    };
    frame_start(scratch, kind, id, seq);
    let (letter, rest) = match json.strip_prefix(scratch.as_str()) {
        Some(rest) if letter != '=' => (letter, rest),
        _ => ('=', json),
    };
    let mut stored = String::with_capacity(1 + rest.len());
    stored.push(letter);
    stored.push_str(rest);
    stored
}

/// The frames of a stored log's events, byte for byte as sent: tokens are
/// rebuilt from their text (encoded as when they were sent), the others
/// expanded (see [`compact`]). `None` if the lengths do not fit the text.
fn expand_log(log: &ReplyLog, reply: Uuid) -> Option<Vec<(&'static str, Arc<str>)>> {
    let id: Arc<str> = reply.hyphenated().to_string().into();
    let mut at = 0usize;
    let mut frames = Vec::with_capacity(log.events.len());
    for (i, event) in log.events.iter().enumerate() {
        let seq = i as u64 + 1;
        frames.push(match event {
            LoggedEvent::Token(len) => {
                let end = at.checked_add(usize::try_from(*len).ok()?)?;
                let text = log.text.get(at..end)?;
                at = end;
                let frame = ServerFrame::Token {
                    message_id: id.clone(),
                    seq,
                    text: text.to_owned(),
                };
                ("token", frame.to_json().into())
            }
            LoggedEvent::Frame(stored) => expand(stored, &id, seq),
        });
    }
    Some(frames)
}

/// The frame a stored event was, byte for byte (see [`compact`]).
fn expand(stored: &str, id: &str, seq: u64) -> (&'static str, Arc<str>) {
    let kind = match stored.as_bytes().first() {
        Some(b't') => "token",
        Some(b'c') => "tool_call",
        Some(b'r') => "tool_result",
        _ => return ("event", Arc::from(stored.get(1..).unwrap_or_default())),
    };
    let rest = stored.get(1..).unwrap_or_default();
    let mut frame = String::with_capacity(80 + rest.len());
    frame_start(&mut frame, kind, id, seq);
    frame.push_str(rest);
    (kind, frame.into())
}

/// A reply's end of the hub, held by its run: publishes its events, keeps
/// its log, ends it.
pub struct Publisher {
    hub: Arc<Replies>,
    session: Uuid,
    reply: Uuid,
    id_str: Arc<str>,
    /// `done`, encoded before the reply is stored, published after.
    done: Option<Arc<str>>,
}

impl Publisher {
    /// Numbers, encodes, logs and hands out one event; `false` when no
    /// socket follows the reply any more.
    pub fn event(&self, event: Event) -> bool {
        let mut live = self.hub.lock();
        let Some(stream) = self.stream(&mut live) else {
            return false;
        };
        let seq = stream.events.len() as u64 + 1;
        let message_id = self.id_str.clone();
        let frame = match event {
            Event::ToolCall { tool, args } => ServerFrame::ToolCall {
                message_id,
                seq,
                tool,
                args,
            },
            Event::ToolResult {
                tool,
                success,
                result,
            } => ServerFrame::ToolResult {
                message_id,
                seq,
                tool,
                success,
                result,
            },
            Event::Token(text) => ServerFrame::Token {
                message_id,
                seq,
                text,
            },
            // Not numbered events: see `failed` and `finish`.
            Event::Failed { .. } | Event::Done { .. } => return true,
        };
        let kind = frame.kind();
        let json: Arc<str> = frame.to_json().into();
        let token_len = match &frame {
            ServerFrame::Token { text, .. } => Some(u32::try_from(text.len()).unwrap_or(u32::MAX)),
            _ => None,
        };
        stream.token_lens.push(token_len);
        stream.events.push((kind, json.clone()));
        let frame = stream.frame(seq, json, Part::Event(kind));
        stream.publish(frame) > 0
    }

    /// The engine failed: `error` `analysis_failed`, kept with the log.
    pub fn failed(&self, message: String) {
        let mut live = self.hub.lock();
        let Some(stream) = self.stream(&mut live) else {
            return;
        };
        let json: Arc<str> = ServerFrame::error(ErrorCode::AnalysisFailed, message)
            .to_json()
            .into();
        stream.ending.push(json.clone());
        let frame = stream.frame(0, json, Part::Failed);
        stream.publish(frame);
    }

    /// The reply's log with its `done` (status and usage known), to store
    /// with the reply; `done` itself is published by [`Publisher::finish`].
    /// `text` is the stored reply's: its tokens, in order, are the ones
    /// published (a run keeps no token it could not send; the log is cut
    /// to what was published all the same).
    pub fn log(
        &mut self,
        user: UserId,
        status: MessageStatus,
        usage: Usage,
        text: &str,
    ) -> ReplyLog {
        let mut live = self.hub.lock();
        let id = &self.id_str;
        let (text, events, mut ending) = match self.stream(&mut live) {
            Some(s) => {
                let mut scratch = String::with_capacity(128);
                let events = s
                    .events
                    .iter()
                    .zip(&s.token_lens)
                    .enumerate()
                    .map(|(i, ((kind, json), token_len))| match token_len {
                        Some(len) => LoggedEvent::Token(*len),
                        None => {
                            LoggedEvent::Frame(compact(&mut scratch, kind, id, i as u64 + 1, json))
                        }
                    })
                    .collect::<Vec<_>>();
                let ending = s.ending.iter().map(|e| e.to_string()).collect::<Vec<_>>();
                let sent: usize = s.token_lens.iter().flatten().map(|&l| l as usize).sum();
                let text = text.get(..sent).unwrap_or(text).to_owned();
                (text, events, ending)
            }
            None => (String::new(), Vec::new(), Vec::new()),
        };
        let done: Arc<str> = ServerFrame::Done {
            message_id: self.id_str.clone(),
            status: status.into(),
            usage,
            last_seq: events.len() as u64,
        }
        .to_json()
        .into();
        ending.push(done.to_string());
        self.done = Some(done);
        ReplyLog {
            session_id: self.session,
            user_id: user,
            finished_at: palaver_storage::now_millis(),
            text,
            events,
            ending,
        }
    }

    /// The reply is stored: publishes `done` and takes the reply out of the
    /// hub (a later resume reads the stored log).
    pub fn finish(self) {
        let mut live = self.hub.lock();
        let Some(mut stream) = live.remove(&self.session).and_then(|l| l.stream) else {
            return;
        };
        if let Some(done) = self.done.clone() {
            let frame = stream.frame(0, done, Part::Done);
            stream.publish(frame);
        }
    }

    fn stream<'l>(&self, live: &'l mut HashMap<Uuid, Live>) -> Option<&'l mut Stream> {
        live.get_mut(&self.session)
            .and_then(|l| l.stream.as_mut())
            .filter(|s| s.id == self.reply)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // A run dropped without `finish` (its arbiter gone): the session's
        // place must not stay taken.
        let mut live = self.hub.lock();
        if live
            .get(&self.session)
            .and_then(|l| l.stream.as_ref())
            .is_some_and(|s| s.id == self.reply)
        {
            live.remove(&self.session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_events_expand_to_the_frames_sent() {
        let id: Arc<str> = Uuid::now_v7().hyphenated().to_string().into();
        let frames = [
            ServerFrame::ToolCall {
                message_id: id.clone(),
                seq: 1,
                tool: "tempo".into(),
                args: serde_json::json!({"track": "x", "n": 1.5}),
            },
            ServerFrame::ToolResult {
                message_id: id.clone(),
                seq: 2,
                tool: "tempo".into(),
                success: true,
                result: serde_json::json!({"bpm": 120}),
            },
            ServerFrame::Token {
                message_id: id.clone(),
                seq: 3,
                text: " \"quoted\" ünïcode".into(),
            },
        ];
        for (i, frame) in frames.iter().enumerate() {
            let json = frame.to_json();
            let seq = i as u64 + 1;
            let stored = compact(&mut String::new(), frame.kind(), &id, seq, &json);
            assert!(stored.len() < json.len(), "{stored}");
            let (kind, again) = expand(&stored, &id, seq);
            assert_eq!(kind, frame.kind());
            assert_eq!(&*again, json.as_str());
        }
        // A frame that does not start as expected is kept whole.
        let odd = compact(&mut String::new(), "token", &id, 1, r#"{"other":1}"#);
        assert_eq!(&*expand(&odd, &id, 1).1, r#"{"other":1}"#);
    }

    #[test]
    fn a_stored_log_rebuilds_its_tokens_from_the_text() {
        let reply = Uuid::now_v7();
        let id: Arc<str> = reply.hyphenated().to_string().into();
        let pieces = ["Héllo", " \"wörld\"", "", " ✓"];
        let call = ServerFrame::ToolCall {
            message_id: id.clone(),
            seq: 1,
            tool: "tempo".into(),
            args: serde_json::json!({"track": "x"}),
        }
        .to_json();
        let mut events = vec![LoggedEvent::Frame(compact(
            &mut String::new(),
            "tool_call",
            &id,
            1,
            &call,
        ))];
        events.extend(pieces.iter().map(|p| LoggedEvent::Token(p.len() as u32)));
        let mut log = ReplyLog {
            session_id: Uuid::now_v7(),
            user_id: UserId::new(),
            finished_at: 0,
            text: pieces.concat(),
            events,
            ending: vec![],
        };
        let frames = expand_log(&log, reply).unwrap();
        assert_eq!(frames[0], ("tool_call", Arc::from(call.as_str())));
        for (i, piece) in pieces.iter().enumerate() {
            let sent = ServerFrame::Token {
                message_id: id.clone(),
                seq: i as u64 + 2,
                text: (*piece).to_owned(),
            }
            .to_json();
            assert_eq!(frames[i + 1], ("token", Arc::from(sent.as_str())));
        }
        // Lengths past the text, or through a character, are refused.
        log.events.push(LoggedEvent::Token(1));
        assert!(expand_log(&log, reply).is_none());
        log.events.pop();
        log.events[1] = LoggedEvent::Token(2);
        assert!(expand_log(&log, reply).is_none());
    }
}
