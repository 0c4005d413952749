//! The audio tools: what the agent can say about the session's track, read
//! from its analysis (computed once at upload, API.md §6; a tool never
//! decodes audio). Each tool picks the numbers a question needs, then puts
//! them in words a musician can act on (streaming loudness targets, true
//! peak headroom, how dynamic, how bright).

use serde_json::{json, Value};

use super::tools::{Tool, ToolInput};

/// The loudness most streaming services normalise to (Spotify, YouTube,
/// Tidal: −14 LUFS integrated).
const STREAMING_LUFS: f64 = -14.0;
/// The true-peak ceiling streaming services ask for, for lossy encoding.
const STREAMING_TRUE_PEAK: f64 = -1.0;

/// Every audio tool, in the order they answer.
pub fn audio_tools() -> Vec<std::sync::Arc<dyn Tool>> {
    vec![
        std::sync::Arc::new(TrackInfo),
        std::sync::Arc::new(Tempo),
        std::sync::Arc::new(Loudness),
        std::sync::Arc::new(Peaks),
        std::sync::Arc::new(Clipping),
        std::sync::Arc::new(Dynamics),
        std::sync::Arc::new(Silence),
        std::sync::Arc::new(Spectrum),
    ]
}

/// What the builtin engine says when a question about a track fits no tool.
pub const TRACK_HELP: &str = "I can measure this track: its tempo, loudness (LUFS, for \
streaming), peaks and true peak, clipping, dynamics (loudness range), silences, \
brightness (spectral centroid), and its duration and format. Try \"what's the tempo?\", \
\"how loud is it for streaming?\", \"is it clipping?\" or \"give me an overview\".";

/// Whether the question asks for everything at once.
fn wants_everything(q: &str) -> bool {
    [
        "everything",
        "overview",
        "all the numbers",
        "all measurements",
        "full analysis",
        "analyze",
        "analyse",
        "analysis",
        "tell me about",
        "describe the track",
        "describe this track",
        "how does it look",
        "summary of the track",
        "summarize the track",
        "summarise the track",
    ]
    .iter()
    .any(|w| q.contains(w))
}

fn any(q: &str, words: &[&str]) -> bool {
    words.iter().any(|w| q.contains(w))
}

/// A level in dB with one decimal and a real minus sign; "−∞" for none.
fn db(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => {
            let x = (x * 10.0).round() / 10.0;
            let x = if x == 0.0 { 0.0 } else { x };
            if x < 0.0 {
                format!("−{:.1}", -x)
            } else if x > 0.0 && !v.is_null() {
                format!("+{x:.1}")
            } else {
                format!("{x:.1}")
            }
        }
        None => "−∞".to_string(),
    }
}

/// LUFS and LU values are printed without a sign for positives.
fn lu(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x < 0.0 => format!("−{:.1}", -((x * 10.0).round() / 10.0)),
        Some(x) => format!("{:.1}", (x * 10.0).round() / 10.0),
        None => "−∞".to_string(),
    }
}

/// "3:25" or "12.5 s".
fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        let total = seconds.round() as u64;
        format!("{}:{:02}", total / 60, total % 60)
    }
}

/// "0:04.0".
fn timestamp(seconds: f64) -> String {
    let minutes = (seconds / 60.0).floor();
    format!("{}:{:04.1}", minutes as u64, seconds - minutes * 60.0)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p > 0.0 && p < 0.01 {
        "under 0.01 %".to_string()
    } else if p < 1.0 {
        format!("{p:.2} %")
    } else {
        format!("{p:.0} %")
    }
}

/// The analysis of the session's track, or why there is none.
fn analysis(input: &ToolInput) -> Result<&Value, String> {
    input.track_analysis()
}

pub struct TrackInfo;

