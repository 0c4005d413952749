//! The Supervisor: the first actor started at boot. It starts the other
//! actors (the QuotaRegistry and the AuthActor so far) and owns their lifecycle, is told of every
//! revocation (the WebSocket registry closes the affected sockets), and drives
//! graceful shutdown: children are stopped, then storage is made durable.

use actix::prelude::*;
use palaver_storage::Store;

use crate::auth::{Auth, AuthError, AuthSettings};
use crate::messages::{RevokeReason, Revoked, SessionDeleted, Shutdown};
use crate::quota::{Forget, QuotaRegistry};

pub struct Supervisor {
    /// The database every child reads and writes; flushed at shutdown.
    store: Store,
    /// Told when a user is deleted, to drop the cached counter.
    quotas: Addr<QuotaRegistry>,
    /// Revocations seen since start (reported at shutdown).
    revocations: u64,
}

/// What [`Supervisor::boot`] starts.
pub struct Booted {
    pub supervisor: Addr<Supervisor>,
    pub auth: Auth,
    pub quotas: Addr<QuotaRegistry>,
}

impl Supervisor {
    /// Starts the supervisor and its children. Must run inside an actix system.
    pub fn boot(store: Store, auth: AuthSettings) -> Result<Booted, AuthError> {
        let quotas = QuotaRegistry::new(store.clone()).start();
        let supervisor = Supervisor {
            store: store.clone(),
            quotas: quotas.clone(),
            revocations: 0,
        }
        .start();
        let auth = Auth::start(auth, store, supervisor.clone().recipient())?;
        Ok(Booted {
            supervisor,
            auth,
            quotas,
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
        if msg.reason == RevokeReason::UserDeleted {
            self.quotas.do_send(Forget { user: msg.user_id });
        }
        tracing::info!(
            user_id = %msg.user_id,
            family = ?msg.family,
            reason = ?msg.reason,
            "credentials revoked"
        );
    }
}

impl Handler<SessionDeleted> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SessionDeleted, _ctx: &mut Self::Context) {
        tracing::debug!(session_id = %msg.session_id, "session deleted");
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
            demo: DemoSettings {
                enabled: true,
                lifetime: Duration::from_secs(900),
                per_ip_per_hour: 20,
                gc_after: Duration::from_secs(3600),
            },
        }
    }

    #[actix_rt::test]
    async fn shutdown_flushes_and_stops() {
        let store = Store::temporary().unwrap();
        let booted = Supervisor::boot(store, settings()).unwrap();
        booted.supervisor.send(Shutdown).await.unwrap().unwrap();
        assert!(
            !booted.supervisor.connected(),
            "the supervisor stops after shutdown"
        );
    }
}
