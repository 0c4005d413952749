//! Test support for the tempo tests: generated audio (click tracks, drum
//! patterns, beatless signals), a seeded PRNG, WAV writing and the scoring
//! of estimates against the true tempo.

#![allow(dead_code)]

use std::f32::consts::TAU;
use std::path::Path;

/// A small seeded generator (SplitMix64), so every corpus is the same on
/// every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in [−1, 1).
    pub fn noise(&mut self) -> f32 {
        2.0 * self.unit() - 1.0
    }
}

/// Adds `hit` into `out` starting at `at` (clipped at the end).
fn mix(out: &mut [f32], at: usize, hit: &[f32], gain: f32) {
    if at >= out.len() {
        return;
    }
    for (o, h) in out[at..].iter_mut().zip(hit) {
        *o += gain * h;
    }
}

/// A 10 ms 1 kHz burst with a fast exponential decay.
pub fn click(sample_rate: u32) -> Vec<f32> {
    let sr = sample_rate as f32;
    (0..(0.010 * sr) as usize)
        .map(|i| {
            let t = i as f32 / sr;
            (TAU * 1000.0 * t).sin() * (-t / 0.003).exp()
        })
        .collect()
}

/// `seconds` of clicks at `bpm`, the first at 0.1 s.
pub fn click_track(bpm: f64, sample_rate: u32, seconds: f64) -> Vec<f32> {
    let mut out = vec![0.0; (seconds * f64::from(sample_rate)) as usize];
    let hit = click(sample_rate);
    let period = 60.0 / bpm;
    let mut t = 0.1;
    while t < seconds {
        mix(
            &mut out,
            (t * f64::from(sample_rate)).round() as usize,
            &hit,
            0.5,
        );
        t += period;
    }
    out
}

/// Clicks at random (Poisson) times, `rate` a second on average.
pub fn poisson_clicks(rate: f64, sample_rate: u32, seconds: f64, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut out = vec![0.0; (seconds * f64::from(sample_rate)) as usize];
    let hit = click(sample_rate);
    let mut t = 0.0;
    loop {
        t += -(1.0 - f64::from(rng.unit())).ln() / rate;
        if t >= seconds {
            break out;
        }
        mix(&mut out, (t * f64::from(sample_rate)) as usize, &hit, 0.5);
    }
}

pub fn white_noise(sample_rate: u32, seconds: f64, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..(seconds * f64::from(sample_rate)) as usize)
        .map(|_| 0.3 * rng.noise())
        .collect()
}

pub fn sine(freq: f32, sample_rate: u32, seconds: f64) -> Vec<f32> {
    (0..(seconds * f64::from(sample_rate)) as usize)
        .map(|i| 0.5 * (TAU * freq * (i as f32 / sample_rate as f32)).sin())
        .collect()
}

/// The sound of a drum kit: one variant of each voice.
#[derive(Clone, Copy, Debug)]
pub struct Kit {
    pub kick_level: f32,
    /// Kick sweep start and end, Hz.
    pub kick_from: f32,
    pub kick_to: f32,
    pub kick_decay: f32,
    pub snare_level: f32,
    pub snare_tone: f32,
    pub snare_decay: f32,
    pub hat_level: f32,
    pub hat_decay: f32,
}

impl Kit {
    /// Kit number `n`: levels and timbres spread over plausible values.
    pub fn varied(n: u64) -> Kit {
        let mut rng = Rng::new(0x6b69_7400 + n);
        Kit {
            kick_level: rng.range(0.6, 1.0),
            kick_from: rng.range(120.0, 180.0),
            kick_to: rng.range(40.0, 60.0),
            kick_decay: rng.range(0.08, 0.2),
            snare_level: rng.range(0.35, 0.8),
            snare_tone: rng.range(160.0, 240.0),
            snare_decay: rng.range(0.05, 0.12),
            hat_level: rng.range(0.08, 0.3),
            hat_decay: rng.range(0.01, 0.04),
        }
    }
}

/// A drum pattern in common time: kick on 1 and 3, snare on 2 and 4,
/// hi-hat on every eighth.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    pub bpm: f64,
    pub sample_rate: u32,
    pub seconds: f64,
    /// Where the off-beat eighth falls within the beat: 0.5 straight,
    /// 0.6 for 60 % swing.
    pub swing: f64,
    pub kit: Kit,
    /// White noise level (peak), 0 for none.
    pub noise: f32,
    /// Depth of a slow level swell (0 none, 0.5 between half and full
    /// level) and of the random velocity of each hit.
    pub level_variation: f32,
    /// Random timing of each hit, ± seconds.
    pub jitter: f64,
    pub seed: u64,
}

