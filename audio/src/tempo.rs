//! The tempo estimator. Fed mono samples as they are decoded; says the
//! tempo in BPM at the end, or `None` when there is no steady beat.
//!
//! Two halves: `onset` turns the samples into an onset-strength envelope
//! (spectral flux at ~100 frames a second, ~400 bytes per second of audio
//! kept), `period` finds the beat in that envelope (autocorrelation, a
//! comb over its multiples, the metrical level, sub-frame refinement).
//! `finish` says `None` for a track shorter than [`MIN_SECONDS`], a sample
//! rate too low to analyse, a track without onsets, a beat whose
//! confidence is under [`MIN_CONFIDENCE`] (calibrated on the generated
//! corpora of `audio/tests/tempo.rs`; see docs/BENCHMARKS.md), or a beat
//! carried by less than [`MIN_SUPPORT`] of the track (a few isolated
//! events: a tone with a gap, a couple of hits).

mod onset;
mod period;

use onset::Onsets;

/// Shorter tracks have no tempo (too few beats to tell).
pub const MIN_SECONDS: f64 = 5.0;
/// A beat less sure than this is no beat.
pub const MIN_CONFIDENCE: f64 = 0.15;
/// A beat carried by less than this share of the track is no steady beat
/// (a tone with a gap or two, a few hits in silence).
pub const MIN_SUPPORT: f64 = 0.75;

/// A tempo and how sure of it the estimator is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TempoReading {
    pub bpm: f64,
    /// The beat's comb score over the median comb score (correlation-like:
    /// about 1 for a click track, near 0 for noise). `finish` wants at
    /// least [`MIN_CONFIDENCE`].
    pub confidence: f64,
    /// The share of the track's two-beat segments whose onsets correlate
    /// with those one beat later: about 1 for a beat all through, at most
    /// a few segments' worth for a few isolated events. `finish` wants at
    /// least [`MIN_SUPPORT`].
    pub support: f64,
}

/// A streaming tempo estimator for one track.
pub struct TempoEstimator {
    sample_rate: u32,
    samples: u64,
    onsets: Option<Onsets>,
}

impl TempoEstimator {
    pub fn new(sample_rate: u32) -> Self {
        TempoEstimator {
            sample_rate,
            samples: 0,
            onsets: Onsets::new(sample_rate),
        }
    }

    /// Feeds the next mono samples (any block size).
    pub fn push(&mut self, mono: &[f32]) {
        self.samples = self.samples.saturating_add(mono.len() as u64);
        if let Some(onsets) = &mut self.onsets {
            onsets.push(mono);
        }
    }

    /// The tempo in BPM, or `None` without a steady beat.
    pub fn finish(self) -> Option<f64> {
        self.reading()
            .filter(|reading| {
                reading.confidence >= MIN_CONFIDENCE && reading.support >= MIN_SUPPORT
            })
            .map(|reading| reading.bpm)
    }

    /// The best tempo with its confidence, however low, or `None` when
    /// there is nothing to measure (too short, no onsets at all).
    pub fn reading(self) -> Option<TempoReading> {
        let onsets = self.onsets?;
        let seconds = self.samples as f64 / f64::from(self.sample_rate);
        if seconds < MIN_SECONDS {
            return None;
        }
        let reading = period::estimate(&onsets.envelope, onsets.frame_rate())?;
        Some(TempoReading {
            bpm: reading.bpm,
            confidence: reading.confidence,
            support: reading.support,
        })
    }
}
