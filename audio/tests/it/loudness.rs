//! Loudness against the EBU references: Tech 3341 (integrated, gating),
//! Tech 3342 (loudness range) and BS.1770-4 Annex 2 (true peak), at
//! 44.1 and 48 kHz, mono and stereo.

use palaver_audio::analyze;

use crate::support::{assert_near, Signal};

fn loudness(signal: &Signal) -> palaver_audio::Analysis {
    let dir = tempfile::tempdir().unwrap();
    let path = signal.write_f32(&dir.path().join("x.wav"));
    analyze(&path).unwrap().analysis
}

#[test]
fn stereo_sines_at_minus_23_and_minus_33_dbfs_measure_minus_23_and_minus_33_lufs() {
    for rate in [44_100, 48_000] {
        for (dbfs, lufs) in [(-23.0, -23.0), (-33.0, -33.0)] {
            let a = loudness(&Signal::new(rate, 2).tone(1000.0, dbfs, 20.0));
            assert_near(
                &format!("{rate} Hz, {dbfs} dBFS"),
                a.loudness_lufs.unwrap(),
                lufs,
                0.1,
            );
            assert_eq!(a.sample_rate, rate);
            assert_eq!(a.channels, 2);
        }
    }
}

#[test]
fn a_full_scale_mono_sine_measures_minus_3_01_lufs() {
    for rate in [44_100, 48_000] {
        let a = loudness(&Signal::new(rate, 1).tone(1000.0, 0.0, 10.0));
        assert_near(&format!("{rate} Hz"), a.loudness_lufs.unwrap(), -3.01, 0.1);
        assert_eq!(a.channels, 1);
    }
}

/// EBU Tech 3341 case 3: the quiet parts fall under the relative gate.
#[test]
fn quiet_passages_below_the_relative_gate_do_not_count() {
    let signal = Signal::new(48_000, 2)
        .tone(1000.0, -36.0, 10.0)
        .tone(1000.0, -23.0, 60.0)
        .tone(1000.0, -36.0, 10.0);
    let a = loudness(&signal);
    assert_near("gated", a.loudness_lufs.unwrap(), -23.0, 0.1);
    // Ungated, the mean energy would be lower.
    assert!(a.rms_dbfs.unwrap() < -23.0 - 3.01);
}

/// EBU Tech 3342 case 1: 20 s at −20 then 20 s at −30 dBFS → 10 LU.
#[test]
fn loudness_range_of_two_levels_ten_db_apart_is_ten_lu() {
    for rate in [44_100, 48_000] {
        let signal = Signal::new(rate, 2)
            .tone(1000.0, -20.0, 20.0)
            .tone(1000.0, -30.0, 20.0);
        let a = loudness(&signal);
        assert_near("LRA", a.loudness_range_lu.unwrap(), 10.0, 1.0);
    }
    // A steady tone has (almost) no range.
    let steady = loudness(&Signal::new(48_000, 2).tone(1000.0, -20.0, 20.0));
    assert!(steady.loudness_range_lu.unwrap() < 0.5);
}

/// A sine at a quarter of the sampling rate with a 45° phase has every
/// sample at 1/√2 of its peak: the sample peak is 3.01 dB under the true
/// peak, which only oversampling finds.
#[test]
fn true_peak_finds_the_peaks_between_samples() {
    for rate in [44_100u32, 48_000] {
        let amplitude = 0.5f64;
        let hz = f64::from(rate) / 4.0;
        let signal = Signal::new(rate, 2).with(5.0, |_, t| {
            (amplitude * (2.0 * std::f64::consts::PI * hz * t + std::f64::consts::FRAC_PI_4).sin())
                as f32
        });
        let a = loudness(&signal);
        let true_peak = 20.0 * amplitude.log10();
        assert_near(
            "sample peak",
            a.peak_dbfs.unwrap(),
            true_peak - 3.0103,
            0.01,
        );
        assert_near("true peak", a.true_peak_dbtp.unwrap(), true_peak, 0.3);
    }
}

#[test]
fn digital_silence_has_no_levels() {
    let a = loudness(&Signal::new(48_000, 2).silence(5.0));
    assert_eq!(a.loudness_lufs, None);
    assert_eq!(a.loudness_range_lu, None);
    assert_eq!(a.peak_dbfs, None);
    assert_eq!(a.true_peak_dbtp, None);
    assert_eq!(a.rms_dbfs, None);
    assert_eq!(a.spectral_centroid_hz, None);
    assert_near("duration", a.duration_seconds, 5.0, 1e-9);
    let json = serde_json::to_value(&a).unwrap();
    assert!(json["loudness_lufs"].is_null() && json["rms_dbfs"].is_null());
}

