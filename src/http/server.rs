//! The HTTP server's worker threads: each accepts on the listening socket
//! itself and serves what it accepted, so a connection never changes thread.
//!
//! actix-server, which this replaces, accepts on a thread of its own and
//! hands each connection to a worker through a channel and a wake-up: a
//! second thread woken per connection, about a sixth of the server's CPU in
//! a flood of WebSocket handshakes (docs/BENCHMARKS.md, "Accepting on the
//! workers"). Here each worker listens on a socket of its own, all of them
//! bound to the one address with SO_REUSEPORT, and the kernel spreads the
//! arriving connections over them by a hash of the peer's address and port
//! ([`bind`], [`group`]). Sharing one socket among the workers instead
//! would wake every waiting worker per connection, and the first awake
//! takes a whole burst: 50 connections opened at once all landed on one
//! worker, which then streamed every reply alone.
//!
//! SO_REUSEPORT would let a second server on the same port silently take a
//! share of the connections; [`bind`] first checks that the address is
//! free with an ordinary bind, so a second palaver fails to start as before
//! ("address in use"). Only a process of the same user that asks for
//! SO_REUSEPORT itself could join the group.
//!
//! Shutdown has the phases actix-server had: [`Server::stop_accepting`]
//! closes the listening sockets (a new connection is refused), then
//! [`Server::stop`] starts every worker's drain (a kept-alive connection ends
//! after its response, an idle one at once, [`WorkerDrain`]), waits up to the
//! grace for the connections to end, and stops the worker threads, which
//! drops whatever connection is still open.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_rt::Arbiter;
use actix_service::{Service, ServiceFactory};
use actix_web::rt::net::TcpStream;
use tokio::sync::{oneshot, watch, Notify};

use super::connection::WorkerDrain;

/// Connections each worker's socket queues before it accepts them.
const BACKLOG: i32 = 1024;

/// Listens on `addr` with SO_REUSEPORT, so that [`group`] can give every
/// worker a socket of its own on the same address. Refuses an address
/// another socket listens on, like an ordinary bind (port 0 picks a free
/// port).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    if addr.port() != 0 {
        // Fails while anything listens there, reuseport or not.
        drop(TcpListener::bind(addr)?);
    }
    listen_shared(addr)
}

/// One socket per worker on `first`'s address: `first` itself, then
/// sockets that join its SO_REUSEPORT group. A listener made without
/// SO_REUSEPORT (not by [`bind`]) is shared by the workers instead.
pub fn group(first: TcpListener, workers: usize) -> io::Result<Vec<TcpListener>> {
    let addr = first.local_addr()?;
    let own_sockets = socket2::SockRef::from(&first).reuse_port()?;
    let mut group = vec![first];
    for _ in 1..workers {
        let next = if own_sockets {
            listen_shared(addr)?
        } else {
            group[0].try_clone()?
        };
        group.push(next);
    }
    Ok(group)
}

/// A listening socket on `addr` with SO_REUSEADDR and SO_REUSEPORT.
fn listen_shared(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Where the server is in its life; every worker watches it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Serving,
    /// The listening sockets are closed; open connections are served on.
    Closed,
    /// Kept-alive connections end; WebSockets were closed by the drain.
    Draining,
}

/// The running workers.
pub struct Server {
    phase: watch::Sender<Phase>,
    open: Arc<OpenConnections>,
    workers: Vec<Arbiter>,
}

