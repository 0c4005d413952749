//! The onset-strength front end of the tempo estimator: mono samples in,
//! one spectral-flux value per ~10 ms frame out.
//!
//! The input is first averaged down by an integer factor to about 11 kHz
//! (a boxcar: what it lets alias is high-frequency energy folded down,
//! which the flux still sees as an onset, and onsets are all it is for).
//! Every hop a Hann-windowed frame of ~46 ms is transformed; its magnitudes
//! are pooled into log-spaced bands (so a kick's few low bins weigh as much
//! as a hi-hat's many high ones), compressed with `ln(1 + γ·m)`, and the
//! increase over the previous frame beyond a small dead band, summed over
//! the bands, is the frame's onset strength.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// The rate the input is averaged down to (roughly; an integer factor).
const TARGET_RATE: f64 = 11_025.0;
/// Onset frames per second (roughly; an integer hop).
const FRAME_RATE: f64 = 100.0;
/// The analysis window, in seconds (rounded up to a power of two).
const WINDOW_SECONDS: f64 = 0.046;
/// Lowest band edge, Hz.
const LOWEST_HZ: f64 = 30.0;
/// Bands per octave.
const BANDS_PER_OCTAVE: f64 = 3.0;
/// The log compression: band magnitudes are relative to a full-scale sine
/// (1.0), so the knee is at −60 dBFS.
const GAMMA: f32 = 1000.0;
/// A band's rise smaller than this (in the log domain: about 5 %) is no
/// onset: the slow wobble of a steady tone between frames stays out.
const DEADBAND: f32 = 0.05;
/// Samples beyond this magnitude are clamped (keeps every sum finite).
const CLAMP: f32 = 1.0e3;

/// Slowest and fastest rates the front end accepts.
pub const MIN_SAMPLE_RATE: u32 = 2_000;

pub struct Onsets {
    decim: usize,
    acc: f32,
    acc_n: usize,
    hop: usize,
    /// Downsampled samples not yet consumed by a frame.
    pending: Vec<f32>,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    /// Half-open bin ranges of the bands.
    bands: Vec<(usize, usize)>,
    /// Compressed band magnitudes of the previous frame.
    prev: Vec<f32>,
    current: Vec<f32>,
    have_prev: bool,
    /// Scale that makes a full-scale sine's peak bin 1.0.
    norm: f32,
    frame_rate: f64,
    /// The onset strength, one value per hop.
    pub envelope: Vec<f32>,
}

impl Onsets {
    /// `None` for a rate too low to say anything about onsets.
    pub fn new(sample_rate: u32) -> Option<Onsets> {
        if sample_rate < MIN_SAMPLE_RATE {
            return None;
        }
        let rate = f64::from(sample_rate);
        let decim = ((rate / TARGET_RATE).round() as usize).max(1);
        let down = rate / decim as f64;
        let hop = ((down / FRAME_RATE).round() as usize).max(1);
        let size = ((down * WINDOW_SECONDS).ceil() as usize)
            .next_power_of_two()
            .max(64);
        let window: Vec<f32> = (0..size)
            .map(|i| {
                let x = std::f64::consts::TAU * i as f64 / size as f64;
                (0.5 - 0.5 * x.cos()) as f32
            })
            .collect();
        let norm = 2.0 / window.iter().sum::<f32>();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(size);
        let bins = size / 2 + 1;
        let bin_hz = down / size as f64;
        // Edges a third of an octave apart, as bins; where two edges fall on
        // the same bin the band waits for the next one.
        let mut edges = vec![((LOWEST_HZ / bin_hz).floor() as usize).clamp(1, bins - 2)];
        let mut edge_hz = LOWEST_HZ;
        while edges.last().is_some_and(|&last| last < bins - 1) {
            edge_hz *= 2f64.powf(1.0 / BANDS_PER_OCTAVE);
            let bin = ((edge_hz / bin_hz).round() as usize).min(bins - 1);
            if edges.last().is_some_and(|&last| bin > last) {
                edges.push(bin);
            }
        }
        let bands: Vec<(usize, usize)> = edges.windows(2).map(|w| (w[0], w[1])).collect();
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        Some(Onsets {
            decim,
            acc: 0.0,
            acc_n: 0,
            hop,
            pending: Vec::with_capacity(size + hop),
            window,
            frame: vec![0.0; size],
            spectrum,
            scratch,
            prev: vec![0.0; bands.len()],
            current: vec![0.0; bands.len()],
            bands,
            have_prev: false,
            norm,
            frame_rate: down / hop as f64,
            fft,
            envelope: Vec::new(),
        })
    }

    /// Onset frames per second.
    pub fn frame_rate(&self) -> f64 {
        self.frame_rate
    }

    pub fn push(&mut self, mono: &[f32]) {
        for &x in mono {
            let x = if x.is_finite() {
                x.clamp(-CLAMP, CLAMP)
            } else {
                0.0
            };
            self.acc += x;
            self.acc_n += 1;
            if self.acc_n == self.decim {
                self.pending.push(self.acc / self.decim as f32);
                self.acc = 0.0;
                self.acc_n = 0;
                if self.pending.len() >= self.window.len() {
                    self.frame_flux();
                    self.pending.drain(..self.hop);
                }
            }
        }
    }

    fn frame_flux(&mut self) {
        for ((f, &x), &w) in self.frame.iter_mut().zip(&self.pending).zip(&self.window) {
            *f = x * w;
        }
        let transformed =
            self.fft
                .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch);
        if transformed.is_err() {
            // The buffers are sized by the plan; this cannot fail, and if it
            // did a silent frame is the harmless answer.
            self.envelope.push(0.0);
            return;
        }
        for (value, &(lo, hi)) in self.current.iter_mut().zip(&self.bands) {
            let sum: f32 = self.spectrum[lo..hi]
                .iter()
                .map(|c| c.norm_sqr().sqrt())
                .sum();
            let magnitude = sum / (hi - lo) as f32 * self.norm;
            *value = (GAMMA * magnitude).ln_1p();
        }
        let flux = if self.have_prev {
            self.current
                .iter()
                .zip(&self.prev)
                .map(|(c, p)| (c - p - DEADBAND).max(0.0))
                .sum()
        } else {
            0.0
        };
        std::mem::swap(&mut self.prev, &mut self.current);
        self.have_prev = true;
        self.envelope
            .push(if flux.is_finite() { flux } else { 0.0 });
    }
}
