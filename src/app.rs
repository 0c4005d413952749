//! Builds the actix-web `App` and runs the server: [`start`] opens what the
//! server needs (storage, actors), [`run`] serves an already-bound listener
//! until the shutdown future resolves, then shuts down in order.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_http::error::DispatchError;
use actix_http::{HttpService, KeepAlive, Protocol};
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Extensions};
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::rt::net::TcpStream;
use actix_web::{web, App};
use palaver_actors::analysis::tracks::TrackAnalyst;
use palaver_actors::analysis::AnalysisPool;
use palaver_actors::auth::Auth;
use palaver_actors::messages::Drain;
use palaver_actors::messages::Shutdown;
use palaver_actors::quota::{Policy, QuotaRegistry};
use palaver_actors::session::SessionDeps;
use palaver_actors::Supervisor;
use palaver_storage::Store;
use palaver_storage::User;

use crate::config::Config;
use crate::http::connection::{self, Conn, PerIp};
use crate::http::ops::ReadyProbe;
use crate::http::{self, ApiError};
use crate::metrics::Metrics;

/// What every handler can reach. Cloned per worker; every field is a handle.
#[derive(Clone)]
pub struct AppState {
    /// The effective configuration (read-only after start).
    pub config: Arc<Config>,
    /// The database.
    pub store: Store,
    /// The root actor; owns the other actors' lifecycle.
    pub supervisor: Addr<Supervisor>,
    /// Identity: verification in the caller, writes through the AuthActor.
    pub auth: Auth,
    /// The single owner of every request counter.
    pub quotas: QuotaRegistry,
    /// Answers questions (WebSocket and whole-answer HTTP).
    pub pool: AnalysisPool,
    /// Analyses each uploaded track once.
    pub tracks: Addr<TrackAnalyst>,
    /// What every WebSocket session actor shares.
    pub sessions: Arc<SessionDeps>,
    /// When the server started (for `/health`'s uptime).
    pub started: Instant,
    /// The Prometheus exposition.
    pub metrics: Metrics,
    /// `/ready`'s last verdict, so public callers cannot make it write.
    pub ready: Arc<ReadyProbe>,
}

impl AppState {
    /// Starts the actors over an open store. Must run inside an actix system.
    pub fn start(config: Config, store: Store, metrics: Metrics) -> anyhow::Result<AppState> {
        let failed = store.messages().fail_interrupted()?;
        if failed > 0 {
            tracing::warn!(
                failed,
                "replies interrupted by the last shutdown marked failed"
            );
        }
        let booted = Supervisor::boot(
            store.clone(),
            config.auth_settings()?,
            config.analysis_settings()?,
            config.ws_limits(),
            config.session_retention(),
        )?;
        Ok(AppState {
            config: Arc::new(config),
            store,
            supervisor: booted.supervisor,
            auth: booted.auth,
            quotas: booted.quotas,
            pool: booted.pool,
            tracks: booted.tracks,
            sessions: booted.sessions,
            started: Instant::now(),
            metrics,
            ready: Arc::default(),
        })
    }
}

impl AppState {
    /// The quota a user is under, if any: demo users always, regular users
    /// when `quota.user_request_limit` is set.
    pub fn quota_policy(&self, user: &User) -> Option<Policy> {
        if let Some(ends_at) = user.demo_expires_at.filter(|_| user.is_demo) {
            return Some(Policy::Demo {
                limit: self.config.demo.request_limit,
                ends_at,
                lifetime: self.config.demo.lifetime.as_secs(),
            });
        }
        let limit = self.config.quota.user_request_limit;
        (limit > 0).then(|| Policy::User {
            limit,
            window: self.config.quota.window.as_secs().max(1),
        })
    }
}

/// Registers every resource. Paths are declared without a trailing slash;
/// `http::path::TrimSlashes` trims one, so both spellings work. The router
/// tries resources in this order, a regex for each one with a `{…}` segment:
/// the WebSocket handshake, the most frequent request, goes first.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(http::ws::config)
        .configure(http::ops::config)
        .configure(http::auth::config)
        .configure(http::sessions::config)
        .configure(http::tracks::config)
        .configure(http::openapi::config)
        .configure(http::client::config);
}

