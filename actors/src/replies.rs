//! The reply hub: every reply streaming to WebSocket clients, by session
//! (one at a time per session), with its events as sent and the sockets that
//! follow it (API.md §7, "Positions, resume and several sockets").
//!
//! A reply's run publishes each event here ([`Publisher`]): under one short
//! lock the event gets its `seq`, is encoded once, is appended to the
//! reply's log and is queued straight into the outbox of every socket that
//! follows the reply (a [`Follower`]: the socket's `socket::Sender`, beside
//! its actor's address). No frame passes through a session actor's
//! mailbox; the actors are told only what they must act on
//! ([`ReplyNotice`]): a socket whose outbox is full (past
//! `ws.max_buffered_bytes`) is dropped from the reply and its actor told,
//! which closes it (1008), so one slow tab never slows the reply or another
//! tab; the socket that asked is told when the reply failed (its question's
//! count is given back) and when its `done` is queued (it may ask again;
//! its `quota` follows `done`). A socket whose actor queued a close frame
//! is dropped at its next frame (nothing after a close is written).
//!
//! Every frame of a reply is queued under the hub's lock, and so is a
//! resume's answer: `resumed`, the events after its position and the
//! ending so far are queued, and the socket subscribed, in one step, so no
//! live event can come before `resumed`, between the replayed ones, or
//! twice. A socket thus receives each `seq` at most once per `resume`, and
//! needs no record of what it was sent: the actors keep none (the mailbox
//! lag that once made a live frame overlap a resume's replay, and that
//! their record of delivered positions covered, is gone). The hub keeps a
//! resume's position with the subscription only so that a position past
//! what was sent (a client claiming events it cannot have) still gets no
//! event at or below it. A resume that replays a stored log queues it
//! under the lock too, so another reply's live frames never land inside
//! it.
//!
//! A socket follows the replies that start on its session once its actor
//! queued `connected` (`Connections::attach`): one opened while a reply
//! starts follows it only by resuming it.
//!
//! When the reply finishes, its log is stored with the reply (one record,
//! in the reply's own flush; see `analysis::run`) and leaves the hub once
//! `done` is queued; a later resume reads it from storage while it is
//! within `ws.resume_window`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use palaver_storage::{LoggedEvent, MessageStatus, Replay, Role, StorageError, Store};
use uuid::Uuid;

use crate::analysis::{Cancel, Event, Usage};
use crate::messages::{ReplyNotice, ToSocket};
use crate::protocol::{ErrorCode, ServerFrame, Status};
use crate::socket::{Pushed, Sender};
use crate::telemetry;

/// A reply already streams on this session.
#[derive(Debug, PartialEq, Eq)]
pub struct InProgress;

/// A socket following a reply.
pub struct Follower {
    /// The connection's id in the registry.
    pub conn: u64,
    /// Its outbox: the reply's frames are queued here, under the hub's lock.
    pub out: Sender,
    /// Its actor: told when its outbox overflowed, and (the asker's) when
    /// the reply failed or ended.
    pub actor: Recipient<ToSocket>,
}

/// Queues one frame for a follower, counted as every frame a socket sends
/// is (a frame refused at the bound too, as when the actor queued them);
/// `false` when it follows nothing any more: its outbox was full (its
/// actor is told, and closes with 1008) or the socket is closing.
fn push(follower: &Follower, kind: &'static str, json: &Arc<str>) -> bool {
    match follower.out.shared(json.clone()) {
        Pushed::Queued => {
            telemetry::ws_message("out", kind);
            true
        }
        Pushed::Full => {
            telemetry::ws_message("out", kind);
            follower
                .actor
                .do_send(ToSocket::Reply(ReplyNotice::Overflowed));
            false
        }
        Pushed::Gone => false,
    }
}

/// A session's reply: claimed while its question is stored, then streaming.
struct Live {
    /// The reply's stop flag: `cancel` from any socket of the session.
    cancel: Arc<Cancel>,
    stream: Option<Stream>,
}

