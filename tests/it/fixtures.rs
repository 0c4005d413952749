//! Audio the tests make themselves (nothing downloaded): 16-bit PCM WAV
//! files of tones and click tracks with known properties, and multipart
//! bodies to upload them with.

use std::f64::consts::TAU;

/// Interleaved samples in −1..1 as a 16-bit PCM WAV file.
pub fn wav(sample_rate: u32, channels: u16, interleaved: &[f64]) -> Vec<u8> {
    let data_len = (interleaved.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + interleaved.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * u32::from(channels) * 2).to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &x in interleaved {
        let v = (x.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A stereo sine of `freq` Hz at `dbfs` peak level for `seconds`.
pub fn stereo_sine(sample_rate: u32, freq: f64, dbfs: f64, seconds: f64) -> Vec<f64> {
    let amplitude = 10f64.powf(dbfs / 20.0);
    let n = (seconds * f64::from(sample_rate)) as usize;
    (0..n)
        .flat_map(|i| {
            let x = amplitude * (TAU * freq * i as f64 / f64::from(sample_rate)).sin();
            [x, x]
        })
        .collect()
}

/// A stereo click track: a 15 ms decaying 2 kHz burst on every beat at
/// `bpm`, over a quiet 100 Hz bed so the track is never silent.
pub fn click_track(sample_rate: u32, bpm: f64, seconds: f64) -> Vec<f64> {
    let rate = f64::from(sample_rate);
    let n = (seconds * rate) as usize;
    let period = 60.0 / bpm;
    (0..n)
        .flat_map(|i| {
            let t = i as f64 / rate;
            let since_beat = t % period;
            let click = if since_beat < 0.015 {
                0.8 * (-since_beat * 300.0).exp() * (TAU * 2000.0 * since_beat).sin()
            } else {
                0.0
            };
            let x = click + 0.05 * (TAU * 100.0 * t).sin();
            [x, x]
        })
        .collect()
}

/// Silence, as interleaved stereo.
pub fn stereo_silence(sample_rate: u32, seconds: f64) -> Vec<f64> {
    vec![0.0; 2 * (seconds * f64::from(sample_rate)) as usize]
}

pub const BOUNDARY: &str = "palaver-test-boundary-7c3e";

/// A multipart/form-data body with one file part named `field`.
pub fn multipart(field: &str, filename: &str, content_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}
