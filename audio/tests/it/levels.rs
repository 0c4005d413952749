//! The sample-level measures: sample peak and RMS, silence segments,
//! clipped samples and the spectral centroid, on signals whose answers
//! are known from how they were made.

use palaver_audio::{analyze, Analysis};

use crate::support::{assert_near, Signal};

fn measure(signal: &Signal) -> Analysis {
    let dir = tempfile::tempdir().unwrap();
    let path = signal.write_f32(&dir.path().join("x.wav"));
    analyze(&path).unwrap().analysis
}

#[test]
fn rms_and_sample_peak_of_sines() {
    let full = measure(&Signal::new(48_000, 1).tone(1000.0, 0.0, 2.0));
    assert_near("full-scale sine RMS", full.rms_dbfs.unwrap(), -3.0103, 0.01);
    assert_near("full-scale sine peak", full.peak_dbfs.unwrap(), 0.0, 0.01);
    let quiet = measure(&Signal::new(44_100, 2).tone(997.0, -23.0, 2.0));
    assert_near("−23 dBFS sine RMS", quiet.rms_dbfs.unwrap(), -26.0103, 0.01);
    assert_near("−23 dBFS sine peak", quiet.peak_dbfs.unwrap(), -23.0, 0.01);
    assert_eq!(quiet.clipping.clipped_samples, 0);
    assert!(quiet.silence.segments.is_empty());
}

#[test]
fn silence_is_found_where_it_was_put() {
    for (rate, channels) in [(48_000, 2), (44_100, 1)] {
        let signal = Signal::new(rate, channels)
            .tone(440.0, -12.0, 2.0)
            .silence(1.5) // 2.0 – 3.5
            .tone(440.0, -12.0, 3.0)
            .silence(0.3) // too short to count
            .tone(440.0, -12.0, 2.0)
            .noise(0.0005, 1.0, 7) // −66 dBFS noise: silent, 8.8 – 9.8
            .tone(440.0, -50.0, 1.0) // −50 dBFS: not silent
            .silence(1.0); // 10.8 – 11.8, the end
        let a = measure(&signal);
        let s = &a.silence;
        assert_eq!(s.segments.len(), 3, "{rate} Hz: {:?}", s.segments);
        for (seg, (start, end)) in s
            .segments
            .iter()
            .zip([(2.0, 3.5), (8.8, 9.8), (10.8, 11.8)])
        {
            assert_near("silence start", seg.start, start, 0.05);
            assert_near("silence end", seg.end, end, 0.05);
        }
        assert_near("silent ratio", s.ratio, 3.5 / 11.8, 0.01);
    }
}

#[test]
fn a_track_of_silence_is_all_silence() {
    let a = measure(&Signal::new(48_000, 2).silence(3.0));
    assert_eq!(a.silence.segments.len(), 1);
    assert_near("ratio", a.silence.ratio, 1.0, 1e-9);
    assert_near("end", a.silence.segments[0].end, 3.0, 1e-9);
}

/// Runs of 1, 2, 3 and 5 full-scale samples: only the runs of at least
/// three count, every sample of them.
#[test]
fn clipping_counts_runs_of_at_least_three() {
    let mut signal = Signal::new(48_000, 2).tone(1000.0, -6.0, 0.1);
    for run in [1usize, 2, 3, 5] {
        for (c, channel) in signal.channels.iter_mut().enumerate() {
            // Channel 0 positive, channel 1 negative: both polarities.
            let level = if c == 0 { 1.0 } else { -0.9995 };
            channel.extend(std::iter::repeat_n(level, run));
            channel.extend(std::iter::repeat_n(0.1, 10));
        }
    }
    let a = measure(&signal);
    assert_eq!(a.clipping.clipped_samples, 2 * (3 + 5));
    let total = (signal.frames() * 2) as f64;
    assert_near("ratio", a.clipping.ratio, 16.0 / total, 1e-12);
}

#[test]
fn a_hard_clipped_square_wave_is_clipped_everywhere_and_a_clipped_sine_where_it_was_cut() {
    // ±1.0, 24 samples each way: every sample clipped.
    let square = Signal::new(48_000, 2).with(1.0, |_, t| {
        if (t * 1000.0).fract() < 0.5 {
            1.0
        } else {
            -1.0
        }
    });
    let a = measure(&square);
    assert_eq!(a.clipping.clipped_samples, 2 * 48_000);
    assert_near("ratio", a.clipping.ratio, 1.0, 1e-12);
    // The same square wave at 0.9: nothing clipped.
    let below = Signal::new(48_000, 2).with(1.0, |_, t| {
        if (t * 1000.0).fract() < 0.5 {
            0.9
        } else {
            -0.9
        }
    });
    assert_eq!(measure(&below).clipping.clipped_samples, 0);

    // A sine driven to twice full scale and cut at ±1: each half-period
    // keeps 16 samples at the rail, so every sample at |x| ≥ 0.999 lies in
    // a long run and counts.
    let clipped = Signal::new(48_000, 1).with(1.0, |_, t| {
        (2.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()).clamp(-1.0, 1.0) as f32
    });
    let expected = clipped.channels[0]
        .iter()
        .filter(|x| x.abs() >= 0.999)
        .count() as u64;
    assert!(expected > 30_000, "{expected}");
    assert_eq!(measure(&clipped).clipping.clipped_samples, expected);
}

#[test]
fn spectral_centroid_of_tones_and_noise() {
    let tone = measure(&Signal::new(48_000, 2).tone(1000.0, -12.0, 3.0));
    assert_near("1 kHz", tone.spectral_centroid_hz.unwrap(), 1000.0, 25.0);
    // Two partials of equal amplitude: their mean.
    let pair = Signal::new(44_100, 1).with(3.0, |_, t| {
        let w = 2.0 * std::f64::consts::PI * t;
        (0.25 * (500.0 * w).sin() + 0.25 * (4000.0 * w).sin()) as f32
    });
    assert_near(
        "500 Hz + 4 kHz",
        measure(&pair).spectral_centroid_hz.unwrap(),
        2250.0,
        50.0,
    );
    // White noise: a flat spectrum up to fs/2, its centroid fs/4.
    let noise = measure(&Signal::new(48_000, 1).noise(0.5, 3.0, 11));
    assert_near(
        "white noise",
        noise.spectral_centroid_hz.unwrap(),
        12_000.0,
        300.0,
    );
    // Silence between tones does not pull it down.
    let gappy = measure(
        &Signal::new(48_000, 1)
            .tone(1000.0, -12.0, 1.0)
            .silence(5.0)
            .tone(1000.0, -12.0, 1.0),
    );
    assert_near(
        "1 kHz with gaps",
        gappy.spectral_centroid_hz.unwrap(),
        1000.0,
        25.0,
    );
}
