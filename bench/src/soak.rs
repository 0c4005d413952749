//! `soak`: a long, steady, mixed load against one palaver, sampled every
//! `interval`: the server's resident memory, its open files, the size of its
//! database on disk, what the harness knows is stored, and the latency
//! percentiles of each window. Writes the samples as CSV and draws them as
//! an SVG (issue 18: what grows with time and with the data, and whether it
//! stops growing).
//!
//! The load, each part paced (open loop: a slow server gets the same
//! offered load, its latency shows it):
//! - `sockets` chat sockets of one registered user, each on a session of its
//!   own, asking 20-word questions (`echo`) at `rate` replies per second in
//!   all; after `conversation` questions a socket's session is deleted over
//!   HTTP and a new one started (`conversation` = 0: never, the data grows);
//! - `demos` demo users per second, each creating a session and asking one
//!   question over a WebSocket, then left to expire and be swept;
//! - `http` requests per second: the session list, a history page, `/me`,
//!   and every tenth an API key created, used and deleted; a login every
//!   5 s.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::time::MissedTickBehavior;

use crate::scenarios::{self, Setup};
use crate::target::{dir_bytes, Target};

#[derive(clap::Args)]
pub struct Options {
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    #[arg(long, default_value_t = 10)]
    pub interval: u64,
    /// Chat sockets (one registered user, a session each).
    #[arg(long, default_value_t = 20)]
    pub sockets: usize,
    /// Replies per second over all chat sockets (paced).
    #[arg(long, default_value_t = 400.0)]
    pub rate: f64,
    /// Questions per conversation before its session is deleted and a new
    /// one started; 0: never deleted (the data grows).
    #[arg(long, default_value_t = 100)]
    pub conversation: usize,
    /// Demo users per second (each asks one question, then expires).
    #[arg(long, default_value_t = 2.0)]
    pub demos: f64,
    /// HTTP requests per second (reads, API keys, a login every 5 s).
    #[arg(long, default_value_t = 20.0)]
    pub http: f64,
    /// Seconds sampled with no load after the run (idle memory).
    #[arg(long, default_value_t = 0)]
    pub idle: u64,
    /// Restart on the same data after the idle phase and sample it idle.
    #[arg(long)]
    pub reopen: bool,
    #[arg(long, default_value = "soak-out")]
    pub out: PathBuf,
    /// A server setting, e.g. `PALAVER_STORAGE__CACHE_BYTES=8388608`.
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
}

/// `KEY=VALUE` of `--env`.
fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s}: expected KEY=VALUE"))
}

/// One window's latencies (µs) and counts.
struct Window {
    ttft: Histogram<u64>,
    done: Histogram<u64>,
    http: Histogram<u64>,
    errors: u64,
}

impl Window {
    fn new() -> Window {
        let h = || Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
        Window {
            ttft: h(),
            done: h(),
            http: h(),
            errors: 0,
        }
    }
}

/// What the load has done, shared by its tasks.
struct Shared {
    window: Mutex<Window>,
    replies: AtomicU64,
    demos: AtomicU64,
    http: AtomicU64,
    /// Messages the harness's sessions hold now (demo users' not counted:
    /// the sweep removes them).
    held: AtomicI64,
    /// Sessions the chat sockets are on now (history reads pick one).
    live: Mutex<Vec<String>>,
    deadline: Instant,
}

impl Shared {
    fn error(&self, what: &str, e: &anyhow::Error) {
        self.window.lock().expect("not poisoned").errors += 1;
        eprintln!("soak: {what}: {e:#}");
    }
}