impl Pattern {
    pub fn straight(bpm: f64, sample_rate: u32, seconds: f64) -> Pattern {
        Pattern {
            bpm,
            sample_rate,
            seconds,
            swing: 0.5,
            kit: Kit::varied(0),
            noise: 0.0,
            level_variation: 0.0,
            jitter: 0.0,
            seed: 1,
        }
    }

    pub fn render(&self) -> Vec<f32> {
        let sr = self.sample_rate as f32;
        let kit = self.kit;
        let mut rng = Rng::new(self.seed);
        let mut out = vec![0.0; (self.seconds * f64::from(self.sample_rate)) as usize];
        let kick: Vec<f32> = {
            let mut phase = 0.0f32;
            (0..(0.4 * sr) as usize)
                .map(|i| {
                    let t = i as f32 / sr;
                    let f = kit.kick_to + (kit.kick_from - kit.kick_to) * (-t / 0.04).exp();
                    phase += TAU * f / sr;
                    phase.sin() * (-t / kit.kick_decay).exp()
                })
                .collect()
        };
        let beat = 60.0 / self.bpm;
        let mut index = 0u64;
        let mut start = 0.05;
        while start < self.seconds {
            for eighth in 0..2 {
                let t = start + if eighth == 0 { 0.0 } else { self.swing * beat };
                let t = t + self.jitter * f64::from(rng.noise());
                let swell = 1.0
                    - self.level_variation
                        * (0.5 + 0.5 * (std::f64::consts::TAU * t / 11.0).sin() as f32);
                let depth = self.level_variation * 0.4;
                let (v_drum, v_hat) = (
                    swell * (1.0 - depth * rng.unit()),
                    swell * (1.0 - depth * rng.unit()),
                );
                let at = (t.max(0.0) * f64::from(self.sample_rate)) as usize;
                if eighth == 0 {
                    if index.is_multiple_of(2) {
                        mix(&mut out, at, &kick, kit.kick_level * v_drum);
                    } else {
                        let v = kit.snare_level * v_drum;
                        let snare: Vec<f32> = (0..(0.3 * sr) as usize)
                            .map(|i| {
                                let t = i as f32 / sr;
                                let env = (-t / kit.snare_decay).exp();
                                0.7 * rng.noise() * env
                                    + 0.5 * (TAU * kit.snare_tone * t).sin() * env
                            })
                            .collect();
                        mix(&mut out, at, &snare, v);
                    }
                }
                let v = kit.hat_level * v_hat;
                let mut last = 0.0;
                let hat: Vec<f32> = (0..(0.15 * sr) as usize)
                    .map(|i| {
                        let t = i as f32 / sr;
                        let n = rng.noise();
                        // A first difference: white noise tilted to the top.
                        let h = 0.5 * (n - last);
                        last = n;
                        h * (-t / kit.hat_decay).exp()
                    })
                    .collect();
                mix(&mut out, at, &hat, v);
            }
            index += 1;
            start += beat;
        }
        if self.noise > 0.0 {
            for x in &mut out {
                *x += self.noise * rng.noise();
            }
        }
        out
    }
}

/// Writes `samples` as a 16-bit mono WAV.
pub fn write_wav(path: &Path, samples: &[f32], sample_rate: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).expect("create wav");
    for &x in samples {
        writer
            .write_sample((x.clamp(-1.0, 1.0) * 32767.0).round() as i16)
            .expect("write wav");
    }
    writer.finalize().expect("finalize wav");
}

/// Reads a mono 16-bit WAV back as floats.
pub fn read_wav(path: &Path) -> (Vec<f32>, u32) {
    let mut reader = hound::WavReader::open(path).expect("open wav");
    let rate = reader.spec().sample_rate;
    let samples = reader
        .samples::<i16>()
        .map(|s| f32::from(s.expect("wav sample")) / 32768.0)
        .collect();
    (samples, rate)
}

/// The tempo palaver reads in `samples`, pushed in blocks of `block`.
pub fn palaver_tempo(samples: &[f32], sample_rate: u32, block: usize) -> Option<f64> {
    let mut estimator = palaver_audio::tempo::TempoEstimator::new(sample_rate);
    for chunk in samples.chunks(block.max(1)) {
        estimator.push(chunk);
    }
    estimator.finish()
}