struct Stream {
    id: Uuid,
    /// The socket whose question the reply answers.
    asker: u64,
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

/// A socket following a reply.
struct Subscriber {
    follower: Follower,
    /// The position a resume gave (0 for the others): live events up to it
    /// are not queued. Only a position past what was sent (the client says
    /// it has events not sent yet) ever skips one.
    after: u64,
}

impl Stream {
    /// Queues a frame (the event `seq`, 0 for the others) for every
    /// subscriber, dropping the ones that no longer follow; how many still
    /// do.
    fn publish(&mut self, kind: &'static str, json: &Arc<str>, seq: u64) -> usize {
        self.subscribers
            .retain(|s| (seq > 0 && seq <= s.after) || push(&s.follower, kind, json));
        self.subscribers.len()
    }

    /// Publishes the reply's `error` or `done`, then tells the asker (if it
    /// followed the reply until then): after the frame is queued, so what
    /// its actor sends on being told follows it.
    fn publish_ending(&mut self, kind: &'static str, json: &Arc<str>, notice: ReplyNotice) {
        let asker = self
            .subscribers
            .iter()
            .find(|s| s.follower.conn == self.asker)
            .map(|s| s.follower.actor.clone());
        self.publish(kind, json, 0);
        if let Some(asker) = asker {
            asker.do_send(ToSocket::Reply(notice));
        }
    }
}

/// The answer to a `resume`.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// `resumed` and the reply's frames after the position were queued for
    /// the socket (and, the reply still streaming, it follows it now), or
    /// its outbox overflowed (its actor is told).
    Replayed,
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

    /// The claimed question was stored: its reply streams to `followers`
    /// (the session's sockets now), each of which but `asker` (which sends
    /// it itself, before its `quota`) is queued the `message` frame.
    pub fn open(
        self: &Arc<Self>,
        session: Uuid,
        reply: Uuid,
        message: Arc<str>,
        asker: u64,
        followers: Vec<Follower>,
    ) -> Publisher {
        let id_str: Arc<str> = reply.hyphenated().to_string().into();
        let mut stream = Stream {
            id: reply,
            asker,
            events: Vec::new(),
            token_lens: Vec::new(),
            ending: Vec::new(),
            subscribers: Vec::with_capacity(followers.len()),
        };
        let mut live = self.lock();
        for follower in followers {
            if follower.conn == asker || push(&follower, "message", &message) {
                stream.subscribers.push(Subscriber { follower, after: 0 });
            }
        }
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
            stream.subscribers.retain(|s| s.follower.conn != conn);
        }
    }

    /// A `resume` of `reply` after `after` by `follower`, a socket of
    /// `session`: queues `resumed` and the reply's frames after `after`,
    /// from the hub if it streams (the socket then follows it, all in one
    /// step under the lock), else from its stored log within the window,
    /// else, for a reply a restart interrupted, its `done` `failed`.
    /// Anything else is unavailable (nothing queued), whatever the reason
    /// (nothing about other sessions is revealed).
    pub fn resume(
        &self,
        session: Uuid,
        reply: Uuid,
        after: u64,
        follower: Follower,
    ) -> Result<Resume, StorageError> {
        let resumed = |live| -> Arc<str> {
            ServerFrame::Resumed {
                message_id: reply.hyphenated().to_string(),
                after,
                live,
            }
            .to_json()
            .into()
        };
        let live_resumed = resumed(true);
        {
            let mut live = self.lock();
            if let Some(stream) = live
                .get_mut(&session)
                .and_then(|l| l.stream.as_mut())
                .filter(|s| s.id == reply)
            {
                stream
                    .subscribers
                    .retain(|s| s.follower.conn != follower.conn);
                let frames = replay(&stream.events, &stream.ending, after);
                if queue_replay(&follower, &live_resumed, &frames) {
                    stream.subscribers.push(Subscriber { follower, after });
                }
                return Ok(Resume::Replayed);
            }
        }
        let now = palaver_storage::now_millis();
        let since = now.saturating_sub(self.window.as_millis() as u64);
        let Some(stored) = self.store.messages().find_recent(session, reply, since)? else {
            return Ok(Resume::Unavailable);
        };
        match &stored.replay {
            Some(log) if stored.role == Role::Assistant => {
                if log.finished_at < since {
                    return Ok(Resume::Unavailable);
                }
                let Some(events) = expand_log(log, &stored.text, reply) else {
                    tracing::error!(reply_id = %reply, "a stored reply's events do not match its text");
                    return Ok(Resume::Unavailable);
                };
                let mut ending: Vec<Arc<str>> =
                    log.ending.iter().map(|e| Arc::from(e.as_str())).collect();
                let done = match log.usage {
                    // Rebuilt as it was sent (the same function).
                    Some(usage) => Some(done_frame(
                        &reply.hyphenated().to_string(),
                        stored.status,
                        usage.into(),
                        events.len(),
                    )),
                    // A log of schema 2 or 3 kept its `done` as sent.
                    None => ending.pop(),
                };
                let mut frames = replay(&events, &ending, after);
                frames.extend(done.map(|d| ("done", d)));
                // Under the lock, so another reply's live frames (one this
                // socket follows) do not land inside the replay.
                let _live = self.lock();
                queue_replay(&follower, &resumed(false), &frames);
                Ok(Resume::Replayed)
            }
            // No events: a reply a restart interrupted (stored `failed` at
            // start) ends `failed`; its events were never stored.
            None if stored.role == Role::Assistant && stored.status == MessageStatus::Failed => {
                let done = ServerFrame::Done {
                    message_id: stored.id.hyphenated().to_string().into(),
                    status: Status::Failed,
                    usage: Usage::default(),
                    last_seq: after,
                };
                let frames = [("done", done.to_json().into())];
                let _live = self.lock();
                queue_replay(&follower, &resumed(false), &frames);
                Ok(Resume::Replayed)
            }
            _ => Ok(Resume::Unavailable),
        }
    }
}

