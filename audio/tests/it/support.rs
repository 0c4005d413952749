//! What the audio tests share: signals generated in the test (tones,
//! noise, chords, a drum-like pattern), WAV files written with hound, the
//! ffmpeg the container tests need, and its EBU R 128 summary parsed.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Planar audio: one vector per channel, samples in −1..1.
pub struct Signal {
    pub rate: u32,
    pub channels: Vec<Vec<f32>>,
}

impl Signal {
    pub fn new(rate: u32, channels: usize) -> Signal {
        Signal {
            rate,
            channels: vec![Vec::new(); channels],
        }
    }

    pub fn frames(&self) -> usize {
        self.channels[0].len()
    }

    /// Appends `seconds` of a sine at `hz`, peak amplitude `dbfs`, the
    /// same on every channel, its phase continuing from what came before.
    pub fn tone(mut self, hz: f64, dbfs: f64, seconds: f64) -> Signal {
        let amplitude = 10f64.powf(dbfs / 20.0);
        let start = self.frames();
        let n = (seconds * f64::from(self.rate)).round() as usize;
        for channel in &mut self.channels {
            channel.extend((start..start + n).map(|i| {
                (amplitude * (2.0 * PI * hz * i as f64 / f64::from(self.rate)).sin()) as f32
            }));
        }
        self
    }

    /// Appends `seconds` of digital silence.
    pub fn silence(self, seconds: f64) -> Signal {
        self.constant(0.0, seconds)
    }

    /// Appends `seconds` of a constant value.
    pub fn constant(mut self, value: f32, seconds: f64) -> Signal {
        let n = (seconds * f64::from(self.rate)).round() as usize;
        for channel in &mut self.channels {
            channel.extend(std::iter::repeat_n(value, n));
        }
        self
    }

    /// Appends `seconds` of white noise, uniform in ±`peak`, independent on
    /// every channel (a fixed seed: the same file on every run).
    pub fn noise(mut self, peak: f32, seconds: f64, seed: u64) -> Signal {
        let n = (seconds * f64::from(self.rate)).round() as usize;
        let mut rng = Rng(seed | 1);
        for channel in &mut self.channels {
            channel.extend((0..n).map(|_| peak * rng.uniform()));
        }
        self
    }

    /// Appends `seconds` of noise as music has it: white noise through a
    /// one-pole low-pass at `corner_hz` (little energy near Nyquist, where
    /// true-peak meters differ by design), scaled to `peak` at most.
    pub fn soft_noise(mut self, peak: f32, corner_hz: f64, seconds: f64, seed: u64) -> Signal {
        let n = (seconds * f64::from(self.rate)).round() as usize;
        let a = (-2.0 * PI * corner_hz / f64::from(self.rate)).exp();
        let mut rng = Rng(seed | 1);
        for channel in &mut self.channels {
            let mut y = 0.0f64;
            let raw: Vec<f64> = (0..n)
                .map(|_| {
                    y = a * y + (1.0 - a) * f64::from(rng.uniform());
                    y
                })
                .collect();
            let max = raw.iter().fold(1e-9f64, |m, x| m.max(x.abs()));
            channel.extend(raw.iter().map(|x| (x / max * f64::from(peak)) as f32));
        }
        self
    }

    /// Appends the samples `f(t)` (t in seconds from the start of this
    /// part) on every channel.
    pub fn with(mut self, seconds: f64, f: impl Fn(usize, f64) -> f32) -> Signal {
        let n = (seconds * f64::from(self.rate)).round() as usize;
        let rate = f64::from(self.rate);
        for (c, channel) in self.channels.iter_mut().enumerate() {
            channel.extend((0..n).map(|i| f(c, i as f64 / rate)));
        }
        self
    }

