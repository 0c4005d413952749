//! The one streaming pass of [`crate::analyze`]: decoded blocks regrouped
//! into 100 ms chunks (the short-term loudness step), each chunk fed to the
//! loudness meter, the level, silence and spectrum measurements, the
//! envelope and the tempo estimator, timed step by step.

use std::path::Path;
use std::time::{Duration, Instant};

use ebur128::{Channel, EbuR128, Mode};

use crate::decode::Source;
use crate::measure::{db, Centroid, Levels, SilenceFinder};
use crate::overview::Envelope;
use crate::tempo::TempoEstimator;
use crate::{Analysis, AudioError, Overview, Report, Timings};

/// Short-term loudness is read once per this many seconds (API.md §6).
pub(crate) const SHORT_TERM_STEP: f64 = 0.1;
/// Below the BS.1770 absolute gate a window counts as silent.
const ABSOLUTE_GATE_LUFS: f64 = -70.0;

pub(crate) fn analyze(path: &Path, max_samples: u64) -> Result<Report, AudioError> {
    let started = Instant::now();
    let mut decoding = Duration::ZERO;
    let clock = Instant::now();
    let mut source = Source::open(path)?;
    decoding += clock.elapsed();
    let mut pass = Pass::new(source.sample_rate, source.channels, source.layout)?;
    let mut samples = 0u64;
    loop {
        let clock = Instant::now();
        let block = source.next_block()?;
        decoding += clock.elapsed();
        let Some(planes) = block else { break };
        // Counted as decoded, whatever the container stated.
        let frames = planes.first().map_or(0, Vec::len) as u64;
        samples = samples.saturating_add(frames.saturating_mul(planes.len() as u64));
        if samples > max_samples {
            return Err(AudioError::TooLong { max_samples });
        }
        pass.push(planes)?;
    }
    pass.finish(source.decode_errors, decoding, started)
}

struct Pass {
    rate: u32,
    channels: usize,
    /// The chunk being gathered, one vector per channel.
    chunk: Vec<Vec<f32>>,
    /// Its index, and the frames it is to hold (chunk `k` ends at frame
    /// ⌊(k+1)·rate/10⌋, so odd rates do not drift).
    chunk_index: u64,
    chunk_frames: usize,
    frames: u64,
    mono: Vec<f32>,
    meter: EbuR128,
    levels: Levels,
    silence: SilenceFinder,
    centroid: Centroid,
    envelope: Envelope,
    tempo: TempoEstimator,
    sub_blocks: SubBlocks,
    short_term: Vec<Option<f64>>,
    loudness_time: Duration,
    tempo_time: Duration,
}

/// The short-term loudness (3 s) as the mean energy of the last 30 100 ms
/// sub-blocks. The meter's `loudness_shortterm` sums the squares of the
/// whole 3 s window on every call: read every 100 ms that is 30 times the
/// audio, the largest cost of the whole pass. Its `loudness_window(100)`
/// sums the last 100 ms only; the mean of 30 of those is the same energy
/// (the same filtered samples, equal lengths) at a thirtieth of the cost.
/// Like the meter's window, it counts the time before the track as silence.
#[derive(Default)]
struct SubBlocks {
    energies: [f64; 30],
    next: usize,
}

impl SubBlocks {
    /// Takes the loudness of the latest 100 ms; the short-term loudness.
    fn push(&mut self, loudness: Option<f64>) -> Option<f64> {
        // BS.1770: L = −0.691 + 10·log10(energy); −∞ is zero energy.
        let energy = loudness.map_or(0.0, |l| 10f64.powf((l + 0.691) / 10.0));
        self.energies[self.next] = if energy.is_finite() { energy } else { 0.0 };
        self.next = (self.next + 1) % self.energies.len();
        let mean = self.energies.iter().sum::<f64>() / self.energies.len() as f64;
        Some(-0.691 + 10.0 * mean.log10())
    }
}

/// BS.1770-4's channel weights from the file's speaker positions: the
/// LFE left out, side and rear surrounds at 1.41 (+1.5 dB), every other
/// channel at 1.0. `None` (the meter's default order: L, R, C, LFE, Ls, Rs)
/// for mono and stereo, or when the file names no positions.
fn channel_map(layout: Option<u64>, channels: usize) -> Option<Vec<Channel>> {
    let bits = layout?;
    if channels < 3 || bits.count_ones() as usize != channels {
        return None;
    }
    Some(
        (0..64)
            .filter(|b| bits & (1u64 << b) != 0)
            .map(|b| match b {
                0 => Channel::Left,
                1 => Channel::Right,
                3 | 18 => Channel::Unused,        // LFE1, LFE2
                4 | 9 => Channel::LeftSurround,   // rear left, side left
                5 | 10 => Channel::RightSurround, // rear right, side right
                _ => Channel::Center,
            })
            .collect(),
    )
}

fn chunk_end(index: u64, rate: u32) -> u64 {
    (index + 1) * u64::from(rate) / 10
}

impl Pass {
    fn new(rate: u32, channels: usize, layout: Option<u64>) -> Result<Pass, AudioError> {
        let count = u32::try_from(channels)
            .map_err(|_| AudioError::NotAudio(format!("{channels} channels")))?;
        let refused =
            |e: ebur128::Error| AudioError::NotAudio(format!("the loudness meter refuses it: {e}"));
        let mut meter = EbuR128::new(count, rate, Mode::I | Mode::LRA | Mode::S | Mode::TRUE_PEAK)
            .map_err(refused)?;
        if let Some(map) = channel_map(layout, channels) {
            meter.set_channel_map(&map).map_err(refused)?;
        }
        let chunk_frames = usize::try_from(chunk_end(0, rate)).unwrap_or(usize::MAX);
        Ok(Pass {
            rate,
            channels,
            chunk: (0..channels)
                .map(|_| Vec::with_capacity(chunk_frames))
                .collect(),
            chunk_index: 0,
            chunk_frames,
            frames: 0,
            mono: Vec::with_capacity(chunk_frames),
            meter,
            levels: Levels::new(channels),
            silence: SilenceFinder::new(rate),
            centroid: Centroid::new(rate),
            envelope: Envelope::new(),
            tempo: TempoEstimator::new(rate),
            sub_blocks: SubBlocks::default(),
            short_term: Vec::new(),
            loudness_time: Duration::ZERO,
            tempo_time: Duration::ZERO,
        })
    }

