//! The AnalysisPool: `analysis.workers` workers behind a bounded queue of
//! `analysis.queue` jobs. A job answers one question: the engine announces
//! tool calls and results and streams tokens to the job's event channel; the
//! worker persists the finished reply and then sends `Done`. A reply runs to
//! its end even if the socket that asked is gone (`finish_on_disconnect`), so
//! history shows it.
//!
//! Workers are futures on one dedicated arbiter thread (engines are I/O- and
//! timer-bound); CPU-heavy tool work goes to blocking threads, never to the
//! network threads.
//!
//! # Layout
//! - `mod.rs`: the pool, jobs, events, cancellation, the run loop.
//! - [`echo`]: the `echo` engine.
//! - [`builtin`]: the `builtin` engine: picks tools from the question.
//! - [`openai`]: the `openai` engine: an OpenAI-compatible upstream, streamed.
//! - [`sse`]: the event-stream decoder the `openai` engine reads with.
//! - [`tools`]: the tool registry and the conversation tools.

pub mod builtin;
pub mod echo;
pub mod openai;
pub mod sse;
pub mod tools;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palaver_storage::{Message, MessageStatus, Session, Store, ToolUse};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use crate::telemetry;

/// Which engine answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Builtin,
    Echo,
    /// Needs [`AnalysisSettings::openai`].
    Openai,
}

impl EngineKind {
    /// The name in `analysis.engine` and in metric labels.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Builtin => "builtin",
            EngineKind::Echo => "echo",
            EngineKind::Openai => "openai",
        }
    }
}

#[derive(Clone, Debug)]
pub struct AnalysisSettings {
    pub engine: EngineKind,
    /// At least 1.
    pub workers: usize,
    /// At least 1.
    pub queue: usize,
    /// Pause between tokens (0 = none).
    pub token_delay: Duration,
    pub finish_on_disconnect: bool,
    /// The `openai` engine (its settings and HTTP client), when configured.
    pub openai: Option<Arc<openai::OpenAi>>,
}

/// What a job reports, in order: any number of tool calls/results and tokens,
/// then exactly one `Done` (after the reply is persisted).
#[derive(Debug)]
pub enum Event {
    ToolCall {
        tool: String,
        args: Value,
    },
    ToolResult {
        tool: String,
        success: bool,
        result: Value,
    },
    Token(String),
    /// The engine failed (`analysis_failed`): why, in words safe to show
    /// the client. `Done` (status `failed`) follows.
    Failed {
        message: String,
    },
    Done {
        reply: Message,
        usage: Usage,
    },
}

/// A reply's usage, as the `done` event reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub tokens: u64,
    pub first_token_ms: u64,
    pub total_ms: u64,
}

/// Stops a job: by its client (`cancel`: the reply ends `cancelled`) or by
/// shutdown (the reply ends `failed`).
#[derive(Default)]
pub struct Cancel {
    reason: AtomicU8,
    notify: Notify,
}

const NOT_CANCELLED: u8 = 0;
const BY_CLIENT: u8 = 1;
const BY_SHUTDOWN: u8 = 2;

impl Cancel {
    pub fn by_client(&self) {
        self.set(BY_CLIENT);
    }

    fn by_shutdown(&self) {
        self.set(BY_SHUTDOWN);
    }

    fn set(&self, reason: u8) {
        let _ =
            self.reason
                .compare_exchange(NOT_CANCELLED, reason, Ordering::SeqCst, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.reason.load(Ordering::SeqCst) != NOT_CANCELLED
    }

    /// Resolves once the job is cancelled (at once if it already is).
    pub async fn cancelled(&self) {
        let notified = self.notify.notified();
        if self.is_cancelled() {
            return;
        }
        notified.await;
    }

    fn status(&self) -> MessageStatus {
        match self.reason.load(Ordering::SeqCst) {
            BY_SHUTDOWN => MessageStatus::Failed,
            _ => MessageStatus::Cancelled,
        }
    }
}

/// One question to answer.
pub struct Job {
    pub session: Session,
    pub question: Message,
    /// The placeholder reply (status `Streaming`), already stored.
    pub reply: Message,
    pub events: mpsc::UnboundedSender<Event>,
    pub cancel: Arc<Cancel>,
}

/// The pool is full: answer `busy`.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

/// A reserved place in the queue, taken before the question is counted and
/// stored, so a full pool refuses without side effects.
pub struct Slot {
    permit: mpsc::OwnedPermit<Job>,
    shared: Arc<Shared>,
}

impl Slot {
    pub fn submit(self, job: Job) {
        self.shared.register(&job);
        let tx = self.permit.send(job);
        telemetry::analysis_queue_depth(depth(&tx));
    }
}

struct Shared {
    /// Set by `drain`: no new job is taken (`reserve` answers `Busy`).
    draining: std::sync::atomic::AtomicBool,
    /// Jobs queued or running, by reply id (for shutdown).
    running: Mutex<HashMap<Uuid, Arc<Cancel>>>,
    idle: Notify,
}

impl Shared {
    fn register(&self, job: &Job) {
        self.lock().insert(job.reply.id, job.cancel.clone());
    }

