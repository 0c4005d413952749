//! What is not audio, or is broken audio: refused as `NotAudio`, or
//! measured with its bad packets counted, and never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};

use palaver_audio::{analyze, analyze_at_most, probe, AudioError, Format};

use crate::support::{assert_near, encode, music, Rng, Signal};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn assert_not_audio(path: &Path) {
    match probe(path) {
        Err(AudioError::NotAudio(_)) => {}
        other => panic!("probe {}: {other:?}", path.display()),
    }
    match analyze(path) {
        Err(AudioError::NotAudio(_)) => {}
        Err(e) => panic!("analyze {}: {e:?}", path.display()),
        Ok(r) => panic!("analyze {}: {:?}", path.display(), r.analysis),
    }
}

/// A canonical 44-byte PCM WAV header declaring `data_bytes` of 16-bit
/// stereo at 44.1 kHz.
fn wav_header(data_bytes: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(36 + data_bytes).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // PCM
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&44_100u32.to_le_bytes());
    h.extend_from_slice(&(44_100u32 * 4).to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_bytes.to_le_bytes());
    h
}

#[test]
fn text_empty_and_random_files_are_not_audio() {
    let dir = tempfile::tempdir().unwrap();
    let text = "Not a song.\nJust some words, renamed to look like one.\n".repeat(200);
    assert_not_audio(&write(dir.path(), "lyrics.wav", text.as_bytes()));
    assert_not_audio(&write(dir.path(), "empty.mp3", b""));
    assert_not_audio(&write(dir.path(), "tiny.flac", b"fLaC"));
    for seed in [1, 2, 3] {
        let bytes = Rng(seed).bytes(300_000);
        assert_not_audio(&write(dir.path(), &format!("random{seed}.mp3"), &bytes));
    }
}

#[test]
fn a_wav_header_without_data_is_not_audio() {
    let dir = tempfile::tempdir().unwrap();
    assert_not_audio(&write(dir.path(), "nodata.wav", &wav_header(0)));
    // A header promising data that is not there.
    assert_not_audio(&write(dir.path(), "promise.wav", &wav_header(1_000_000)));
}

#[test]
fn impossible_headers_are_not_audio() {
    let dir = tempfile::tempdir().unwrap();
    for (channels, rate) in [
        (0u16, 44_100u32),
        (2, 0),
        (2, 100),
        (2, 4_000_000_000),
        (200, 44_100),
    ] {
        let mut h = wav_header(40_000);
        h[22..24].copy_from_slice(&channels.to_le_bytes());
        h[24..28].copy_from_slice(&rate.to_le_bytes());
        h.extend(Rng(9).bytes(40_000));
        assert_not_audio(&write(dir.path(), "odd.wav", &h));
    }
}

/// Random bytes after a valid WAV header are valid PCM: loud noise, which
/// is measured like any other.
#[test]
fn random_pcm_after_a_valid_header_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = wav_header(441_000);
    bytes.extend(Rng(4).bytes(441_000));
    let path = write(dir.path(), "noise.wav", &bytes);
    let a = analyze(&path).unwrap().analysis;
    assert_near("duration", a.duration_seconds, 2.5, 1e-9);
    assert!(a.peak_dbfs.unwrap() > -0.1);
    assert!(a.loudness_lufs.unwrap() > -10.0);
}

/// A truncated file is measured as far as it goes.
#[test]
fn truncated_wav_and_mp3_are_measured_as_far_as_they_go() {
    let dir = tempfile::tempdir().unwrap();
    let wav = music(44_100, 10.0).write_i16(&dir.path().join("m.wav"));
    let mp3 = encode(
        &wav,
        &dir.path().join("m.mp3"),
        &["-c:a", "libmp3lame", "-b:a", "128k"],
    );
    for (path, format) in [(&wav, Format::Wav), (&mp3, Format::Mp3)] {
        let bytes = std::fs::read(path).unwrap();
        // Cut at 60 % of the file, mid-packet.
        let cut = write(dir.path(), "cut", &bytes[..bytes.len() * 6 / 10 + 3]);
        assert_eq!(probe(&cut).unwrap().format, format);
        let a = analyze(&cut).unwrap().analysis;
        assert_near(
            &format!("{format:?} duration"),
            a.duration_seconds,
            6.0,
            0.15,
        );
        assert!(a.loudness_lufs.is_some());
    }
}

