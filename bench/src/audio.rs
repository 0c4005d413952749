//! The audio benchmark: palaver-audio's whole analysis of a track against
//! ffmpeg's loudness pass alone (`-af ebur128=peak=true`) on the same
//! file, WAV and MP3, and the peak memory of one analysis for tracks of
//! different lengths (each in a child process of its own).
//!
//! The track is generated (or given with `--file`): a drum pattern, chords
//! and noise, 44.1 kHz stereo 16-bit, never silence. Rounds alternate
//! palaver and ffmpeg so the machine's noise falls on both.

use std::f64::consts::PI;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use crate::median;

/// `audio`: the timing table, then the memory table. `smoke`: a 3-second
/// track, one round, 3- and 6-second tracks for memory (the test suite
/// runs it so the harness cannot rot; it measures nothing).
pub fn run(runs: usize, file: Option<PathBuf>, seconds: f64, smoke: bool) -> Result<()> {
    let (runs, seconds, memory_minutes) = if smoke {
        (1, 3.0, [0.05, 0.1])
    } else {
        (runs, seconds, [1.0, 10.0])
    };
    ensure!(runs > 0, "--runs must be at least 1");
    let dir = tempfile::tempdir()?;
    let wav = match file {
        Some(f) => f,
        None => {
            let path = dir.path().join("track.wav");
            write_music(&path, 44_100, seconds)?;
            path
        }
    };
    let mp3 = dir.path().join("track.mp3");
    ffmpeg_encode(&wav, &mp3)?;
    let probe = palaver_audio::probe(&wav)?;
    println!(
        "track: {} ({:?}, {} Hz, {} ch, {:.1} s), its MP3 at 192 kb/s (libmp3lame); {runs} rounds",
        wav.display(),
        probe.format,
        probe.sample_rate,
        probe.channels,
        probe.duration_seconds
    );
    println!();
    println!("| file | palaver analyze (median, min–max) | decode | loudness | tempo | rest | ffmpeg ebur128=peak=true (median, min–max) | palaver / ffmpeg |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, path) in [("WAV", &wav), ("MP3", &mp3)] {
        // One untimed run of each: the file in the page cache for both.
        palaver_audio::analyze(path)?;
        ffmpeg_ebur128(path)?;
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut steps: Vec<palaver_audio::Timings> = Vec::new();
        for _ in 0..runs {
            let clock = Instant::now();
            let report = palaver_audio::analyze(path)?;
            ours.push(clock.elapsed().as_secs_f64());
            steps.push(report.timings);
            theirs.push(ffmpeg_ebur128(path)?);
        }
        let step = |f: fn(&palaver_audio::Timings) -> f64| median(steps.iter().map(f).collect());
        let (m_ours, m_theirs) = (median(ours.clone()), median(theirs.clone()));
        println!(
            "| {name} | {} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {} | {:.2} |",
            spread(&ours),
            step(|t| t.decode_seconds),
            step(|t| t.loudness_seconds),
            step(|t| t.tempo_seconds),
            step(|t| t.rest_seconds),
            spread(&theirs),
            m_ours / m_theirs
        );
    }

    println!();
    println!(
        "| track | peak RSS (VmHWM) of a process that analyses it | of one that only probes it |"
    );
    println!("|---|---|---|");
    for minutes in memory_minutes {
        let path = dir.path().join(format!("{minutes}min.wav"));
        write_music(&path, 44_100, minutes * 60.0)?;
        let analysed = child_peak(&path, "analyze")?;
        let probed = child_peak(&path, "probe")?;
        println!(
            "| {minutes} min WAV ({:.0} MiB) | {:.1} MiB | {:.1} MiB |",
            std::fs::metadata(&path)?.len() as f64 / 1048576.0,
            analysed as f64 / 1024.0,
            probed as f64 / 1024.0
        );
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

/// `audio-peak` (hidden): one `analyze` (or `probe`) in this process, then
/// its peak resident set in KiB on stdout.
pub fn peak(file: &Path, only_probe: bool) -> Result<()> {
    if only_probe {
        palaver_audio::probe(file)?;
    } else {
        let report = palaver_audio::analyze(file)?;
        ensure!(
            report.analysis.loudness_lufs.is_some(),
            "the track is not silent"
        );
    }
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("no VmHWM in /proc/self/status")?;
    println!("{hwm}");
    Ok(())
}

fn child_peak(file: &Path, what: &str) -> Result<u64> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("audio-peak").arg("--file").arg(file);
    if what == "probe" {
        cmd.arg("--probe");
    }
    let out = cmd.stderr(Stdio::inherit()).output()?;
    ensure!(out.status.success(), "audio-peak failed");
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{:.2} s ({min:.2}–{max:.2})", median(v.to_vec()))
}

/// The loudness pass the design measures against, timed: ffmpeg decoding
/// the file through its ebur128 filter with true peak, nothing written.
fn ffmpeg_ebur128(file: &Path) -> Result<f64> {
    let clock = Instant::now();
    let status = Command::new("ffmpeg")
        .arg("-nostats")
        .arg("-i")
        .arg(file)
        .args(["-af", "ebur128=peak=true", "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("ffmpeg not found: install the Debian package `ffmpeg`")?;
    let elapsed = clock.elapsed().as_secs_f64();
    ensure!(status.success(), "ffmpeg failed on {}", file.display());
    Ok(elapsed)
}

fn ffmpeg_encode(wav: &Path, mp3: &Path) -> Result<()> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(wav)
        .args(["-c:a", "libmp3lame", "-b:a", "192k"])
        .arg(mp3)
        .output()
        .context("ffmpeg not found: install the Debian package `ffmpeg`")?;
    if !out.status.success() {
        bail!("ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Writes `seconds` of a music-like stereo signal as 16-bit PCM WAV,
/// streaming: a kick and snare pattern at 124 BPM, hi-hats of noise, a
/// chord progression of detuned saw-like partials, a bass line.
fn write_music(path: &Path, rate: u32, seconds: f64) -> Result<()> {
    let frames = (seconds * f64::from(rate)) as u32;
    let data = frames * 4;
    let mut w = BufWriter::new(File::create(path)?);
    w.write_all(b"RIFF")?;
    w.write_all(&(36 + data).to_le_bytes())?;
    w.write_all(b"WAVEfmt ")?;
    w.write_all(&16u32.to_le_bytes())?;
    w.write_all(&1u16.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&rate.to_le_bytes())?;
    w.write_all(&(rate * 4).to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&16u16.to_le_bytes())?;
    w.write_all(b"data")?;
    w.write_all(&data.to_le_bytes())?;

    let chords: [[f64; 3]; 4] = [
        [220.0, 261.63, 329.63],
        [174.61, 220.0, 261.63],
        [130.81, 164.81, 196.0],
        [196.0, 246.94, 293.66],
    ];
    let beat_seconds = 60.0 / 124.0;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let rate_f = f64::from(rate);
    for i in 0..frames {
        let t = f64::from(i) / rate_f;
        let beat = t / beat_seconds;
        let in_beat = beat.fract() * beat_seconds;
        let bar_beat = (beat as u64) % 4;
        let kick = if bar_beat.is_multiple_of(2) && in_beat < 0.2 {
            let f = 45.0 + 110.0 * (-in_beat * 35.0).exp();
            0.55 * (-in_beat * 14.0).exp() * (2.0 * PI * f * in_beat).sin()
        } else {
            0.0
        };
        let n = noise();
        let snare = if bar_beat % 2 == 1 && in_beat < 0.18 {
            (-in_beat * 22.0).exp() * (0.25 * n + 0.2 * (2.0 * PI * 190.0 * in_beat).sin())
        } else {
            0.0
        };
        let off = (beat * 2.0).fract() * beat_seconds / 2.0;
        let hat = 0.12 * (-off * 90.0).exp() * noise();
        let chord = chords[((beat / 8.0) as usize) % chords.len()];
        let mut left = kick + snare;
        let mut right = kick + snare;
        for (k, f) in chord.iter().enumerate() {
            for h in 1..=3u32 {
                let a = 0.05 / f64::from(h) / (k as f64 + 1.0).sqrt();
                left += a * (2.0 * PI * f * f64::from(h) * 0.998 * t).sin();
                right += a * (2.0 * PI * f * f64::from(h) * 1.002 * t).sin();
            }
        }
        let bass = 0.18 * (2.0 * PI * chord[0] / 2.0 * t).sin();
        left += bass + hat;
        right += bass + 0.8 * hat;
        for x in [left, right] {
            let s = (x * 32767.0).round().clamp(-32768.0, 32767.0) as i16;
            w.write_all(&s.to_le_bytes())?;
        }
    }
    w.flush()?;
    Ok(())
}