/// Serves `listener` until `shutdown` resolves, then shuts down in order:
/// stop accepting; let streaming replies finish for up to
/// `server.shutdown_grace` (then store them `failed`); close every WebSocket
/// with 1001; let in-flight HTTP requests finish; stop the actors; flush.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.config.server.shutdown_grace;
    let unacknowledged_limit = state.config.ws.idle_timeout;
    let header_timeout = state.config.server.header_timeout;
    let json_limit = state.config.server.max_json_bytes;
    let per_ip = PerIp::new(state.config.server.max_connections_per_ip);
    let data = web::Data::new(state.clone());
    let metrics = web::Data::new(state.metrics.clone());
    // `/metrics` on the main listener unless it has one of its own.
    let metrics_here = state.config.metrics.bind.is_none();
    let app = move || {
        App::new()
            .app_data(data.clone())
            .app_data(metrics.clone())
            .configure(|cfg| {
                if metrics_here {
                    crate::metrics::config(cfg);
                }
            })
            .app_data(web::PayloadConfig::new(json_limit))
            .app_data(http::extract::query_config())
            .configure(routes)
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::NotFound)
            }))
            .wrap(from_fn(http::quota::admit_counted))
            .wrap(from_fn(http::middleware::cors))
            .wrap(ErrorHandlers::new().default_handler(http::middleware::json_error_body))
            .wrap(from_fn(http::middleware::trace_requests))
            .wrap(http::path::TrimSlashes)
            .wrap(from_fn(connection::serving))
    };
    // actix-web's `HttpServer`, assembled by hand: it serves only plain
    // `TcpStream`s, and palaver's connections are `Conn`s (the per-IP bound
    // and the head deadline of every request; http/connection.rs), accepted
    // on the workers themselves (http/server.rs).
    let addr = listener.local_addr()?;
    // Streamed replies are many small writes: without TCP_NODELAY each waits
    // on Nagle + delayed ACK. A peer that acknowledges nothing we send for
    // `ws.idle_timeout` is gone: the kernel drops the connection
    // (TCP_USER_TIMEOUT); else a client that stops reading, but still
    // acknowledges zero-window probes, would hold its connection and buffers
    // forever after its actor closed it. Set on the listening socket, both
    // are inherited by every accepted connection (Linux), two system calls
    // fewer per connection.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let listeners = http::server::group(listener, workers)?;
    for listener in &listeners {
        connection::configure_listener(listener, unacknowledged_limit)?;
    }
    let make = move |drain: Rc<connection::WorkerDrain>| {
        let per_ip = per_ip.clone();
        let accept = move |(tcp, peer): (TcpStream, SocketAddr)| {
            let slot = per_ip.admit(Some(peer));
            async move {
                let Some(slot) = slot else {
                    // Over the per-IP bound: reset at once (no request
                    // read, nothing written, no TIME_WAIT kept here).
                    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
                    return Err(DispatchError::Io(std::io::Error::other(
                        "server.max_connections_per_ip reached",
                    )));
                };
                Ok((
                    Conn::new(tcp, slot, header_timeout),
                    Protocol::Http1,
                    Some(peer),
                ))
            }
        };
        let app = app().into_factory().map_err(|err| err.error_response());
        fn_service(accept).and_then(
            HttpService::<Conn, _, _>::build()
                .keep_alive(KeepAlive::Timeout(Duration::from_secs(5)))
                // `Conn` times every request's head (actix-http's own
                // timer covers only a connection's first).
                .client_request_timeout(Duration::ZERO)
                // A closed WebSocket must not wait a second for the
                // client to close the TCP connection first
                // (spec-following clients never do).
                .client_disconnect_timeout(Duration::ZERO)
                .local_addr(addr)
                .graceful_shutdown_signal(move || drain.drained())
                .on_connect_ext(|conn: &Conn, data: &mut Extensions| {
                    data.insert(conn.state());
                })
                .finish(map_config(app, |_| AppConfig::default())),
        )
    };
    let server = http::server::Server::start(listeners, make).await?;
    shutdown.await;

    tracing::info!("shutting down: no new connections");
    server.stop_accepting();
    if let Err(e) = state.supervisor.send(Drain { grace }).await {
        tracing::error!(error = %e, "supervisor unreachable while draining");
    }
    // Kept-alive connections get a second at least to finish a response.
    server.stop(grace.max(Duration::from_secs(1))).await;

    tracing::info!("http server stopped; shutting down actors");
    match state.supervisor.send(Shutdown).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "storage flush at shutdown failed"),
        Err(e) => tracing::error!(error = %e, "supervisor unreachable at shutdown"),
    }
    state
        .store
        .flush()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(())
}
