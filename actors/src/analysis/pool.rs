//! The `AnalysisPool`: the handle every question goes through. It admits a
//! reply into one of `analysis.max_streams` places (or answers `busy`),
//! starts its `StreamActor` on the pool's stream arbiter, knows the replies in
//! progress, and drains them at shutdown. It owns the CPU workers, which the
//! streams' tool calls use.
//!
//! Not an actor itself: admission is a semaphore tried on the caller's
//! thread, in the same synchronous step as the quota count (question.rs), so
//! a full pool refuses before anything is counted or stored, without a
//! mailbox round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::dev::channel;
use actix::prelude::*;
use palaver_storage::Store;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::cpu::CpuPool;
use super::stream::StreamActor;
use super::{AnalysisSettings, Job};
use crate::messages::StopReply;
use crate::telemetry;

/// The pool is full (or draining): answer `busy`.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

/// A place among `max_streams`, taken before the question is counted and
/// stored, so a full pool refuses without side effects. Dropped unused, it
/// is given back.
pub struct Slot {
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
}

impl Slot {
    /// Starts the reply: a `StreamActor` on the stream arbiter, holding
    /// this place until its reply is stored.
    pub fn submit(self, job: Job) {
        let Slot { permit, shared } = self;
        let id = job.reply.id;
        // The actor's address exists (and is registered for drain) before
        // the actor runs, so it cannot finish unregistered.
        let (tx, rx) = channel::channel(16);
        shared.lock().insert(id, Addr::new(tx));
        let place = Place {
            id,
            shared: shared.clone(),
            _permit: permit,
        };
        let started = shared.arbiter.spawn_fn(move || {
            let ctx = Context::with_receiver(rx);
            let actor = StreamActor::new(job, place);
            actix::spawn(ctx.into_future(actor));
        });
        if !started {
            // The arbiter is gone (the process is ending): the closure, with
            // the job and its place, was dropped; the reply stays
            // `streaming` and is marked `failed` at the next start.
            tracing::error!("the stream arbiter is gone: a reply was not started");
        }
    }
}

/// A reply's hold on the pool, owned by its `StreamActor`: dropped (once
/// the reply is stored, or if the actor is dropped), it frees the place
/// and takes the reply off the list that drain waits for.
pub(super) struct Place {
    id: Uuid,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Place {
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut running = self.shared.lock();
        running.remove(&self.id);
        if running.is_empty() {
            self.shared.idle.notify_waiters();
        }
    }
}

/// What the handle's clones and every `StreamActor` share.
pub(super) struct Shared {
    pub(super) settings: Arc<AnalysisSettings>,
    pub(super) store: Store,
    /// Where tool calls run.
    pub(super) cpu: CpuPool,
    /// The one thread every `StreamActor` runs on (streams wait far more
    /// than they compute; keeps engine work off the network workers).
    arbiter: ArbiterHandle,
    /// `max_streams` permits; a reply holds one from `reserve` until it is
    /// stored.
    places: Arc<Semaphore>,
    /// Set by `drain`: no new reply is taken (`reserve` answers `Busy`).
    draining: AtomicBool,
    /// Replies in progress, by reply id (drain stops them past the grace).
    running: Mutex<HashMap<Uuid, Addr<StreamActor>>>,
    /// Notified when `running` becomes empty.
    idle: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Addr<StreamActor>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The cloneable handle: the session actors, the HTTP handlers and the
/// Supervisor hold one.
#[derive(Clone)]
pub struct AnalysisPool {
    shared: Arc<Shared>,
}

impl AnalysisPool {
    /// Starts the stream arbiter and the CPU workers. Must run inside an
    /// actix system.
    pub fn start(settings: AnalysisSettings, store: Store) -> AnalysisPool {
        let cpu = CpuPool::start(settings.workers.max(1), settings.queue.max(1));
        let places = Arc::new(Semaphore::new(settings.max_streams.max(1)));
        telemetry::analysis_pool_started();
        AnalysisPool {
            shared: Arc::new(Shared {
                settings: Arc::new(settings),
                store,
                cpu,
                arbiter: Arbiter::new().handle(),
                places,
                draining: AtomicBool::new(false),
                running: Mutex::new(HashMap::new()),
                idle: Notify::new(),
            }),
        }
    }

    /// Reserves a place for a reply, or `Busy` when `max_streams` replies
    /// are in progress (or the server is shutting down).
    pub fn reserve(&self) -> Result<Slot, Busy> {
        if self.shared.draining.load(Ordering::SeqCst) {
            telemetry::analysis_busy("streams");
            return Err(Busy);
        }
        match self.shared.places.clone().try_acquire_owned() {
            Ok(permit) => Ok(Slot {
                permit,
                shared: self.shared.clone(),
            }),
            Err(_) => {
                telemetry::analysis_busy("streams");
                Err(Busy)
            }
        }
    }

    /// The CPU workers (for work that is not a tool call of a reply).
    pub fn cpu(&self) -> &CpuPool {
        &self.shared.cpu
    }

    /// Replies in progress now.
    pub fn streams(&self) -> usize {
        self.shared.lock().len()
    }

    /// Shutdown: lets replies in progress finish for up to `grace`, then
    /// stops the rest (each `StreamActor` is sent `StopReply`), whose
    /// replies are stored as `failed`. No reply is taken from the first
    /// call on. Returns once every reply has ended.
    pub async fn drain(&self, grace: Duration) {
        self.shared.draining.store(true, Ordering::SeqCst);
        let all_done = || async {
            loop {
                let idle = self.shared.idle.notified();
                if self.shared.lock().is_empty() {
                    return;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(grace, all_done()).await.is_err() {
            let replies: Vec<_> = self.shared.lock().values().cloned().collect();
            tracing::warn!(
                unfinished = replies.len(),
                "shutdown grace over: stopping replies"
            );
            for reply in &replies {
                reply.do_send(StopReply);
            }
            // Stopped replies only store what they said: bounded, but do not
            // let a stuck disk hold the shutdown forever.
            if tokio::time::timeout(Duration::from_secs(10), all_done())
                .await
                .is_err()
            {
                tracing::error!(
                    "replies still unfinished 10 s after being stopped; shutting down anyway"
                );
            }
        }
    }
}