impl Tool for TrackInfo {
    fn name(&self) -> &'static str {
        "track_info"
    }
    fn description(&self) -> &'static str {
        "The track's file format, duration, sample rate and number of channels."
    }
    fn wanted(&self, q: &str) -> bool {
        wants_everything(q)
            || any(
                q,
                &[
                    "duration",
                    "length",
                    "how long",
                    "format",
                    "sample rate",
                    "samplerate",
                    "channel",
                    "stereo",
                    "mono",
                    "codec",
                    "file type",
                    "what file",
                ],
            )
    }
    fn call(&self, input: &ToolInput) -> Result<Value, String> {
        let a = analysis(input)?;
        Ok(json!({
            "format": input.track_format(),
            "duration_seconds": a["duration_seconds"],
            "sample_rate": a["sample_rate"],
            "channels": a["channels"],
        }))
    }
    fn describe(&self, r: &Value) -> String {
        let channels = match r["channels"].as_u64() {
            Some(1) => "mono".to_string(),
            Some(2) => "stereo".to_string(),
            Some(n) => format!("{n}-channel"),
            None => "audio".to_string(),
        };
        let rate = r["sample_rate"].as_f64().unwrap_or(0.0) / 1000.0;
        format!(
            "The track is {} long: {channels} {} at {} kHz.",
            duration(r["duration_seconds"].as_f64().unwrap_or(0.0)),
            r["format"].as_str().unwrap_or("audio").to_uppercase(),
            if rate.fract() == 0.0 {
                format!("{rate:.0}")
            } else {
                format!("{rate:.1}")
            },
        )
    }
}

pub struct Tempo;

impl Tool for Tempo {
    fn name(&self) -> &'static str {
        "tempo"
    }
    fn description(&self) -> &'static str {
        "The track's tempo in beats per minute (null when there is no steady beat)."
    }
    fn wanted(&self, q: &str) -> bool {
        wants_everything(q)
            || any(
                q,
                &[
                    "tempo",
                    "bpm",
                    "beats per minute",
                    "speed",
                    "how fast",
                    "beat",
                ],
            )
    }
    fn call(&self, input: &ToolInput) -> Result<Value, String> {
        let a = analysis(input)?;
        Ok(json!({ "tempo_bpm": a["tempo_bpm"].as_f64().map(round1) }))
    }
    fn describe(&self, r: &Value) -> String {
        match r["tempo_bpm"].as_f64() {
            Some(bpm) => format!("The tempo is about {:.0} BPM.", bpm),
            None => "I found no steady beat, so the track has no tempo I can state.".into(),
        }
    }
}

pub struct Loudness;

impl Tool for Loudness {
    fn name(&self) -> &'static str {
        "loudness"
    }
    fn description(&self) -> &'static str {
        "Integrated loudness (LUFS, ITU-R BS.1770-4 / EBU R 128) and true peak (dBTP), compared with the −14 LUFS streaming services normalise to."
    }
    fn wanted(&self, q: &str) -> bool {
        wants_everything(q)
            || any(
                q,
                &[
                    "loud",
                    "lufs",
                    "volume",
                    "streaming",
                    "spotify",
                    "youtube",
                    "normaliz",
                    "normalis",
                    "quiet",
                    "level",
                ],
            )
    }
    fn call(&self, input: &ToolInput) -> Result<Value, String> {
        let a = analysis(input)?;
        let lufs = a["loudness_lufs"].as_f64();
        Ok(json!({
            "loudness_lufs": lufs.map(round1),
            "true_peak_dbtp": a["true_peak_dbtp"].as_f64().map(round1),
            "streaming_target_lufs": STREAMING_LUFS,
            "streaming_gain_db": lufs.map(|l| round1(STREAMING_LUFS - l)),
        }))
    }
    fn describe(&self, r: &Value) -> String {
        let Some(lufs) = r["loudness_lufs"].as_f64() else {
            return "The track is silent: it has no measurable loudness.".into();
        };
        let mut out = format!("Integrated loudness is {} LUFS", lu(&r["loudness_lufs"]));
        let tp = r["true_peak_dbtp"].as_f64();
        if tp.is_some() {
            out.push_str(&format!(
                " with a true peak of {} dBTP",
                db(&r["true_peak_dbtp"])
            ));
        }
        let gain = STREAMING_LUFS - lufs;
        if gain < -1.0 {
            out.push_str(&format!(
                ", so streaming services will turn it down by about {:.0} dB",
                -gain
            ));
        } else if gain > 1.0 {
            out.push_str(&format!(
                ", {:.0} dB under the −14 LUFS streaming services play at, so it will sound quieter than most tracks there (some services turn it up, others do not)",
                gain
            ));
        } else {
            out.push_str(", right at the −14 LUFS streaming services play at");
        }
        match tp {
            Some(tp) if tp > STREAMING_TRUE_PEAK => out.push_str(&format!(
                ", and the true peak is above the {} dBTP they ask for, so it may clip after lossy encoding.",
                db(&json!(STREAMING_TRUE_PEAK))
            )),
            _ => out.push('.'),
        }
        out
    }
}