/// 5.1 (hound writes the WAVE_FORMAT_EXTENSIBLE mask L R C LFE Ls Rs): the
/// LFE does not count and the surrounds weigh 1.41, as in ffmpeg's meter.
#[test]
fn surround_channels_are_weighted_and_the_lfe_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let tone = Signal::new(48_000, 1)
        .tone(1000.0, -23.0, 10.0)
        .channels
        .remove(0);
    let silent = vec![0.0f32; tone.len()];
    let layout = |active: &[usize]| Signal {
        rate: 48_000,
        channels: (0..6)
            .map(|c| {
                if active.contains(&c) {
                    tone.clone()
                } else {
                    silent.clone()
                }
            })
            .collect(),
    };
    // Left and right: as stereo.
    let front = layout(&[0, 1]).write_f32(&dir.path().join("front.wav"));
    assert_near(
        "L+R",
        analyze(&front).unwrap().analysis.loudness_lufs.unwrap(),
        -23.0,
        0.1,
    );
    // The two surrounds: +1.5 dB.
    let rear = layout(&[4, 5]).write_f32(&dir.path().join("rear.wav"));
    let rear_lufs = analyze(&rear).unwrap().analysis.loudness_lufs.unwrap();
    assert_near("Ls+Rs", rear_lufs, -23.0 + 10.0 * 1.41f64.log10(), 0.1);
    assert_near(
        "Ls+Rs vs ffmpeg",
        rear_lufs,
        crate::support::ffmpeg_ebur128(&rear).integrated,
        0.2,
    );
    // Quad (L R Ls Rs; ffmpeg relabels a 4-channel WAV with that mask):
    // the third and fourth channels are surrounds here, not a centre and
    // an LFE as the meter's default order would take them.
    let four = Signal {
        rate: 48_000,
        channels: vec![silent.clone(), silent.clone(), tone.clone(), tone.clone()],
    }
    .write_f32(&dir.path().join("four.wav"));
    let quad = crate::support::encode(
        &four,
        &dir.path().join("quad.wav"),
        &[
            "-af",
            "channelmap=map=0|1|2|3:channel_layout=quad",
            "-c:a",
            "pcm_f32le",
        ],
    );
    // The same file as hound wrote it, mask L R C LFE (3.1): a centre at
    // 1.0 and an LFE, where the meter's default order for four channels
    // would take surrounds.
    let three_one = analyze(&four).unwrap().analysis.loudness_lufs.unwrap();
    assert_near("3.1 centre", three_one, -23.0 - 3.0103, 0.1);
    let theirs = crate::support::ffmpeg_ebur128(&four).integrated;
    assert_near("3.1 vs ffmpeg", three_one, theirs, 0.2);
    let quad_lufs = analyze(&quad).unwrap().analysis.loudness_lufs.unwrap();
    assert_near(
        "quad surrounds",
        quad_lufs,
        -23.0 + 10.0 * 1.41f64.log10(),
        0.1,
    );
    let theirs = crate::support::ffmpeg_ebur128(&quad).integrated;
    assert_near("quad vs ffmpeg", quad_lufs, theirs, 0.2);
    // The LFE alone: nothing to measure.
    let lfe = layout(&[3]).write_f32(&dir.path().join("lfe.wav"));
    let a = analyze(&lfe).unwrap().analysis;
    assert_eq!(a.loudness_lufs, None);
    assert_eq!(a.channels, 6);
    assert_near("LFE peak", a.peak_dbfs.unwrap(), -23.0, 0.01);
}

/// Rates other than 44.1 and 48 kHz: telephone to 192 kHz (2× and no
/// oversampling for the true peak), and 11 025 Hz, whose 100 ms steps are
/// not whole frames.
#[test]
fn other_sample_rates_measure_the_same() {
    let dir = tempfile::tempdir().unwrap();
    for rate in [8_000u32, 11_025, 22_050, 32_000, 96_000, 192_000] {
        let signal = Signal::new(rate, 2).tone(1000.0, -23.0, 10.0);
        let path = signal.write_f32(&dir.path().join("r.wav"));
        let report = analyze(&path).unwrap();
        let a = &report.analysis;
        assert_eq!(a.sample_rate, rate);
        assert_near(
            &format!("{rate} Hz loudness"),
            a.loudness_lufs.unwrap(),
            -23.0,
            0.1,
        );
        assert_near(
            &format!("{rate} Hz true peak"),
            a.true_peak_dbtp.unwrap(),
            -23.0,
            0.3,
        );
        assert_near(
            &format!("{rate} Hz duration"),
            a.duration_seconds,
            10.0,
            1e-9,
        );
        assert_eq!(report.overview.short_term_lufs.len(), 100, "{rate} Hz");
        let last = report.overview.short_term_lufs[99].unwrap();
        assert_near(&format!("{rate} Hz short-term"), last, -23.0, 0.1);
    }
}
