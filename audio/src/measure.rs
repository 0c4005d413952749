//! The sample-level measurements of one pass, each fed planar blocks as
//! they are decoded and keeping state of a fixed size: levels (sample
//! peak, RMS, clipping), silence segments, and the spectral centroid.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::{Clipping, Segment, Silence};

/// −60 dBFS as an amplitude: the silence threshold.
pub(crate) const SILENCE_AMPLITUDE: f32 = 0.001;
/// A clipped sample is at least this far from zero...
const CLIP_AMPLITUDE: f32 = 0.999;
/// ...in a run of at least this many on its channel.
const CLIP_RUN: u32 = 3;

/// `20·log10(x)`, or `None` for zero (−∞) and anything not finite.
pub(crate) fn db(amplitude: f64) -> Option<f64> {
    let db = 20.0 * amplitude.log10();
    db.is_finite().then_some(db)
}

/// Sample peak, mean square and clipped runs over every sample of every
/// channel.
pub(crate) struct Levels {
    peak: f32,
    sum_squares: f64,
    samples: u64,
    /// Per channel: the length of the run of clipped-level samples that
    /// ends at the last sample seen.
    runs: Vec<u32>,
    clipped: u64,
}

impl Levels {
    pub fn new(channels: usize) -> Levels {
        Levels {
            peak: 0.0,
            sum_squares: 0.0,
            samples: 0,
            runs: vec![0; channels],
            clipped: 0,
        }
    }

    pub fn push(&mut self, planes: &[&[f32]]) {
        for (plane, run) in planes.iter().zip(&mut self.runs) {
            let mut peak = self.peak;
            // f32 partial sums over short stretches, f64 across them: exact
            // enough (2⁻²⁴ relative per stretch) and twice as fast.
            let mut sum = 0.0f64;
            for stretch in plane.chunks(256) {
                let mut part = 0.0f32;
                for &x in stretch {
                    let a = x.abs();
                    peak = peak.max(a);
                    part += x * x;
                    if a >= CLIP_AMPLITUDE {
                        *run += 1;
                        if *run == CLIP_RUN {
                            self.clipped += u64::from(CLIP_RUN);
                        } else if *run > CLIP_RUN {
                            self.clipped += 1;
                        }
                    } else {
                        *run = 0;
                    }
                }
                sum += f64::from(part);
            }
            // NaN never wins `max`; a NaN sample cannot poison the peak.
            self.peak = peak;
            self.sum_squares += sum;
            self.samples += plane.len() as u64;
        }
    }

    pub fn peak_dbfs(&self) -> Option<f64> {
        db(f64::from(self.peak))
    }

    pub fn rms_dbfs(&self) -> Option<f64> {
        if self.samples == 0 {
            return None;
        }
        db((self.sum_squares / self.samples as f64).sqrt())
    }

    pub fn clipping(&self) -> Clipping {
        Clipping {
            clipped_samples: self.clipped,
            ratio: if self.samples == 0 {
                0.0
            } else {
                self.clipped as f64 / self.samples as f64
            },
        }
    }
}

/// Silence: 10 ms blocks whose sample peak over every channel is below
/// −60 dBFS, in runs of at least 0.5 s.
pub(crate) struct SilenceFinder {
    rate: u32,
    block_frames: usize,
    /// Frames of the current block seen, and their peak.
    fill: usize,
    block_peak: f32,
    /// The first frame of the current block.
    block_start: u64,
    /// The first frame of the current silent run.
    run_start: Option<u64>,
    min_run: u64,
    segments: Vec<Segment>,
    silent_frames: u64,
}

impl SilenceFinder {
    pub fn new(rate: u32) -> SilenceFinder {
        SilenceFinder {
            rate,
            block_frames: (rate as usize / 100).max(1),
            fill: 0,
            block_peak: 0.0,
            block_start: 0,
            run_start: None,
            min_run: u64::from(rate) / 2,
            segments: Vec::new(),
            silent_frames: 0,
        }
    }

