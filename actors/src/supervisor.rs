//! The Supervisor: the first actor started at boot. It creates the
//! QuotaRegistry, starts the other actors (the AuthActor, and the
//! AnalysisPool's stream arbiter and CPU workers) and owns their lifecycle; it owns the connection registry and closes
//! sockets when credentials are revoked (4001), a user goes (4002), a session
//! is deleted (4004), or the server shuts down (1001); and it drives graceful
//! shutdown: streams finish (or fail) within the grace, sockets close, storage
//! is made durable.

use std::sync::Arc;

use actix::prelude::*;
use palaver_storage::Store;

use crate::analysis::{AnalysisPool, AnalysisSettings};
use crate::auth::{Auth, AuthError, AuthSettings};
use crate::messages::{Drain, RevokeReason, Revoked, SessionDeleted, Shutdown};
use crate::protocol::close;
use crate::quota::QuotaRegistry;
use crate::registry::Connections;
use crate::session::{SessionDeps, WsLimits};

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
}

/// What [`Supervisor::boot`] starts.
pub struct Booted {
    pub supervisor: Addr<Supervisor>,
    pub auth: Auth,
    pub quotas: QuotaRegistry,
    pub pool: AnalysisPool,
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
    ) -> Result<Booted, AuthError> {
        let quotas = QuotaRegistry::new(store.clone());
        let connections = Arc::new(Connections::default());
        let pool = AnalysisPool::start(analysis, store.clone());
        let supervisor = Supervisor {
            store: store.clone(),
            quotas: quotas.clone(),
            connections: connections.clone(),
            pool: pool.clone(),
            revocations: 0,
        }
        .start();
        let auth = Auth::start(auth, store.clone(), supervisor.clone().recipient())?;
        let sessions = Arc::new(SessionDeps {
            store,
            auth: auth.clone(),
            quotas: quotas.clone(),
            pool: pool.clone(),
            connections,
            limits,
        });
        Ok(Booted {
            supervisor,
            auth,
            quotas,
            pool,
            sessions,
        })
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        tracing::debug!("supervisor started");
    }
}

impl Handler<Revoked> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Revoked, _ctx: &mut Self::Context) {
        self.revocations += 1;
        let (code, reason) = match msg.reason {
            RevokeReason::Logout => (close::AUTH, "logged out"),
            RevokeReason::RefreshReuse => (close::AUTH, "credentials revoked"),
            RevokeReason::UserDeleted => (close::USER_INACTIVE, "account deleted"),
        };
        // `family` is None for a user-wide revocation.
        let closed = self
            .connections
            .close_user(msg.user_id, msg.family, code, reason);
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
        let closed =
            self.connections
                .close_session(msg.session_id, close::NOT_FOUND, "session deleted");
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
            let closed = connections.close_all(close::GOING_AWAY, "server shutting down");
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
    use std::time::Duration;

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
            },
            WsLimits {
                max_messages_per_minute: 120,
                max_message_bytes: 65536,
                max_buffered_bytes: 1 << 20,
                ping_interval: Duration::from_secs(20),
                idle_timeout: Duration::from_secs(60),
                expiry_warning: Duration::from_secs(60),
                max_question_chars: 4000,
            },
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