impl Server {
    /// Starts a worker thread per listener ([`group`]), each serving what
    /// it accepts with the service `make` builds for it from its drain.
    /// Resolves once every worker has its service; fails if one could not
    /// build it.
    pub async fn start<M, F>(listeners: Vec<TcpListener>, make: M) -> io::Result<Server>
    where
        M: Fn(Rc<WorkerDrain>) -> F + Send + Clone + 'static,
        F: ServiceFactory<(TcpStream, SocketAddr), Config = ()> + 'static,
        F::InitError: fmt::Debug,
    {
        let (phase, _) = watch::channel(Phase::Serving);
        let open = Arc::new(OpenConnections::default());
        let mut server = Server {
            phase,
            open,
            workers: Vec::with_capacity(listeners.len()),
        };
        for listener in &listeners {
            listener.set_nonblocking(true)?;
        }
        let mut ready = Vec::with_capacity(listeners.len());
        for listener in listeners {
            let (phase, open, make) = (server.phase.subscribe(), server.open.clone(), make.clone());
            let (started, on_start) = oneshot::channel();
            let arbiter = Arbiter::new();
            arbiter.spawn_fn(move || {
                actix_rt::spawn(worker(listener, make, phase, open, started));
            });
            server.workers.push(arbiter);
            ready.push(on_start);
        }
        for on_start in ready {
            match on_start.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    server.stop(Duration::ZERO).await;
                    return Err(io::Error::other(e));
                }
                Err(_) => {
                    server.stop(Duration::ZERO).await;
                    return Err(io::Error::other("an HTTP worker stopped while starting"));
                }
            }
        }
        Ok(server)
    }

    /// Closes the listening sockets: a new connection is refused, open ones
    /// are served on.
    pub fn stop_accepting(&self) {
        self.phase.send_replace(Phase::Closed);
    }

    /// Drains every worker, waits up to `grace` for the open connections to
    /// end, then stops the worker threads (dropping what is still open).
    pub async fn stop(self, grace: Duration) {
        self.phase.send_replace(Phase::Draining);
        if tokio::time::timeout(grace, self.open.none()).await.is_err() {
            tracing::warn!(
                open = self.open.count(),
                "connections still open after the shutdown grace: closing them"
            );
        }
        let workers = self.workers;
        let joined = actix_web::rt::task::spawn_blocking(move || {
            for worker in workers {
                worker.stop();
                // A worker that panicked has nothing left to stop.
                let _ = worker.join();
            }
        });
        if let Err(e) = joined.await {
            tracing::error!(error = %e, "HTTP workers did not stop cleanly");
        }
    }
}

/// One worker: builds its service, then accepts and serves until the
/// listening socket closes, then drains when told to.
async fn worker<M, F>(
    listener: TcpListener,
    make: M,
    mut phase: watch::Receiver<Phase>,
    open: Arc<OpenConnections>,
    started: oneshot::Sender<Result<(), String>>,
) where
    M: Fn(Rc<WorkerDrain>) -> F,
    F: ServiceFactory<(TcpStream, SocketAddr), Config = ()> + 'static,
    F::InitError: fmt::Debug,
{
    let drain = WorkerDrain::new();
    let ready = async {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        let service = make(drain.clone())
            .new_service(())
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok::<_, String>((listener, Rc::new(service)))
    };
    let (listener, service) = match ready.await {
        Ok(ready) => {
            let _ = started.send(Ok(()));
            ready
        }
        Err(e) => {
            let _ = started.send(Err(format!("HTTP worker: {e}")));
            return;
        }
    };
    {
        let closed = phase.wait_for(|p| *p != Phase::Serving);
        tokio::pin!(closed);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut closed => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let (service, guard) = (service.clone(), open.enter());
                    actix_rt::spawn(async move {
                        let _ = service.call((tcp, peer)).await;
                        drop(guard);
                    });
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }
    drop(listener);
    if phase.wait_for(|p| *p == Phase::Draining).await.is_ok() {
        drain.start();
    }
}

/// An accept that failed. A connection the peer reset before it was
/// accepted is simply gone; running out of files or memory is logged and
/// accepting pauses a moment, or the loop would spin on the error.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections; pausing for 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// How many connections are open, on every worker, and a wait for none.
#[derive(Default)]
struct OpenConnections {
    count: AtomicUsize,
    none_left: Notify,
}

