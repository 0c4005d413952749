//! palaver-audio: what palaver knows about sound. It decodes an uploaded file
//! (symphonia; the container is sniffed, never taken from the name) and
//! measures it in one streaming pass, with memory that does not grow with
//! the track's length apart from the overview.
//!
//! # Layout
//!
//! - [`probe`]: is this audio, and what is it (format, rate, channels,
//!   duration)? Run on an upload before it is accepted.
//! - [`analyze`]: the full measurement of API.md §6 ([`Analysis`]) and the
//!   data for its picture ([`Overview`]).
//! - `tempo`: the tempo estimator (onset strength → tempogram with an
//!   octave-resistant prior), fed mono samples as they are decoded.
//!
//! The crate knows nothing of actix, HTTP or storage: the caller runs it on
//! a CPU worker and stores what it returns.

mod analysis;
mod decode;
mod error;
mod measure;
mod overview;
pub mod tempo;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use error::AudioError;

/// The containers palaver accepts (API.md §6 `format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Wav,
    Flac,
    Mp3,
    Ogg,
    M4a,
}

/// What an upload is, learned without decoding all of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub format: Format,
    pub sample_rate: u32,
    pub channels: u16,
    pub duration_seconds: f64,
}

/// A stretch of silence, in seconds from the start.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Share of the track's duration inside `segments`, 0..1.
    pub ratio: f64,
    pub segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clipping {
    pub clipped_samples: u64,
    /// `clipped_samples` over all samples (every channel), 0..1.
    pub ratio: f64,
}

/// The measurement of API.md §6, keys exactly as the contract names them.
/// A level that does not exist (the loudness of digital silence, −∞) is
/// `None` and serializes as `null`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub duration_seconds: f64,
    pub sample_rate: u32,
    pub channels: u16,
    pub loudness_lufs: Option<f64>,
    pub loudness_range_lu: Option<f64>,
    pub peak_dbfs: Option<f64>,
    pub true_peak_dbtp: Option<f64>,
    pub rms_dbfs: Option<f64>,
    pub tempo_bpm: Option<f64>,
    pub silence: Silence,
    pub clipping: Clipping,
    pub spectral_centroid_hz: Option<f64>,
    /// Packets that failed to decode and were skipped (a bad MP3 frame).
    pub decode_errors: u64,
}

/// The data for a picture of the track (API.md §6 overview).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    pub duration_seconds: f64,
    pub envelope_step_seconds: f64,
    /// At most 2 000 `[min, max]` pairs in −1..1 over equal slices.
    pub envelope: Vec<[f32; 2]>,
    pub short_term_step_seconds: f64,
    /// Short-term loudness (3 s window) every 100 ms; `None` where silent.
    pub short_term_lufs: Vec<Option<f64>>,
}

/// How long each step of one analysis took (for the benchmark harness).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub decode_seconds: f64,
    pub loudness_seconds: f64,
    pub tempo_seconds: f64,
    pub rest_seconds: f64,
}

/// Everything one pass over a file yields.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub analysis: Analysis,
    pub overview: Overview,
    pub timings: Timings,
}

/// Whether the file at `path` decodes as audio in one of the accepted
/// formats, and what it is. `Err(AudioError::NotAudio)` for anything else.
///
/// Cheap: it decodes only until the first packet that yields audio; the
/// duration is the container's frame count, or else the sum of the packet
/// durations found by reading (not decoding) the rest of the file.
pub fn probe(path: &Path) -> Result<Probe, AudioError> {
    let source = decode::Source::open(path)?;
    let format = source.format;
    let sample_rate = source.sample_rate;
    let channels = u16::try_from(source.channels)
        .map_err(|_| AudioError::NotAudio(format!("{} channels", source.channels)))?;
    let duration_seconds = source.stated_or_scanned_seconds();
    Ok(Probe {
        format,
        sample_rate,
        channels,
        duration_seconds,
    })
}

/// Decodes the whole file once and measures it.
pub fn analyze(path: &Path) -> Result<Report, AudioError> {
    analysis::analyze(path)
}
