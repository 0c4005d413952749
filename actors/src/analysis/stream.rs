//! The `StreamActor`: one per reply in progress, on the pool's stream
//! arbiter. It runs the engine as a future of its context (so a stream that
//! waits costs a future and a mailbox, not a thread), holds the reply's
//! place among `analysis.max_streams`, gives it back once the reply is
//! stored, then sends `Done` and stops. Drain reaches it with `StopReply`.

use std::sync::Arc;

use actix::prelude::*;

use super::pool::Place;
use super::{run, Cancel, Job};
use crate::messages::StopReply;

pub struct StreamActor {
    /// Taken by `started`, which moves it into the engine's future.
    job: Option<Job>,
    /// The reply's own flag: `StopReply` sets it (the reply ends `failed`);
    /// the client's `cancel` sets it too, through the session's clone.
    cancel: Arc<Cancel>,
    /// The reply's place in the pool, dropped (given back) before `Done`.
    place: Option<Place>,
}

impl StreamActor {
    pub(super) fn new(job: Job, place: Place) -> StreamActor {
        StreamActor {
            cancel: job.cancel.clone(),
            job: Some(job),
            place: Some(place),
        }
    }
}

impl Actor for StreamActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (Some(job), Some(place)) = (self.job.take(), self.place.as_ref()) else {
            return ctx.stop();
        };
        let shared = place.shared().clone();
        let answer = async move {
            let mut job = job;
            let (reply, usage) = run(&mut job, &shared.settings, &shared.store, &shared.cpu).await;
            (job, reply, usage)
        };
        // `spawn`, not `wait`: `StopReply` is handled while the engine runs.
        ctx.spawn(
            answer
                .into_actor(self)
                .map(|(job, reply, usage), act, ctx| {
                    // The place is free (and drain no longer waits for this
                    // reply) before the client hears `done`: a client that
                    // asks again at once finds room.
                    act.place = None;
                    job.events.done(reply, usage);
                    ctx.stop();
                }),
        );
    }
}

impl Handler<StopReply> for StreamActor {
    type Result = ();

    fn handle(&mut self, _msg: StopReply, _ctx: &mut Self::Context) {
        self.cancel.by_shutdown();
    }
}
