//! The CPU workers: `analysis.workers` `CpuWorker` actors, each on a thread of
//! its own (`palaver-cpu-1`, …) under one actix `SyncArbiter`, taking jobs
//! from one shared queue, so they run in parallel, one per core by default,
//! and never on a stream's or the network's threads. [`CpuPool`] is the
//! handle: it bounds the jobs waiting for a worker by `analysis.queue`
//! (a job past it is refused at once with [`CpuError::Busy`]), and keeps the
//! queue-depth and busy-worker gauges.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use actix::prelude::*;

use crate::messages::CpuJob;
use crate::telemetry;

/// Why a CPU job did not return a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuError {
    /// `analysis.queue` jobs were already waiting for a worker: refused
    /// without running.
    Busy,
    /// The job panicked (its worker lives on), or the workers are gone.
    Crashed,
}

/// One CPU worker; `analysis.workers` of them share the queue.
pub struct CpuWorker;

impl Actor for CpuWorker {
    type Context = SyncContext<Self>;
}

impl<T: Send + 'static> Handler<CpuJob<T>> for CpuWorker {
    type Result = Result<T, CpuError>;

    fn handle(&mut self, job: CpuJob<T>, _ctx: &mut Self::Context) -> Self::Result {
        let CpuJob { call, queued } = job;
        drop(queued);
        telemetry::analysis_cpu_job_started();
        // A panicking tool fails its call, not the thread (the pool would
        // lose a worker for good).
        let outcome = panic::catch_unwind(AssertUnwindSafe(call)).map_err(|_| CpuError::Crashed);
        telemetry::analysis_cpu_job_ended();
        outcome
    }
}

/// A job's place in the queue, held from admission until a worker takes it
/// (or the job is dropped unrun: its reply stopped waiting for it).
pub struct Queued {
    waiting: Arc<AtomicUsize>,
}

impl Queued {
    fn enter(waiting: &Arc<AtomicUsize>, bound: usize) -> Option<Queued> {
        waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < bound).then_some(n + 1)
            })
            .ok()?;
        telemetry::analysis_cpu_queued(1.0);
        Some(Queued {
            waiting: waiting.clone(),
        })
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        telemetry::analysis_cpu_queued(-1.0);
    }
}

/// The handle to the CPU workers (cloned into the pool; engines reach it
/// through `Run::tool`).
#[derive(Clone)]
pub struct CpuPool {
    workers: Addr<CpuWorker>,
    /// Jobs admitted and not yet taken by a worker.
    waiting: Arc<AtomicUsize>,
    /// `analysis.queue`.
    bound: usize,
}

impl CpuPool {
    /// Starts `workers` threads. Must run inside an actix system (the
    /// `SyncArbiter` forwards its mailbox from the system's arbiter).
    pub fn start(workers: usize, queue: usize) -> CpuPool {
        let mut n = 0;
        let workers = SyncArbiter::start_with_thread_builder(
            workers.max(1),
            || {
                n += 1;
                thread::Builder::new().name(format!("palaver-cpu-{n}"))
            },
            || CpuWorker,
        );
        CpuPool {
            workers,
            waiting: Arc::new(AtomicUsize::new(0)),
            bound: queue.max(1),
        }
    }

    /// Runs `call` on a worker thread and waits for its value. Refused at
    /// once (`Busy`) when `analysis.queue` jobs already wait. Dropping the
    /// future before a worker took the job skips it.
    pub async fn run<T, F>(&self, call: F) -> Result<T, CpuError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let Some(queued) = Queued::enter(&self.waiting, self.bound) else {
            telemetry::analysis_busy("cpu");
            return Err(CpuError::Busy);
        };
        let job = CpuJob {
            call: Box::new(call),
            queued,
        };
        self.workers
            .send(job)
            .await
            .unwrap_or(Err(CpuError::Crashed))
    }

    /// Jobs waiting for a worker now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}
