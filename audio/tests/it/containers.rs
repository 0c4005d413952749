//! Every accepted container, encoded by ffmpeg from one generated WAV,
//! decodes to the same measurements (lossless: the same; lossy: within
//! their tolerances), `probe` names it from its bytes whatever its file
//! name says, and the loudness agrees with ffmpeg's own ebur128 meter.

use std::path::{Path, PathBuf};

use palaver_audio::{analyze, probe, Format};

use crate::support::{assert_near, encode, ffmpeg_ebur128, music, Signal};

struct Encoded {
    format: Format,
    lossy: bool,
    path: PathBuf,
}

/// The WAV and its FLAC, MP3, Ogg Vorbis and M4A (AAC) encodings.
fn encodings(dir: &Path, wav: &Path) -> Vec<Encoded> {
    let e = |name: &str, args: &[&str], format, lossy| Encoded {
        format,
        lossy,
        path: encode(wav, &dir.join(name), args),
    };
    vec![
        Encoded {
            format: Format::Wav,
            lossy: false,
            path: wav.to_path_buf(),
        },
        e("t.flac", &["-c:a", "flac"], Format::Flac, false),
        e(
            "t.mp3",
            &["-c:a", "libmp3lame", "-b:a", "192k"],
            Format::Mp3,
            true,
        ),
        e(
            "t.ogg",
            &["-c:a", "libvorbis", "-q:a", "6"],
            Format::Ogg,
            true,
        ),
        e("t.m4a", &["-c:a", "aac", "-b:a", "192k"], Format::M4a, true),
    ]
}

#[test]
fn every_container_decodes_to_the_same_measurements() {
    let dir = tempfile::tempdir().unwrap();
    for (rate, channels) in [(44_100u32, 2usize), (48_000, 1)] {
        let mut signal = music(rate, 12.0);
        signal.channels.truncate(channels);
        let wav = signal.write_i16(&dir.path().join("t.wav"));
        let reference = analyze(&wav).unwrap().analysis;
        for e in encodings(dir.path(), &wav) {
            let what = format!("{:?} {rate} Hz {channels} ch", e.format);
            let p = probe(&e.path).unwrap();
            assert_eq!(p.format, e.format, "{what}");
            assert_eq!(p.sample_rate, rate, "{what}");
            assert_eq!(usize::from(p.channels), channels, "{what}");
            assert_near(
                &format!("{what}: probed duration"),
                p.duration_seconds,
                12.0,
                0.1,
            );

            let a = analyze(&e.path).unwrap().analysis;
            assert_eq!(a.decode_errors, 0, "{what}");
            assert_eq!(
                (a.sample_rate, usize::from(a.channels)),
                (rate, channels),
                "{what}"
            );
            let (loudness, peak, duration) = if e.lossy {
                (0.3, 1.0, 0.1)
            } else {
                (1e-6, 1e-6, 1e-9)
            };
            assert_near(
                &format!("{what}: duration"),
                a.duration_seconds,
                12.0,
                duration,
            );
            assert_near(
                &format!("{what}: loudness"),
                a.loudness_lufs.unwrap(),
                reference.loudness_lufs.unwrap(),
                loudness,
            );
            assert_near(
                &format!("{what}: true peak"),
                a.true_peak_dbtp.unwrap(),
                reference.true_peak_dbtp.unwrap(),
                peak,
            );
            assert_near(
                &format!("{what}: RMS"),
                a.rms_dbfs.unwrap(),
                reference.rms_dbfs.unwrap(),
                loudness,
            );
            // The two seconds of silence in the middle, wherever the
            // encoder's delay puts them.
            assert_eq!(
                a.silence.segments.len(),
                1,
                "{what}: {:?}",
                a.silence.segments
            );
            assert_near(
                &format!("{what}: silence"),
                a.silence.segments[0].start,
                4.0,
                0.1,
            );
            assert_near(
                &format!("{what}: silence"),
                a.silence.segments[0].end,
                6.0,
                0.1,
            );
        }
    }
}

/// The extension is not evidence: each file renamed to another format's
/// extension (or none) is still what its bytes say.
#[test]
fn the_format_comes_from_the_bytes_not_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let wav = music(44_100, 3.0).write_i16(&dir.path().join("t.wav"));
    let encoded = encodings(dir.path(), &wav);
    for (i, e) in encoded.iter().enumerate() {
        for name in ["renamed.wav", "renamed.mp3", "renamed"] {
            let renamed = dir.path().join(format!("{i}-{name}"));
            std::fs::copy(&e.path, &renamed).unwrap();
            assert_eq!(probe(&renamed).unwrap().format, e.format, "{name}");
        }
    }
}