/// How an estimate relates to the true tempo.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// Within the tolerance.
    Right,
    /// Within the tolerance of 2×, ½×, 3×, ⅓×, 3⁄2× or ⅔× the tempo.
    Octave,
    Wrong,
    Missing,
}

pub fn verdict(estimate: Option<f64>, truth: f64, tolerance: f64) -> Verdict {
    let Some(estimate) = estimate else {
        return Verdict::Missing;
    };
    let near = |target: f64| (estimate / target - 1.0).abs() <= tolerance;
    if near(truth) {
        Verdict::Right
    } else if [2.0, 0.5, 3.0, 1.0 / 3.0, 1.5, 2.0 / 3.0]
        .iter()
        .any(|&f| near(truth * f))
    {
        Verdict::Octave
    } else {
        Verdict::Wrong
    }
}

/// Relative error of an estimate, in per cent (infinite when missing).
pub fn error_percent(estimate: Option<f64>, truth: f64) -> f64 {
    estimate.map_or(f64::INFINITY, |e| 100.0 * (e / truth - 1.0).abs())
}

/// The `aubio` program on PATH; a test that needs it fails without it.
pub fn require_aubio() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("aubio"))
                .find(|candidate| {
                    candidate
                        .metadata()
                        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                })
        })
        .unwrap_or_else(|| {
            panic!(
                "aubio not found: install the Debian package `aubio-tools`, or run ./scripts/test, which installs it"
            )
        })
}

/// What aubio makes of a file: from the beats `aubio beat` prints, the
/// tempo of the median inter-beat interval, and the mean of the
/// per-interval tempi (the figure `aubio tempo` prints).
pub struct AubioReading {
    pub median_interval: Option<f64>,
    pub tempo_command: Option<f64>,
}

pub fn parse_aubio_beats(stdout: &str) -> AubioReading {
    let beats: Vec<f64> = stdout
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    let mut intervals: Vec<f64> = beats
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .collect();
    if intervals.is_empty() {
        return AubioReading {
            median_interval: None,
            tempo_command: None,
        };
    }
    let tempo_command = intervals.iter().map(|d| 60.0 / d).sum::<f64>() / intervals.len() as f64;
    intervals.sort_by(f64::total_cmp);
    let median = intervals[intervals.len() / 2];
    AubioReading {
        median_interval: Some(60.0 / median),
        tempo_command: Some(tempo_command),
    }
}

/// Share within ±1 %, within ±4 %, octave errors (at ±4 %), median
/// absolute error in per cent, over `(estimate, truth)` pairs.
pub struct Score {
    pub within_1: f64,
    pub within_4: f64,
    pub octave_errors: usize,
    pub median_error: f64,
}

pub fn score(results: &[(Option<f64>, f64)]) -> Score {
    let n = results.len().max(1) as f64;
    let share = |tolerance: f64| {
        results
            .iter()
            .filter(|(e, t)| verdict(*e, *t, tolerance) == Verdict::Right)
            .count() as f64
            / n
    };
    let mut errors: Vec<f64> = results.iter().map(|(e, t)| error_percent(*e, *t)).collect();
    errors.sort_by(f64::total_cmp);
    Score {
        within_1: share(0.01),
        within_4: share(0.04),
        octave_errors: results
            .iter()
            .filter(|(e, t)| verdict(*e, *t, 0.04) == Verdict::Octave)
            .count(),
        median_error: errors
            .get(errors.len() / 2)
            .copied()
            .unwrap_or(f64::INFINITY),
    }
}

/// A `freq` Hz sine of peak `amplitude` whose level at `t` seconds is
/// `gain(t)` (gaps, fades, steps).
pub fn shaped_tone(
    freq: f64,
    amplitude: f32,
    sample_rate: u32,
    seconds: f64,
    gain: impl Fn(f64) -> f32,
) -> Vec<f32> {
    (0..(seconds * f64::from(sample_rate)) as usize)
        .map(|i| {
            let t = i as f64 / f64::from(sample_rate);
            amplitude * gain(t) * (std::f64::consts::TAU * freq * t).sin() as f32
        })
        .collect()
}

/// Clicks at the given times (seconds) in `seconds` of silence.
pub fn clicks_at(times: &[f64], sample_rate: u32, seconds: f64) -> Vec<f32> {
    let mut out = vec![0.0; (seconds * f64::from(sample_rate)) as usize];
    let hit = click(sample_rate);
    for &t in times {
        mix(
            &mut out,
            (t * f64::from(sample_rate)).round() as usize,
            &hit,
            0.5,
        );
    }
    out
}