/// The frames a resume after `after` sends, with their `type`: the events
/// with `seq > after`, then the ending sent so far.
fn replay(
    events: &[(&'static str, Arc<str>)],
    ending: &[Arc<str>],
    after: u64,
) -> Vec<(&'static str, Arc<str>)> {
    let from = usize::try_from(after)
        .unwrap_or(usize::MAX)
        .min(events.len());
    let mut frames = events[from..].to_vec();
    frames.extend(ending.iter().map(|e| ("error", e.clone())));
    frames
}

/// Queues `resumed`, then `frames`, for a resuming socket (the caller holds
/// the hub's lock); `false` if it stopped: the outbox overflowed (the actor
/// is told) or the socket is closing.
fn queue_replay(
    follower: &Follower,
    resumed: &Arc<str>,
    frames: &[(&'static str, Arc<str>)],
) -> bool {
    push(follower, "resumed", resumed)
        && frames.iter().all(|(kind, json)| push(follower, kind, json))
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

/// A reply's `done`: as published, and as a resume rebuilds it from the
/// stored reply.
fn done_frame(id: &str, status: MessageStatus, usage: Usage, events: usize) -> Arc<str> {
    ServerFrame::Done {
        message_id: id.into(),
        status: status.into(),
        usage,
        last_seq: events as u64,
    }
    .to_json()
    .into()
}

/// The frames of a stored reply's events, byte for byte as sent: tokens
/// are rebuilt from the reply's `text`, whose start they are (encoded as
/// when they were sent), the others expanded (see [`compact`]). `None` if
/// the lengths do not fit the text.
fn expand_log(log: &Replay, text: &str, reply: Uuid) -> Option<Vec<(&'static str, Arc<str>)>> {
    let id: Arc<str> = reply.hyphenated().to_string().into();
    let mut at = 0usize;
    let mut frames = Vec::with_capacity(log.events.len());
    for (i, event) in log.events.iter().enumerate() {
        let seq = i as u64 + 1;
        frames.push(match event {
            LoggedEvent::Token(len) => {
                let end = at.checked_add(usize::try_from(*len).ok()?)?;
                let text = text.get(at..end)?;
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
    /// Numbers, encodes, logs and queues one event for every follower;
    /// `false` when no socket follows the reply any more.
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
        let followed = stream.publish(kind, &json, seq) > 0;
        stream.events.push((kind, json));
        followed
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
        stream.publish_ending("error", &json, ReplyNotice::Failed { reply: self.reply });
        stream.ending.push(json);
    }

    /// The reply's events with its `done` (status and usage known), to
    /// store with the reply; `done` itself is published by
    /// [`Publisher::finish`]. The tokens are kept as lengths: in order,
    /// they are the start of the reply's stored text (a run keeps no token
    /// it could not send).
    pub fn log(&mut self, status: MessageStatus, usage: Usage) -> Replay {
        let mut live = self.hub.lock();
        let id = &self.id_str;
        let (events, ending) = match self.stream(&mut live) {
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
                (events, ending)
            }
            None => (Vec::new(), Vec::new()),
        };
        self.done = Some(done_frame(&self.id_str, status, usage, events.len()));
        Replay {
            finished_at: palaver_storage::now_millis(),
            events,
            ending,
            usage: Some(usage.into()),
        }
    }

    /// The reply is stored: publishes `done` (then tells the asker) and
    /// takes the reply out of the hub (a later resume reads the stored
    /// log).
    pub fn finish(self) {
        let mut live = self.hub.lock();
        let Some(mut stream) = live.remove(&self.session).and_then(|l| l.stream) else {
            return;
        };
        if let Some(done) = &self.done {
            stream.publish_ending("done", done, ReplyNotice::Done { reply: self.reply });
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
    use crate::socket::tests::drain;
    use crate::socket::{Out, Socket};
    use actix_http::ws::Frame;
    use palaver_storage::UserId;

    /// A session actor's stand-in: keeps the notices it is sent.
    #[derive(Default)]
    struct Notices(Vec<ReplyNotice>);

    impl Actor for Notices {
        type Context = Context<Self>;
    }

    impl Handler<ToSocket> for Notices {
        type Result = ();
        fn handle(&mut self, notice: ToSocket, _: &mut Context<Self>) {
            match notice {
                ToSocket::Reply(notice) => self.0.push(notice),
                ToSocket::Close(why) => panic!("the hub closes nothing ({why:?})"),
            }
        }
    }

    /// Answers the notices received so far (after every one sent before:
    /// one mailbox, in order).
    struct Received;

    impl Message for Received {
        type Result = Vec<ReplyNotice>;
    }

    impl Handler<Received> for Notices {
        type Result = MessageResult<Received>;
        fn handle(&mut self, _: Received, _: &mut Context<Self>) -> Self::Result {
            MessageResult(std::mem::take(&mut self.0))
        }
    }

    /// A socket bounded at `limit` bytes, and its actor's stand-in.
    fn socket(limit: usize) -> (Socket, Addr<Notices>) {
        let socket = crate::socket::open(actix_http::Payload::None, 1 << 16, limit);
        (socket, Notices::default().start())
    }

    fn follower(conn: u64, socket: &Socket, notices: &Addr<Notices>) -> Follower {
        Follower {
            conn,
            out: socket.outbox.sender(),
            actor: notices.clone().recipient(),
        }
    }

    /// The frames written to a socket so far, parsed (its close as `null`).
    fn written(socket: &mut Socket) -> Vec<serde_json::Value> {
        drain(&mut socket.body)
            .0
            .into_iter()
            .map(|f| match f {
                Frame::Text(b) => serde_json::from_slice(&b).unwrap(),
                _ => serde_json::Value::Null,
            })
            .collect()
    }

    fn event_count(hub: &Replies, session: Uuid) -> usize {
        hub.lock()
            .get(&session)
            .and_then(|l| l.stream.as_ref())
            .map_or(0, |s| s.events.len())
    }

    /// A hub over a fresh store holding one session of a new user with a
    /// question and its reply's placeholder (whose id is the reply's), as a
    /// question leaves them: the store, the hub, the session, the placeholder.
    async fn asked() -> (Store, Arc<Replies>, Uuid, palaver_storage::Message) {
        let store = Store::temporary().unwrap();
        let hub = Replies::new(store.clone(), Duration::from_secs(60));
        let user = UserId::new();
        let session = store
            .sessions()
            .create(user, "t".into(), None)
            .await
            .unwrap();
        let stored = store
            .messages()
            .append_exchange_nowait(session.id, "q".into())
            .unwrap()
            .reply;
        (store, hub, session.id, stored)
    }

    /// Ends a reply as its run does: its text and events stored, then
    /// `done`.
    async fn finish(
        mut publisher: Publisher,
        store: &Store,
        reply: palaver_storage::Message,
        text: &str,
    ) {
        let usage = Usage {
            tokens: 7,
            first_token_ms: 3,
            total_ms: 40,
        };
        let replay = publisher.log(MessageStatus::Complete, usage);
        let stored = palaver_storage::Message {
            text: text.into(),
            status: MessageStatus::Complete,
            replay: Some(replay),
            ..reply
        };
        store.messages().update(&stored).await.unwrap();
        publisher.finish();
    }

    /// Checks what a resume after `after` queued: `resumed`, every event
    /// after it once and in order, then `done`.
    fn check_resumed(frames: &[serde_json::Value], after: u64, events: u64) {
        assert_eq!(frames[0]["type"], "resumed", "after {after}: {}", frames[0]);
        assert_eq!(frames[0]["after"], after);
        let seqs: Vec<u64> = frames[1..]
            .iter()
            .filter(|f| f["type"] == "token")
            .map(|f| f["seq"].as_u64().unwrap())
            .collect();
        let wanted: Vec<u64> = (after + 1..=events).collect();
        assert_eq!(seqs, wanted, "after {after}");
        let last = frames.last().unwrap();
        assert_eq!(last["type"], "done", "after {after}");
        assert_eq!(last["last_seq"], events);
        assert_eq!(frames.len(), 2 + wanted.len(), "after {after}");
    }

    #[actix_rt::test]
    async fn a_resume_racing_a_live_reply_gets_resumed_first_and_each_seq_once() {
        const EVENTS: u64 = 4000;
        const RESUMES: u64 = 40;
        let (store, hub, session, stored) = asked().await;
        let reply = stored.id;
        let (mut asker, asker_notices) = socket(1 << 20);
        hub.claim(session).unwrap();
        let publisher = hub.open(
            session,
            reply,
            Arc::from("{}"),
            1,
            vec![follower(1, &asker, &asker_notices)],
        );
        // The run publishes from its own thread, as on the stream arbiter,
        // while this one resumes on one new socket after another (those
        // after the last event follow the reply until it is finished).
        let run = std::thread::spawn(move || {
            let mut text = String::new();
            for i in 0..EVENTS {
                let token = format!("t{i} ");
                text.push_str(&token);
                assert!(publisher.event(Event::Token(token)));
            }
            (publisher, text)
        });
        let mut resumers = Vec::new();
        for k in 0..RESUMES {
            // Wait (without sleeping) until the reply is that far.
            while event_count(&hub, session) < (k * 50) as usize && !run.is_finished() {
                std::thread::yield_now();
            }
            // Positions behind, at and past what was sent so far.
            let after = [0, k * 40, k * 50, k * 50 + 30][k as usize % 4];
            let (resumer, notices) = socket(1 << 20);
            let answer = hub
                .resume(session, reply, after, follower(10 + k, &resumer, &notices))
                .unwrap();
            assert_eq!(answer, Resume::Replayed);
            resumers.push((after, resumer, notices));
        }
        let (publisher, text) = run.join().unwrap();
        finish(publisher, &store, stored, &text).await;
        let mut live = 0;
        for (after, mut resumer, notices) in resumers {
            let frames = written(&mut resumer);
            live += usize::from(frames[0]["live"] == true);
            check_resumed(&frames, after, EVENTS);
            // Only the asker is told the reply ended.
            assert_eq!(notices.send(Received).await.unwrap(), []);
        }
        // Most resumes met the reply streaming (else this tests little).
        assert!(live >= RESUMES as usize / 2, "{live} of {RESUMES} live");
        // Once it finished, from the stored log: the same frames.
        let (mut late, notices) = socket(1 << 20);
        hub.resume(session, reply, 7, follower(99, &late, &notices))
            .unwrap();
        let frames = written(&mut late);
        assert_eq!(frames[0]["live"], false);
        check_resumed(&frames, 7, EVENTS);
        // The asker saw every event once, then `done`, and was told.
        let seen = written(&mut asker);
        assert_eq!(seen.len() as u64, EVENTS + 1);
        // The stored reply's `done` is rebuilt as it was sent.
        assert_eq!(frames.last(), seen.last());
        assert!(seen[..EVENTS as usize]
            .iter()
            .enumerate()
            .all(|(i, f)| f["seq"] == i as u64 + 1));
        assert_eq!(
            asker_notices.send(Received).await.unwrap(),
            [ReplyNotice::Done { reply }]
        );
    }

    #[actix_rt::test]
    async fn a_slow_follower_is_dropped_and_told_while_the_others_get_everything() {
        let (store, hub, session, stored) = asked().await;
        let reply = stored.id;
        let (mut asker, asker_notices) = socket(1 << 20);
        // Holds the `message` and a few events, not the reply.
        let (mut slow, slow_notices) = socket(600);
        // Its actor queued a close: it gets nothing more, and is not told
        // of an overflow (its queue is full all the same).
        let (mut closing, closing_notices) = socket(10);
        closing.outbox.control(Out::Close(1000, ""));
        hub.claim(session).unwrap();
        let publisher = hub.open(
            session,
            reply,
            Arc::from(r#"{"type":"message"}"#),
            1,
            vec![
                follower(1, &asker, &asker_notices),
                follower(2, &slow, &slow_notices),
                follower(3, &closing, &closing_notices),
            ],
        );
        let mut text = String::new();
        for i in 0..100 {
            let token = format!("token {i:>4} ");
            text.push_str(&token);
            // The reply never waits on, nor stops for, the slow one.
            assert!(publisher.event(Event::Token(token)));
        }
        publisher.failed("the engine broke".into());
        finish(publisher, &store, stored, &text).await;

        let fast = written(&mut asker);
        let types: Vec<&str> = fast.iter().map(|f| f["type"].as_str().unwrap()).collect();
        // The asker queued its own `message`.
        assert_eq!(types.len(), 102);
        assert_eq!(types[..100], ["token"; 100]);
        assert_eq!(types[100..], ["error", "done"]);
        assert_eq!(
            asker_notices.send(Received).await.unwrap(),
            [ReplyNotice::Failed { reply }, ReplyNotice::Done { reply }]
        );

        let got = written(&mut slow);
        assert_eq!(got[0]["type"], "message");
        assert!(got.len() > 1 && got.len() < 20, "{}", got.len());
        assert!(got[1..].iter().all(|f| f["type"] == "token"));
        assert_eq!(
            slow_notices.send(Received).await.unwrap(),
            [ReplyNotice::Overflowed],
            "told once, then dropped"
        );

        assert_eq!(written(&mut closing), [serde_json::Value::Null]);
        assert_eq!(closing_notices.send(Received).await.unwrap(), []);
    }

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
        let mut log = Replay {
            finished_at: 0,
            events,
            ending: vec![],
            usage: None,
        };
        let text = pieces.concat();
        let frames = expand_log(&log, &text, reply).unwrap();
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
        assert!(expand_log(&log, &text, reply).is_none());
        log.events.pop();
        log.events[1] = LoggedEvent::Token(2);
        assert!(expand_log(&log, &text, reply).is_none());
        // A longer stored text: its start is what the tokens carried.
        log.events[1] = LoggedEvent::Token(pieces[0].len() as u32);
        assert!(expand_log(&log, &format!("{text} and more"), reply).is_some());
    }
}