pub struct Peaks;

impl Tool for Peaks {
    fn name(&self) -> &'static str {
        "peaks"
    }
    fn description(&self) -> &'static str {
        "Sample peak (dBFS), true peak (dBTP, oversampled per BS.1770-4) and the headroom they leave."
    }
    fn wanted(&self, q: &str) -> bool {
        wants_everything(q) || any(q, &["peak", "headroom", "ceiling", "dbtp", "dbfs"])
    }
    fn call(&self, input: &ToolInput) -> Result<Value, String> {
        let a = analysis(input)?;
        Ok(json!({
            "peak_dbfs": a["peak_dbfs"].as_f64().map(round1),
            "true_peak_dbtp": a["true_peak_dbtp"].as_f64().map(round1),
        }))
    }
    fn describe(&self, r: &Value) -> String {
        let (Some(peak), Some(tp)) = (r["peak_dbfs"].as_f64(), r["true_peak_dbtp"].as_f64()) else {
            return "The track is silent: it has no peaks.".into();
        };
        let mut out = format!(
            "The sample peak is {} dBFS and the true peak {} dBTP",
            db(&r["peak_dbfs"]),
            db(&r["true_peak_dbtp"])
        );
        if tp > 0.0 {
            out.push_str(": the waveform between samples goes over full scale, which clips on playback and after encoding.");
        } else if tp > STREAMING_TRUE_PEAK {
            out.push_str(": less than 1 dB of headroom, tight for lossy encoding.");
        } else {
            out.push_str(&format!(": {:.1} dB of headroom.", -tp));
        }
        if tp - peak >= 0.5 {
            out.push_str(&format!(
                " The true peak is {:.1} dB above the sample peak: inter-sample peaks.",
                tp - peak
            ));
        }
        out
    }
}

pub struct Clipping;

impl Tool for Clipping {
    fn name(&self) -> &'static str {
        "clipping"
    }
    fn description(&self) -> &'static str {
        "Clipped samples (runs of 3 or more at full scale) and their share of all samples."
    }
    fn wanted(&self, q: &str) -> bool {
        wants_everything(q) || any(q, &["clip", "distort", "overload", "crackl", "square"])
    }
    fn call(&self, input: &ToolInput) -> Result<Value, String> {
        let a = analysis(input)?;
        Ok(json!({
            "clipped_samples": a["clipping"]["clipped_samples"],
            "ratio": a["clipping"]["ratio"],
            "true_peak_dbtp": a["true_peak_dbtp"].as_f64().map(round1),
        }))
    }
    fn describe(&self, r: &Value) -> String {
        let clipped = r["clipped_samples"].as_u64().unwrap_or(0);
        if clipped == 0 {
            let mut out = "No clipping: no run of samples sits at full scale.".to_string();
            if r["true_peak_dbtp"].as_f64().is_some_and(|tp| tp > 0.0) {
                out.push_str(
                    " But the true peak is over 0 dBTP, so it may clip once converted or encoded.",
                );
            }
            return out;
        }
        format!(
            "{} clipped ({} of all samples, in runs of 3 or more at full scale): it distorts; lower the level before the limiter.",
            if clipped == 1 { "1 sample is".to_string() } else { format!("{clipped} samples are") },
            percent(r["ratio"].as_f64().unwrap_or(0.0))
        )
    }
}

pub struct Dynamics;

impl Tool for Dynamics {
    fn name(&self) -> &'static str {
        "dynamics"
    }
    fn description(&self) -> &'static str {
        "Loudness range (LU, EBU Tech 3342), RMS level (dBFS) and crest factor (peak to RMS, dB)."
    }
    fn wanted(&self, q: &str) -> bool {
        wants_everything(q)
            || any(
                q,
                &[
                    "dynamic",
                    "loudness range",
                    "lra",
                    "compress",
                    "crest",
                    "rms",
                    "punch",
                ],
            )
    }
    fn call(&self, input: &ToolInput) -> Result<Value, String> {
        let a = analysis(input)?;
        let crest = match (a["peak_dbfs"].as_f64(), a["rms_dbfs"].as_f64()) {
            (Some(peak), Some(rms)) => Some(round1(peak - rms)),
            _ => None,
        };
        Ok(json!({
            "loudness_range_lu": a["loudness_range_lu"].as_f64().map(round1),
            "rms_dbfs": a["rms_dbfs"].as_f64().map(round1),
            "crest_factor_db": crest,
        }))
    }
    fn describe(&self, r: &Value) -> String {
        let Some(lra) = r["loudness_range_lu"].as_f64() else {
            return "The track is silent: it has no dynamics to measure.".into();
        };
        let verdict = if lra < 4.0 {
            "very even: heavily compressed or a steady sound"
        } else if lra < 8.0 {
            "moderate, typical of pop and rock masters"
        } else if lra < 15.0 {
            "wide, with quiet and loud passages"
        } else {
            "very wide, like film or classical music"
        };
        let mut out = format!(
            "The loudness range is {} LU: {verdict}.",
            lu(&r["loudness_range_lu"])
        );
        if let (Some(_), Some(crest)) = (r["rms_dbfs"].as_f64(), r["crest_factor_db"].as_f64()) {
            out.push_str(&format!(
                " RMS level is {} dBFS, {:.1} dB below the peak.",
                db(&r["rms_dbfs"]),
                crest
            ));
        }
        out
    }
}

