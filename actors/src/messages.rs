//! Messages between actors. Each says who sends it, who handles it, and what
//! it answers.

use actix::Message;
use palaver_storage::StorageError;

/// Sent by the HTTP server's shutdown path to the [`crate::Supervisor`] once
/// the listener stopped accepting and in-flight requests finished. The
/// supervisor stops its children and makes every write durable.
/// Answers `Ok(())` when storage is flushed.
#[derive(Debug)]
pub struct Shutdown;

impl Message for Shutdown {
    type Result = Result<(), StorageError>;
}
