//! Messages between actors. Each says who sends it, who handles it, and what
//! it answers. (The AuthActor's own messages live beside it in `auth/actor.rs`.)

use actix::Message;
use palaver_storage::{StorageError, UserId};
use uuid::Uuid;

use crate::analysis::cpu::{CpuError, Queued};
use crate::protocol::Close;

/// Sent by the HTTP server's shutdown path to the [`crate::Supervisor`] once
/// the listener stopped accepting and in-flight requests finished. The
/// supervisor stops its children and makes every write durable.
/// Answers `Ok(())` when storage is flushed.
#[derive(Debug)]
pub struct Shutdown;

impl Message for Shutdown {
    type Result = Result<(), StorageError>;
}

/// Sent by the shutdown path to the [`crate::Supervisor`] once the listener
/// stopped accepting: lets streaming replies finish for up to `grace` (then
/// stops them, their replies stored `failed`) and closes every WebSocket
/// with 1001. Answers when done.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub grace: std::time::Duration,
}

/// Why credentials stopped being valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    /// The family was logged out (sockets close with 4001).
    Logout,
    /// A spent refresh token was presented again (4001).
    RefreshReuse,
    /// The user was deleted, e.g. an expired demo user (4002).
    UserDeleted,
}

/// Sent by the AuthActor to the [`crate::Supervisor`] whenever a token family
/// is revoked or a user stops being valid, so that the sockets authenticated
/// by it can be closed. `family: None` means every credential of the user.
/// No answer.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Revoked {
    pub user_id: UserId,
    pub family: Option<Uuid>,
    pub reason: RevokeReason,
}

/// Sent by the sessions API to the [`crate::Supervisor`] after a session was
/// deleted, so sockets open on it can be closed (4004). No answer.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct SessionDeleted {
    pub session_id: Uuid,
}

/// Sent by [`crate::analysis::AnalysisPool::drain`] to each
/// [`crate::analysis::stream::StreamActor`] still running once the shutdown
/// grace is over: the reply stops at its next token (or while it waits for a
/// tool) and is stored `failed` with what it said. No answer (the pool
/// waits for the reply to leave its list).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopReply;

/// Sent by [`crate::analysis::cpu::CpuPool::run`] (a reply's tool call,
/// through `Run::tool`) to the [`crate::analysis::cpu::CpuWorker`]s: the
/// first free one of the `analysis.workers` threads runs `call`. Answers what
/// `call` returned, or `Err(CpuError::Crashed)` if it panicked. A job whose
/// sender stopped waiting before a worker took it is dropped unrun.
pub struct CpuJob<T> {
    pub call: Box<dyn FnOnce() -> T + Send>,
    /// The job's place in `analysis.queue`, given back when a worker takes
    /// it (or when it is dropped unrun).
    pub queued: Queued,
}

impl<T: Send + 'static> Message for CpuJob<T> {
    type Result = Result<T, CpuError>;
}

/// Sent by the track upload handler to the
/// [`crate::analysis::tracks::TrackAnalyst`] once a track is accepted and
/// recorded `pending`: analyse it (in turn, on a CPU worker) and store the
/// outcome. No answer: `GET /api/tracks/{id}/` shows the status.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AnalyzeTrack {
    pub track: Uuid,
}

/// Sent to a SessionActor, through the one address the connection
/// registry keeps for it (one per connection, not one per message type:
/// an idle connection's memory, docs/BENCHMARKS.md). No answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub enum ToSocket {
    /// By the Supervisor (revocations, deletions, shutdown): close the
    /// socket for this reason (its code and reason).
    Close(Close),
    /// By the reply hub, about a reply the socket follows.
    Reply(ReplyNotice),
}

/// What the reply hub ([`crate::replies`]) tells a SessionActor whose
/// socket follows a reply: what the actor must act on. The reply's
/// frames themselves never pass through the actor: the hub queues them
/// straight into the socket's outbox (`socket::Sender`), under its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyNotice {
    /// A frame did not fit in the socket's outbox (`ws.max_buffered_bytes`):
    /// the socket follows nothing any more and closes (1008).
    Overflowed,
    /// The reply this socket's question started failed: its `error` is
    /// queued; the question's count is given back.
    Failed { reply: Uuid },
    /// The reply this socket's question started ended: its `done` is
    /// queued (so a `quota` the actor sends now follows it).
    Done { reply: Uuid },
}
