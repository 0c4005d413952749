//! The overview: the envelope's size and extremes for short and long
//! tracks, and the short-term loudness once per 100 ms.

use palaver_audio::analyze;

use crate::support::{assert_near, Signal};

#[test]
fn the_envelope_covers_the_track_in_at_most_2000_equal_slices() {
    let dir = tempfile::tempdir().unwrap();
    // 0.2 s (shorter than 2 000 buckets of... anything but single frames),
    // 10 s, and 100 s of a mono 8 kHz tone (800 000 frames).
    for (rate, seconds) in [(48_000u32, 0.2), (48_000, 10.0), (8_000, 100.0)] {
        let signal = Signal::new(rate, 1).tone(100.0, -6.0, seconds);
        let path = signal.write_f32(&dir.path().join("e.wav"));
        let o = analyze(&path).unwrap().overview;
        let n = o.envelope.len();
        assert!((1_000..=2_000).contains(&n), "{seconds} s: {n} pairs");
        let step = o.envelope_step_seconds;
        assert!(step * n as f64 >= seconds - 1e-9, "covers the track");
        assert!(step * ((n - 1) as f64) < seconds, "no empty slice");
        let amplitude = 10f32.powf(-6.0 / 20.0);
        let (lo, hi) = o
            .envelope
            .iter()
            .fold((1.0f32, -1.0f32), |(lo, hi), [a, b]| {
                assert!(a <= b && *a >= -1.0 && *b <= 1.0);
                (lo.min(*a), hi.max(*b))
            });
        assert_near("envelope max", f64::from(hi), f64::from(amplitude), 1e-3);
        assert_near("envelope min", f64::from(lo), -f64::from(amplitude), 1e-3);
        assert_near("duration", o.duration_seconds, seconds, 1e-6);
    }
}

#[test]
fn the_envelope_follows_the_level() {
    let dir = tempfile::tempdir().unwrap();
    let signal = Signal::new(48_000, 2)
        .tone(200.0, -6.0, 5.0)
        .silence(5.0)
        .tone(200.0, -20.0, 5.0);
    let path = signal.write_f32(&dir.path().join("l.wav"));
    let o = analyze(&path).unwrap().overview;
    let at = |t: f64| o.envelope[(t / o.envelope_step_seconds) as usize];
    assert_near("loud part", f64::from(at(2.5)[1]), 0.501, 0.01);
    assert_eq!(at(7.5), [0.0, 0.0]);
    assert_near("quiet part", f64::from(at(12.5)[1]), 0.1, 0.01);
}

#[test]
fn short_term_loudness_every_100_ms() {
    let dir = tempfile::tempdir().unwrap();
    let signal = Signal::new(44_100, 2)
        .silence(4.0)
        .tone(1000.0, -23.0, 10.0)
        .tone(1000.0, -33.0, 6.05);
    let path = signal.write_f32(&dir.path().join("s.wav"));
    let o = analyze(&path).unwrap().overview;
    assert_eq!(o.short_term_step_seconds, 0.1);
    // One value per 100 ms, the last for the shorter final 50 ms.
    assert_eq!(o.short_term_lufs.len(), 201);
    // Window ending at 0.1·(i+1) s.
    assert!(o.short_term_lufs[..40].iter().all(Option::is_none));
    for i in 80..140 {
        assert_near("−23 part", o.short_term_lufs[i].unwrap(), -23.0, 0.1);
    }
    for i in 175..201 {
        assert_near("−33 part", o.short_term_lufs[i].unwrap(), -33.0, 0.1);
    }
    // Partly filled windows rise in between.
    let rising = o.short_term_lufs[41].unwrap();
    assert!(rising < -30.0, "{rising}");
}
