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

use crate::messages::ReplyNotice;
use crate::protocol::Close;
use crate::replies::Follower;
use crate::socket::Sender;
use uuid::Uuid;

/// Sent to a SessionActor (by the Supervisor, through the registry) to close
/// its socket for `why` (its code and reason). No answer.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct CloseConnection {
    pub why: Close,
}

struct Entry {
    id: u64,
    family: Option<Uuid>,
    /// The API key the connection was opened with (directly or by ticket).
    api_key: Option<Uuid>,
    session: Uuid,
    addr: Recipient<CloseConnection>,
    /// Where the reply hub's notices go (every socket on the session
    /// follows its replies).
    notices: Recipient<ReplyNotice>,
    /// Where a reply's frames go: the socket's outbox, once its actor
    /// queued `connected` (`None` before: nothing may precede it).
    out: Option<Sender>,
}

/// Where a connection's actor is reached: to close it, and to tell it about
/// the replies it follows.
pub struct Reach {
    pub close: Recipient<CloseConnection>,
    pub notices: Recipient<ReplyNotice>,
}

impl Reach {
    pub fn of<A>(addr: Addr<A>) -> Reach
    where
        A: Actor + Handler<CloseConnection> + Handler<ReplyNotice>,
        A::Context:
            actix::dev::ToEnvelope<A, CloseConnection> + actix::dev::ToEnvelope<A, ReplyNotice>,
    {
        Reach {
            close: addr.clone().recipient(),
            notices: addr.recipient(),
        }
    }
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
    /// Who is connected to a session, so deleting one does not look at
    /// every connection.
    by_session: HashMap<Uuid, Vec<(UserId, u64)>>,
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
        reach: Reach,
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
            addr: reach.close,
            notices: reach.notices,
            out: None,
        });
        inner
            .by_session
            .entry(session)
            .or_default()
            .push((user, id));
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
        if let Some(on_session) = inner.by_session.get_mut(&session) {
            on_session.retain(|&(_, c)| c != id);
            if on_session.is_empty() {
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
        let Some(on_session) = inner.by_session.get(&session) else {
            return 0;
        };
        let mut users: Vec<UserId> = Vec::new();
        for &(user, _) in on_session {
            if !users.contains(&user) {
                users.push(user);
            }
        }
        close(
            users.iter().filter_map(|u| inner.by_user.get(u)).flatten(),
            why,
            |e| e.session == session,
        )
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
                    notices: e.notices.clone(),
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
        e.addr.do_send(CloseConnection { why });
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
    impl Handler<CloseConnection> for Sink {
        type Result = ();
        fn handle(&mut self, _: CloseConnection, _: &mut Context<Self>) {}
    }
    impl Handler<ReplyNotice> for Sink {
        type Result = ();
        fn handle(&mut self, _: ReplyNotice, _: &mut Context<Self>) {}
    }

    #[actix_rt::test]
    async fn sessions_are_indexed_and_the_index_follows_unregistration() {
        let registry = Connections::default();
        let sink = Sink.start();
        let reach = || Reach::of(sink.clone());
        let (ann, bob) = (UserId::new(), UserId::new());
        let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
        let a1 = registry.register(ann, None, None, s1, 10, reach()).unwrap();
        let a2 = registry.register(ann, None, None, s2, 10, reach()).unwrap();
        let b1 = registry.register(bob, None, None, s1, 10, reach()).unwrap();
        let socket = crate::socket::open(actix_http::Payload::None, 1024, 1024);
        // A connection follows replies only once its actor attached.
        assert_eq!(registry.on_session(bob, s1).len(), 0);
        for (user, id) in [(ann, a1), (ann, a2), (bob, b1)] {
            registry.attach(user, id, socket.outbox.sender());
        }
        assert_eq!(registry.close_session(s1, Close::SessionDeleted), 2);
        assert_eq!(registry.close_session(s2, Close::SessionDeleted), 1);
        registry.unregister(ann, a1);
        assert_eq!(registry.close_session(s1, Close::SessionDeleted), 1);
        assert_eq!(
            registry.close_session(Uuid::new_v4(), Close::SessionDeleted),
            0
        );
        assert_eq!(registry.on_session(ann, s1).len(), 0);
        assert_eq!(registry.on_session(ann, s2).len(), 1);
        assert_eq!(registry.on_session(bob, s1).len(), 1);
        assert!(registry.register(ann, None, None, s1, 1, reach()).is_err());
        let inner = registry.lock();
        assert_eq!(inner.by_session.values().map(Vec::len).sum::<usize>(), 2);
    }
}
