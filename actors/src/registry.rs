//! The connection registry: user → live WebSocket connections, with the
//! token family and session each was opened with. The Supervisor owns it and
//! uses it to close sockets when credentials are revoked, a user goes, a
//! session is deleted, or the server shuts down; the handshake reserves a
//! place in it (enforcing `ws.max_connections_per_user`) before a session
//! actor exists; the actor attaches its socket's outbox once `connected` is
//! queued, from when the connection follows the session's new replies. A
//! short mutex, never held across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use actix::prelude::*;
use palaver_storage::UserId;

use crate::messages::ToSocket;
use crate::protocol::Close;
use crate::replies::Follower;
use crate::socket::Sender;
use uuid::Uuid;

struct Entry {
    id: u64,
    family: Option<Uuid>,
    /// The API key the connection was opened with (directly or by ticket).
    api_key: Option<Uuid>,
    session: Uuid,
    /// Its actor: told to close, and (every socket on the session follows
    /// its replies) about the replies it follows.
    actor: Recipient<ToSocket>,
    /// Where a reply's frames go: the socket's outbox, once its actor
    /// queued `connected` (`None` before: nothing may precede it).
    out: Option<Sender>,
}

/// Too many connections for one user.
#[derive(Debug, PartialEq, Eq)]
pub struct TooMany;

