//! The group committer: the only code that flushes the database.
//!
//! Writers insert into sled, then call [`Committer::wait`], which hands a
//! oneshot to this thread. The thread takes every waiter queued so far, flushes
//! once, and answers them all; writers that arrive during a flush form the next
//! batch. So exactly one flush is ever in flight: per-write
//! `flush_async().await` deadlocks sled 0.34.7 once a handful are in flight
//! (sled issue #1308), and one flush per batch is also much cheaper.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::{Result, StorageError};

type Ack = oneshot::Sender<Result<(), String>>;

/// Called after every flush with its duration (the metrics hook).
pub type FlushObserver = Box<dyn Fn(Duration) + Send + 'static>;

pub struct Committer {
    tx: Option<mpsc::Sender<Ack>>,
    thread: Option<JoinHandle<()>>,
    progress: Arc<Progress>,
}

/// Flush numbering, so a writer can ask "has a flush that started after my
/// write completed?" without queueing for one that another writer already
/// caused.
#[derive(Default)]
struct Progress {
    /// Number of the latest flush that started (1, 2, 3, …).
    started: AtomicU64,
    /// Number of the latest flush that completed successfully.
    completed: AtomicU64,
}

impl Committer {
    /// Starts the committer thread over `db`. With `fsync_file`, every batch
    /// also `fdatasync`s that file (sled itself never fsyncs on Linux).
    pub fn start(
        db: sled::Db,
        fsync_file: Option<File>,
        observer: Option<FlushObserver>,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Ack>();
        let progress = Arc::new(Progress::default());
        let shared = progress.clone();
        let thread = std::thread::Builder::new()
            .name("palaver-committer".into())
            .spawn(move || run(db, fsync_file, observer, rx, shared))?;
        Ok(Committer {
            tx: Some(tx),
            thread: Some(thread),
            progress,
        })
    }

    /// A mark to take right after a write: [`Committer::wait_since`] with it
    /// resolves once that write is durable.
    pub fn mark(&self) -> u64 {
        self.progress.started.load(Ordering::SeqCst)
    }

    /// Number of the latest flush that completed.
    pub fn completed(&self) -> u64 {
        self.progress.completed.load(Ordering::SeqCst)
    }

    /// Resolves once a flush that started after `mark` was taken has
    /// completed: at once if one already has (another writer's flush covered
    /// the write), else after the next flush.
    pub async fn wait_since(&self, mark: u64) -> Result<()> {
        if self.completed() > mark {
            return Ok(());
        }
        self.wait().await
    }

    /// Resolves once every write made before the call is durable.
    pub async fn wait(&self) -> Result<()> {
        let (ack, done) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or_else(|| StorageError::Commit("the committer has stopped".into()))?
            .send(ack)
            .map_err(|_| StorageError::Commit("the committer has stopped".into()))?;
        match done.await {
            Ok(result) => result.map_err(StorageError::Commit),
            Err(_) => Err(StorageError::Commit("the committer has stopped".into())),
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its last batch; joining it
        // means the database handle it holds is gone when the Store is.
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    db: sled::Db,
    fsync_file: Option<File>,
    observer: Option<FlushObserver>,
    rx: mpsc::Receiver<Ack>,
    progress: Arc<Progress>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let number = progress.started.fetch_add(1, Ordering::SeqCst) + 1;
        let started = Instant::now();
        let result = flush(&db, fsync_file.as_ref());
        if result.is_ok() {
            progress.completed.store(number, Ordering::SeqCst);
        }
        if let Some(observe) = &observer {
            observe(started.elapsed());
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, waiters = batch.len(), "storage flush failed");
        }
        for ack in batch {
            // A writer that stopped waiting is not an error.
            let _ = ack.send(result.clone());
        }
    }
}

fn flush(db: &sled::Db, fsync_file: Option<&File>) -> Result<(), String> {
    db.flush().map_err(|e| e.to_string())?;
    if let Some(file) = fsync_file {
        file.sync_data().map_err(|e| e.to_string())?;
    }
    Ok(())
}