/// palaver's meter against ffmpeg's (libavfilter's ebur128, an
/// independent implementation) on tones, noise, chords and music.
#[test]
fn loudness_and_true_peak_agree_with_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let chord = |t: f64| {
        [261.63, 329.63, 392.0, 523.25]
            .iter()
            .map(|f| 0.15 * (2.0 * std::f64::consts::PI * f * t).sin())
            .sum::<f64>() as f32
    };
    let signals = [
        ("sine −23", Signal::new(48_000, 2).tone(1000.0, -23.0, 10.0)),
        (
            "sine 5 kHz −9",
            Signal::new(44_100, 1).tone(5000.0, -9.0, 10.0),
        ),
        (
            "noise bursts",
            Signal::new(44_100, 2)
                .soft_noise(0.7, 4000.0, 1.0, 3)
                .silence(1.0)
                .soft_noise(0.2, 8000.0, 2.0, 5)
                .silence(0.5)
                .soft_noise(0.9, 2000.0, 1.5, 9),
        ),
        // White noise (flat to Nyquist) only for loudness: where its
        // energy sits, near fs/2, each true-peak meter's interpolation
        // filter answers differently (BS.1770-4 prescribes only a minimum).
        ("white noise", Signal::new(48_000, 2).noise(0.5, 5.0, 21)),
        ("chord", Signal::new(48_000, 2).with(8.0, |_, t| chord(t))),
        ("music", music(44_100, 20.0)),
    ];
    for (name, signal) in signals {
        let wav = signal.write_f32(&dir.path().join("x.wav"));
        let ours = analyze(&wav).unwrap().analysis;
        let theirs = ffmpeg_ebur128(&wav);
        // The figures docs/BENCHMARKS.md quotes (`-- --nocapture`).
        eprintln!(
            "{name}: integrated {:.2} vs ffmpeg {:.1} LUFS; true peak {:.2} vs ffmpeg {:.1} dBTP",
            ours.loudness_lufs.unwrap_or(f64::NAN),
            theirs.integrated,
            ours.true_peak_dbtp.unwrap_or(f64::NAN),
            theirs.true_peak
        );
        assert_near(
            &format!("{name}: integrated"),
            ours.loudness_lufs.unwrap(),
            theirs.integrated,
            0.2,
        );
        if name == "white noise" {
            continue;
        }
        assert_near(
            &format!("{name}: true peak"),
            ours.true_peak_dbtp.unwrap(),
            theirs.true_peak,
            0.3,
        );
    }
}

/// An MP3 without a Xing/LAME header states no length: `probe` sums its
/// frames' durations (reading, not decoding, the file).
#[test]
fn probe_finds_the_length_of_an_mp3_without_a_xing_header() {
    let dir = tempfile::tempdir().unwrap();
    let wav = music(44_100, 7.5).write_i16(&dir.path().join("t.wav"));
    let mp3 = encode(
        &wav,
        &dir.path().join("t.mp3"),
        &["-c:a", "libmp3lame", "-write_xing", "0"],
    );
    let p = probe(&mp3).unwrap();
    assert_eq!(p.format, Format::Mp3);
    // Without the header the encoder's delay and padding stay in (≈ 50 ms).
    assert_near("probed", p.duration_seconds, 7.5, 0.1);
    let a = analyze(&mp3).unwrap().analysis;
    assert_near("decoded", a.duration_seconds, p.duration_seconds, 0.03);
}

/// Two Ogg Vorbis streams one after the other (a chained file, which
/// symphonia announces with `ResetRequired`): both are measured.
#[test]
fn a_chained_ogg_file_is_measured_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let a = Signal::new(44_100, 2)
        .tone(440.0, -20.0, 4.0)
        .write_i16(&dir.path().join("a.wav"));
    let b = Signal::new(44_100, 2)
        .tone(880.0, -20.0, 3.0)
        .write_i16(&dir.path().join("b.wav"));
    let a = encode(&a, &dir.path().join("a.ogg"), &["-c:a", "libvorbis"]);
    let b = encode(&b, &dir.path().join("b.ogg"), &["-c:a", "libvorbis"]);
    let mut chained = std::fs::read(a).unwrap();
    chained.extend(std::fs::read(b).unwrap());
    let path = dir.path().join("ab.ogg");
    std::fs::write(&path, chained).unwrap();
    let analysis = analyze(&path).unwrap().analysis;
    assert_eq!(analysis.decode_errors, 0);
    assert_near("duration", analysis.duration_seconds, 7.0, 0.05);
    // Both halves at −20 dBFS: the centroid between 440 and 880 Hz.
    let centroid = analysis.spectral_centroid_hz.unwrap();
    assert!(centroid > 500.0 && centroid < 800.0, "{centroid}");
}

/// Files from a music library carry cover art, often larger than the
/// probe's scan (an ID3v2 frame before the MP3's first frame, a FLAC
/// PICTURE block, an MP4 `covr` atom): the audio is found after it.
#[test]
fn cover_art_before_the_audio_does_not_hide_it() {
    let dir = tempfile::tempdir().unwrap();
    let cover = dir.path().join("cover.png");
    let made = std::process::Command::new(crate::support::ffmpeg())
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("nullsrc=s=1000x1000,geq=random(1)*255:128:128")
        .args(["-frames:v", "1"])
        .arg(&cover)
        .status()
        .unwrap();
    assert!(made.success());
    assert!(
        std::fs::metadata(&cover).unwrap().len() > 1_000_000,
        "a noisy, large image"
    );
    let wav = music(44_100, 5.0).write_i16(&dir.path().join("t.wav"));
    for (name, codec, format) in [
        ("t.mp3", "libmp3lame", Format::Mp3),
        ("t.flac", "flac", Format::Flac),
        ("t.m4a", "aac", Format::M4a),
    ] {
        let plain = encode(&wav, &dir.path().join(name), &["-c:a", codec]);
        let with_art = dir.path().join(format!("art-{name}"));
        let out = std::process::Command::new(crate::support::ffmpeg())
            .args(["-v", "error", "-y", "-i"])
            .arg(&plain)
            .arg("-i")
            .arg(&cover)
            .args([
                "-map",
                "0",
                "-map",
                "1",
                "-c",
                "copy",
                "-disposition:v",
                "attached_pic",
            ])
            .arg(&with_art)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(std::fs::metadata(&with_art).unwrap().len() > 1_000_000);
        assert_eq!(probe(&with_art).unwrap().format, format, "{name}");
        let a = analyze(&with_art).unwrap().analysis;
        let b = analyze(&plain).unwrap().analysis;
        assert_eq!(a, b, "{name}: the same measurements with and without art");
    }
}