pub struct Silence;

impl Tool for Silence {
    fn name(&self) -> &'static str {
        "silence"
    }
    fn description(&self) -> &'static str {
        "Silent stretches (below −60 dBFS for at least 0.5 s): where they are and their share of the track."
    }
    fn wanted(&self, q: &str) -> bool {
        wants_everything(q)
            || any(
                q,
                &[
                    "silen",
                    "gap",
                    "pause",
                    "intro",
                    "outro",
                    "dead air",
                    "quiet part",
                ],
            )
    }
    fn call(&self, input: &ToolInput) -> Result<Value, String> {
        let a = analysis(input)?;
        Ok(json!({
            "ratio": a["silence"]["ratio"],
            "segments": a["silence"]["segments"],
            "duration_seconds": a["duration_seconds"],
        }))
    }
    fn describe(&self, r: &Value) -> String {
        let segments = r["segments"].as_array().cloned().unwrap_or_default();
        if segments.is_empty() {
            return "There is no silence: nothing stays below −60 dBFS for half a second.".into();
        }
        let span = |s: &Value| {
            (
                s["start"].as_f64().unwrap_or(0.0),
                s["end"].as_f64().unwrap_or(0.0),
            )
        };
        let total: f64 = segments.iter().map(|s| span(s).1 - span(s).0).sum();
        let mut out = format!(
            "{} below −60 dBFS, {:.1} s in all ({} of the track)",
            if segments.len() == 1 {
                "There is 1 silent stretch".to_string()
            } else {
                format!("There are {} silent stretches", segments.len())
            },
            total,
            percent(r["ratio"].as_f64().unwrap_or(0.0))
        );
        let listed: Vec<String> = segments
            .iter()
            .take(5)
            .map(|s| {
                let (a, b) = span(s);
                format!("{}–{}", timestamp(a), timestamp(b))
            })
            .collect();
        out.push_str(&format!(": {}", listed.join(", ")));
        if segments.len() > 5 {
            out.push_str(", …");
        }
        out.push('.');
        if let Some(first) = segments.first().map(span).filter(|(a, _)| *a < 0.05) {
            out.push_str(&format!(
                " The track opens with {:.1} s of silence.",
                first.1
            ));
        }
        let end = r["duration_seconds"].as_f64().unwrap_or(0.0);
        if let Some(last) = segments.last().map(span).filter(|(_, b)| end - b < 0.05) {
            out.push_str(&format!(" It ends with {:.1} s of silence.", end - last.0));
        }
        out
    }
}

pub struct Spectrum;

