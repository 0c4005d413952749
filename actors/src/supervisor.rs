//! The Supervisor: the first actor started at boot. It owns the lifecycle of
//! the other actors (each issue that adds one registers it here) and drives
//! graceful shutdown: children are stopped, then storage is made durable.

use actix::prelude::*;
use palaver_storage::Store;

use crate::messages::Shutdown;

pub struct Supervisor {
    /// The database every child reads and writes; flushed at shutdown.
    store: Store,
}

impl Supervisor {
    pub fn new(store: Store) -> Self {
        Supervisor { store }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        tracing::debug!("supervisor started");
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<Result<(), palaver_storage::StorageError>>;

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        tracing::info!("supervisor: shutting down");
        let store = self.store.clone();
        // Take no further messages; the children (none own state yet beyond
        // storage) go down with the system.
        ctx.stop();
        Box::pin(async move { store.durable().await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn shutdown_flushes_and_stops() {
        let store = Store::temporary().unwrap();
        let addr = Supervisor::new(store).start();
        addr.send(Shutdown).await.unwrap().unwrap();
        assert!(!addr.connected(), "the supervisor stops after shutdown");
    }
}
