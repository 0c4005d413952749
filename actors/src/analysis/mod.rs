//! The analysis side: what answers a question. A reply in progress (a
//! *stream*) runs in a [`stream::StreamActor`] of its own; the engine
//! announces tool calls and results and streams tokens to the job's event
//! channel; the finished reply is persisted and only then is `Done` sent. A
//! reply runs to its end even if the socket that asked is gone
//! (`finish_on_disconnect`), so history shows it.
//!
//! Two kinds of capacity (API.md §8, DESIGN.md "AnalysisPool"): streams
//! mostly wait (on an upstream, on paced tokens), so many run at once as
//! futures on one arbiter thread, bounded by `analysis.max_streams`; CPU work
//! (tools: [`Run::tool`]) runs on `analysis.workers` dedicated threads
//! ([`cpu::CpuWorker`]), in parallel, never on a stream's or the network's
//! threads.
//!
//! # Layout
//! - `mod.rs`: what an engine sees: jobs, events, cancellation, [`Run`]
//!   (`token`, `words`, `tool`), and the run of one reply.
//! - [`pool`]: the [`AnalysisPool`] handle: admission (`max_streams`, so
//!   `busy` is answered before anything is counted), drain at shutdown.
//! - [`stream`]: the `StreamActor`, one per reply in progress.
//! - [`cpu`]: the CPU workers and their bounded queue (`analysis.queue`).
//! - [`echo`]: the `echo` engine.
//! - [`builtin`]: the `builtin` engine: picks tools from the question.
//! - [`openai`]: the `openai` engine: an OpenAI-compatible upstream, streamed.
//! - [`sse`]: the event-stream decoder the `openai` engine reads with.
//! - [`tools`]: the tool registry and the conversation tools.
//! - [`audio_tools`]: the tools that read a track's analysis (tempo,
//!   loudness, peaks, clipping, dynamics, silence, spectrum, format).
//! - [`tracks`]: the `TrackAnalyst`, which analyses each uploaded track once.

pub mod audio_tools;
pub mod builtin;
pub mod echo;
pub mod openai;
pub mod sse;
pub mod tools;

// The pool's machinery (engines only see `Run`).
pub mod cpu;
pub mod pool;
pub mod stream;
#[cfg(test)]
mod tests;
pub mod tracks;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palaver_storage::{Message, MessageStatus, ReplyUsage, Session, Store, ToolUse};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use crate::replies::Publisher;
use crate::telemetry;
use cpu::{CpuError, CpuPool};
pub use pool::{AnalysisPool, Busy, Slot};

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
    /// CPU worker threads, at least 1.
    pub workers: usize,
    /// CPU jobs that may wait for a worker, at least 1.
    pub queue: usize,
    /// Replies streaming at once, at least 1.
    pub max_streams: usize,
    /// Pause between tokens (0 = none).
    pub token_delay: Duration,
    pub finish_on_disconnect: bool,
    /// The most samples (frames × channels) one track's analysis decodes
    /// (`storage.max_track_duration` of stereo 48 kHz audio).
    pub max_track_samples: u64,
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

/// As a stored reply keeps it (its `done` is rebuilt from it).
impl From<Usage> for ReplyUsage {
    fn from(u: Usage) -> Self {
        ReplyUsage {
            tokens: u.tokens,
            first_token_ms: u.first_token_ms,
            total_ms: u.total_ms,
        }
    }
}

impl From<ReplyUsage> for Usage {
    fn from(u: ReplyUsage) -> Self {
        Usage {
            tokens: u.tokens,
            first_token_ms: u.first_token_ms,
            total_ms: u.total_ms,
        }
    }
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

