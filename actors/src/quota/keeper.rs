//! The QuotaKeeper: the QuotaRegistry's actor. Admission is a synchronous
//! call on the registry's handle (measured: a mailbox hop cost 11 % of a
//! counted request); what needs an owner over time lives here. Every
//! [`SWEEP_EVERY`] it evicts from memory the counters of users idle for
//! [`IDLE_AFTER`] and of windows that ended, so the registry holds the users
//! active lately, not every user seen since start (the stored counters stay:
//! the next request reads its counter back). A cluster-wide counter (a
//! later wave's several nodes) hooks in here: this actor is where counts
//! would be reconciled with the other nodes' on the same timer.

use std::time::Duration;

use actix::prelude::*;

use super::QuotaRegistry;
use crate::auth::now_secs;

/// A counter untouched this long leaves memory.
pub const IDLE_AFTER: Duration = Duration::from_secs(600);
/// How often the keeper looks.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct QuotaKeeper {
    registry: QuotaRegistry,
}

impl QuotaKeeper {
    pub fn new(registry: QuotaRegistry) -> Self {
        QuotaKeeper { registry }
    }
}

impl Actor for QuotaKeeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP_EVERY, |_, ctx| {
            ctx.notify(Evict {
                now: now_secs(),
                idle: IDLE_AFTER,
            })
        });
    }
}

/// What an eviction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Counters left in memory.
    pub kept: usize,
    /// Dropped: untouched for the idle time (still stored).
    pub idle: usize,
    /// Dropped: the demo ended, or the regular user's window passed.
    pub ended: usize,
}

/// Sent by the keeper's own timer (and by tests and the benchmark) to the
/// [`QuotaKeeper`]: evicts as of `now` (Unix seconds) the counters idle for
/// `idle`. Answers what it did.
#[derive(Debug)]
pub struct Evict {
    pub now: u64,
    pub idle: Duration,
}

impl Message for Evict {
    type Result = Evicted;
}

impl Handler<Evict> for QuotaKeeper {
    type Result = MessageResult<Evict>;

    fn handle(&mut self, msg: Evict, _: &mut Self::Context) -> Self::Result {
        let evicted = self.registry.evict(msg.now, msg.idle.as_secs());
        if evicted.idle + evicted.ended > 0 {
            tracing::debug!(?evicted, "quota counters evicted");
        }
        MessageResult(evicted)
    }
}