    fn finished(&self, id: Uuid) {
        let mut running = self.lock();
        running.remove(&id);
        if running.is_empty() {
            self.idle.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Cancel>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
pub struct AnalysisPool {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl AnalysisPool {
    /// Starts the workers on an arbiter of their own.
    pub fn start(settings: AnalysisSettings, store: Store) -> AnalysisPool {
        let settings = Arc::new(settings);
        let (tx, rx) = mpsc::channel::<Job>(settings.queue.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let shared = Arc::new(Shared {
            draining: std::sync::atomic::AtomicBool::new(false),
            running: Mutex::new(HashMap::new()),
            idle: Notify::new(),
        });
        let arbiter = actix::Arbiter::new();
        for _ in 0..settings.workers.max(1) {
            let (rx, shared, settings, store) =
                (rx.clone(), shared.clone(), settings.clone(), store.clone());
            let tx_probe = tx.downgrade();
            arbiter.spawn(async move {
                loop {
                    let job = { rx.lock().await.recv().await };
                    let Some(job) = job else { break };
                    telemetry::analysis_queue_depth(tx_probe.upgrade().map_or(0, |tx| depth(&tx)));
                    let id = job.reply.id;
                    run(job, &settings, &store).await;
                    shared.finished(id);
                }
            });
        }
        AnalysisPool { tx, shared }
    }

    /// Reserves a place, or `Busy` when the queue is full.
    pub fn reserve(&self) -> Result<Slot, Busy> {
        if self.shared.draining.load(Ordering::SeqCst) {
            return Err(Busy);
        }
        let permit = self.tx.clone().try_reserve_owned().map_err(|_| Busy)?;
        Ok(Slot {
            permit,
            shared: self.shared.clone(),
        })
    }

    /// Shutdown: lets running and queued replies finish for up to `grace`,
    /// then stops the rest, whose replies are stored as `failed`. Returns
    /// once every job has ended.
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
            let cancels: Vec<_> = self.shared.lock().values().cloned().collect();
            tracing::warn!(
                unfinished = cancels.len(),
                "shutdown grace over: stopping replies"
            );
            for cancel in &cancels {
                cancel.by_shutdown();
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

/// Jobs waiting in the queue (for `palaver_analysis_queue_depth`).
fn depth(tx: &mpsc::Sender<Job>) -> usize {
    tx.max_capacity() - tx.capacity()
}

/// Why an engine stopped early.
#[derive(Debug)]
pub enum Stop {
    Cancelled,
    Failed(String),
}

/// What an engine sees while it answers: the job, and the means to report.
pub struct Run<'a> {
    pub job: &'a Job,
    pub store: &'a Store,
    settings: &'a AnalysisSettings,
    started: Instant,
    first_token: Option<Duration>,
    tokens: u64,
    /// Completion tokens the upstream reported (`openai`), if it did.
    upstream_tokens: Option<u64>,
    text: String,
    tools: Vec<ToolUse>,
    /// The client's event channel closed (the socket dropped).
    disconnected: bool,
}

impl Run<'_> {
    fn emit(&mut self, event: Event) -> Result<(), Stop> {
        if self.job.cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        if self.job.events.send(event).is_err() && !self.disconnected {
            self.disconnected = true;
            if !self.settings.finish_on_disconnect {
                self.job.cancel.by_client();
                return Err(Stop::Cancelled);
            }
        }
        Ok(())
    }

    /// Announces a tool call, runs `call`, reports and records its result
    /// (or its error).
    pub async fn tool<F>(
        &mut self,
        tool: &str,
        args: Value,
        call: F,
    ) -> Result<Result<Value, String>, Stop>
    where
        F: FnOnce() -> Result<Value, String> + Send + 'static,
    {
        self.emit(Event::ToolCall {
            tool: tool.to_owned(),
            args: args.clone(),
        })?;
        // Tools may be CPU-heavy (audio): never on this thread.
        let outcome = tokio::task::spawn_blocking(call)
            .await
            .unwrap_or_else(|e| Err(format!("the tool crashed: {e}")));
        let (success, result) = match &outcome {
            Ok(v) => (true, v.clone()),
            Err(e) => (false, Value::String(e.clone())),
        };
        self.tools.push(ToolUse {
            tool: tool.to_owned(),
            args: args.to_string(),
            success,
            result: result.to_string(),
        });
        self.emit(Event::ToolResult {
            tool: tool.to_owned(),
            success,
            result,
        })?;
        Ok(outcome)
    }

    /// Counts completion tokens an upstream reported: `usage.tokens` is
    /// their sum instead of the number of token events.
    pub fn count_upstream_tokens(&mut self, tokens: u64) {
        *self.upstream_tokens.get_or_insert(0) += tokens;
    }

    /// Streams a piece of the answer, paced by `analysis.token_delay`
    /// (not an upstream's: it is paced already).
    pub async fn token(&mut self, text: String) -> Result<(), Stop> {
        if !self.settings.token_delay.is_zero()
            && self.tokens > 0
            && self.settings.engine != EngineKind::Openai
        {
            let cancelled = self.job.cancel.notify.notified();
            if self.job.cancel.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.token_delay) => {}
                _ = cancelled => return Err(Stop::Cancelled),
            }
        }
        self.text.push_str(&text);
        self.emit(Event::Token(text))?;
        if self.first_token.is_none() {
            self.first_token = Some(self.started.elapsed());
        }
        self.tokens += 1;
        Ok(())
    }

    /// Streams `text` word by word (each token carries its leading space).
    pub async fn words(&mut self, text: &str) -> Result<(), Stop> {
        for (i, word) in text.split_whitespace().enumerate() {
            let piece = if i == 0 && self.text.is_empty() {
                word.to_owned()
            } else {
                format!(" {word}")
            };
            self.token(piece).await?;
        }
        Ok(())
    }
}

async fn run(job: Job, settings: &AnalysisSettings, store: &Store) {
    telemetry::analysis_stream_started();
    let mut run = Run {
        job: &job,
        store,
        settings,
        started: Instant::now(),
        first_token: None,
        tokens: 0,
        upstream_tokens: None,
        text: String::new(),
        tools: Vec::new(),
        disconnected: false,
    };
    let outcome = match settings.engine {
        EngineKind::Echo => echo::answer(&mut run).await,
        EngineKind::Builtin => builtin::answer(&mut run).await,
        EngineKind::Openai => match settings.openai.clone() {
            Some(engine) => openai::answer(&mut run, &engine).await,
            None => Err(Stop::Failed("the openai engine is not configured".into())),
        },
    };
    let status = match outcome {
        Ok(()) => MessageStatus::Complete,
        Err(Stop::Cancelled) => job.cancel.status(),
        Err(Stop::Failed(reason)) => {
            tracing::warn!(session_id = %job.session.id, %reason, "analysis failed");
            let _ = job.events.send(Event::Failed { message: reason });
            MessageStatus::Failed
        }
    };
    let elapsed = run.started.elapsed();
    let usage = Usage {
        tokens: run.upstream_tokens.unwrap_or(run.tokens),
        first_token_ms: run.first_token.map_or(0, |d| d.as_millis() as u64),
        total_ms: elapsed.as_millis() as u64,
    };
    telemetry::analysis_stream_ended(
        settings.engine.name(),
        crate::protocol::status_name(status),
        run.first_token,
        elapsed,
    );
    let mut reply = job.reply.clone();
    reply.text = std::mem::take(&mut run.text);
    reply.tools = std::mem::take(&mut run.tools);
    reply.status = status;
    match store.messages().update(&reply).await {
        Ok(()) => {}
        Err(palaver_storage::StorageError::NotFound) => {
            tracing::debug!(session_id = %job.session.id, "session deleted while answering");
        }
        Err(e) => tracing::error!(error = %e, "cannot store a reply"),
    }
    let _ = job.events.send(Event::Done { reply, usage });
}
