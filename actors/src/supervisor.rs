//! The Supervisor: the first actor started at boot. It creates the
//! QuotaRegistry and starts its QuotaKeeper, the AuthActor, the
//! AnalysisPool (its stream arbiter and CPU workers) and the TrackAnalyst;
//! it spawns the session actor of every accepted WebSocket connection
//! ([`Supervisor::reserve_session`], the one place a SessionActor is created,
//! registered and started); it owns the connection registry and closes
//! sockets when credentials are revoked (4001), a user goes (4002), a session
//! is deleted (4004), or the server shuts down (1001); and it drives graceful
//! shutdown: streams finish (or fail) within the grace, sockets close, storage
//! is made durable.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use palaver_storage::Store;

use crate::analysis::tracks::TrackAnalyst;
use crate::analysis::{AnalysisPool, AnalysisSettings};
use crate::auth::Principal;
use crate::auth::{Auth, AuthError, AuthSettings};
use crate::messages::{Drain, RevokeReason, Revoked, SessionDeleted, Shutdown};
use crate::protocol::Close;
use crate::quota::Policy;
use crate::quota::{QuotaKeeper, QuotaRegistry};
use crate::registry::Connections;
use crate::replies::Replies;
use crate::session::{Opened, SessionActor, SessionDeps, WsLimits};
use crate::socket::{Incoming, Outbox};
use crate::telemetry;

pub struct Supervisor {
    /// The database every child reads and writes; flushed at shutdown.
    store: Store,
    /// Told when a user is deleted, to drop the cached counter.
    quotas: QuotaRegistry,
    /// Live WebSocket connections, to close on revocation and shutdown.
    connections: Arc<Connections>,
    /// Drained at shutdown.
    pool: AnalysisPool,
    /// Revocations seen since start (reported at shutdown).
    revocations: u64,
    /// `storage.retention`: sessions idle for longer are deleted (from here,
    /// which also closes sockets open on them).
    retention: SessionRetention,
    /// A retention sweep is running (the next tick skips).
    sweeping: bool,
}

/// How long a session may stay idle (no new message, no rename) before it
/// is deleted with its messages: `storage.retention`, `None` = forever.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionRetention {
    pub idle_for: Option<Duration>,
}

impl SessionRetention {
    /// Sessions are kept until their owner deletes them.
    pub const KEEP: SessionRetention = SessionRetention { idle_for: None };

    /// Often enough that a session goes within a quarter of the retention
    /// after it expires; at least every second, at most every 10 minutes.
    fn sweep_every(idle_for: Duration) -> Duration {
        (idle_for / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
    }
}

/// Sessions one retention sweep deletes at most (the next sweep comes at
/// once when it deleted that many).
const RETENTION_BATCH: usize = 1_000;

/// Runs one retention sweep.
#[derive(Message)]
#[rtype(result = "()")]
struct SweepIdleSessions;

/// What [`Supervisor::boot`] starts.
pub struct Booted {
    pub supervisor: Addr<Supervisor>,
    pub auth: Auth,
    pub quotas: QuotaRegistry,
    /// The registry's actor (evicts idle counters).
    pub quota_keeper: Addr<QuotaKeeper>,
    pub pool: AnalysisPool,
    /// Analyses uploaded tracks.
    pub tracks: Addr<TrackAnalyst>,
    /// What the WebSocket handshake hands every session actor.
    pub sessions: Arc<SessionDeps>,
}

impl Supervisor {
    /// Starts the supervisor and its children. Must run inside an actix system.
    pub fn boot(
        store: Store,
        auth: AuthSettings,
        analysis: AnalysisSettings,
        limits: WsLimits,
        retention: SessionRetention,
    ) -> Result<Booted, AuthError> {
        let quotas = QuotaRegistry::new(store.clone());
        let quota_keeper = QuotaKeeper::new(quotas.clone()).start();
        let connections = Arc::new(Connections::default());
        let (workers, max_samples) = (analysis.workers, analysis.max_track_samples);
        let pool = AnalysisPool::start(analysis, store.clone());
        let tracks =
            TrackAnalyst::new(store.clone(), pool.cpu().clone(), workers, max_samples).start();
        let supervisor = Supervisor {
            store: store.clone(),
            quotas: quotas.clone(),
            connections: connections.clone(),
            pool: pool.clone(),
            revocations: 0,
            retention,
            sweeping: false,
        }
        .start();
        let auth = Auth::start(auth, store.clone(), supervisor.clone().recipient())?;
        let replies = Replies::new(store.clone(), limits.resume_window);
        let sessions = Arc::new(SessionDeps {
            store,
            auth: auth.clone(),
            quotas: quotas.clone(),
            pool: pool.clone(),
            connections,
            replies,
            limits,
        });
        Ok(Booted {
            supervisor,
            auth,
            quotas,
            quota_keeper,
            pool,
            tracks,
            sessions,
        })
    }
}

/// Why the Supervisor would not start a session actor.
#[derive(Debug)]
pub enum SpawnRefused {
    /// The user has `ws.max_connections_per_user` connections already.
    TooMany,
    /// Looked at again once registered, the credential no longer stands
    /// (revoked, key deleted, user disabled or gone).
    Credential(AuthError),
    /// The session was deleted meanwhile.
    SessionGone,
}

/// A connection registered for a session actor that is not running yet.
/// [`SessionReservation::start`] runs it; dropping the reservation (the
/// upgrade failed) unregisters the connection.
pub struct SessionReservation {
    ctx: Context<SessionActor>,
    opened: Opened,
    registered: Registered,
}

/// A place in the connection registry, given back on drop unless the
/// session actor took it over (its `stopped` unregisters then).
struct Registered {
    deps: Arc<SessionDeps>,
    user: palaver_storage::UserId,
    conn_id: u64,
    handed_over: bool,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if !self.handed_over {
            self.deps.connections.unregister(self.user, self.conn_id);
        }
    }
}