/// Garbage written over the middle of an MP3: where it hits frame
/// headers the demuxer resynchronises on the next frame; where it hits a
/// frame's side information the decoder refuses that packet, which is
/// skipped and counted. Either way the rest is measured.
#[test]
fn a_corrupted_mp3_is_measured_around_its_bad_frames() {
    let dir = tempfile::tempdir().unwrap();
    let wav = Signal::new(44_100, 2)
        .tone(440.0, -12.0, 10.0)
        .write_i16(&dir.path().join("t.wav"));
    let mp3 = encode(
        &wav,
        &dir.path().join("t.mp3"),
        &["-c:a", "libmp3lame", "-b:a", "128k"],
    );
    let clean = analyze(&mp3).unwrap().analysis;
    assert_eq!(clean.decode_errors, 0);
    let original = std::fs::read(&mp3).unwrap();
    let mut rng = Rng(77);

    // Blocks of garbage over whatever is there.
    let mut bytes = original.clone();
    for at in [bytes.len() / 4, bytes.len() / 2, bytes.len() * 3 / 4] {
        bytes[at..at + 700].copy_from_slice(&rng.bytes(700));
    }
    let a = analyze(&write(dir.path(), "blocks.mp3", &bytes))
        .unwrap()
        .analysis;
    assert!(
        a.duration_seconds < clean.duration_seconds,
        "frames were lost: {a:?}"
    );
    assert_near("duration", a.duration_seconds, clean.duration_seconds, 0.5);
    assert_near(
        "loudness",
        a.loudness_lufs.unwrap(),
        clean.loudness_lufs.unwrap(),
        1.0,
    );

    // Ten frames with their side information (after the 4-byte header)
    // overwritten: MPEG-1 layer III at 44.1 kHz without CRC syncs on FF FB.
    let mut bytes = original.clone();
    let third = bytes.len() / 3;
    let frames: Vec<usize> = (third..2 * third)
        .filter(|&i| bytes[i] == 0xFF && bytes[i + 1] == 0xFB)
        .step_by(4)
        .take(10)
        .collect();
    assert_eq!(frames.len(), 10);
    for &at in &frames {
        bytes[at + 4..at + 300].copy_from_slice(&rng.bytes(296));
    }
    let a = analyze(&write(dir.path(), "frames.mp3", &bytes))
        .unwrap()
        .analysis;
    assert!(
        (1..=10).contains(&a.decode_errors),
        "bad packets counted: {a:?}"
    );
    // The bad frames are skipped, and a frame whose bit reservoir lay in
    // one of them may go with it: at most twice as many frames lost.
    let frame_seconds = 1152.0 / 44_100.0;
    assert!(a.duration_seconds < clean.duration_seconds);
    assert_near(
        "duration",
        a.duration_seconds,
        clean.duration_seconds,
        20.0 * frame_seconds,
    );
    assert_near(
        "loudness",
        a.loudness_lufs.unwrap(),
        clean.loudness_lufs.unwrap(),
        1.0,
    );
}

#[test]
fn a_missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone.wav");
    assert!(matches!(probe(&missing), Err(AudioError::Io(_))));
    assert!(matches!(analyze(&missing), Err(AudioError::Io(_))));
}

/// Appending junk to a valid file changes nothing that was before it.
#[test]
fn junk_after_a_valid_mp3_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let wav = Signal::new(48_000, 1)
        .tone(1000.0, -20.0, 5.0)
        .write_i16(&dir.path().join("t.wav"));
    let mp3 = encode(&wav, &dir.path().join("t.mp3"), &["-c:a", "libmp3lame"]);
    let clean = analyze(&mp3).unwrap().analysis;
    let mut f = std::fs::OpenOptions::new().append(true).open(&mp3).unwrap();
    f.write_all(&Rng(5).bytes(50_000)).unwrap();
    drop(f);
    let a = analyze(&mp3).unwrap().analysis;
    assert_near("duration", a.duration_seconds, clean.duration_seconds, 0.1);
    assert_near(
        "loudness",
        a.loudness_lufs.unwrap(),
        clean.loudness_lufs.unwrap(),
        0.1,
    );
}

/// Found by the `audio` fuzz target (fuzz/seeds/audio/): an MS-ADPCM WAV
/// whose block makes symphonia's decoder multiply past `i32`. Builds with
/// overflow checks (this test's) panicked inside the decoder; a release
/// build wraps. Either way the file is refused or measured, never a panic.
#[test]
fn a_decoder_that_panics_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "adpcm.wav",
        include_bytes!("../../../fuzz/seeds/audio/crash-ms-adpcm-overflow.wav"),
    );
    for outcome in [probe(&path).map(drop), analyze(&path).map(drop)] {
        match outcome {
            Ok(()) | Err(AudioError::NotAudio(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// A few kilobytes of FLAC can hold a great deal of audio (constant
/// subframes): `analyze_at_most` stops at its bound on decoded samples
/// instead of measuring all of it, and `Probe::samples` says beforehand what
/// the container states.
#[test]
fn a_small_file_holding_much_audio_stops_at_the_sample_bound() {
    let dir = tempfile::tempdir().unwrap();
    // 20 s of 96 kHz 6-channel silence: 11.52 million samples.
    let wav = Signal::new(96_000, 6)
        .silence(20.0)
        .write_i16(&dir.path().join("quiet.wav"));
    let flac = encode(&wav, &dir.path().join("quiet.flac"), &["-c:a", "flac"]);
    let bytes = std::fs::metadata(&flac).unwrap().len();
    let probed = probe(&flac).unwrap();
    assert_eq!(probed.samples(), 20 * 96_000 * 6);
    assert!(
        bytes * 100 < probed.samples() * 2,
        "the FLAC ({bytes} B) is not much smaller than its samples"
    );

    match analyze_at_most(&flac, 1_000_000) {
        Err(AudioError::TooLong { max_samples }) => assert_eq!(max_samples, 1_000_000),
        other => panic!("expected TooLong, got {other:?}"),
    }
    // Exactly the track's samples is within the bound.
    let report = analyze_at_most(&flac, probed.samples()).unwrap();
    assert_near("duration", report.analysis.duration_seconds, 20.0, 1e-6);
    match analyze_at_most(&flac, probed.samples() - 1) {
        Err(AudioError::TooLong { .. }) => {}
        other => panic!("one sample short of the track: {other:?}"),
    }
}
