//! Tests of the tempo estimator on generated audio: click tracks, drum
//! patterns (straight and swung, varied kits, noise, level changes), signals
//! without a steady beat, block sizes, hostile samples and rates, and a
//! comparison with aubio on a corpus of drum patterns.

mod support_tempo;

use palaver_audio::tempo::{TempoEstimator, MIN_CONFIDENCE};
use support_tempo::*;

const CLICK_TEMPI: [f64; 10] = [
    60.0, 72.0, 90.0, 100.0, 120.0, 128.0, 140.0, 150.0, 174.0, 180.0,
];

#[test]
fn click_tracks_within_one_percent() {
    let mut failures = Vec::new();
    for rate in [44_100, 48_000] {
        for bpm in CLICK_TEMPI {
            let samples = click_track(bpm, rate, 30.0);
            let estimate = palaver_tempo(&samples, rate, 4096);
            println!("click {bpm} BPM at {rate} Hz: {estimate:?}");
            if verdict(estimate, bpm, 0.01) != Verdict::Right {
                failures.push(format!("{bpm} BPM at {rate} Hz read {estimate:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "click tracks misread: {failures:#?}");
}

/// Drum patterns from 60 to 180 BPM: the answer is the quarter note.
#[test]
fn drum_patterns_within_one_percent() {
    let mut failures = Vec::new();
    let tempi = [
        60.0, 70.0, 84.0, 96.0, 110.0, 124.0, 136.0, 150.0, 162.0, 170.0, 180.0,
    ];
    for (i, &bpm) in tempi.iter().enumerate() {
        let i = i as u64;
        let variants = [
            (
                "straight",
                Pattern {
                    kit: Kit::varied(i),
                    seed: i,
                    ..Pattern::straight(bpm, 44_100, 40.0)
                },
            ),
            (
                "swing 60%",
                Pattern {
                    swing: 0.6,
                    kit: Kit::varied(i + 50),
                    seed: i + 50,
                    ..Pattern::straight(bpm, 48_000, 40.0)
                },
            ),
            (
                "noise and levels",
                Pattern {
                    kit: Kit::varied(i + 100),
                    noise: 0.02,
                    level_variation: 0.5,
                    jitter: 0.004,
                    seed: i + 100,
                    ..Pattern::straight(bpm, 44_100, 40.0)
                },
            ),
        ];
        for (name, pattern) in variants {
            let estimate = palaver_tempo(&pattern.render(), pattern.sample_rate, 4096);
            println!("drums {bpm} BPM {name}: {estimate:?}");
            if verdict(estimate, bpm, 0.01) != Verdict::Right {
                failures.push(format!("{bpm} BPM {name} read {estimate:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "drum patterns misread: {failures:#?}");
}

#[test]
fn no_steady_beat_is_none() {
    let rate = 44_100;
    let cases: Vec<(&str, Vec<f32>)> = vec![
        ("silence", vec![0.0; 30 * rate as usize]),
        ("white noise", white_noise(rate, 30.0, 7)),
        ("steady sine", sine(440.0, rate, 30.0)),
        ("poisson clicks", poisson_clicks(2.0, rate, 30.0, 11)),
        ("poisson clicks, dense", poisson_clicks(6.0, rate, 30.0, 12)),
        ("2-second clip", click_track(120.0, rate, 2.0)),
    ];
    for (name, samples) in cases {
        let mut estimator = TempoEstimator::new(rate);
        estimator.push(&samples);
        let reading = estimator.reading();
        println!("{name}: {reading:?}");
        assert!(
            reading.is_none_or(|r| r.confidence < MIN_CONFIDENCE),
            "{name} has a beat: {reading:?}"
        );
        assert_eq!(palaver_tempo(&samples, rate, 4096), None, "{name}");
    }
}