struct Sample {
    t: f64,
    rss_mib: f64,
    fds: usize,
    disk_mib: f64,
    held: i64,
    replies: u64,
    demos: u64,
    http: u64,
    cpu_pct: f64,
    ttft_p99: f64,
    done_p50: f64,
    done_p99: f64,
    http_p99: f64,
    errors: u64,
    /// The machine's 1-minute load average (what else was running).
    load: f64,
    phase: &'static str,
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

pub async fn run(opts: Options) -> Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    std::fs::create_dir_all(&opts.out)?;
    let bin = crate::target::palaver_binary()?;
    // In `out`, not a temporary directory: a run outlives other programs'
    // cleanups of /tmp (one lost its data directory 22 minutes in).
    let data = opts.out.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let mut env: Vec<(&str, &str)> = vec![
        // Demo users come and go within the run: a short life, a prompt sweep.
        ("PALAVER_DEMO__LIFETIME", "2m"),
        ("PALAVER_DEMO__GC_AFTER", "1m"),
        ("PALAVER_LOGGING__LEVEL", "warn"),
    ];
    env.extend(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let target = Target::palaver_in(&bin, &env, &data, None)?;
    let setup = Setup::palaver(&target, 0).await?;
    let shared = Arc::new(Shared {
        window: Mutex::new(Window::new()),
        replies: AtomicU64::new(0),
        demos: AtomicU64::new(0),
        http: AtomicU64::new(0),
        held: AtomicI64::new(0),
        live: Mutex::new(Vec::new()),
        deadline: Instant::now() + Duration::from_secs_f64(opts.minutes * 60.0),
    });
    let setup = Arc::new(setup);
    let base = Arc::new(target.base.clone());
    let mut tasks = Vec::new();
    if opts.rate > 0.0 {
        let period = Duration::from_secs_f64(opts.sockets as f64 / opts.rate);
        for i in 0..opts.sockets {
            let (shared, setup) = (shared.clone(), setup.clone());
            let base = base.clone();
            let conversation = opts.conversation;
            tasks.push(tokio::spawn(async move {
                chat(i, &base, &setup, &shared, period, conversation).await
            }));
        }
    }
    if opts.demos > 0.0 {
        let (shared, base) = (shared.clone(), base.clone());
        let period = Duration::from_secs_f64(1.0 / opts.demos);
        tasks.push(tokio::spawn(
            async move { demos(&base, &shared, period).await },
        ));
    }
    if opts.http > 0.0 {
        let (shared, setup, base) = (shared.clone(), setup.clone(), base.clone());
        let period = Duration::from_secs_f64(1.0 / opts.http);
        tasks.push(tokio::spawn(async move {
            http(&base, &setup, &shared, period).await
        }));
    }

    let mut samples = Vec::new();
    let started = Instant::now();
    let mut csv = String::from(
        "seconds,phase,rss_mib,open_files,disk_mib,held_messages,replies,demos,http,cpu_pct,ttft_p99_ms,done_p50_ms,done_p99_ms,http_p99_ms,errors,load_average\n",
    );
    println!("| t (s) | phase | RSS MiB | files | disk MiB | held msgs | replies | demos | http | CPU % | ttft p99 | done p50 | done p99 | http p99 | errors | load |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut tick = tokio::time::interval(Duration::from_secs(opts.interval));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    let mut cpu0 = (target.cpu_seconds(), Instant::now());
    let sample = |target: &Target,
                  cpu0: &mut (f64, Instant),
                  phase: &'static str,
                  samples: &mut Vec<Sample>| {
        let w = std::mem::replace(
            &mut *shared.window.lock().expect("not poisoned"),
            Window::new(),
        );
        let (cpu, now) = (target.cpu_seconds(), Instant::now());
        let cpu_pct = (cpu - cpu0.0) * 100.0 / (now - cpu0.1).as_secs_f64();
        *cpu0 = (cpu, now);
        let s = Sample {
            t: started.elapsed().as_secs_f64(),
            rss_mib: target.rss_bytes() as f64 / (1 << 20) as f64,
            fds: open_files(target.pid()),
            disk_mib: dir_bytes(&data.join("db")) as f64 / (1 << 20) as f64,
            held: shared.held.load(Ordering::Relaxed),
            replies: shared.replies.load(Ordering::Relaxed),
            demos: shared.demos.load(Ordering::Relaxed),
            http: shared.http.load(Ordering::Relaxed),
            cpu_pct,
            ttft_p99: ms(&w.ttft, 0.99),
            done_p50: ms(&w.done, 0.5),
            done_p99: ms(&w.done, 0.99),
            http_p99: ms(&w.http, 0.99),
            errors: w.errors,
            load: load_average(),
            phase,
        };
        println!(
            "| {:.0} | {} | {:.1} | {} | {:.1} | {} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.1} |",
            s.t, s.phase, s.rss_mib, s.fds, s.disk_mib, s.held, s.replies, s.demos, s.http,
            s.cpu_pct, s.ttft_p99, s.done_p50, s.done_p99, s.http_p99, s.errors, s.load
        );
        samples.push(s);
    };
    while Instant::now() < shared.deadline {
        tick.tick().await;
        sample(&target, &mut cpu0, "load", &mut samples);
    }
    for task in tasks {
        task.await??;
    }
    let idle_until = Instant::now() + Duration::from_secs(opts.idle);
    while Instant::now() < idle_until {
        tick.tick().await;
        sample(&target, &mut cpu0, "idle", &mut samples);
    }
    drop(target);
    if opts.reopen {
        let target = Target::palaver_in(&bin, &env, &data, None)?;
        let until = Instant::now() + Duration::from_secs(opts.idle.max(opts.interval));
        cpu0 = (target.cpu_seconds(), Instant::now());
        while Instant::now() < until {
            tick.tick().await;
            sample(&target, &mut cpu0, "reopened", &mut samples);
        }
    }
    for s in &samples {
        let _ = writeln!(
            csv,
            "{:.1},{},{:.2},{},{:.2},{},{},{},{},{:.1},{:.2},{:.2},{:.2},{:.2},{},{:.2}",
            s.t,
            s.phase,
            s.rss_mib,
            s.fds,
            s.disk_mib,
            s.held,
            s.replies,
            s.demos,
            s.http,
            s.cpu_pct,
            s.ttft_p99,
            s.done_p50,
            s.done_p99,
            s.http_p99,
            s.errors,
            s.load
        );
    }
    std::fs::remove_dir_all(&data)?;
    std::fs::write(opts.out.join("soak.csv"), csv)?;
    std::fs::write(opts.out.join("soak.svg"), svg(&samples, &opts))?;
    summary(&samples);
    println!(
        "wrote {} and {}",
        opts.out.join("soak.csv").display(),
        opts.out.join("soak.svg").display()
    );
    Ok(())
}

/// Growth over the second half of the load phase (after warm-up), per
/// minute, by least squares.
fn slope_per_min(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> f64 {
    let load: Vec<&Sample> = samples.iter().filter(|s| s.phase == "load").collect();
    let half = &load[load.len() / 2..];
    let n = half.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let mx = half.iter().map(|s| s.t).sum::<f64>() / n;
    let my = half.iter().map(|s| value(s)).sum::<f64>() / n;
    let sxy: f64 = half.iter().map(|s| (s.t - mx) * (value(s) - my)).sum();
    let sxx: f64 = half.iter().map(|s| (s.t - mx).powi(2)).sum();
    sxy / sxx * 60.0
}

fn summary(samples: &[Sample]) {
    let load: Vec<&Sample> = samples.iter().filter(|s| s.phase == "load").collect();
    let (Some(first), Some(last)) = (load.get(load.len() / 2), load.last()) else {
        return;
    };
    println!(
        "second half of the load ({:.0}–{:.0} s): RSS {:.1} → {:.1} MiB ({:+.2} MiB/min), \
         disk {:.1} → {:.1} MiB ({:+.2} MiB/min), open files {} → {}, held messages {} → {}",
        first.t,
        last.t,
        first.rss_mib,
        last.rss_mib,
        slope_per_min(samples, |s| s.rss_mib),
        first.disk_mib,
        last.disk_mib,
        slope_per_min(samples, |s| s.disk_mib),
        first.fds,
        last.fds,
        first.held,
        last.held
    );
    let mut p99: Vec<f64> = load
        .iter()
        .map(|s| s.done_p99)
        .filter(|v| v.is_finite())
        .collect();
    p99.sort_by(f64::total_cmp);
    if let (Some(min), Some(max)) = (p99.first(), p99.last()) {
        println!(
            "time to done p99 per window: median {:.1} ms, range {min:.1}–{max:.1} ms",
            p99[p99.len() / 2]
        );
    }
}

/// One chat socket: conversations of `conversation` questions, paced.
async fn chat(
    i: usize,
    base: &str,
    setup: &Setup,
    shared: &Shared,
    period: Duration,
    conversation: usize,
) -> Result<()> {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Spread the sockets over the period.
    tokio::time::sleep(period.mul_f64(i as f64 / 64.0).min(period)).await;
    let question = json!({"type": "question", "text": words()}).to_string();
    while Instant::now() < shared.deadline {
        let session = match create_session(base, &setup.http, &setup.access).await {
            Ok(s) => s,
            Err(e) => {
                shared.error("create session", &e);
                tick.tick().await;
                continue;
            }
        };
        shared
            .live
            .lock()
            .expect("not poisoned")
            .push(session.clone());
        let asked = converse(
            base,
            &session,
            setup,
            shared,
            &mut tick,
            conversation,
            &question,
        )
        .await;
        shared
            .live
            .lock()
            .expect("not poisoned")
            .retain(|s| *s != session);
        if conversation > 0 {
            let res = setup
                .http
                .delete(format!("{base}/api/sessions/{session}/"))
                .bearer_auth(&setup.access)
                .send()
                .await;
            match res {
                Ok(r) if r.status() == 204 => {
                    shared.held.fetch_sub(2 * asked as i64, Ordering::Relaxed);
                }
                Ok(r) => shared.error("delete session", &anyhow::anyhow!("{}", r.status())),
                Err(e) => shared.error("delete session", &e.into()),
            }
        }
    }
    Ok(())
}

/// Questions on one session until `conversation` (0: until the deadline);
/// returns how many were answered.
async fn converse(
    base: &str,
    session: &str,
    setup: &Setup,
    shared: &Shared,
    tick: &mut tokio::time::Interval,
    conversation: usize,
    question: &str,
) -> usize {
    let path = format!("/ws/sessions/{session}/?token={}", setup.mint());
    let mut ws = match scenarios::connect_base(base, &path, scenarios::source(0)).await {
        Ok(ws) => ws,
        Err(e) => {
            shared.error("connect", &e);
            return 0;
        }
    };
    let mut asked = 0;
    while (conversation == 0 || asked < conversation) && Instant::now() < shared.deadline {
        tick.tick().await;
        let start = Instant::now();
        match scenarios::ask_timed(&mut ws, question).await {
            Ok((first, done)) => {
                asked += 1;
                shared.replies.fetch_add(1, Ordering::Relaxed);
                shared.held.fetch_add(2, Ordering::Relaxed);
                let mut w = shared.window.lock().expect("not poisoned");
                if let Some(first) = first {
                    let _ = w.ttft.record(micros(first - start));
                }
                let _ = w.done.record(micros(done - start));
            }
            Err(e) => {
                shared.error("ask", &e);
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    asked
}

fn micros(d: Duration) -> u64 {
    d.as_micros().max(1) as u64
}

fn words() -> String {
    (1..=20)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn create_session(base: &str, http: &reqwest::Client, access: &str) -> Result<String> {
    let res = http
        .post(format!("{base}/api/sessions/"))
        .bearer_auth(access)
        .json(&json!({}))
        .send()
        .await?;
    anyhow::ensure!(res.status() == 201, "create session: {}", res.status());
    let session: Value = res.json().await?;
    Ok(session["id"].as_str().context("session id")?.to_owned())
}

/// Demo users: each makes a session and asks one question, then is left to
/// expire.
async fn demos(base: &str, shared: &Shared, period: Duration) -> Result<()> {
    let http = reqwest::Client::new();
    let question = json!({"type": "question", "text": words()}).to_string();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while Instant::now() < shared.deadline {
        tick.tick().await;
        let one = async {
            let demo: Value = http
                .post(format!("{base}/api/auth/demo/"))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let access = demo["access"].as_str().context("access")?;
            let session = create_session(base, &http, access).await?;
            let path = format!("/ws/sessions/{session}/?token={access}");
            let mut ws = scenarios::connect_base(base, &path, scenarios::source(1)).await?;
            scenarios::ask_timed(&mut ws, &question).await?;
            let _ = ws.close(None).await;
            anyhow::Ok(())
        };
        match one.await {
            Ok(()) => {
                shared.demos.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => shared.error("demo", &e),
        }
    }
    Ok(())
}

/// Reads and small writes over HTTP, as a page and a script would make them.
async fn http(base: &str, setup: &Setup, shared: &Shared, period: Duration) -> Result<()> {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let email = format!("soak-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "soak-password-123";
    setup
        .http
        .post(format!("{base}/api/auth/register/"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .error_for_status()?;
    let mut n: u64 = 0;
    let mut last_login = Instant::now();
    while Instant::now() < shared.deadline {
        tick.tick().await;
        n += 1;
        let start = Instant::now();
        let session = {
            let live = shared.live.lock().expect("not poisoned");
            live.get(n as usize % live.len().max(1)).cloned()
        };
        let req = async {
            let http = &setup.http;
            let auth = |r: reqwest::RequestBuilder| r.bearer_auth(&setup.access);
            if last_login.elapsed() >= Duration::from_secs(5) {
                last_login = Instant::now();
                http.post(format!("{base}/api/auth/login/"))
                    .json(&json!({"email": email, "password": password}))
                    .send()
                    .await?
                    .error_for_status()?;
            } else if n.is_multiple_of(10) {
                let key: Value = auth(http.post(format!("{base}/api/auth/api-keys/")))
                    .json(&json!({"name": format!("soak {n}")}))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                http.get(format!("{base}/api/auth/me/"))
                    .header("X-API-Key", key["key"].as_str().context("key")?)
                    .send()
                    .await?
                    .error_for_status()?;
                let id = key["id"].as_str().context("key id")?;
                auth(http.delete(format!("{base}/api/auth/api-keys/{id}/")))
                    .send()
                    .await?
                    .error_for_status()?;
            } else if n.is_multiple_of(3) {
                auth(http.get(format!("{base}/api/sessions/?limit=50")))
                    .send()
                    .await?
                    .error_for_status()?;
            } else if let (1, Some(session)) = (n % 3, &session) {
                // A session deleted meanwhile answers 404: that is no error.
                let res =
                    auth(http.get(format!("{base}/api/sessions/{session}/messages/?limit=100")))
                        .send()
                        .await?;
                anyhow::ensure!(
                    res.status() == 200 || res.status() == 404,
                    "history: {}",
                    res.status()
                );
            } else {
                auth(http.get(format!("{base}/api/auth/me/")))
                    .send()
                    .await?
                    .error_for_status()?;
            }
            anyhow::Ok(())
        };
        match req.await {
            Ok(()) => {
                shared.http.fetch_add(1, Ordering::Relaxed);
                let _ = shared
                    .window
                    .lock()
                    .expect("not poisoned")
                    .http
                    .record(micros(start.elapsed()));
            }
            Err(e) => shared.error("http", &e),
        }
    }
    Ok(())
}

/// The samples drawn as four stacked charts over time: RSS, disk, open
/// files, time-to-done p50/p99 (hand-written SVG: no plotting dependency).
fn svg(samples: &[Sample], opts: &Options) -> String {
    type Series<'a> = (&'a str, &'a str, Box<dyn Fn(&Sample) -> f64>);
    let charts: Vec<(&str, Vec<Series>)> = vec![
        (
            "server RSS (MiB)",
            vec![("RSS", "#1f77b4", Box::new(|s: &Sample| s.rss_mib))],
        ),
        (
            "database on disk (MiB)",
            vec![("disk", "#ff7f0e", Box::new(|s: &Sample| s.disk_mib))],
        ),
        (
            "open files",
            vec![("files", "#2ca02c", Box::new(|s: &Sample| s.fds as f64))],
        ),
        (
            "time to done (ms), per window",
            vec![
                ("p50", "#9467bd", Box::new(|s: &Sample| s.done_p50)),
                ("p99", "#d62728", Box::new(|s: &Sample| s.done_p99)),
            ],
        ),
    ];
    let (w, h, left, top, gap) = (900.0, 170.0, 70.0, 40.0, 50.0);
    let t_max = samples.iter().map(|s| s.t).fold(1.0, f64::max);
    let total_h = top + charts.len() as f64 * (h + gap) + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{total_h}" font-family="sans-serif" font-size="12">"#,
        w + left + 30.0
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="22" font-size="14">palaver-bench soak: {} min, {} sockets at {} replies/s, conversations of {}, {} demo users/s, {} HTTP requests/s (sampled every {} s)</text>"#,
        opts.minutes,
        opts.sockets,
        opts.rate,
        opts.conversation,
        opts.demos,
        opts.http,
        opts.interval
    );
    for (k, (title, series)) in charts.iter().enumerate() {
        let y0 = top + k as f64 * (h + gap);
        let max = series
            .iter()
            .flat_map(|(_, _, f)| samples.iter().map(f))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.1;
        let _ = writeln!(
            out,
            r##"<text x="{left}" y="{}">{title}</text><rect x="{left}" y="{}" width="{w}" height="{h}" fill="none" stroke="#999"/>"##,
            y0 + 14.0,
            y0 + 20.0
        );
        for frac in [0.0, 0.5, 1.0] {
            let y = y0 + 20.0 + h * (1.0 - frac);
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="end">{:.1}</text>"#,
                left - 6.0,
                y + 4.0,
                max * frac
            );
        }
        // Phase changes (idle, reopened) as dashed lines.
        for pair in samples.windows(2) {
            if pair[0].phase != pair[1].phase {
                let x = left + w * pair[1].t / t_max;
                let _ = writeln!(
                    out,
                    r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#777" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" fill="#777">{}</text>"##,
                    y0 + 20.0,
                    y0 + 20.0 + h,
                    x + 3.0,
                    y0 + 34.0,
                    pair[1].phase
                );
            }
        }
        for (j, (name, color, f)) in series.iter().enumerate() {
            let points: Vec<String> = samples
                .iter()
                .filter(|s| f(s).is_finite())
                .map(|s| {
                    format!(
                        "{:.1},{:.1}",
                        left + w * s.t / t_max,
                        y0 + 20.0 + h * (1.0 - f(s) / max)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/><text x="{}" y="{}" fill="{color}">{name}</text>"#,
                points.join(" "),
                left + w - 60.0 + j as f64 * 30.0,
                y0 + 14.0
            );
        }
        if k + 1 == charts.len() {
            for frac in [0.0, 0.25, 0.5, 0.75, 1.0] {
                let _ = writeln!(
                    out,
                    r#"<text x="{:.1}" y="{}" text-anchor="middle">{:.0} s</text>"#,
                    left + w * frac,
                    y0 + 20.0 + h + 16.0,
                    t_max * frac
                );
            }
        }
    }
    out.push_str("</svg>\n");
    out
}
