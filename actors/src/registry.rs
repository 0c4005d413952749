//! The connection registry: user → live WebSocket connections, with the
//! token family and session each was opened with. The Supervisor owns it and
//! uses it to close sockets when credentials are revoked, a user goes, a
//! session is deleted, or the server shuts down; the handshake reserves a
//! place in it (enforcing `ws.max_connections_per_user`) before a session
//! actor exists. A short mutex, never held across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use actix::prelude::*;
use palaver_storage::UserId;
use uuid::Uuid;

/// Sent to a SessionActor (by the Supervisor, through the registry) to close
/// its socket with `code`. No answer.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct CloseConnection {
    pub code: u16,
    pub reason: &'static str,
}

struct Entry {
    id: u64,
    family: Option<Uuid>,
    /// The API key the connection was opened with (directly or by ticket).
    api_key: Option<Uuid>,
    session: Uuid,
    addr: Recipient<CloseConnection>,
}

/// Too many connections for one user.
#[derive(Debug, PartialEq, Eq)]
pub struct TooMany;

#[derive(Default)]
pub struct Connections {
    by_user: Mutex<HashMap<UserId, Vec<Entry>>>,
    next_id: AtomicU64,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Vec<Entry>>> {
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection unless the user already has `max`; returns its id.
    pub fn register(
        &self,
        user: UserId,
        family: Option<Uuid>,
        api_key: Option<Uuid>,
        session: Uuid,
        max: usize,
        addr: Recipient<CloseConnection>,
    ) -> Result<u64, TooMany> {
        let mut map = self.lock();
        let entries = map.entry(user).or_default();
        if entries.len() >= max {
            return Err(TooMany);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        entries.push(Entry {
            id,
            family,
            api_key,
            session,
            addr,
        });
        Ok(id)
    }

    pub fn unregister(&self, user: UserId, id: u64) {
        let mut map = self.lock();
        if let Some(entries) = map.get_mut(&user) {
            entries.retain(|e| e.id != id);
            if entries.is_empty() {
                map.remove(&user);
            }
        }
    }

    /// A connection now follows another token family (an in-band refresh).
    pub fn set_family(&self, user: UserId, id: u64, family: Option<Uuid>) {
        if let Some(entry) = self
            .lock()
            .get_mut(&user)
            .and_then(|v| v.iter_mut().find(|e| e.id == id))
        {
            entry.family = family;
            entry.api_key = None;
        }
    }

    /// Closes the connections opened with an API key (it was deleted).
    pub fn close_api_key(&self, user: UserId, key: Uuid, code: u16, reason: &'static str) -> usize {
        close(
            self.lock().get(&user).into_iter().flatten(),
            code,
            reason,
            |e| e.api_key == Some(key),
        )
    }

    /// Closes a user's connections (of one family, if given). Returns how many.
    pub fn close_user(
        &self,
        user: UserId,
        family: Option<Uuid>,
        code: u16,
        reason: &'static str,
    ) -> usize {
        close(
            self.lock().get(&user).into_iter().flatten(),
            code,
            reason,
            |e| family.is_none() || e.family == family,
        )
    }

    /// Closes every connection open on a session.
    pub fn close_session(&self, session: Uuid, code: u16, reason: &'static str) -> usize {
        close(self.lock().values().flatten(), code, reason, |e| {
            e.session == session
        })
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self, code: u16, reason: &'static str) -> usize {
        close(self.lock().values().flatten(), code, reason, |_| true)
    }
}

/// Asks each of `entries` that `which` picks to close; how many it asked.
fn close<'a>(
    entries: impl Iterator<Item = &'a Entry>,
    code: u16,
    reason: &'static str,
    which: impl Fn(&Entry) -> bool,
) -> usize {
    let mut closed = 0;
    for e in entries.filter(|e| which(e)) {
        e.addr.do_send(CloseConnection { code, reason });
        closed += 1;
    }
    closed
}