impl OpenConnections {
    fn enter(self: &Arc<Self>) -> Open {
        self.count.fetch_add(1, Ordering::Relaxed);
        Open(self.clone())
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    async fn none(&self) {
        loop {
            let notified = self.none_left.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One open connection, counted until dropped.
struct Open(Arc<OpenConnections>);

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::time::Instant;

    use actix_service::fn_service;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn an_address_in_use_is_refused_as_by_an_ordinary_bind() {
        let ours = bind(loopback()).unwrap();
        let addr = ours.local_addr().unwrap();
        let err = bind(addr).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
        let other = TcpListener::bind(loopback()).unwrap();
        let err = bind(other.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    }

    /// Accepts what is queued on each listener now.
    fn accepted_per_listener(listeners: &[TcpListener]) -> Vec<usize> {
        listeners
            .iter()
            .map(|l| {
                l.set_nonblocking(true).unwrap();
                std::iter::from_fn(|| l.accept().ok()).count()
            })
            .collect()
    }

    /// Connects `n` clients and waits until each is queued on a listener
    /// (a completed handshake is queued before `connect` returns).
    fn connect(addr: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
        (0..n)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect()
    }

    #[test]
    fn each_worker_listens_on_a_socket_of_its_own_and_connections_spread() {
        let group = group(bind(loopback()).unwrap(), 2).unwrap();
        let addr = group[0].local_addr().unwrap();
        assert_eq!(group[1].local_addr().unwrap(), addr);
        let _clients = connect(addr, 64);
        let counts = accepted_per_listener(&group);
        assert_eq!(counts.iter().sum::<usize>(), 64);
        // By a hash of the client's port: all 64 on one socket would be a
        // chance of one in 2^63.
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }

    #[test]
    fn a_listener_made_elsewhere_is_shared_by_the_workers() {
        let group = group(TcpListener::bind(loopback()).unwrap(), 2).unwrap();
        let _clients = connect(group[0].local_addr().unwrap(), 8);
        // One queue: the first listener takes all, the second finds none.
        assert_eq!(accepted_per_listener(&group), vec![8, 0]);
    }

    /// A server whose connections say "hi", then "bye" when their worker
    /// drains (and end), unless `stubborn`: then they wait for the client.
    async fn greeter(stubborn: bool) -> (Server, SocketAddr) {
        let listeners = group(bind(loopback()).unwrap(), 2).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let make = move |drain: Rc<WorkerDrain>| {
            fn_service(move |(mut tcp, _): (TcpStream, SocketAddr)| {
                let drained = drain.drained();
                async move {
                    tcp.write_all(b"hi").await?;
                    let mut rest = Vec::new();
                    if stubborn {
                        tcp.read_to_end(&mut rest).await?;
                    } else {
                        tokio::select! {
                            _ = drained => tcp.write_all(b"bye").await?,
                            _ = tcp.read_to_end(&mut rest) => {}
                        }
                    }
                    Ok::<_, io::Error>(())
                }
            })
        };
        (Server::start(listeners, make).await.unwrap(), addr)
    }

    async fn greeted(addr: SocketAddr) -> tokio::net::TcpStream {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut hi = [0; 2];
        tcp.read_exact(&mut hi).await.unwrap();
        assert_eq!(&hi, b"hi");
        tcp
    }

    #[actix_rt::test]
    async fn a_stopped_server_refuses_new_connections_and_drains_open_ones() {
        let (server, addr) = greeter(false).await;
        let mut open = greeted(addr).await;
        server.stop_accepting();
        // Each worker closes its socket on its next turn (a connection
        // queued on one as it closes is reset).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                Err(e) => panic!("{e}"),
                Ok(_) => {}
            }
            assert!(Instant::now() < deadline, "still accepting");
        }
        // The open connection was served on, and ends with the drain, long
        // before the grace.
        let started = Instant::now();
        let stopped = actix_rt::spawn(server.stop(Duration::from_secs(30)));
        let mut rest = Vec::new();
        open.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");
        stopped.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[actix_rt::test]
    async fn a_connection_that_outlasts_the_grace_is_closed() {
        let (server, addr) = greeter(true).await;
        let mut open = greeted(addr).await;
        server.stop_accepting();
        server.stop(Duration::from_millis(100)).await;
        let mut rest = Vec::new();
        // Dropped with its worker: the client sees the end of the stream.
        let _ = open.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{rest:?}");
    }
}
