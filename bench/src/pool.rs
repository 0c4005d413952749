//! The analysis pool's two capacities, measured end to end against the
//! palaver binary (a process of its own on loopback, as in every scenario):
//!
//! - [`scaling`]: CPU-bound tool calls. The `builtin` engine answers
//!   "summarize this session" with its `session_summary` tool, which reads
//!   the session's whole history from storage and counts the words of every
//!   question: on a session pre-filled with long questions that is tens of
//!   milliseconds of CPU per call, on a CPU worker. Replies per second with
//!   `analysis.workers` = 1 and 2, alternating, a fresh server each run.
//! - [`slow_streams`]: many replies that mostly wait, like an upstream
//!   sending a delta every 100 ms: the `echo` engine paced by
//!   `analysis.token_delay`, every socket asking at once, all held by one
//!   process: refusals, the pacing they kept, memory per stream.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::scenarios::{self, next, Setup, Ws};
use crate::target::Target;

fn hist() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

fn ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Reads one reply to its `done`; `Err` on an `error` frame (its code).
async fn read_reply(ws: &mut Ws) -> Result<std::result::Result<Reply, String>> {
    let mut reply = Reply::default();
    loop {
        let frame = match next(ws).await? {
            Ok(f) => f,
            Err(code) => bail!("closed {code} mid-reply"),
        };
        match frame["type"].as_str() {
            Some("token") => reply.tokens.push(Instant::now()),
            Some("tool_result") => reply.tools_ok += usize::from(frame["success"] == true),
            Some("done") => {
                reply.status = frame["status"].as_str().unwrap_or_default().to_owned();
                return Ok(Ok(reply));
            }
            Some("error") => {
                return Ok(Err(frame["code"].as_str().unwrap_or_default().to_owned()));
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct Reply {
    /// When each token arrived.
    tokens: Vec<Instant>,
    tools_ok: usize,
    status: String,
}

fn question(text: &str) -> Message {
    Message::text(json!({"type": "question", "text": text}).to_string())
}

#[derive(Debug)]
pub struct ScalingRun {
    pub workers: usize,
    pub replies_per_sec: f64,
    pub done_p50_ms: f64,
    pub done_p99_ms: f64,
    /// Group-commit flushes during the run, and how many took over 5 ms.
    pub flushes: u64,
    pub flushes_over_5ms: u64,
    /// Server CPU time per reply.
    pub cpu_ms: f64,
    /// Server CPU seconds per wall second: how many cores it kept busy.
    pub cores_busy: f64,
    /// One summary alone, before the load: the tool's cost plus one reply.
    pub alone_ms: f64,
}

/// One run: a fresh palaver with `workers` CPU workers, `sockets` sessions
/// of `history` questions of `words` words each (and their replies), then
/// one socket on each asking "summarize this session" back to back until
/// `replies` replies are done. A session each: the sockets of one session
/// follow one reply at a time (API.md §7), and these are independent
/// conversations.
pub async fn scaling(
    bin: &Path,
    workers: usize,
    history: usize,
    words: usize,
    sockets: usize,
    replies: usize,
) -> Result<ScalingRun> {
    let workers_env = workers.to_string();
    let pal = Target::palaver_with(
        bin,
        &[
            ("PALAVER_ANALYSIS__ENGINE", "builtin"),
            ("PALAVER_ANALYSIS__WORKERS", &workers_env),
        ],
    )?;
    let setup = Setup::palaver(&pal, sockets.max(1)).await?;
    for session in 0..sockets.max(1) {
        prefill(&pal, &setup, session, history, words).await?;
    }
    let token = setup.mint();
    let path = setup.path(0, &token);

    let mut alone = scenarios::connect(&pal, &path, scenarios::source(0)).await?;
    ensure!(next(&mut alone).await?.is_ok(), "connected");
    let t = Instant::now();
    alone.send(question("summarize this session")).await?;
    match read_reply(&mut alone).await? {
        Ok(r) if r.tools_ok == 1 && r.status == "complete" => {}
        other => bail!(
            "the summary did not run its tool: {:?}",
            other.map(|r| r.status)
        ),
    }
    let alone_ms = t.elapsed().as_secs_f64() * 1000.0;
    drop(alone);

    let mut conns = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let path = setup.path(i, &token);
        let mut ws = scenarios::connect(&pal, &path, scenarios::source(i)).await?;
        ensure!(next(&mut ws).await?.is_ok(), "connected");
        conns.push(ws);
    }
    let left = Arc::new(AtomicUsize::new(replies));
    let flushes0 = scenarios::flush_stats(&pal).await?;
    let cpu0 = pal.cpu_seconds();
    let started = Instant::now();
    let tasks = conns.into_iter().map(|mut ws| {
        let left = left.clone();
        async move {
            let mut done = hist();
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let asked = Instant::now();
                ws.send(question("summarize this session")).await?;
                match read_reply(&mut ws).await? {
                    Ok(r) if r.tools_ok == 1 && r.status == "complete" => {}
                    Ok(r) => bail!("a reply ended {} with {} tool(s)", r.status, r.tools_ok),
                    Err(code) => bail!("refused: {code}"),
                }
                done.record(asked.elapsed().as_micros().max(1) as u64)?;
            }
            let _ = ws.close(None).await;
            Ok::<_, anyhow::Error>(done)
        }
    });
    let mut done = hist();
    for r in futures_util::future::join_all(tasks).await {
        done.add(r?)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = pal.cpu_seconds() - cpu0;
    let flushes = scenarios::flush_stats(&pal).await?;
    Ok(ScalingRun {
        workers,
        replies_per_sec: replies as f64 / elapsed,
        done_p50_ms: ms(&done, 0.5),
        done_p99_ms: ms(&done, 0.99),
        flushes: flushes.count - flushes0.count,
        flushes_over_5ms: flushes.over_5ms - flushes0.over_5ms,
        cpu_ms: cpu * 1000.0 / replies as f64,
        cores_busy: cpu / elapsed,
        alone_ms,
    })
}

/// `history` questions of `words` words in session `session` (over
/// `POST …/messages/`, 8 at a time; each gets the builtin engine's short
/// help as its reply).
async fn prefill(
    target: &Target,
    setup: &Setup,
    session: usize,
    history: usize,
    words: usize,
) -> Result<()> {
    let url = format!(
        "{}/api/sessions/{}/messages/",
        target.base, setup.sessions[session]
    );
    let next_i = Arc::new(AtomicUsize::new(0));
    let tasks = (0..8).map(|_| {
        let (url, http, next_i) = (url.clone(), setup.http.clone(), next_i.clone());
        let access = setup.access.clone();
        async move {
            loop {
                let i = next_i.fetch_add(1, Ordering::Relaxed);
                if i >= history {
                    return Ok::<_, anyhow::Error>(());
                }
                // A vocabulary of 997 terms, every question different.
                let text = (0..words)
                    .map(|j| format!("term{}", (i * 31 + j * 17) % 997))
                    .collect::<Vec<_>>()
                    .join(" ");
                let res = http
                    .post(&url)
                    .bearer_auth(&access)
                    .json(&json!({ "text": text }))
                    .send()
                    .await?;
                ensure!(res.status() == 200, "prefill: {}", res.status());
            }
        }
    });
    for r in futures_util::future::join_all(tasks).await {
        r?;
    }
    Ok(())
}

#[derive(Debug)]
pub struct SlowStreams {
    pub streams: usize,
    pub busy: usize,
    /// `palaver_analysis_active_streams` once every reply had its first token.
    pub active_gauge: f64,
    /// What one more question got while they streamed.
    pub one_more: String,
    pub rss_idle: u64,
    /// RSS samples while every stream was running (every 500 ms).
    pub rss_streaming: Vec<u64>,
    pub rss_after: u64,
    pub gap_p50_ms: f64,
    pub gap_p99_ms: f64,
    pub gap_max_ms: f64,
    pub complete: usize,
    pub wall_s: f64,
    /// Server CPU per token streamed.
    pub cpu_us_per_token: f64,
}

/// `n` sockets (each on a session of its own) hold their connection idle,
/// then all ask a `words`-word question at once, answered by `echo` one word
/// every `delay`: `n` replies streaming together for `words × delay`.
pub async fn slow_streams(
    bin: &Path,
    n: usize,
    words: usize,
    delay: Duration,
) -> Result<SlowStreams> {
    let (n_env, delay_env) = (n.to_string(), format!("{}ms", delay.as_millis()));
    let pal = Target::palaver_with(
        bin,
        &[
            ("PALAVER_ANALYSIS__MAX_STREAMS", &n_env),
            ("PALAVER_ANALYSIS__TOKEN_DELAY", &delay_env),
        ],
    )?;
    // A session per socket, and one more for the question too many.
    let setup = Setup::palaver(&pal, n + 1).await?;
    let conns = scenarios::open_many(&pal, Some(&setup), n).await?;
    let rss_idle = pal.rss_bytes();
    let text = (1..=words)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ");

    let first_tokens = Arc::new(AtomicUsize::new(0));
    let all_started = Arc::new(tokio::sync::Notify::new());
    let cpu0 = pal.cpu_seconds();
    let started = Instant::now();
    let tasks = conns.into_iter().map(|mut ws| {
        let (text, first_tokens, all_started) =
            (text.clone(), first_tokens.clone(), all_started.clone());
        tokio::spawn(async move {
            ws.send(question(&text)).await?;
            let mut reply = Reply::default();
            let mut gaps = hist();
            let outcome = loop {
                let frame = match next(&mut ws).await? {
                    Ok(f) => f,
                    Err(code) => bail!("closed {code} mid-reply"),
                };
                match frame["type"].as_str() {
                    Some("token") => {
                        let now = Instant::now();
                        match reply.tokens.last() {
                            Some(last) => gaps.record((now - *last).as_micros().max(1) as u64)?,
                            None => {
                                if first_tokens.fetch_add(1, Ordering::SeqCst) + 1 == n {
                                    all_started.notify_one();
                                }
                            }
                        }
                        reply.tokens.push(now);
                    }
                    Some("done") => break frame["status"].as_str().unwrap_or_default().to_owned(),
                    Some("error") => {
                        // Counted as started, so the waiters do not hang.
                        if first_tokens.fetch_add(1, Ordering::SeqCst) + 1 == n {
                            all_started.notify_one();
                        }
                        break format!("error {}", frame["code"]);
                    }
                    _ => {}
                }
            };
            Ok::<_, anyhow::Error>((ws, outcome, reply.tokens.len(), gaps))
        })
    });
    let tasks: Vec<_> = tasks.collect();

    // Once every reply streams: the gauge, one question too many, and RSS
    // samples until the first replies end.
    tokio::time::timeout(Duration::from_secs(120), all_started.notified())
        .await
        .context("not every reply started within 120 s")?;
    let metrics = reqwest::get(format!("{}/metrics", pal.base))
        .await?
        .text()
        .await?;
    let active_gauge = metrics
        .lines()
        .find_map(|l| l.strip_prefix("palaver_analysis_active_streams "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("palaver_analysis_active_streams in /metrics")?;
    let one_more = {
        let path = setup.path(n, &setup.mint());
        let mut ws = scenarios::connect(&pal, &path, scenarios::source(n)).await?;
        ensure!(next(&mut ws).await?.is_ok(), "connected");
        ws.send(question("one more")).await?;
        match read_reply(&mut ws).await? {
            Ok(r) => format!("answered ({})", r.status),
            Err(code) => code,
        }
    };
    let stream_time = delay * words as u32;
    let mut rss_streaming = Vec::new();
    while started.elapsed() + Duration::from_millis(1500) < stream_time {
        rss_streaming.push(pal.rss_bytes());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let mut gaps = hist();
    let (mut busy, mut complete, mut tokens) = (0, 0, 0);
    let mut conns = Vec::with_capacity(n);
    for t in tasks {
        let (ws, outcome, got, g) = t.await??;
        match outcome.as_str() {
            "complete" => complete += 1,
            o if o.contains("busy") => busy += 1,
            o => eprintln!("a reply ended {o}"),
        }
        tokens += got;
        gaps.add(g)?;
        conns.push(ws);
    }
    let wall_s = started.elapsed().as_secs_f64();
    let cpu = pal.cpu_seconds() - cpu0;
    let rss_after = pal.rss_bytes();
    drop(conns);
    Ok(SlowStreams {
        streams: n,
        busy,
        active_gauge,
        one_more,
        rss_idle,
        rss_streaming,
        rss_after,
        gap_p50_ms: ms(&gaps, 0.5),
        gap_p99_ms: ms(&gaps, 0.99),
        gap_max_ms: gaps.max() as f64 / 1000.0,
        complete,
        wall_s,
        cpu_us_per_token: cpu * 1e6 / tokens.max(1) as f64,
    })
}
