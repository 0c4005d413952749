//! Messages between actors. Each says who sends it, who handles it, and what
//! it answers. (The AuthActor's own messages live beside it in `auth/actor.rs`.)

use actix::Message;
use palaver_storage::{StorageError, UserId};
use uuid::Uuid;

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
