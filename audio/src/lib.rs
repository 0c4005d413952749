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
//!
//! Inside, `decode` opens and decodes (symphonia), `analysis` runs the one
//! pass, `measure` holds the sample-level measurements and `overview` the
//! envelope.
//!
//! # Decoding
//!
//! The container is sniffed from the bytes (symphonia's probe, no hint
//! from the name). Accepted: WAV (PCM, ADPCM), FLAC, MP3, Ogg with Vorbis,
//! MP4/M4A with AAC; anything else, a file whose first packets yield no
//! audio, or one claiming an implausible shape (not 8–768 kHz, not 1–32
//! channels) is [`AudioError::NotAudio`]. Packets that fail to decode
//! inside a file (a corrupted MP3 frame) are skipped and counted in
//! [`Analysis::decode_errors`]; a file cut short is measured as far as it
//! goes. A decoder that panics on a file makes it `NotAudio` too.
//! Decoding is streamed packet by packet: memory does not depend on the
//! file's size.
//!
//! # Definitions
//!
//! All levels are over every channel. A level of digital silence (−∞) is
//! `None` (`null` in JSON), never a sentinel number.
//!
//! - `loudness_lufs`: integrated loudness, ITU-R BS.1770-4 / EBU R 128 with
//!   its absolute (−70 LUFS) and relative (−10 LU) gates (the `ebur128`
//!   crate). Mono counts once (a full-scale 1 kHz mono sine is −3.01 LUFS).
//!   With more than two channels the file's speaker positions give the
//!   weights: LFE left out, side and rear surrounds +1.5 dB (×1.41).
//! - `loudness_range_lu`: EBU Tech 3342 (the `ebur128` crate); `None` when
//!   there is no integrated loudness.
//! - `true_peak_dbtp`: BS.1770-4 Annex 2, 4× oversampled below 96 kHz, 2×
//!   below 192 kHz, as is from 192 kHz (the `ebur128` crate); never below
//!   the sample peak; the highest channel.
//! - `peak_dbfs`: the largest |sample|, 20·log10.
//! - `rms_dbfs`: 20·log10 of the root mean square of every sample of every
//!   channel (a full-scale sine is −3.01 dBFS: no +3 dB "AES" offset).
//! - `silence`: the track is cut into 10 ms blocks; a block is silent when
//!   the largest |sample| in it, over every channel, is below −60 dBFS
//!   (0.001). A run of silent blocks lasting at least 0.5 s is a segment
//!   (start and end in seconds, to the block: ±10 ms). The peak, not the
//!   RMS, so a quiet but audible transient breaks a silence. `ratio` is the
//!   segments' total over the duration.
//! - `clipping`: a sample at |x| ≥ 0.999 of full scale belonging to a run
//!   of at least 3 such consecutive samples on its channel; every sample of
//!   such a run counts. `ratio` is over all samples of all channels.
//! - `spectral_centroid_hz`: the mono mixdown (the mean of the channels)
//!   in frames of 2048 samples (Hann window, no overlap); per frame, the
//!   magnitude-weighted mean frequency of FFT bins 1..=1024 (DC left out);
//!   over the track, the mean of those frame centroids weighted by each
//!   frame's energy (sum of squares), leaving out frames whose peak is
//!   below −60 dBFS. `None` when every frame is silent.
//! - `tempo_bpm`: the `tempo` estimator, fed the mono mixdown.
//! - `duration_seconds`: the frames decoded over the sample rate (for
//!   `probe`, what the container states, or the sum of its packets).
//!
//! The overview: `envelope` is the min and max sample over every channel
//! in equal slices of the track (the last one possibly shorter), at most
//! 2 000, clamped to −1..1; it is built while decoding, in buckets merged
//! pairwise as they pile up, so its memory is fixed. `short_term_lufs` is
//! the EBU R 128 short-term loudness (3 s window, the time before the
//! track counted as silence) at the end of every 100 ms of the track, the
//! last value at its end; `None` where the window is below the absolute
//! gate (−70 LUFS) or digitally silent.

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Wav,
    Flac,
    Mp3,
    Ogg,
    M4a,
}

impl Format {
    /// The name API.md §6 gives it (`wav`, `flac`, `mp3`, `ogg`, `m4a`), as
    /// it serializes.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Wav => "wav",
            Format::Flac => "flac",
            Format::Mp3 => "mp3",
            Format::Ogg => "ogg",
            Format::M4a => "m4a",
        }
    }
}

/// What an upload is, learned without decoding all of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub format: Format,
    pub sample_rate: u32,
    pub channels: u16,
    pub duration_seconds: f64,
}

impl Probe {
    /// The samples (frames × channels) the stated or scanned duration
    /// amounts to: what [`analyze_at_most`] would decode.
    pub fn samples(&self) -> u64 {
        let frames = (self.duration_seconds * f64::from(self.sample_rate)).round();
        // `as` saturates: a NaN or negative duration is 0, a huge one u64::MAX.
        (frames as u64).saturating_mul(u64::from(self.channels))
    }
}

/// A stretch of silence, in seconds from the start.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Silence {
    /// Share of the track's duration inside `segments`, 0..1.
    pub ratio: f64,
    pub segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Clipping {
    pub clipped_samples: u64,
    /// `clipped_samples` over all samples (every channel), 0..1.
    pub ratio: f64,
}

/// The measurement of API.md §6, keys exactly as the contract names them.
/// A level that does not exist (the loudness of digital silence, −∞) is
/// `None` and serializes as `null`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    contained(|| probe_file(path))
}

fn probe_file(path: &Path) -> Result<Probe, AudioError> {
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

/// Decodes the whole file once and measures it, however long it is (tools
/// and tests; the server bounds it with [`analyze_at_most`]).
pub fn analyze(path: &Path) -> Result<Report, AudioError> {
    analyze_at_most(path, u64::MAX)
}

/// [`analyze`], stopped with [`AudioError::TooLong`] as soon as more than
/// `max_samples` samples (frames × channels) have been decoded. The bound is
/// on what is decoded, not on what the container states: a few kilobytes of
/// FLAC can hold hours of 192 kHz 7.1 audio (constant subframes), and the
/// analysis's time grows with the samples, not the bytes.
pub fn analyze_at_most(path: &Path, max_samples: u64) -> Result<Report, AudioError> {
    contained(|| analysis::analyze(path, max_samples))
}

/// Runs a probe or an analysis with a panic inside it turned into
/// `NotAudio`: the decoders are third-party code fed the client's bytes,
/// and one that panics on a file (the `audio` fuzz target found
/// symphonia's MS-ADPCM decoder overflowing on a crafted block in builds
/// with overflow checks) means the file is not audio palaver can use.
/// The callers' CPU workers catch panics too; this keeps the answer
/// `NotAudio` for every caller (a 415, not "stopped unexpectedly").
fn contained<T>(run: impl FnOnce() -> Result<T, AudioError>) -> Result<T, AudioError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| {
        Err(AudioError::NotAudio(
            "the decoder failed on this file".into(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::Format;

    #[test]
    fn format_names_are_what_they_serialize_as() {
        for format in [
            Format::Wav,
            Format::Flac,
            Format::Mp3,
            Format::Ogg,
            Format::M4a,
        ] {
            assert_eq!(
                serde_json::to_value(format).unwrap(),
                serde_json::Value::from(format.as_str())
            );
        }
    }
}