#[derive(Default)]
pub struct Connections {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Inner {
    /// A user's connections (at most `ws.max_connections_per_user`).
    by_user: HashMap<UserId, Vec<Entry>>,
    /// Whose connections are open on a session, and how many, so deleting
    /// one does not look at every connection. (A socket opens only on a
    /// session of its user: one owner per session.)
    by_session: HashMap<Uuid, (UserId, usize)>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection unless the user already has `max`; returns its id.
    pub fn register(
        &self,
        user: UserId,
        family: Option<Uuid>,
        api_key: Option<Uuid>,
        session: Uuid,
        max: usize,
        actor: Recipient<ToSocket>,
    ) -> Result<u64, TooMany> {
        let mut inner = self.lock();
        let entries = inner.by_user.entry(user).or_default();
        if entries.len() >= max {
            return Err(TooMany);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        entries.push(Entry {
            id,
            family,
            api_key,
            session,
            actor,
            out: None,
        });
        let (owner, open) = inner.by_session.entry(session).or_insert((user, 0));
        debug_assert_eq!(*owner, user, "a socket opens only on its user's session");
        *open += 1;
        Ok(id)
    }

    pub fn unregister(&self, user: UserId, id: u64) {
        let mut inner = self.lock();
        let Some(entries) = inner.by_user.get_mut(&user) else {
            return;
        };
        let Some(at) = entries.iter().position(|e| e.id == id) else {
            return;
        };
        let session = entries.swap_remove(at).session;
        if entries.is_empty() {
            inner.by_user.remove(&user);
        }
        if let Some((_, open)) = inner.by_session.get_mut(&session) {
            *open -= 1;
            if *open == 0 {
                inner.by_session.remove(&session);
            }
        }
    }

    /// The connection's actor queued `connected`: from now on it follows
    /// the replies that start on its session, their frames queued into
    /// `out`.
    pub fn attach(&self, user: UserId, id: u64, out: Sender) {
        if let Some(entry) = self
            .lock()
            .by_user
            .get_mut(&user)
            .and_then(|v| v.iter_mut().find(|e| e.id == id))
        {
            entry.out = Some(out);
        }
    }

    /// A connection now follows another token family (an in-band refresh).
    pub fn set_family(&self, user: UserId, id: u64, family: Option<Uuid>) {
        if let Some(entry) = self
            .lock()
            .by_user
            .get_mut(&user)
            .and_then(|v| v.iter_mut().find(|e| e.id == id))
        {
            entry.family = family;
            entry.api_key = None;
        }
    }

    /// Closes the connections opened with an API key (it was deleted).
    pub fn close_api_key(&self, user: UserId, key: Uuid, why: Close) -> usize {
        close(
            self.lock().by_user.get(&user).into_iter().flatten(),
            why,
            |e| e.api_key == Some(key),
        )
    }

    /// Closes a user's connections (of one family, if given). Returns how many.
    pub fn close_user(&self, user: UserId, family: Option<Uuid>, why: Close) -> usize {
        close(
            self.lock().by_user.get(&user).into_iter().flatten(),
            why,
            |e| family.is_none() || e.family == family,
        )
    }

    /// Closes every connection open on a session.
    pub fn close_session(&self, session: Uuid, why: Close) -> usize {
        let inner = self.lock();
        let Some((user, _)) = inner.by_session.get(&session) else {
            return 0;
        };
        close(inner.by_user.get(user).into_iter().flatten(), why, |e| {
            e.session == session
        })
    }

    /// The connections `user` has open (and attached) on `session`, with
    /// where their reply frames and notices go: a new reply's followers.
    pub fn on_session(&self, user: UserId, session: Uuid) -> Vec<Follower> {
        self.lock()
            .by_user
            .get(&user)
            .into_iter()
            .flatten()
            .filter(|e| e.session == session)
            .filter_map(|e| {
                Some(Follower {
                    conn: e.id,
                    out: e.out.clone()?,
                    actor: e.actor.clone(),
                })
            })
            .collect()
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self, why: Close) -> usize {
        close(self.lock().by_user.values().flatten(), why, |_| true)
    }
}

/// Asks each of `entries` that `which` picks to close; how many it asked.
fn close<'a>(
    entries: impl Iterator<Item = &'a Entry>,
    why: Close,
    which: impl Fn(&Entry) -> bool,
) -> usize {
    let mut closed = 0;
    for e in entries.filter(|e| which(e)) {
        e.actor.do_send(ToSocket::Close(why));
        closed += 1;
    }
    closed
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<ToSocket> for Sink {
        type Result = ();
        fn handle(&mut self, _: ToSocket, _: &mut Context<Self>) {}
    }

    #[actix_rt::test]
    async fn sessions_are_indexed_and_the_index_follows_unregistration() {
        let registry = Connections::default();
        let sink = Sink.start();
        let reach = || sink.clone().recipient();
        let (ann, bob) = (UserId::new(), UserId::new());
        // Ann's sessions s1 and s2, Bob's s3.
        let (s1, s2, s3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let a1 = registry.register(ann, None, None, s1, 10, reach()).unwrap();
        let a2 = registry.register(ann, None, None, s2, 10, reach()).unwrap();
        let a3 = registry.register(ann, None, None, s1, 10, reach()).unwrap();
        let b1 = registry.register(bob, None, None, s3, 10, reach()).unwrap();
        let socket = crate::socket::open(actix_http::Payload::None, 1024, 1024);
        // A connection follows replies only once its actor attached.
        assert_eq!(registry.on_session(ann, s1).len(), 0);
        for (user, id) in [(ann, a1), (ann, a2), (ann, a3), (bob, b1)] {
            registry.attach(user, id, socket.outbox.sender());
        }
        assert_eq!(registry.close_session(s1, Close::SessionDeleted), 2);
        assert_eq!(registry.close_session(s2, Close::SessionDeleted), 1);
        assert_eq!(registry.close_session(s3, Close::SessionDeleted), 1);
        registry.unregister(ann, a1);
        assert_eq!(registry.close_session(s1, Close::SessionDeleted), 1);
        assert_eq!(
            registry.close_session(Uuid::new_v4(), Close::SessionDeleted),
            0
        );
        assert_eq!(registry.on_session(ann, s1).len(), 1);
        assert_eq!(registry.on_session(ann, s2).len(), 1);
        assert_eq!(registry.on_session(bob, s3).len(), 1);
        assert_eq!(registry.on_session(bob, s1).len(), 0, "not Bob's");
        assert!(registry.register(ann, None, None, s1, 2, reach()).is_err());
        // The last connection on a session takes its index entry.
        registry.unregister(ann, a3);
        assert_eq!(registry.close_session(s1, Close::SessionDeleted), 0);
        let inner = registry.lock();
        assert_eq!(inner.by_session.len(), 2, "s2 and s3 left");
        assert!(!inner.by_session.contains_key(&s1));
    }
}