impl Supervisor {
    /// The first half of spawning a connection's session actor: creates the
    /// actor's context and registers its address (enforcing the per-user
    /// limit), then verifies again what the handshake verified (credential
    /// and session): a revocation or deletion that raced the handshake either
    /// finds this registered connection, or is found here. The caller then
    /// completes the upgrade and calls [`SessionReservation::start`].
    ///
    /// A plain function rather than a message: the actor runs on the
    /// arbiter of the worker that accepted the connection, because the
    /// request payload it reads is not `Send` and cannot be handed to the
    /// Supervisor's thread. The registry it writes is the Supervisor's own.
    pub fn reserve_session(
        deps: &Arc<SessionDeps>,
        principal: Principal,
        session: palaver_storage::Session,
        policy: Option<Policy>,
        max_per_user: usize,
    ) -> Result<SessionReservation, SpawnRefused> {
        let ctx = Context::<SessionActor>::new();
        let user = principal.user.id;
        let conn_id = deps
            .connections
            .register(
                user,
                principal.family(),
                principal.api_key(),
                session.id,
                max_per_user,
                ctx.address().recipient(),
            )
            .map_err(|_| SpawnRefused::TooMany)?;
        // From here a refusal drops this, which unregisters.
        let registered = Registered {
            deps: deps.clone(),
            user,
            conn_id,
            handed_over: false,
        };
        deps.auth
            .recheck(&principal)
            .map_err(SpawnRefused::Credential)?;
        match deps.store.sessions().get(session.id) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(SpawnRefused::SessionGone),
            Err(e) => return Err(SpawnRefused::Credential(AuthError::Storage(e))),
        }
        Ok(SessionReservation {
            ctx,
            opened: Opened {
                principal,
                session,
                policy,
                resume: None,
            },
            registered,
        })
    }
}

impl SessionReservation {
    /// `?resume=` of the handshake: acted on right after `connected`.
    pub fn resume_at_connect(mut self, resume: Option<String>) -> Self {
        self.opened.resume = resume;
        self
    }

    /// The connection's id in the registry (for logs).
    pub fn conn_id(&self) -> u64 {
        self.registered.conn_id
    }

    /// Starts the session actor over the upgraded socket.
    pub fn start(self, outbox: Outbox, incoming: Incoming) -> Addr<SessionActor> {
        let SessionReservation {
            ctx,
            opened,
            mut registered,
        } = self;
        registered.handed_over = true;
        SessionActor::launch(
            ctx,
            registered.deps.clone(),
            opened,
            registered.conn_id,
            outbox,
            incoming,
        )
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::debug!("supervisor started");
        if let Some(idle_for) = self.retention.idle_for {
            ctx.run_interval(SessionRetention::sweep_every(idle_for), |_, ctx| {
                ctx.notify(SweepIdleSessions)
            });
        }
    }
}

