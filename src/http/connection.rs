//! The connection layer under the HTTP server: which TCP connections are
//! served at all, and how long a client may keep one without sending a
//! request.
//!
//! - [`PerIp`]: at most `server.max_connections_per_ip` connections from one
//!   client network (an IPv4 address, an IPv6 /64) at once, HTTP and
//!   WebSocket alike. One over the bound is reset at accept: no request is
//!   read, nothing is written.
//! - [`Conn`]: the accepted stream as the HTTP dispatcher sees it. It holds
//!   the connection's place in [`PerIp`], and while no request is being
//!   served on it (a new connection, or a kept-alive one between requests)
//!   it gives the client `server.header_timeout` to send the next request's
//!   head, then fails the connection. actix-http's own head timer covers only
//!   a connection's first request: a client could trickle the head of its
//!   second one a byte a second for as long as it liked.
//! - [`serving`]: the outermost middleware, which tells the connection when
//!   a request is being served (from its head until its response body is
//!   done, which for a WebSocket is when the socket closes).
//! - [`WorkerDrain`]: the shutdown's drain as one worker's connections see
//!   it (a kept-alive connection ends after its response, an idle one at
//!   once), waited for once per worker rather than once per connection.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::rt::net::TcpStream;
use actix_web::web::Bytes;
use palaver_actors::auth::throttle::ClientNet;
use palaver_actors::telemetry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Sets what every accepted connection needs on the listening socket, from
/// which Linux copies it to each connection it accepts: TCP_NODELAY, and
/// TCP_USER_TIMEOUT at `unacknowledged` (how long data we sent may go
/// unacknowledged before the kernel drops the connection).
pub fn configure_listener(
    listener: &std::net::TcpListener,
    unacknowledged: Duration,
) -> io::Result<()> {
    let socket = socket2::SockRef::from(listener);
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_user_timeout(Some(unacknowledged))
}

/// Open connections per client network, shared by every worker thread.
pub struct PerIp {
    /// `server.max_connections_per_ip`; 0: unbounded (nothing is counted).
    limit: u32,
    open: Mutex<HashMap<ClientNet, u32>>,
    /// When a refusal was last logged (Unix seconds): at most one line a
    /// minute, whatever the flood.
    last_logged: AtomicU64,
}

impl PerIp {
    pub fn new(limit: u32) -> Arc<PerIp> {
        Arc::new(PerIp {
            limit,
            open: Mutex::default(),
            last_logged: AtomicU64::new(0),
        })
    }

    /// A place for a connection from `peer`, or `None` when its network
    /// holds `limit` connections already.
    pub fn admit(self: &Arc<Self>, peer: Option<SocketAddr>) -> Option<Slot> {
        let net = match (self.limit, peer) {
            (0, _) | (_, None) => None,
            (_, Some(peer)) => Some(ClientNet::from(peer.ip())),
        };
        if let Some(net) = net {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let count = open.entry(net).or_insert(0);
            if *count >= self.limit {
                drop(open);
                self.refused(peer);
                return None;
            }
            *count += 1;
        }
        telemetry::http_connections(1.0);
        Some(Slot {
            table: net.map(|net| (self.clone(), net)),
        })
    }

    fn refused(&self, peer: Option<SocketAddr>) {
        telemetry::http_connection_refused("per_ip_limit");
        let now = palaver_storage::now_millis() / 1000;
        let last = self.last_logged.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                peer = %peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string()),
                limit = self.limit,
                "connections refused: a client reached server.max_connections_per_ip \
                 (behind a reverse proxy on this host, every client is the proxy: see docs/OPERATIONS.md)"
            );
        }
    }

    /// Connections counted for `peer`'s network now.
    #[cfg(test)]
    fn open_for(&self, peer: SocketAddr) -> u32 {
        let open = self.open.lock().unwrap();
        open.get(&ClientNet::from(peer.ip())).copied().unwrap_or(0)
    }
}

/// A connection's place in [`PerIp`], given back when the connection ends.
pub struct Slot {
    table: Option<(Arc<PerIp>, ClientNet)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        telemetry::http_connections(-1.0);
        if let Some((table, net)) = self.table.take() {
            let mut open = table.open.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = open.get_mut(&net) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&net);
                }
            }
        }
    }
}

/// What a connection and the requests on it share (the connection's data in
/// actix-web: one worker thread, hence `Rc` and `Cell`).
pub struct ConnState {
    /// Requests being served now: from the head's arrival until the response
    /// body is done (a WebSocket's, until the socket closes).
    serving: Cell<u32>,
    header_timeout: Duration,
    /// Runs while no request is being served; dropped when one starts (so
    /// an open WebSocket keeps no timer: the dispatcher reads once more
    /// after a request's head, before the request is served, and the next
    /// read of an idle socket may never come).
    head_timer: RefCell<Option<Pin<Box<Sleep>>>>,
}

