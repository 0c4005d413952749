//! The tracks API (API.md §6) against the real binary: upload (multipart,
//! streamed, sniffed, bounded), analysis computed once and served, the
//! overview, ownership as 404, deletion with the file, the per-user bound,
//! and what a crash or a user's end leaves on disk.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fixtures::{
    click_track, multipart, multipart_type, stereo_silence, stereo_sine, wav, BOUNDARY,
};
use crate::support::{assert_error, auth_options, client, signed_in, ServerOptions, TestServer};

pub struct Api<'a> {
    pub server: &'a TestServer,
    pub token: String,
}

impl Api<'_> {
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        client()
            .request(method, self.server.url(path))
            .bearer_auth(&self.token)
    }

    /// Uploads `bytes` as the multipart field `file`.
    pub async fn upload(
        &self,
        filename: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> reqwest::Response {
        self.req(Method::POST, "/api/tracks/")
            .header("content-type", multipart_type())
            .body(multipart("file", filename, content_type, bytes))
            .send()
            .await
            .unwrap()
    }

    /// Uploads and expects a 201; the track.
    pub async fn uploaded(&self, filename: &str, bytes: &[u8]) -> Value {
        let res = self.upload(filename, "audio/wav", bytes).await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        res.json().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.req(Method::GET, path).send().await.unwrap()
    }

    /// Polls the track until its analysis is no longer pending (bounded),
    /// checking on the way that a pending track shows no analysis and a
    /// 409 overview. The last GET body.
    pub async fn analysed(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let track: Value = self
                .get(&format!("/api/tracks/{id}/"))
                .await
                .json()
                .await
                .unwrap();
            if track["analysis_status"] != "pending" {
                return track;
            }
            assert_eq!(track["analysis"], Value::Null, "{track}");
            let res = self.get(&format!("/api/tracks/{id}/overview/")).await;
            // It may have become ready between the two requests.
            if res.status() == 409 {
                assert!(res.headers().contains_key("retry-after"));
                assert_error(res, 409, "not_ready").await;
            }
            assert!(
                Instant::now() < deadline,
                "analysis never finished: {track}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub async fn api<'a>(server: &'a TestServer, email: &str) -> Api<'a> {
    let tokens = signed_in(server, email).await;
    Api {
        server,
        token: tokens["access"].as_str().unwrap().to_owned(),
    }
}

/// A short stereo 440 Hz tone at −12 dBFS as a WAV file: a plain upload.
fn tone(seconds: f64) -> Vec<u8> {
    wav(44_100, 2, &stereo_sine(44_100, 440.0, -12.0, seconds))
}

fn close(actual: &Value, expected: f64, tolerance: f64) -> bool {
    actual
        .as_f64()
        .is_some_and(|v| (v - expected).abs() <= tolerance)
}

/// The files under `<data>/tracks/` (not the `incoming/` directory) and in
/// `incoming/`.
fn files_on_disk(data: &Path) -> (Vec<String>, Vec<String>) {
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().unwrap().is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let tracks = data.join("tracks");
    (names(&tracks), names(&tracks.join("incoming")))
}

#[tokio::test]
async fn an_upload_is_sniffed_analysed_once_and_served_with_its_overview() {
    let server = TestServer::with(auth_options());
    let ann = api(&server, "ann@example.com").await;
    // A WAV sent under an MP3 name and type: the bytes decide.
    let samples = click_track(44_100, 120.0, 12.0);
    let peak = samples.iter().fold(0f64, |m, x| m.max(x.abs()));
    let clicks = wav(44_100, 2, &samples);
    let res = ann.upload("../clicks.mp3", "audio/mpeg", &clicks).await;
    assert_eq!(res.status(), 201);
    let track: Value = res.json().await.unwrap();
    let id = track["track_id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    assert_eq!(track["filename"], "clicks.mp3");
    assert_eq!(track["size_bytes"], clicks.len());
    assert_eq!(track["format"], "wav");
    assert!(close(&track["duration_seconds"], 12.0, 0.01), "{track}");
    assert_eq!(track["sample_rate"], 44_100);
    assert_eq!(track["channels"], 2);
    assert!(track["created_at"].as_str().unwrap().ends_with('Z'));

    let listed: Value = ann.get("/api/tracks/").await.json().await.unwrap();
    assert_eq!(listed["tracks"].as_array().unwrap().len(), 1);
    assert_eq!(listed["tracks"][0]["track_id"], id.as_str());

    let got = ann.analysed(&id).await;
    assert_eq!(got["analysis_status"], "ready", "{got}");
    let a = &got["analysis"];
    for key in [
        "duration_seconds",
        "sample_rate",
        "channels",
        "loudness_lufs",
        "loudness_range_lu",
        "peak_dbfs",
        "true_peak_dbtp",
        "rms_dbfs",
        "tempo_bpm",
        "silence",
        "clipping",
        "spectral_centroid_hz",
    ] {
        assert!(a.get(key).is_some(), "analysis lacks {key}: {a}");
    }
    assert!(close(&a["duration_seconds"], 12.0, 0.01), "{a}");
    assert!(close(&a["tempo_bpm"], 120.0, 1.2), "{a}");
    assert!(close(&a["peak_dbfs"], 20.0 * peak.log10(), 0.01), "{a}");
    assert_eq!(a["clipping"]["clipped_samples"], 0);
    assert_eq!(a["silence"]["segments"], json!([]));

    let overview: Value = ann
        .get(&format!("/api/tracks/{id}/overview/"))
        .await
        .json()
        .await
        .unwrap();
    let envelope = overview["envelope"].as_array().unwrap();
    assert!(
        !envelope.is_empty() && envelope.len() <= 2000,
        "{}",
        envelope.len()
    );
    for pair in envelope {
        let (lo, hi) = (pair[0].as_f64().unwrap(), pair[1].as_f64().unwrap());
        assert!((-1.0..=1.0).contains(&lo) && (-1.0..=1.0).contains(&hi) && lo <= hi);
    }
    let step = overview["envelope_step_seconds"].as_f64().unwrap();
    assert!(
        (step * envelope.len() as f64 - 12.0).abs() <= step + 1e-6,
        "{step}"
    );
    assert_eq!(overview["short_term_step_seconds"], 0.1);
    let short_term = overview["short_term_lufs"].as_array().unwrap();
    assert!(
        (118..=121).contains(&short_term.len()),
        "{}",
        short_term.len()
    );

    // The same answer on every read: computed once, cached.
    let again: Value = ann
        .get(&format!("/api/tracks/{id}/"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, got);
}

#[tokio::test]
async fn loudness_and_silence_are_measured_to_the_reference() {
    let server = TestServer::with(auth_options());
    let ann = api(&server, "ann@example.com").await;
    // EBU Tech 3341 case 1: a stereo 1 kHz sine at −23 dBFS reads −23 LUFS.
    let tone = stereo_sine(48_000, 1000.0, -23.0, 10.0);
    let track = ann.uploaded("tone.wav", &wav(48_000, 2, &tone)).await;
    let got = ann.analysed(track["track_id"].as_str().unwrap()).await;
    let a = &got["analysis"];
    assert!(close(&a["loudness_lufs"], -23.0, 0.1), "{a}");
    assert!(close(&a["peak_dbfs"], -23.0, 0.05), "{a}");
    assert!(close(&a["spectral_centroid_hz"], 1000.0, 50.0), "{a}");
    // A tone has no beat.
    assert_eq!(a["tempo_bpm"], Value::Null, "{a}");

    // The same tone with two seconds of digital silence from 4 s to 6 s.
    let mut gapped = tone;
    gapped[4 * 48_000 * 2..6 * 48_000 * 2]
        .iter_mut()
        .for_each(|x| *x = 0.0);
    let track = ann.uploaded("gap.wav", &wav(48_000, 2, &gapped)).await;
    let got = ann.analysed(track["track_id"].as_str().unwrap()).await;
    let a = &got["analysis"];
    let segments = a["silence"]["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 1, "{a}");
    assert!(close(&segments[0]["start"], 4.0, 0.05), "{a}");
    assert!(close(&segments[0]["end"], 6.0, 0.05), "{a}");
    assert!(close(&a["silence"]["ratio"], 0.2, 0.01), "{a}");
    // One stop and one start are not a beat.
    assert_eq!(a["tempo_bpm"], Value::Null, "{a}");
}

#[tokio::test]
async fn what_is_not_audio_is_415_and_leaves_nothing() {
    let server = TestServer::with(auth_options());
    let ann = api(&server, "ann@example.com").await;
    let header_only = wav(44_100, 2, &[]);
    let mut random = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..50_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        random.push(x as u8);
    }
    let cases: [(&str, &str, &[u8]); 4] = [
        (
            "notes.wav",
            "audio/wav",
            b"These are my notes, not a song.\n",
        ),
        ("empty.wav", "audio/wav", b""),
        ("header.wav", "audio/wav", &header_only),
        ("noise.mp3", "audio/mpeg", &random),
    ];
    for (name, kind, bytes) in cases {
        let res = ann.upload(name, kind, bytes).await;
        assert_error(res, 415, "unsupported_media_type").await;
    }
    let listed: Value = ann.get("/api/tracks/").await.json().await.unwrap();
    assert_eq!(listed["tracks"], json!([]));
    let (tracks, incoming) = files_on_disk(&server.data);
    assert!(
        tracks.is_empty() && incoming.is_empty(),
        "{tracks:?} {incoming:?}"
    );

    // Not multipart at all: 415; multipart without `file`: 400 naming it.
    let res = ann
        .req(Method::POST, "/api/tracks/")
        .json(&json!({"file": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 415, "unsupported_media_type").await;
    let res = ann
        .req(Method::POST, "/api/tracks/")
        .header("content-type", multipart_type())
        .body(multipart(
            "audio",
            "a.wav",
            "audio/wav",
            &wav(44_100, 1, &[0.1; 4410]),
        ))
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 400, "invalid_request").await;
    assert!(body["error"].as_str().unwrap().contains("file"), "{body}");
    // A body cut mid-part.
    let mut cut = multipart("file", "a.wav", "audio/wav", &wav(44_100, 1, &[0.1; 4410]));
    cut.truncate(cut.len() - 20);
    let res = ann
        .req(Method::POST, "/api/tracks/")
        .header("content-type", multipart_type())
        .body(cut)
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "invalid_request").await;
    let (tracks, incoming) = files_on_disk(&server.data);
    assert!(
        tracks.is_empty() && incoming.is_empty(),
        "{tracks:?} {incoming:?}"
    );
}

/// Sends a request's head (and optionally part of a body) on a raw socket
/// and reads the status line the server answers with.
async fn raw_status(server: &TestServer, head: &str, body_chunks: &[Vec<u8>]) -> u16 {
    let addr = server.url("").trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    for chunk in body_chunks {
        // The server may answer (and stop reading) before the last chunk.
        if tcp.write_all(chunk).await.is_err() {
            break;
        }
    }
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline.into(), tcp.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap_or(0);
        assert!(n > 0, "connection closed without an answer");
        response.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&response);
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_upload_past_the_bound_is_cut_off_with_413() {
    let server =
        TestServer::with(auth_options().env("PALAVER_STORAGE__MAX_UPLOAD_BYTES", "200000"));
    let ann = api(&server, "ann@example.com").await;
    // Declared too large: answered before any of the body is sent.
    let head = format!(
        "POST /api/tracks/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: {}\r\nContent-Length: 100000000\r\n\r\n",
        ann.token,
        multipart_type()
    );
    assert_eq!(raw_status(&server, &head, &[]).await, 413);
    // Chunked, with no length: answered once the bound is passed, while the
    // client is still sending (it never sends the end of the body).
    let (head, part_head) = chunked_upload(&ann.token, "big.wav");
    let mut chunks = vec![part_head];
    let samples = vec![0.25; 150_000];
    let audio = wav(44_100, 2, &samples);
    for piece in audio.chunks(16 * 1024) {
        chunks.push(chunk(piece));
    }
    assert_eq!(raw_status(&server, &head, &chunks).await, 413);
    // The same through an ordinary client.
    let res = ann.upload("big.wav", "audio/wav", &audio).await;
    assert_error(res, 413, "payload_too_large").await;
    let (tracks, incoming) = files_on_disk(&server.data);
    assert!(
        tracks.is_empty() && incoming.is_empty(),
        "{tracks:?} {incoming:?}"
    );
    // Under the bound, accepted.
    let small = tone(1.0);
    assert_eq!(
        ann.upload("ok.wav", "audio/wav", &small).await.status(),
        201
    );
}

#[tokio::test]
async fn more_audio_than_the_duration_bound_is_413_counted_in_samples() {
    // 1 s of stereo 48 kHz: 96 000 samples (frames × channels).
    let server = TestServer::with(auth_options().env("PALAVER_STORAGE__MAX_TRACK_DURATION", "1s"));
    let ann = api(&server, "ann@example.com").await;
    // 1.2 s of stereo 44.1 kHz: 105 840 samples.
    let res = ann.upload("long.wav", "audio/wav", &tone(1.2)).await;
    let body = assert_error(res, 413, "payload_too_large").await;
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("storage.max_track_duration") && message.contains("44100 Hz"),
        "{body}"
    );
    let (tracks, incoming) = files_on_disk(&server.data);
    assert!(
        tracks.is_empty() && incoming.is_empty(),
        "{tracks:?} {incoming:?}"
    );
    // 1 s of stereo 44.1 kHz (88 200) and 2 s of mono 48 kHz (exactly 96 000)
    // are within it, and analysed.
    let stereo = ann.uploaded("short.wav", &tone(1.0)).await;
    let mono = ann
        .uploaded("mono.wav", &wav(48_000, 1, &vec![0.1; 96_000]))
        .await;
    for track in [stereo, mono] {
        let done = ann.analysed(track["track_id"].as_str().unwrap()).await;
        assert_eq!(done["analysis_status"], "ready", "{done}");
    }
}

/// The head of a chunked upload request (no length), and the first chunk:
/// the head of its `file` part.
fn chunked_upload(token: &str, filename: &str) -> (String, Vec<u8>) {
    let head = format!(
        "POST /api/tracks/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        multipart_type()
    );
    let part_head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\r\n"
    );
    (head, chunk(part_head.as_bytes()))
}

fn chunk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

#[tokio::test]
async fn tracks_are_their_owners_and_deleting_one_removes_its_file() {
    let server = TestServer::with(auth_options());
    let ann = api(&server, "ann@example.com").await;
    let bob = api(&server, "bob@example.com").await;
    let track = ann.uploaded("a.wav", &tone(1.0)).await;
    let id = track["track_id"].as_str().unwrap();
    for path in [
        format!("/api/tracks/{id}/"),
        format!("/api/tracks/{id}/overview/"),
    ] {
        assert_error(bob.get(&path).await, 404, "not_found").await;
    }
    let res = bob
        .req(Method::DELETE, &format!("/api/tracks/{id}/"))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "not_found").await;
    let res = bob
        .req(Method::POST, "/api/sessions/")
        .json(&json!({"track_id": id}))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "not_found").await;
    let listed: Value = bob.get("/api/tracks/").await.json().await.unwrap();
    assert_eq!(listed["tracks"], json!([]));
    assert_error(bob.get("/api/tracks/not-a-uuid/").await, 404, "not_found").await;

    let res = ann
        .req(Method::POST, "/api/sessions/")
        .json(&json!({"track_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let session: Value = res.json().await.unwrap();
    assert_eq!(session["track_id"], id);

    let file = server.data.join("tracks").join(id);
    assert!(file.exists());
    let res = ann
        .req(Method::DELETE, &format!("/api/tracks/{id}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(!file.exists());
    assert_error(
        ann.get(&format!("/api/tracks/{id}/")).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_user_keeps_at_most_the_configured_number_of_tracks() {
    let server = TestServer::with(auth_options().env("PALAVER_STORAGE__MAX_TRACKS_PER_USER", "2"));
    let ann = api(&server, "ann@example.com").await;
    let audio = tone(0.5);
    let first = ann.uploaded("1.wav", &audio).await;
    ann.uploaded("2.wav", &audio).await;
    let res = ann.upload("3.wav", "audio/wav", &audio).await;
    let body = assert_error(res, 409, "track_limit").await;
    assert!(body["error"].as_str().unwrap().contains('2'), "{body}");
    let res = ann
        .req(
            Method::DELETE,
            &format!("/api/tracks/{}/", first["track_id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    ann.uploaded("3.wav", &audio).await;
    // Another user has a bound of their own.
    let bob = api(&server, "bob@example.com").await;
    bob.uploaded("b.wav", &audio).await;
}

#[tokio::test]
async fn a_crash_mid_upload_leaves_no_file_and_unfinished_analyses_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let options = || auth_options().data(&data);
    let server = TestServer::with(options());
    let ann = api(&server, "ann@example.com").await;
    let kept = ann.uploaded("kept.wav", &tone(1.0)).await;
    // An upload under way when the server dies: its staged file exists.
    let addr = server.url("").trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (head, part_head) = chunked_upload(&ann.token, "cut.wav");
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&part_head).await.unwrap();
    tcp.write_all(&chunk(&wav(44_100, 2, &stereo_silence(44_100, 1.0))))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while files_on_disk(&data).1.is_empty() {
        assert!(Instant::now() < deadline, "the upload was never staged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    drop(tcp);

    let server = TestServer::with(options());
    let (tracks, incoming) = files_on_disk(&data);
    assert!(incoming.is_empty(), "{incoming:?}");
    assert_eq!(tracks, vec![kept["track_id"].as_str().unwrap().to_owned()]);
    // The kept track is analysed (again, if the crash cut its analysis).
    let ann = Api {
        server: &server,
        token: crate::support::login(&server, "ann@example.com", "correct horse battery").await
            ["access"]
            .as_str()
            .unwrap()
            .to_owned(),
    };
    let got = ann.analysed(kept["track_id"].as_str().unwrap()).await;
    assert_eq!(got["analysis_status"], "ready", "{got}");
}

#[tokio::test]
async fn an_expired_demo_users_tracks_are_swept_with_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::with(
        ServerOptions::default()
            .env("PALAVER_DEMO__LIFETIME", "3s")
            .env("PALAVER_DEMO__GC_AFTER", "1s")
            .data(&data),
    );
    let demo: Value = client()
        .post(server.url("/api/auth/demo/"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let guest = Api {
        server: &server,
        token: demo["access"].as_str().unwrap().to_owned(),
    };
    let track = guest.uploaded("demo.wav", &tone(0.5)).await;
    let file = data
        .join("tracks")
        .join(track["track_id"].as_str().unwrap());
    assert!(file.exists());
    let deadline = Instant::now() + Duration::from_secs(30);
    while file.exists() {
        assert!(
            Instant::now() < deadline,
            "the sweep left the file:\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.output_once("demo user expired and deleted");
}

/// The whole path: upload → analysis → a session bound to the track → a
/// question over the WebSocket → the tools announced and reported with the
/// right numbers → an answer in words that uses them.
#[tokio::test]
async fn a_question_about_a_track_streams_tool_results_and_an_answer() {
    use crate::support::{next_frame, send_json, ticket, until_done, ws_connected};
    let server = TestServer::with(auth_options());
    let ann = api(&server, "ann@example.com").await;
    // A 124 BPM click track a little louder than −23 LUFS.
    let track = ann
        .uploaded(
            "beat.wav",
            &wav(44_100, 2, &click_track(44_100, 124.0, 20.0)),
        )
        .await;
    let id = track["track_id"].as_str().unwrap().to_owned();
    let analysed = ann.analysed(&id).await;
    assert_eq!(analysed["analysis_status"], "ready", "{analysed}");
    let lufs = analysed["analysis"]["loudness_lufs"].as_f64().unwrap();
    let res = ann
        .req(Method::POST, "/api/sessions/")
        .json(&json!({"track_id": id}))
        .send()
        .await
        .unwrap();
    let session: Value = res.json().await.unwrap();
    let path = format!(
        "/ws/sessions/{}/?ticket={}",
        session["id"].as_str().unwrap(),
        ticket(&server, &ann.token).await
    );
    let (mut ws, _) = ws_connected(&server, &path, &[]).await;
    send_json(
        &mut ws,
        json!({"type": "question", "text": "What's the tempo, and how loud is it for streaming?"}),
    )
    .await;
    assert_eq!(next_frame(&mut ws).await["type"], "message");
    let frames = until_done(&mut ws).await;
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        &kinds[..4],
        ["tool_call", "tool_result", "tool_call", "tool_result"],
        "{frames:?}"
    );
    assert_eq!(frames[0]["tool"], "tempo");
    assert_eq!(frames[1]["success"], true);
    assert!(
        close(&frames[1]["result"]["tempo_bpm"], 124.0, 1.24),
        "{}",
        frames[1]
    );
    assert_eq!(frames[2]["tool"], "loudness");
    assert!(
        close(&frames[3]["result"]["loudness_lufs"], lufs, 0.06),
        "{}",
        frames[3]
    );
    let text: String = frames
        .iter()
        .filter(|f| f["type"] == "token")
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(text.contains("The tempo is about 124 BPM."), "{text}");
    assert!(
        text.contains(&format!("Integrated loudness is −{:.1} LUFS", -lufs)),
        "{text}"
    );
    assert_eq!(frames.last().unwrap()["status"], "complete");

    // A question no tool fits gets the list of what can be measured.
    send_json(
        &mut ws,
        json!({"type": "question", "text": "Who is the singer?"}),
    )
    .await;
    assert_eq!(next_frame(&mut ws).await["type"], "message");
    let frames = until_done(&mut ws).await;
    let text: String = frames
        .iter()
        .filter(|f| f["type"] == "token")
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(text.starts_with("I can measure this track"), "{text}");

    // Once the track is deleted, its tools say so instead of answering.
    let res = ann
        .req(Method::DELETE, &format!("/api/tracks/{id}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    send_json(
        &mut ws,
        json!({"type": "question", "text": "what's the bpm?"}),
    )
    .await;
    assert_eq!(next_frame(&mut ws).await["type"], "message");
    let frames = until_done(&mut ws).await;
    assert_eq!(frames[1]["type"], "tool_result");
    assert_eq!(frames[1]["success"], false, "{}", frames[1]);
}