    /// Writes the signal as a 32-bit float WAV (exact).
    pub fn write_f32(&self, path: &Path) -> PathBuf {
        let spec = hound::WavSpec {
            channels: self.channels.len() as u16,
            sample_rate: self.rate,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..self.frames() {
            for channel in &self.channels {
                w.write_sample(channel[i]).unwrap();
            }
        }
        w.finalize().unwrap();
        path.to_path_buf()
    }

    /// Writes the signal as a 16-bit WAV (what most encoders are fed).
    pub fn write_i16(&self, path: &Path) -> PathBuf {
        let spec = hound::WavSpec {
            channels: self.channels.len() as u16,
            sample_rate: self.rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..self.frames() {
            for channel in &self.channels {
                let s = (f64::from(channel[i]) * 32768.0)
                    .round()
                    .clamp(-32768.0, 32767.0);
                w.write_sample(s as i16).unwrap();
            }
        }
        w.finalize().unwrap();
        path.to_path_buf()
    }
}

/// A small deterministic generator (xorshift64*): the tests need noise
/// that is the same on every run, not a random-number library.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in −1..1.
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f64 / (1u64 << 23) as f64 - 1.0) as f32
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

/// A music-like signal: a kick on every beat at 120 BPM, a hi-hat of noise
/// bursts on the off-beats, and a chord (A minor, three partials each)
/// changing every two seconds, with a phrase of silence in the middle.
pub fn music(rate: u32, seconds: f64) -> Signal {
    let chords: [[f64; 3]; 4] = [
        [220.0, 261.63, 329.63],
        [174.61, 220.0, 261.63],
        [196.0, 246.94, 293.66],
        [164.81, 207.65, 246.94],
    ];
    let mut rng = Rng(0x5eed);
    let noise: Vec<f32> = (0..rate as usize).map(|_| rng.uniform()).collect();
    Signal::new(rate, 2).with(seconds, move |c, t| {
        let beat = t * 2.0; // 120 BPM
        let in_beat = beat.fract() / 2.0; // seconds since the beat
        let kick = if in_beat < 0.15 {
            let f = 50.0 + 100.0 * (-in_beat * 30.0).exp();
            0.6 * (-in_beat * 20.0).exp() * (2.0 * PI * f * in_beat).sin()
        } else {
            0.0
        };
        let off = (beat + 0.5).fract() / 2.0;
        let hat = if off < 0.05 {
            let i = ((t * f64::from(rate)) as usize + c * 7919) % noise.len();
            0.25 * (-off * 80.0).exp() * f64::from(noise[i])
        } else {
            0.0
        };
        let chord = chords[((t / 2.0) as usize) % chords.len()];
        let pad: f64 = chord
            .iter()
            .enumerate()
            .map(|(k, f)| {
                let detune = 1.0 + 0.002 * c as f64;
                (0.08 / (k + 1) as f64) * (2.0 * PI * f * detune * t).sin()
                    + 0.03 * (2.0 * PI * 2.0 * f * t).sin()
            })
            .sum();
        // Two seconds of silence from a third of the way in.
        let gap = t >= seconds / 3.0 && t < seconds / 3.0 + 2.0;
        if gap {
            0.0
        } else {
            (kick + hat + pad) as f32
        }
    })
}

/// ffmpeg, which the container and cross-check tests run.
pub fn ffmpeg() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("ffmpeg"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "ffmpeg not found: install the Debian package `ffmpeg`, or run ./scripts/test, which installs it"
            )
        })
}

/// Encodes `input` into `output` with ffmpeg and the given codec options.
pub fn encode(input: &Path, output: &Path, args: &[&str]) -> PathBuf {
    let out = Command::new(ffmpeg())
        .args(["-v", "error", "-y", "-i"])
        .arg(input)
        .args(args)
        .arg(output)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    output.to_path_buf()
}

/// What ffmpeg's ebur128 filter says of a file in its summary.
#[derive(Debug)]
pub struct FfmpegLoudness {
    pub integrated: f64,
    pub true_peak: f64,
}

pub fn ffmpeg_ebur128(file: &Path) -> FfmpegLoudness {
    let out = Command::new(ffmpeg())
        .arg("-nostats")
        .arg("-i")
        .arg(file)
        .args(["-af", "ebur128=peak=true", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stderr
        .rsplit_once("Summary:")
        .map(|(_, s)| s)
        .expect("ffmpeg's ebur128 prints a summary");
    let field = |name: &str| -> f64 {
        summary
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in ffmpeg's summary:\n{summary}"))
    };
    FfmpegLoudness {
        integrated: field("I:"),
        true_peak: field("Peak:"),
    }
}

pub fn assert_near(what: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: got {got}, want {want} ± {tolerance}"
    );
}