impl Handler<SweepIdleSessions> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    /// Deletes the sessions idle past `storage.retention` (durably), then
    /// closes the sockets open on them (4004, as a deletion by the owner).
    fn handle(&mut self, _: SweepIdleSessions, _: &mut Self::Context) -> Self::Result {
        let Some(idle_for) = self.retention.idle_for else {
            return Box::pin(actix::fut::ready(()));
        };
        if self.sweeping {
            return Box::pin(actix::fut::ready(()));
        }
        self.sweeping = true;
        let store = self.store.clone();
        let before = palaver_storage::now_millis().saturating_sub(idle_for.as_millis() as u64);
        let work = async move { store.sessions().delete_idle(before, RETENTION_BATCH).await };
        Box::pin(work.into_actor(self).map(|deleted, act, ctx| {
            act.sweeping = false;
            match deleted {
                Ok(ids) if ids.is_empty() => {}
                Ok(ids) => {
                    for &session_id in &ids {
                        act.connections
                            .close_session(session_id, Close::SessionDeleted);
                    }
                    telemetry::sessions_expired(ids.len());
                    tracing::info!(
                        deleted = ids.len(),
                        "sessions idle past storage.retention deleted"
                    );
                    if ids.len() == RETENTION_BATCH {
                        ctx.notify(SweepIdleSessions);
                    }
                }
                Err(e) => tracing::error!(error = %e, "retention sweep failed"),
            }
        }))
    }
}

impl Handler<Revoked> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Revoked, _ctx: &mut Self::Context) {
        self.revocations += 1;
        let why = match msg.reason {
            RevokeReason::Logout => Close::LoggedOut,
            RevokeReason::RefreshReuse => Close::CredentialsRevoked,
            RevokeReason::UserDeleted => Close::AccountDeleted,
        };
        // `family` is None for a user-wide revocation.
        let closed = self.connections.close_user(msg.user_id, msg.family, why);
        if msg.reason == RevokeReason::UserDeleted {
            self.quotas.forget(msg.user_id);
        }
        tracing::info!(
            user_id = %msg.user_id,
            family = ?msg.family,
            reason = ?msg.reason,
            closed,
            "credentials revoked"
        );
    }
}

impl Handler<SessionDeleted> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SessionDeleted, _ctx: &mut Self::Context) {
        let closed = self
            .connections
            .close_session(msg.session_id, Close::SessionDeleted);
        tracing::debug!(session_id = %msg.session_id, closed, "session deleted");
    }
}

impl Handler<Drain> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Drain, _ctx: &mut Self::Context) -> Self::Result {
        let (pool, connections) = (self.pool.clone(), self.connections.clone());
        Box::pin(async move {
            pool.drain(msg.grace).await;
            // The HTTP server's graceful stop then waits for these
            // connections to deliver their close frames and end.
            let closed = connections.close_all(Close::Shutdown);
            tracing::info!(closed, "websockets closed for shutdown");
        })
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<Result<(), palaver_storage::StorageError>>;

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        tracing::info!(revocations = self.revocations, "supervisor: shutting down");
        let store = self.store.clone();
        ctx.stop();
        Box::pin(async move { store.durable().await })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analysis::EngineKind;
    use crate::auth::{DemoSettings, KeySource};

    pub(crate) fn settings() -> AuthSettings {
        AuthSettings {
            keys: KeySource::Hs256 {
                secret: vec![9; 64],
                previous: vec![],
            },
            issuer: "palaver".into(),
            audience: None,
            leeway_seconds: 5,
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(600),
            ticket_ttl: Duration::from_secs(30),
            login_failures_per_email: 5,
            login_failures_per_ip: 50,
            login_window: Duration::from_secs(900),
            registrations_per_ip_per_hour: 10,
            registrations_per_hour: 100,
            demo: DemoSettings {
                enabled: true,
                lifetime: Duration::from_secs(900),
                per_ip_per_hour: 20,
                gc_after: Duration::from_secs(3600),
            },
            external: Vec::new(),
        }
    }

    pub(crate) fn boot(store: Store) -> Booted {
        boot_with(store, settings())
    }

    pub(crate) fn boot_with(store: Store, auth: AuthSettings) -> Booted {
        Supervisor::boot(
            store,
            auth,
            AnalysisSettings {
                engine: EngineKind::Echo,
                workers: 1,
                queue: 4,
                max_streams: 4,
                token_delay: Duration::ZERO,
                finish_on_disconnect: true,
                max_track_samples: u64::MAX,
                openai: None,
            },
            WsLimits {
                max_messages_per_minute: 120,
                max_message_bytes: 65536,
                max_buffered_bytes: 1 << 20,
                ping_interval: Duration::from_secs(20),
                idle_timeout: Duration::from_secs(60),
                expiry_warning: Duration::from_secs(60),
                max_question_chars: 4000,
                resume_window: Duration::from_secs(3600),
            },
            SessionRetention::KEEP,
        )
        .unwrap()
    }

    #[actix_rt::test]
    async fn shutdown_flushes_and_stops() {
        let booted = boot(Store::temporary().unwrap());
        booted
            .supervisor
            .send(Drain {
                grace: Duration::from_millis(10),
            })
            .await
            .unwrap();
        booted.supervisor.send(Shutdown).await.unwrap().unwrap();
        assert!(
            !booted.supervisor.connected(),
            "the supervisor stops after shutdown"
        );
    }
}