    pub fn push(&mut self, planes: &[&[f32]]) {
        let frames = planes.first().map_or(0, |p| p.len());
        let mut at = 0;
        while at < frames {
            let take = (self.block_frames - self.fill).min(frames - at);
            for plane in planes {
                for &x in &plane[at..at + take] {
                    self.block_peak = self.block_peak.max(x.abs());
                }
            }
            self.fill += take;
            at += take;
            if self.fill == self.block_frames {
                self.end_block();
            }
        }
    }

    fn end_block(&mut self) {
        if self.block_peak < SILENCE_AMPLITUDE {
            self.run_start.get_or_insert(self.block_start);
        } else {
            self.close_run(self.block_start);
        }
        self.block_start += self.fill as u64;
        self.fill = 0;
        self.block_peak = 0.0;
    }

    fn close_run(&mut self, end: u64) {
        if let Some(start) = self.run_start.take() {
            if end - start >= self.min_run {
                self.silent_frames += end - start;
                let rate = f64::from(self.rate);
                self.segments.push(Segment {
                    start: start as f64 / rate,
                    end: end as f64 / rate,
                });
            }
        }
    }

    /// The segments found, `ratio` over `total_frames`.
    pub fn finish(mut self, total_frames: u64) -> Silence {
        if self.fill > 0 {
            self.end_block();
        }
        self.close_run(self.block_start);
        Silence {
            ratio: if total_frames == 0 {
                0.0
            } else {
                (self.silent_frames as f64 / total_frames as f64).min(1.0)
            },
            segments: self.segments,
        }
    }
}

/// Frames of the centroid's FFT (46 ms at 44.1 kHz, 21.5 Hz bins).
const FFT_FRAMES: usize = 2048;

/// The spectral centroid of the mono mixdown: per 2048-sample frame
/// (Hann-windowed, no overlap), the magnitude-weighted mean frequency of
/// bins 1..=N/2; over the track, those frame centroids averaged weighted by
/// each frame's energy, skipping frames whose peak is below −60 dBFS.
pub(crate) struct Centroid {
    rate: f64,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    frame: Vec<f32>,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    weighted: f64,
    energy: f64,
}

impl Centroid {
    pub fn new(rate: u32) -> Centroid {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(FFT_FRAMES);
        let window = (0..FFT_FRAMES)
            .map(|i| {
                let phase = 2.0 * std::f64::consts::PI * i as f64 / FFT_FRAMES as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        Centroid {
            rate: f64::from(rate),
            input: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            window,
            frame: Vec::with_capacity(FFT_FRAMES),
            weighted: 0.0,
            energy: 0.0,
        }
    }

    pub fn push(&mut self, mono: &[f32]) {
        let mut rest = mono;
        while !rest.is_empty() {
            let take = (FFT_FRAMES - self.frame.len()).min(rest.len());
            self.frame.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.frame.len() == FFT_FRAMES {
                self.analyse_frame();
            }
        }
    }

    fn analyse_frame(&mut self) {
        let peak = self.frame.iter().fold(0.0f32, |p, x| p.max(x.abs()));
        let energy: f64 = self.frame.iter().map(|&x| f64::from(x * x)).sum();
        self.frame.resize(FFT_FRAMES, 0.0);
        if peak >= SILENCE_AMPLITUDE {
            for ((dst, &x), &w) in self.input.iter_mut().zip(&self.frame).zip(&self.window) {
                *dst = x * w;
            }
            let done = self.fft.process_with_scratch(
                &mut self.input,
                &mut self.spectrum,
                &mut self.scratch,
            );
            if done.is_ok() {
                let bin_hz = self.rate / FFT_FRAMES as f64;
                let (mut moment, mut total) = (0.0f64, 0.0f64);
                for (k, c) in self.spectrum.iter().enumerate().skip(1) {
                    let magnitude = f64::from(c.norm());
                    moment += k as f64 * bin_hz * magnitude;
                    total += magnitude;
                }
                if total > 0.0 && moment.is_finite() && energy.is_finite() {
                    self.weighted += moment / total * energy;
                    self.energy += energy;
                }
            }
        }
        self.frame.clear();
    }

    /// The centroid in Hz; `None` when every frame is silent.
    pub fn finish(mut self) -> Option<f64> {
        if !self.frame.is_empty() {
            self.analyse_frame();
        }
        (self.energy > 0.0).then(|| self.weighted / self.energy)
    }
}
