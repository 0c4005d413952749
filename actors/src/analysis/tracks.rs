//! The `TrackAnalyst`: runs every accepted track's analysis (API.md §6) once,
//! on the CPU workers, and stores it. Started by the Supervisor; it picks up
//! the tracks a restart left `pending`, then takes each new upload
//! ([`AnalyzeTrack`], from the upload handler).
//!
//! It runs at most `parallel` analyses at a time (half the workers, at least
//! one), so a burst of uploads never takes every worker from the tool calls
//! of replies. A worker queue that is full (`analysis.queue`) puts the track
//! back at the head of the line and tries again a second later: an accepted
//! track is never dropped for being busy. A failure (the file yields no
//! audio, the job crashed) is stored as `failed` with its reason.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use actix::prelude::*;
use palaver_storage::{Store, TrackAnalysis};
use uuid::Uuid;

use super::cpu::{CpuError, CpuPool};
use crate::messages::AnalyzeTrack;
use crate::telemetry;

/// How long to wait before asking a full worker queue again.
const RETRY_BUSY: Duration = Duration::from_secs(1);

pub struct TrackAnalyst {
    store: Store,
    cpu: CpuPool,
    /// Tracks waiting for their analysis, oldest first.
    waiting: VecDeque<Uuid>,
    /// Analyses running now.
    running: usize,
    /// At most this many at once.
    parallel: usize,
    /// The most samples one analysis decodes (`storage.max_track_duration`).
    max_samples: u64,
}

impl TrackAnalyst {
    /// `workers` is `analysis.workers`: the analyst uses half of them.
    /// `max_samples` bounds what one analysis decodes (frames × channels).
    pub fn new(store: Store, cpu: CpuPool, workers: usize, max_samples: u64) -> Self {
        TrackAnalyst {
            store,
            cpu,
            waiting: VecDeque::new(),
            running: 0,
            parallel: workers.div_ceil(2).max(1),
            max_samples,
        }
    }

    /// Starts analyses while there are places and tracks waiting.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.running < self.parallel {
            let Some(id) = self.waiting.pop_front() else {
                return;
            };
            self.running += 1;
            let (store, cpu) = (self.store.clone(), self.cpu.clone());
            ctx.spawn(
                analyze(store, cpu, id, self.max_samples)
                    .into_actor(self)
                    .map(move |outcome, analyst, ctx| {
                        analyst.running -= 1;
                        if outcome == Outcome::Busy {
                            analyst.waiting.push_front(id);
                            ctx.run_later(RETRY_BUSY, |analyst, ctx| analyst.pump(ctx));
                        } else {
                            analyst.pump(ctx);
                        }
                    }),
            );
        }
    }
}

impl Actor for TrackAnalyst {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        match self.store.tracks().pending() {
            Ok(pending) => {
                if !pending.is_empty() {
                    tracing::info!(
                        tracks = pending.len(),
                        "analysing tracks a restart left pending"
                    );
                }
                self.waiting.extend(pending.into_iter().map(|t| t.id));
            }
            Err(e) => tracing::error!(error = %e, "cannot list the tracks awaiting analysis"),
        }
        self.pump(ctx);
    }
}

impl Handler<AnalyzeTrack> for TrackAnalyst {
    type Result = ();

    fn handle(&mut self, msg: AnalyzeTrack, ctx: &mut Self::Context) {
        self.waiting.push_back(msg.track);
        self.pump(ctx);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Stored (ready or failed), or the track is gone.
    Finished,
    /// The worker queue was full: try again.
    Busy,
}

/// One track's analysis, start to stored.
async fn analyze(store: Store, cpu: CpuPool, id: Uuid, max_samples: u64) -> Outcome {
    let path = match store.tracks().file(id) {
        Ok(path) => path,
        Err(e) => {
            tracing::error!(error = %e, "cannot locate a track's file");
            return Outcome::Finished;
        }
    };
    let started = Instant::now();
    let measured = cpu
        .run(move || palaver_audio::analyze_at_most(&path, max_samples))
        .await;
    let outcome = match measured {
        Err(CpuError::Busy) => return Outcome::Busy,
        Err(CpuError::Crashed) => Err("the analysis stopped unexpectedly".to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(report)) => documents(&report),
    };
    telemetry::track_analysis(
        if outcome.is_ok() { "ready" } else { "failed" },
        started.elapsed(),
    );
    if let Err(reason) = &outcome {
        tracing::info!(track_id = %id, reason = %reason, "a track's analysis failed");
    }
    if let Err(e) = store.tracks().finish_analysis(id, outcome).await {
        // Still pending: analysed again at the next start.
        tracing::error!(track_id = %id, error = %e, "cannot store a track's analysis");
    }
    Outcome::Finished
}

/// The stored form of a report: the two JSON documents API.md §6 serves.
fn documents(report: &palaver_audio::Report) -> Result<TrackAnalysis, String> {
    let encode = |e: serde_json::Error| format!("cannot encode the analysis: {e}");
    Ok(TrackAnalysis {
        analysis: serde_json::to_string(&report.analysis).map_err(encode)?,
        overview: serde_json::to_string(&report.overview).map_err(encode)?,
    })
}