/// An accepted TCP connection as the HTTP dispatcher reads and writes it.
pub struct Conn {
    io: TcpStream,
    state: Rc<ConnState>,
    _slot: Slot,
}

impl Conn {
    pub fn new(io: TcpStream, slot: Slot, header_timeout: Duration) -> Conn {
        Conn {
            io,
            state: Rc::new(ConnState {
                serving: Cell::new(0),
                header_timeout,
                head_timer: RefCell::new(None),
            }),
            _slot: slot,
        }
    }

    /// The state the connection's requests see (its connection data).
    pub fn state(&self) -> Rc<ConnState> {
        self.state.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.serving.get() == 0 {
            // No request in progress: the dispatcher reads only to find the
            // next one. Its head must be in before the timer runs out (and
            // a body nobody reads, drained between requests, too).
            let timeout = this.state.header_timeout;
            let mut head_timer = this.state.head_timer.borrow_mut();
            let timer = head_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            if timer.as_mut().poll(cx).is_ready() {
                *head_timer = None;
                telemetry::http_timeout("header");
                tracing::debug!("no request head within server.header_timeout: closing");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request head within server.header_timeout",
                )));
            }
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A request being served on its connection; dropped with the response
/// body (or with the request, if it never produced one).
struct Serving(Rc<ConnState>);

impl Serving {
    fn start(state: &Rc<ConnState>) -> Serving {
        state.serving.set(state.serving.get() + 1);
        state.head_timer.borrow_mut().take();
        Serving(state.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.serving.set(self.0.serving.get().saturating_sub(1));
    }
}

/// The outermost middleware: marks the request as being served on its
/// connection until its response body is done.
pub async fn serving<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<ServedBody<B>>, actix_web::Error> {
    let serving = req.conn_data::<Rc<ConnState>>().map(Serving::start);
    let res = next.call(req).await?;
    // The body as it is, not boxed again (one allocation less per response,
    // held by every open WebSocket).
    Ok(res.map_body(move |_, body| ServedBody { body, serving }))
}

/// A response body that holds its request's [`Serving`] until it ends.
pub struct ServedBody<B> {
    body: B,
    serving: Option<Serving>,
}

impl<B: MessageBody + Unpin> MessageBody for ServedBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.body).poll_next(cx);
        if let Poll::Ready(None) = next {
            // Done: the connection waits for the next request.
            this.serving = None;
        }
        next
    }

    fn try_into_bytes(self) -> Result<Bytes, Self> {
        // A body already whole is handed over as bytes (the response is
        // written at once; the connection then waits for the next request).
        let ServedBody { body, serving } = self;
        body.try_into_bytes()
            .map_err(|body| ServedBody { body, serving })
    }
}

/// The server's drain as one worker's connections see it. actix-http asks
/// each connection for a future that resolves when the server starts a
/// graceful shutdown (its keep-alive ends then: a connection between
/// requests closes, one serving closes after its response). A watch
/// receiver per connection and its wait would cost about 180 bytes held by
/// every open WebSocket; here the worker (http/server.rs) starts the drain
/// and wakes its connections, each of which holds an `Rc` and a slot for
/// its waker.
pub struct WorkerDrain {
    draining: Cell<bool>,
    waiting: RefCell<Wakers>,
}

/// Wakers in reusable slots (a slot's index is its connection's key).
#[derive(Default)]
struct Wakers {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl WorkerDrain {
    pub fn new() -> Rc<WorkerDrain> {
        Rc::new(WorkerDrain {
            draining: Cell::new(false),
            waiting: RefCell::default(),
        })
    }

    /// A connection's future: resolves once this worker drains.
    pub fn drained(self: &Rc<Self>) -> Drained {
        Drained {
            drain: self.clone(),
            slot: None,
        }
    }