    pub(crate) fn by_shutdown(&self) {
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

/// Where a job's events go.
pub enum Sink {
    /// One asker reads them (the HTTP transport): plain events.
    Channel(mpsc::UnboundedSender<Event>),
    /// The reply hub (WebSocket): numbered, encoded once, handed to every
    /// socket that follows the reply, and logged for resumes.
    Hub(Publisher),
}

impl Sink {
    /// Sends an event; `false` when nobody listens any more.
    fn send(&self, event: Event) -> bool {
        match self {
            Sink::Channel(events) => events.send(event).is_ok(),
            Sink::Hub(publisher) => publisher.event(event),
        }
    }

    fn failed(&self, message: String) {
        match self {
            Sink::Channel(events) => {
                let _ = events.send(Event::Failed { message });
            }
            Sink::Hub(publisher) => publisher.failed(message),
        }
    }

    /// The reply is stored: `Done`.
    pub(crate) fn done(self, reply: Message, usage: Usage) {
        match self {
            Sink::Channel(events) => {
                let _ = events.send(Event::Done { reply, usage });
            }
            Sink::Hub(publisher) => publisher.finish(),
        }
    }
}

/// One question to answer.
pub struct Job {
    pub session: Session,
    pub question: Message,
    /// The placeholder reply (status `Streaming`), already stored.
    pub reply: Message,
    pub events: Sink,
    pub cancel: Arc<Cancel>,
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
    /// Where CPU work goes (`tool`).
    cpu: &'a CpuPool,
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

impl<'a> Run<'a> {
    fn new(
        job: &'a Job,
        store: &'a Store,
        settings: &'a AnalysisSettings,
        cpu: &'a CpuPool,
    ) -> Run<'a> {
        Run {
            job,
            store,
            settings,
            cpu,
            started: Instant::now(),
            first_token: None,
            tokens: 0,
            upstream_tokens: None,
            text: String::new(),
            tools: Vec::new(),
            disconnected: false,
        }
    }

    fn emit(&mut self, event: Event) -> Result<(), Stop> {
        if self.job.cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        if !self.job.events.send(event) && !self.disconnected {
            self.disconnected = true;
            if !self.settings.finish_on_disconnect {
                self.job.cancel.by_client();
                return Err(Stop::Cancelled);
            }
        }
        Ok(())
    }

    /// Announces a tool call, runs `call` on a CPU worker thread (never
    /// the stream's), reports and records its result (or its error: a full
    /// CPU queue is the error "busy: …", a panic "the tool crashed"). A
    /// reply stopped while its tool runs ends at once.
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
        let outcome = match self.on_cpu(call).await {
            Some(outcome) => outcome,
            None => {
                self.tools.push(ToolUse {
                    tool: tool.to_owned(),
                    args: args.to_string(),
                    success: false,
                    result: Value::String("stopped before it finished".into()).to_string(),
                });
                return Err(Stop::Cancelled);
            }
        };
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

    /// Runs `call` on a CPU worker; `None` if the reply was stopped while
    /// it waited (a job still queued is then skipped; one running finishes
    /// on its thread and its result is dropped). A full CPU queue or a
    /// panicking tool is the tool's failure, not the reply's.
    async fn on_cpu<F>(&self, call: F) -> Option<Result<Value, String>>
    where
        F: FnOnce() -> Result<Value, String> + Send + 'static,
    {
        let cancelled = self.job.cancel.notify.notified();
        if self.job.cancel.is_cancelled() {
            return None;
        }
        tokio::select! {
            outcome = self.cpu.run(call) => Some(match outcome {
                Ok(result) => result,
                Err(CpuError::Busy) => {
                    Err("busy: the analysis workers' queue is full; try again shortly".into())
                }
                Err(CpuError::Crashed) => Err("the tool crashed".into()),
            }),
            _ = cancelled => None,
        }
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
        // The stored text is what was sent: a token refused here (the
        // reply was cancelled a moment before) is not part of the reply
        // (API.md §7: the client's text equals the stored reply).
        let len = text.len();
        self.text.push_str(&text);
        if let Err(stop) = self.emit(Event::Token(text)) {
            self.text.truncate(self.text.len() - len);
            return Err(stop);
        }
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

/// Answers `job` with the configured engine and stores the reply (with its
/// events, for resumes, in the same record); returns the stored reply and
/// its usage (the caller sends `Done`).
async fn run(
    job: &mut Job,
    settings: &AnalysisSettings,
    store: &Store,
    cpu: &CpuPool,
) -> (Message, Usage) {
    telemetry::analysis_stream_started();
    let mut run = Run::new(&*job, store, settings, cpu);
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
            job.events.failed(reason);
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
    drop(run);
    if let Sink::Hub(publisher) = &mut job.events {
        reply.replay = Some(publisher.log(status, usage));
    }
    // The events ride on the reply's own write.
    match store.messages().update(&reply).await {
        Ok(()) => {}
        Err(palaver_storage::StorageError::NotFound) => {
            tracing::debug!(session_id = %job.session.id, "session deleted while answering");
        }
        Err(e) => tracing::error!(error = %e, "cannot store a reply"),
    }
    (reply, usage)
}