    fn push(&mut self, planes: &[Vec<f32>]) -> Result<(), AudioError> {
        let frames = planes.iter().map(Vec::len).min().unwrap_or(0);
        let mut at = 0;
        while at < frames {
            let held = self.chunk.first().map_or(0, Vec::len);
            let take = self.chunk_frames.saturating_sub(held).min(frames - at);
            for (dst, src) in self.chunk.iter_mut().zip(planes) {
                dst.extend_from_slice(&src[at..at + take]);
            }
            at += take;
            if held + take >= self.chunk_frames {
                self.process_chunk()?;
            }
        }
        Ok(())
    }

    fn process_chunk(&mut self) -> Result<(), AudioError> {
        let planes: Vec<&[f32]> = self.chunk.iter().map(Vec::as_slice).collect();
        let frames = planes.first().map_or(0, |p| p.len());
        if frames == 0 {
            return Ok(());
        }

        let clock = Instant::now();
        self.meter
            .add_frames_planar_f32(&planes)
            .map_err(|e| AudioError::NotAudio(format!("the loudness meter refuses it: {e}")))?;
        let short_term = if frames == self.chunk_frames {
            self.sub_blocks.push(self.meter.loudness_window(100).ok())
        } else {
            // The last, shorter chunk: the meter's own 3 s window.
            self.meter.loudness_shortterm().ok()
        };
        self.loudness_time += clock.elapsed();
        self.short_term
            .push(short_term.filter(|l| l.is_finite() && *l >= ABSOLUTE_GATE_LUFS));

        self.levels.push(&planes);
        self.silence.push(&planes);
        self.envelope.push(&planes);

        self.mono.clear();
        if let Some((first, rest)) = planes.split_first() {
            self.mono.extend_from_slice(first);
            for plane in rest {
                for (m, &x) in self.mono.iter_mut().zip(plane.iter()) {
                    *m += x;
                }
            }
            if !rest.is_empty() {
                let scale = 1.0 / planes.len() as f32;
                for m in &mut self.mono {
                    *m *= scale;
                }
            }
        }
        self.centroid.push(&self.mono);

        let clock = Instant::now();
        self.tempo.push(&self.mono);
        self.tempo_time += clock.elapsed();

        self.frames += frames as u64;
        self.chunk_index += 1;
        let next =
            chunk_end(self.chunk_index, self.rate) - chunk_end(self.chunk_index - 1, self.rate);
        self.chunk_frames = usize::try_from(next).unwrap_or(usize::MAX);
        for plane in &mut self.chunk {
            plane.clear();
        }
        Ok(())
    }

    fn finish(
        mut self,
        decode_errors: u64,
        decoding: Duration,
        started: Instant,
    ) -> Result<Report, AudioError> {
        // The last, shorter chunk: its short-term value is the window that
        // ends with the track.
        self.process_chunk()?;
        if self.frames == 0 {
            return Err(AudioError::NotAudio("no audio frames".into()));
        }
        let rate = f64::from(self.rate);
        let duration_seconds = self.frames as f64 / rate;

        let clock = Instant::now();
        let loudness_lufs = self.meter.loudness_global().ok().filter(|l| l.is_finite());
        let loudness_range_lu = loudness_lufs
            .and(self.meter.loudness_range().ok())
            .filter(|l| l.is_finite());
        let true_peak = (0..self.channels)
            .filter_map(|ch| self.meter.true_peak(u32::try_from(ch).ok()?).ok())
            .fold(0.0f64, f64::max);
        self.loudness_time += clock.elapsed();

        let clock = Instant::now();
        let tempo_bpm = self.tempo.finish();
        self.tempo_time += clock.elapsed();

        let (envelope, step_frames) = self.envelope.finish();
        let channels = u16::try_from(self.channels)
            .map_err(|_| AudioError::NotAudio(format!("{} channels", self.channels)))?;
        let analysis = Analysis {
            duration_seconds,
            sample_rate: self.rate,
            channels,
            loudness_lufs,
            loudness_range_lu,
            peak_dbfs: self.levels.peak_dbfs(),
            true_peak_dbtp: db(true_peak),
            rms_dbfs: self.levels.rms_dbfs(),
            tempo_bpm,
            silence: self.silence.finish(self.frames),
            clipping: self.levels.clipping(),
            spectral_centroid_hz: self.centroid.finish(),
            decode_errors,
        };
        let overview = Overview {
            duration_seconds,
            envelope_step_seconds: step_frames as f64 / rate,
            envelope,
            short_term_step_seconds: SHORT_TERM_STEP,
            short_term_lufs: self.short_term,
        };
        let total = started.elapsed().as_secs_f64();
        let decode_seconds = decoding.as_secs_f64();
        let loudness_seconds = self.loudness_time.as_secs_f64();
        let tempo_seconds = self.tempo_time.as_secs_f64();
        let timings = Timings {
            decode_seconds,
            loudness_seconds,
            tempo_seconds,
            rest_seconds: (total - decode_seconds - loudness_seconds - tempo_seconds).max(0.0),
        };
        Ok(Report {
            analysis,
            overview,
            timings,
        })
    }
}