    /// The drain began: every connection waiting is woken.
    pub fn start(&self) {
        self.draining.set(true);
        let woken: Vec<Waker> = self
            .waiting
            .borrow_mut()
            .slots
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        woken.into_iter().for_each(Waker::wake);
    }
}

/// One connection's wait for its worker's drain.
pub struct Drained {
    drain: Rc<WorkerDrain>,
    slot: Option<usize>,
}

impl Future for Drained {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.drain.draining.get() {
            return Poll::Ready(());
        }
        // Polled on every turn of the connection's dispatcher: the waker
        // is cloned only when it changed.
        let mut waiting = this.drain.waiting.borrow_mut();
        match this.slot {
            Some(at) => {
                let slot = &mut waiting.slots[at];
                if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *slot = Some(cx.waker().clone());
                }
            }
            None => {
                let waker = Some(cx.waker().clone());
                this.slot = Some(match waiting.free.pop() {
                    Some(at) => {
                        waiting.slots[at] = waker;
                        at
                    }
                    None => {
                        waiting.slots.push(waker);
                        waiting.slots.len() - 1
                    }
                });
            }
        }
        Poll::Pending
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        if let Some(at) = self.slot {
            let mut waiting = self.drain.waiting.borrow_mut();
            waiting.slots[at] = None;
            waiting.free.push(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    #[test]
    fn connections_are_bounded_per_client_network_and_given_back() {
        let table = PerIp::new(2);
        let a = table.admit(peer("10.0.0.1")).unwrap();
        let b = table.admit(peer("10.0.0.1")).unwrap();
        assert!(
            table.admit(peer("10.0.0.1")).is_none(),
            "a third is refused"
        );
        // Another address, and another /64, have places of their own; an
        // IPv6 /64 is one client, an IPv4-mapped address its IPv4.
        let _c = table.admit(peer("10.0.0.2")).unwrap();
        let _d = table.admit(peer("2001:db8::1")).unwrap();
        let _e = table.admit(peer("2001:db8::2")).unwrap();
        assert!(table.admit(peer("2001:db8::3")).is_none());
        assert!(table.admit(peer("::ffff:10.0.0.1")).is_none());
        drop(a);
        assert_eq!(table.open_for(peer("10.0.0.1").unwrap()), 1);
        let _f = table.admit(peer("10.0.0.1")).unwrap();
        drop(b);
        drop(_f);
        assert_eq!(table.open_for(peer("10.0.0.1").unwrap()), 0);
        assert!(
            table
                .open
                .lock()
                .unwrap()
                .get(&ClientNet::from(
                    "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
                ))
                .is_none(),
            "an empty entry is removed"
        );
    }

    #[actix_rt::test]
    async fn a_request_being_served_drops_the_head_timer() {
        let state = Rc::new(ConnState {
            serving: Cell::new(0),
            header_timeout: Duration::from_secs(5),
            head_timer: RefCell::new(Some(Box::pin(tokio::time::sleep(Duration::from_secs(5))))),
        });
        let first = Serving::start(&state);
        assert!(state.head_timer.borrow().is_none(), "no timer while served");
        let second = Serving::start(&state);
        drop(first);
        assert_eq!(state.serving.get(), 1);
        drop(second);
        assert_eq!(state.serving.get(), 0, "idle again: the next read arms it");
    }

    #[test]
    fn zero_means_unbounded() {
        let table = PerIp::new(0);
        let slots: Vec<_> = (0..1000)
            .map(|_| table.admit(peer("10.0.0.1")).unwrap())
            .collect();
        assert!(table.open.lock().unwrap().is_empty(), "nothing counted");
        drop(slots);
    }

    /// Counts its wakes.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes(Default::default()));
        (wakes.clone(), Waker::from(wakes))
    }

    fn poll(drained: &mut Drained, waker: &Waker) -> Poll<()> {
        Pin::new(drained).poll(&mut Context::from_waker(waker))
    }

    #[actix_rt::test]
    async fn accepted_connections_inherit_the_listeners_socket_options() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        configure_listener(&listener, Duration::from_secs(7)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (accepted, _) = accepted.unwrap();
        let socket = socket2::SockRef::from(&accepted);
        assert!(socket.tcp_nodelay().unwrap());
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(7))
        );
        // The client's side is untouched: the options came from the listener.
        assert!(!socket2::SockRef::from(&client.unwrap())
            .tcp_nodelay()
            .unwrap());
    }

    #[actix_rt::test]
    async fn a_drain_wakes_each_waiting_connection_and_slots_are_reused() {
        let drain = WorkerDrain::new();
        let ((a_wakes, a_waker), (b_wakes, b_waker)) = (waker(), waker());
        let (mut a, mut b) = (drain.drained(), drain.drained());
        assert!(poll(&mut a, &a_waker).is_pending());
        assert!(poll(&mut b, &b_waker).is_pending());
        assert!(
            poll(&mut a, &a_waker).is_pending(),
            "polled again, still one slot"
        );
        assert_eq!(drain.waiting.borrow().slots.len(), 2);
        // A connection that closed gives its slot to the next.
        drop(b);
        let (c_wakes, c_waker) = waker();
        let mut c = drain.drained();
        assert!(poll(&mut c, &c_waker).is_pending());
        assert_eq!(
            drain.waiting.borrow().slots.len(),
            2,
            "the freed slot reused"
        );

        drain.start();
        assert_eq!(a_wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(c_wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(b_wakes.0.load(Ordering::SeqCst), 0, "gone before the drain");
        assert!(poll(&mut a, &a_waker).is_ready());
        assert!(poll(&mut c, &c_waker).is_ready());
        // A connection that comes during the drain ends at once.
        let mut d = drain.drained();
        assert!(poll(&mut d, &a_waker).is_ready());
        drop((a, c, d));
        assert!(drain.waiting.borrow().slots.iter().all(Option::is_none));
    }
}
