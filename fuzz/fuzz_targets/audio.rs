//! Audio decoding and analysis of corrupted files: the bytes as an
//! uploaded file through `palaver_audio::probe` (the container sniffed,
//! decoded to the first audio) and, when it is accepted, through
//! `palaver_audio::analyze` (the whole decode and every measurement),
//! the two calls the server makes on an upload and its analysis. What the
//! analysis returns must keep the documented ranges and serialize as the
//! server stores it.
//!
//! Input: the file, at most 64 KiB (a bound on each run's time: the
//! decoders' work grows with the file). A few kilobytes can state hours of
//! audio (FLAC's constant subframes), so the target bounds the samples as
//! the server does (`storage.max_track_duration`: refused when the probe
//! states more, `analyze_at_most` stopping at the bound), at
//! [`MAX_SAMPLES`] rather than the server's default 3 hours of stereo
//! 48 kHz: the same code runs, and no single input takes seconds.
#![no_main]

use std::cell::OnceCell;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

const MAX_BYTES: usize = 64 << 10;
/// About 2 minutes of stereo 48 kHz audio.
const MAX_SAMPLES: u64 = 12_000_000;

thread_local! {
    static FILE: OnceCell<PathBuf> = const { OnceCell::new() };
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_BYTES {
        return;
    }
    let path = FILE.with(|f| {
        f.get_or_init(|| palaver_fuzz::scratch_dir().join("upload"))
            .clone()
    });
    std::fs::write(&path, data).expect("scratch file");
    match palaver_audio::probe(&path) {
        Ok(probe) if probe.samples() <= MAX_SAMPLES => {}
        _ => return,
    }
    let Ok(report) = palaver_audio::analyze_at_most(&path, MAX_SAMPLES) else {
        return;
    };
    let a = &report.analysis;
    assert!(a.duration_seconds.is_finite() && a.duration_seconds > 0.0);
    assert!(
        (0.0..=1.0).contains(&a.silence.ratio),
        "silence ratio {}",
        a.silence.ratio
    );
    assert!(
        (0.0..=1.0).contains(&a.clipping.ratio),
        "clipping ratio {}",
        a.clipping.ratio
    );
    for segment in &a.silence.segments {
        assert!(segment.start <= segment.end, "{segment:?}");
    }
    let o = &report.overview;
    assert!(
        o.envelope.len() <= 2000,
        "{} envelope points",
        o.envelope.len()
    );
    for [min, max] in &o.envelope {
        assert!(
            (-1.0..=1.0).contains(min) && (-1.0..=1.0).contains(max),
            "{min} {max}"
        );
    }
    // What the TrackAnalyst stores, and `GET /api/tracks/{id}/` reads back.
    for json in [
        serde_json::to_string(&report.analysis).expect("analysis serializes"),
        serde_json::to_string(&report.overview).expect("overview serializes"),
    ] {
        serde_json::from_str::<serde_json::Value>(&json).expect("stored document parses");
    }
});