impl Tool for Spectrum {
    fn name(&self) -> &'static str {
        "spectrum"
    }
    fn description(&self) -> &'static str {
        "Spectral centroid (Hz): where the track's energy sits, from dark to bright."
    }
    fn wanted(&self, q: &str) -> bool {
        wants_everything(q)
            || any(
                q,
                &[
                    "bright", "dark", "spectr", "centroid", "frequenc", "treble", "bass", "muddy",
                    "harsh", "tone", "timbre", "eq",
                ],
            )
    }
    fn call(&self, input: &ToolInput) -> Result<Value, String> {
        let a = analysis(input)?;
        Ok(json!({ "spectral_centroid_hz": a["spectral_centroid_hz"].as_f64().map(f64::round) }))
    }
    fn describe(&self, r: &Value) -> String {
        let Some(hz) = r["spectral_centroid_hz"].as_f64() else {
            return "The track is silent: it has no spectrum to speak of.".into();
        };
        let verdict = if hz < 800.0 {
            "dark and bass-heavy"
        } else if hz < 1_500.0 {
            "warm"
        } else if hz < 3_000.0 {
            "balanced"
        } else if hz < 5_000.0 {
            "bright"
        } else {
            "very bright, even harsh"
        };
        format!("The spectral centroid is at {hz:.0} Hz: the track sounds {verdict}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::tools::tools_for;
    use palaver_storage::{NewTrack, Store, StoreConfig, TrackAnalysis, UserId};
    use std::io::Write;

    /// A store on disk holding one track of `user`, and a session bound to it.
    async fn session_with_track(
        dir: &std::path::Path,
        analysis: Option<Value>,
    ) -> (Store, palaver_storage::Session) {
        let store = Store::open(&StoreConfig {
            path: dir.to_path_buf(),
            cache_bytes: 8 << 20,
            fsync: false,
        })
        .unwrap();
        let user = UserId::new();
        let (staged, mut file) = store.tracks().stage().unwrap();
        file.write_all(b"audio").unwrap();
        let track = store
            .tracks()
            .create(
                staged,
                NewTrack {
                    user_id: user,
                    filename: "t.flac".into(),
                    size_bytes: 5,
                    format: "flac".into(),
                    duration_seconds: 30.0,
                    sample_rate: 48_000,
                    channels: 2,
                },
                10,
            )
            .await
            .unwrap();
        if let Some(analysis) = analysis {
            store
                .tracks()
                .finish_analysis(
                    track.id,
                    Ok(TrackAnalysis {
                        analysis: analysis.to_string(),
                        overview: "{}".into(),
                    }),
                )
                .await
                .unwrap();
        }
        let session = store
            .sessions()
            .create(user, "s".into(), Some(track.id))
            .await
            .unwrap();
        (store, session)
    }

    #[tokio::test]
    async fn tools_read_the_session_tracks_analysis_or_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let analysis = json!({
            "duration_seconds": 30.0, "sample_rate": 48000, "channels": 2,
            "loudness_lufs": -9.84, "loudness_range_lu": 4.2, "peak_dbfs": -0.3,
            "true_peak_dbtp": 0.41, "rms_dbfs": -11.0, "tempo_bpm": 123.96,
            "silence": {"ratio": 0.0, "segments": []},
            "clipping": {"clipped_samples": 0, "ratio": 0.0},
            "spectral_centroid_hz": 2100.4,
        });
        let (store, session) = session_with_track(dir.path(), Some(analysis)).await;
        let input = ToolInput::new(store.clone(), session.clone(), "tempo?".into());
        assert_eq!(Tempo.call(&input).unwrap(), json!({"tempo_bpm": 124.0}));
        let loudness = Loudness.call(&input).unwrap();
        assert_eq!(loudness["loudness_lufs"], -9.8);
        assert_eq!(loudness["true_peak_dbtp"], 0.4);
        assert_eq!(loudness["streaming_gain_db"], -4.2);
        assert_eq!(
            TrackInfo.call(&input).unwrap(),
            json!({"format": "flac", "duration_seconds": 30.0, "sample_rate": 48000, "channels": 2})
        );
        // Offered as function tools: the audio tools, then the conversation's.
        let names: Vec<_> = tools_for(&session).iter().map(|t| t.name()).collect();
        assert_eq!(&names[..2], ["track_info", "tempo"]);
        assert!(names.contains(&"message_count"));

        // Pending, deleted, no track at all: an error in words.
        let dir = tempfile::tempdir().unwrap();
        let (store, session) = session_with_track(dir.path(), None).await;
        let input = ToolInput::new(store.clone(), session.clone(), "tempo?".into());
        assert!(Tempo
            .call(&input)
            .unwrap_err()
            .contains("still being analysed"));
        store
            .tracks()
            .delete(session.track_id.unwrap())
            .await
            .unwrap();
        let input = ToolInput::new(store.clone(), session.clone(), "tempo?".into());
        assert!(Tempo.call(&input).unwrap_err().contains("deleted"));
        let bare = store
            .sessions()
            .create(session.user_id, "s".into(), None)
            .await
            .unwrap();
        assert!(tools_for(&bare).iter().all(|t| t.name() != "tempo"));
        let input = ToolInput::new(store, bare, "tempo?".into());
        assert!(Tempo.call(&input).unwrap_err().contains("no track"));
    }

    fn pick(q: &str) -> Vec<&'static str> {
        audio_tools()
            .iter()
            .filter(|t| t.wanted(&q.to_lowercase()))
            .map(|t| t.name())
            .collect()
    }

    #[test]
    fn questions_map_to_tools() {
        assert_eq!(pick("What's the tempo?"), ["tempo"]);
        assert_eq!(pick("how many BPM is this"), ["tempo"]);
        assert_eq!(pick("How loud is it for streaming?"), ["loudness"]);
        assert_eq!(pick("is it clipping?"), ["clipping"]);
        assert_eq!(pick("any distortion?"), ["clipping"]);
        assert_eq!(pick("what's the true peak"), ["peaks"]);
        assert_eq!(pick("is there silence in the intro?"), ["silence"]);
        assert_eq!(pick("how long is it"), ["track_info"]);
        assert_eq!(pick("sample rate and channels?"), ["track_info"]);
        assert_eq!(pick("is it too bright?"), ["spectrum"]);
        assert_eq!(pick("how dynamic is the master?"), ["dynamics"]);
        assert_eq!(pick("give me an overview").len(), audio_tools().len());
        assert_eq!(pick("tell me everything").len(), audio_tools().len());
        assert!(pick("who wrote this song?").is_empty());
    }

    #[test]
    fn loudness_is_put_against_streaming_targets() {
        let hot = json!({"loudness_lufs": -9.8, "true_peak_dbtp": 0.4});
        let text = Loudness.describe(&hot);
        assert!(
            text.starts_with("Integrated loudness is −9.8 LUFS with a true peak of +0.4 dBTP"),
            "{text}"
        );
        assert!(text.contains("turn it down by about 4 dB"), "{text}");
        assert!(text.contains("may clip after lossy encoding"), "{text}");
        let quiet = Loudness.describe(&json!({"loudness_lufs": -23.0, "true_peak_dbtp": -20.0}));
        assert!(quiet.contains("9 dB under the −14 LUFS"), "{quiet}");
        assert!(!quiet.contains("clip"), "{quiet}");
        let silent = Loudness.describe(&json!({"loudness_lufs": null, "true_peak_dbtp": null}));
        assert!(silent.contains("silent"), "{silent}");
    }

    #[test]
    fn descriptions_carry_the_numbers() {
        assert_eq!(
            Tempo.describe(&json!({"tempo_bpm": 123.6})),
            "The tempo is about 124 BPM."
        );
        assert!(Tempo
            .describe(&json!({"tempo_bpm": null}))
            .contains("no steady beat"));
        assert_eq!(
            TrackInfo.describe(&json!({"format": "wav", "duration_seconds": 205.2, "sample_rate": 44100, "channels": 2})),
            "The track is 3:25 long: stereo WAV at 44.1 kHz."
        );
        let clipped = Clipping
            .describe(&json!({"clipped_samples": 1234, "ratio": 0.0005, "true_peak_dbtp": 0.0}));
        assert!(
            clipped.starts_with("1234 samples are clipped (0.05 % of all samples"),
            "{clipped}"
        );
        let silence = Silence.describe(&json!({
            "ratio": 0.25,
            "duration_seconds": 8.0,
            "segments": [{"start": 0.0, "end": 1.0}, {"start": 7.0, "end": 8.0}],
        }));
        assert!(silence.starts_with("There are 2 silent stretches below −60 dBFS, 2.0 s in all (25 % of the track): 0:00.0–0:01.0, 0:07.0–0:08.0."), "{silence}");
        assert!(silence.contains("opens with 1.0 s"), "{silence}");
        assert!(silence.contains("ends with 1.0 s"), "{silence}");
        let peaks = Peaks.describe(&json!({"peak_dbfs": -0.1, "true_peak_dbtp": 0.6}));
        assert!(peaks.contains("over full scale"), "{peaks}");
        assert!(peaks.contains("0.7 dB above the sample peak"), "{peaks}");
        let dynamics = Dynamics.describe(
            &json!({"loudness_range_lu": 5.2, "rms_dbfs": -12.0, "crest_factor_db": 11.0}),
        );
        assert!(dynamics.contains("5.2 LU: moderate"), "{dynamics}");
        assert!(Spectrum
            .describe(&json!({"spectral_centroid_hz": 4200.0}))
            .contains("bright"));
    }
}
