//! palaver's benchmark harness (never a timed test).
//!
//! - `all`: every load scenario against palaver (the release binary beside
//!   this one, on its own temporary data directory) and against the bare
//!   baseline server, in one run, printed as a table with ratios: `handshake`,
//!   `hold`, `stream`, `quota`. `--smoke` runs them with tiny sizes (the test
//!   suite does, so the harness cannot rot).
//! - `baseline`: the bare baseline server (palaver's wire protocol, no
//!   authentication, no storage), which `all` starts in its own process.
//! - `flood`: a good client's handshake latency idle and during a flood of
//!   handshakes with bad tokens (docs/RELIABILITY.md).
//! - `verify`: token verification in the caller vs through one actor.
//! - `login`: logins per second against a running server (argon2id bound).
//! - `quota-latency`: a counted request's latency with and without admission.
//! - `pool-scaling`: replies per second with a CPU-bound tool call,
//!   `analysis.workers` = 1 vs 2.
//! - `slow-streams`: 1 000 replies paced 100 ms a token, all at once in one
//!   process: refusals, pacing kept, server RSS per stream.
//! - `audio`: palaver-audio's whole analysis of a 5-minute track vs
//!   ffmpeg's loudness pass on the same file (WAV and MP3), and the peak
//!   memory of one analysis for a 1- and a 10-minute track.
//! - `soak`: a long steady mixed load, sampled every 10 s (RSS, open files,
//!   disk, latency percentiles), written as CSV and drawn as SVG.
//! - `crash`: the crash loop (not a benchmark): palaver killed with SIGKILL
//!   at random moments under a mixed workload, restarted on the same data
//!   and checked against everything acknowledged (`crash/`).
//!
//! Compare ratios within one run: the machine is shared and noisy.

mod audio;
mod baseline;
mod crash;
mod flood;
mod pool;
mod scenarios;
mod soak;
mod target;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use palaver_actors::analysis::{AnalysisSettings, EngineKind};
use palaver_actors::auth::{Auth, AuthError, AuthSettings, DemoSettings, KeySource};
use palaver_actors::session::WsLimits;
use palaver_actors::{password, Supervisor};
use palaver_storage::{NewUser, Store};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Every load scenario against palaver and the baseline; prints a table.
    All {
        /// Tiny sizes: checks the harness works, measures nothing.
        #[arg(long)]
        smoke: bool,
        /// Connections held at once in `hold`.
        #[arg(long, default_value_t = 19_000)]
        hold: usize,
    },
    /// Only the `hold` scenario (server RSS per idle connection), both servers.
    Hold {
        #[arg(long, default_value_t = 5_000)]
        n: usize,
    },
    /// Only the open-loop scenario, `runs` times against each server
    /// (alternating), with palaver's flush durations beside each run.
    OpenLoop {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value_t = 1_000)]
        sockets: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Only the `quota` scenario: counted requests with quotas off and on.
    Quota {
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// The pool's CPU capacity: a CPU-bound tool call per reply (the builtin
    /// engine's `session_summary` over a long session), replies per second
    /// with `analysis.workers` = 1 and 2, alternating, a fresh server each.
    PoolScaling {
        /// Runs per worker count (the medians are reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Questions in the summarized session.
        #[arg(long, default_value_t = 2_000)]
        history: usize,
        /// Words per question in it.
        #[arg(long, default_value_t = 100)]
        words: usize,
        /// Sockets asking at once.
        #[arg(long, default_value_t = 4)]
        sockets: usize,
        /// Replies per run.
        #[arg(long, default_value_t = 200)]
        replies: usize,
    },
    /// The pool's stream capacity: `n` replies paced `delay_ms` a token
    /// (echo), all at once, `analysis.max_streams = n`.
    SlowStreams {
        #[arg(long, default_value_t = 1_000)]
        n: usize,
        /// Words per question (= tokens per reply).
        #[arg(long, default_value_t = 100)]
        words: usize,
        #[arg(long, default_value_t = 100)]
        delay_ms: u64,
    },
    /// palaver-audio's analysis vs `ffmpeg -af ebur128=peak=true` on one
    /// generated track (or `--file`, a WAV) and its MP3; then the peak
    /// memory of one analysis of a 1- and a 10-minute track.
    Audio {
        /// Rounds per file (medians and spread reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// A WAV to use instead of the generated track.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Length of the generated track.
        #[arg(long, default_value_t = 300.0)]
        seconds: f64,
        /// Tiny sizes: checks the harness works, measures nothing.
        #[arg(long)]
        smoke: bool,
    },
    /// One analysis (or probe) of `file` in this process, then its peak
    /// resident set in KiB (run by `audio` as a child).
    #[command(hide = true)]
    AudioPeak {
        #[arg(long)]
        file: std::path::PathBuf,
        #[arg(long)]
        probe: bool,
    },
    /// Only the streaming scenario (`sockets` sockets, each on its own
    /// session, `questions` questions back to back), `runs` times against
    /// each server (alternating), with the disk palaver's database grew by.
    Stream {
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = 50)]
        sockets: usize,
        #[arg(long, default_value_t = 20)]
        questions: usize,
    },
    /// The cost of a streamed reply and of a handshake: `rounds` rounds,
    /// each the handshake scenario then the streaming scenario against both
    /// servers (fresh ones each time), the server measured first
    /// alternating from round to round; medians with their spread.
    Cost {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 5_000)]
        handshakes: usize,
        #[arg(long, default_value_t = 50)]
        sockets: usize,
        #[arg(long, default_value_t = 20)]
        questions: usize,
    },
    /// A long steady mixed load against one palaver, sampled every
    /// `interval` s (RSS, open files, disk, latency percentiles); writes
    /// `soak.csv` and `soak.svg` into `out`.
    Soak(soak::Options),
    /// A good client's handshake latency (p50, p99) idle and during a
    /// flood of handshakes with bad tokens from other addresses, `rounds`
    /// fresh servers; the p99 ratio's median.
    Flood {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Good handshakes per phase (idle, flood), one at a time.
        #[arg(long, default_value_t = 1_000)]
        handshakes: usize,
        /// Flooding clients (each from its own loopback address).
        #[arg(long, default_value_t = 8)]
        flooders: usize,
        /// Bad handshakes per second asked of the flooders, in all.
        #[arg(long, default_value_t = 2_000.0)]
        rate: f64,
    },
    /// The crash loop: SIGKILL at random moments under a mixed workload,
    /// restart on the same data, check every acknowledged write.
    Crash(crash::Options),
    /// Run the bare baseline server.
    Baseline {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: String,
    },
    /// Memory of the QuotaRegistry: `users` distinct demo users admitted,
    /// their demos ended and evicted by the QuotaKeeper, then as many again.
    QuotaMemory {
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        #[arg(long, default_value_t = 5)]
        waves: usize,
        /// Never evict (every counter seen since start stays in memory).
        #[arg(long)]
        keep: bool,
    },
    /// Access-token verification: in the caller vs through one actor.
    Verify {
        #[arg(long, default_value_t = 20_000)]
        iterations: u32,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// Counted-request latency with quota admission (a demo user) and without
    /// (a regular user, no user limit), interleaved, against a running server
    /// started with open registration and a huge `demo.request_limit`.
    QuotaLatency {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 200)]
        requests: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Logins per second against a running server.
    Login {
        /// e.g. http://127.0.0.1:8080 (registration must be open).
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, default_value_t = 200)]
        logins: usize,
    },
}

/// The streaming scenario `runs` times against each server (baseline
/// first); a table row per run and the medians.
async fn stream_runs(runs: usize, sockets: usize, questions: usize) -> Result<()> {
    let bin = target::palaver_binary()?;
    println!("| run | palaver replies/s | CPU/reply | baseline replies/s | CPU/reply | CPU ratio | palaver disk per 1 000 replies | flushes per reply |");
    println!("|---|---|---|---|---|---|---|---|");
    let (mut ratios, mut pal_cpu, mut pal_rate, mut disk) = (vec![], vec![], vec![], vec![]);
    for run in 1..=runs {
        let base = target::Target::baseline()?;
        let b = scenarios::stream(&base, None, sockets, questions).await?;
        drop(base);
        let pal = target::Target::palaver(&bin)?;
        let setup = scenarios::Setup::palaver(&pal, sockets).await?;
        let before = pal.data_bytes();
        let flushes_before = scenarios::flush_stats(&pal).await?.count;
        let p = scenarios::stream(&pal, Some(&setup), sockets, questions).await?;
        let grown = pal.data_bytes().saturating_sub(before) as f64;
        let flushes = scenarios::flush_stats(&pal).await?.count - flushes_before;
        drop(pal);
        let per_1000 = grown * 1000.0 / (sockets * questions) as f64;
        println!(
            "| {run} | {:.0} /s | {:.0} µs | {:.0} /s | {:.0} µs | {:.2} | {:.0} KiB | {:.2} |",
            p.replies_per_sec,
            p.cpu_us,
            b.replies_per_sec,
            b.cpu_us,
            p.cpu_us / b.cpu_us,
            per_1000 / 1024.0,
            flushes as f64 / (sockets * questions) as f64
        );
        eprintln!(
            "run {run}: palaver time to done p50 {:.1} ms p99 {:.1} ms; baseline {:.1} / {:.1} ms",
            p.done_p50_ms, p.done_p99_ms, b.done_p50_ms, b.done_p99_ms
        );
        ratios.push(p.cpu_us / b.cpu_us);
        pal_cpu.push(p.cpu_us);
        pal_rate.push(p.replies_per_sec);
        disk.push(per_1000);
    }
    println!(
        "median: palaver {:.0} replies/s, {:.0} µs CPU per reply ({:.2} × the baseline's), {:.0} KiB of disk per 1 000 replies",
        median(pal_rate),
        median(pal_cpu),
        median(ratios),
        median(disk) / 1024.0
    );
    Ok(())
}

/// One server's figures in one round of [`cost`].
#[derive(Default)]
struct CostFigures {
    handshakes_per_sec: Vec<f64>,
    cpu_per_handshake: Vec<f64>,
    replies_per_sec: Vec<f64>,
    cpu_per_reply: Vec<f64>,
    ttft_p99: Vec<f64>,
}

impl CostFigures {
    fn add(&mut self, h: &scenarios::HandshakeResult, s: &scenarios::StreamResult) {
        self.handshakes_per_sec.push(h.per_sec);
        self.cpu_per_handshake.push(h.cpu_us);
        self.replies_per_sec.push(s.replies_per_sec);
        self.cpu_per_reply.push(s.cpu_us);
        self.ttft_p99.push(s.ttft_p99_ms);
    }
}

/// "median (min–max)" of `v`.
fn spread(v: &[f64], digits: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.*} ({:.*}–{:.*})",
        digits,
        median(v.to_vec()),
        digits,
        min,
        digits,
        max
    )
}

async fn cost(rounds: usize, handshakes: usize, sockets: usize, questions: usize) -> Result<()> {
    use scenarios::Setup;
    use target::Target;

    let bin = target::palaver_binary()?;
    let (mut pal, mut base) = (CostFigures::default(), CostFigures::default());
    let mut ratios: [Vec<f64>; 5] = Default::default();
    for round in 0..rounds {
        let measure_palaver =
            async || -> Result<(scenarios::HandshakeResult, scenarios::StreamResult)> {
                let target = Target::palaver(&bin)?;
                let setup = Setup::palaver(&target, 1).await?;
                let h = scenarios::handshake(&target, Some(&setup), handshakes, 50, 20).await?;
                anyhow::ensure!(
                    h.refused == handshakes / 20,
                    "every forged token must be refused: {h:?}"
                );
                drop(target);
                let target = Target::palaver(&bin)?;
                let setup = Setup::palaver(&target, sockets).await?;
                let s = scenarios::stream(&target, Some(&setup), sockets, questions).await?;
                Ok((h, s))
            };
        let measure_baseline =
            async || -> Result<(scenarios::HandshakeResult, scenarios::StreamResult)> {
                let target = Target::baseline()?;
                let h = scenarios::handshake(&target, None, handshakes, 50, 0).await?;
                drop(target);
                let target = Target::baseline()?;
                let s = scenarios::stream(&target, None, sockets, questions).await?;
                Ok((h, s))
            };
        let ((ph, ps), (bh, bs)) = if round % 2 == 0 {
            let b = measure_baseline().await?;
            (measure_palaver().await?, b)
        } else {
            let p = measure_palaver().await?;
            (p, measure_baseline().await?)
        };
        eprintln!(
            "round {}: replies/s {:.0} vs {:.0}, CPU/reply {:.0} vs {:.0} µs, handshakes/s {:.0} vs {:.0}, CPU/handshake {:.0} vs {:.0} µs",
            round + 1,
            ps.replies_per_sec,
            bs.replies_per_sec,
            ps.cpu_us,
            bs.cpu_us,
            ph.per_sec,
            bh.per_sec,
            ph.cpu_us,
            bh.cpu_us
        );
        for (r, v) in ratios.iter_mut().zip([
            ps.replies_per_sec / bs.replies_per_sec,
            ps.cpu_us / bs.cpu_us,
            ph.per_sec / bh.per_sec,
            ph.cpu_us / bh.cpu_us,
            ps.ttft_p99_ms / bs.ttft_p99_ms,
        ]) {
            r.push(v);
        }
        pal.add(&ph, &ps);
        base.add(&bh, &bs);
    }
    println!("{rounds} rounds; medians (min–max); ratios are medians of each round's ratio\n");
    println!("| figure | palaver | baseline | ratio |");
    println!("|---|---|---|---|");
    let rows: [(&str, &[f64], &[f64], usize); 5] = [
        (
            "streamed replies per second",
            &pal.replies_per_sec,
            &base.replies_per_sec,
            0,
        ),
        (
            "server CPU per reply (µs)",
            &pal.cpu_per_reply,
            &base.cpu_per_reply,
            0,
        ),
        (
            "handshakes per second",
            &pal.handshakes_per_sec,
            &base.handshakes_per_sec,
            0,
        ),
        (
            "server CPU per handshake (µs)",
            &pal.cpu_per_handshake,
            &base.cpu_per_handshake,
            0,
        ),
        (
            "time to first token p99 (ms)",
            &pal.ttft_p99,
            &base.ttft_p99,
            1,
        ),
    ];
    for ((what, p, b, digits), r) in rows.into_iter().zip(&ratios) {
        println!(
            "| {what} | {} | {} | {} |",
            spread(p, digits),
            spread(b, digits),
            spread(r, 2)
        );
    }
    Ok(())
}

/// One open-loop run against each server (baseline first), with palaver's
/// flush figures from the same run.
struct OpenLoopRun {
    palaver: scenarios::OpenLoopResult,
    baseline: scenarios::OpenLoopResult,
    flushes: scenarios::FlushStats,
}

async fn open_loop_runs(
    bin: &std::path::Path,
    runs: usize,
    sockets: usize,
    seconds: u64,
) -> Result<Vec<OpenLoopRun>> {
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let base = target::Target::baseline()?;
        let baseline = scenarios::open_loop(&base, None, sockets, seconds).await?;
        drop(base);
        let pal = target::Target::palaver(bin)?;
        // One conversation per socket: sockets on one session would each
        // receive every reply of it (API.md §7), and ask over one another.
        let setup = scenarios::Setup::palaver(&pal, sockets).await?;
        let palaver = scenarios::open_loop(&pal, Some(&setup), sockets, seconds).await?;
        let flushes = scenarios::flush_stats(&pal).await?;
        drop(pal);
        eprintln!("open loop: palaver {palaver:?}\nopen loop: baseline {baseline:?}\n{flushes:?}");
        anyhow::ensure!(
            palaver.replies == sockets * seconds as usize,
            "every open-loop question answered"
        );
        out.push(OpenLoopRun {
            palaver,
            baseline,
            flushes,
        });
    }
    Ok(out)
}

/// The open-loop scenario repeated: each run's time to first token for both
/// servers, and how palaver's group-commit flushes were distributed (the
/// first token waits for one), then the medians over the runs.
async fn open_loop(runs: usize, sockets: usize, seconds: u64) -> Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let results = open_loop_runs(&target::palaver_binary()?, runs, sockets, seconds).await?;
    println!("| run | palaver p50 | p99 | max | baseline p50 | p99 | max | flushes | flush mean | flushes > 5 ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, r) in results.iter().enumerate() {
        let (p, b, f) = (&r.palaver, &r.baseline, &r.flushes);
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} | {:.2} ms | {} |",
            i + 1,
            p.ttft_p50_ms,
            p.ttft_p99_ms,
            p.ttft_max_ms,
            b.ttft_p50_ms,
            b.ttft_p99_ms,
            b.ttft_max_ms,
            f.count,
            f.mean_ms,
            f.over_5ms,
        );
    }
    let med = |f: fn(&OpenLoopRun) -> f64| median(results.iter().map(f).collect());
    println!(
        "median p99 over {runs} runs: palaver {:.1} ms, baseline {:.1} ms",
        med(|r| r.palaver.ttft_p99_ms),
        med(|r| r.baseline.ttft_p99_ms)
    );
    Ok(())
}

/// The load generator's runtime: two threads, like the machine's cores.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn main() -> Result<()> {
    match Cli::parse().scenario {
        Scenario::All { smoke, hold } => {
            runtime()?.block_on(all(smoke, hold))
        }
        Scenario::Hold { n } => {
            runtime()?.block_on(async {
                let _ = rlimit::increase_nofile_limit(u64::MAX);
                let base = target::Target::baseline()?;
                let b = scenarios::hold(&base, None, n).await?;
                drop(base);
                let pal = target::Target::palaver(&target::palaver_binary()?)?;
                // One session per connection: each asks a question of its own.
                let setup = scenarios::Setup::palaver(&pal, n).await?;
                let p = scenarios::hold(&pal, Some(&setup), n).await?;
                println!(
                    "hold {n}: palaver {:.1} KiB, baseline {:.1} KiB per connection; \
                     after one question each: palaver {:.1} KiB, baseline {:.1} KiB",
                    p.rss_per_conn / 1024.0,
                    b.rss_per_conn / 1024.0,
                    p.rss_per_conn_after_traffic / 1024.0,
                    b.rss_per_conn_after_traffic / 1024.0
                );
                Ok(())
            })
        }
        Scenario::OpenLoop {
            runs,
            sockets,
            seconds,
        } => {
            runtime()?.block_on(open_loop(runs, sockets, seconds))
        }
        Scenario::Quota {
            requests,
            concurrency,
        } => {
            runtime()?.block_on(async {
                let pal = target::Target::palaver(&target::palaver_binary()?)?;
                let setup = scenarios::Setup::palaver(&pal, 1).await?;
                let q = scenarios::quota(&pal, &setup, requests, concurrency).await?;
                println!(
                    "quota off {:.0}/s ({:.0} µs CPU each), on {:.0}/s ({:.0} µs CPU each): {:.2}× the rate",
                    q.off_per_sec,
                    q.off_cpu_us,
                    q.on_per_sec,
                    q.on_cpu_us,
                    q.on_per_sec / q.off_per_sec
                );
                Ok(())
            })
        }
        Scenario::PoolScaling {
            runs,
            history,
            words,
            sockets,
            replies,
        } => runtime()?.block_on(pool_scaling(runs, history, words, sockets, replies)),
        Scenario::Stream {
            runs,
            sockets,
            questions,
        } => runtime()?.block_on(stream_runs(runs, sockets, questions)),
        Scenario::Cost {
            rounds,
            handshakes,
            sockets,
            questions,
        } => runtime()?.block_on(cost(rounds, handshakes, sockets, questions)),
        Scenario::Soak(options) => runtime()?.block_on(soak::run(options)),
        Scenario::Flood {
            rounds,
            handshakes,
            flooders,
            rate,
        } => runtime()?.block_on(flood::flood(rounds, handshakes, flooders, rate)),
        Scenario::SlowStreams { n, words, delay_ms } => {
            runtime()?.block_on(slow_streams(n, words, delay_ms))
        }
        Scenario::Audio {
            runs,
            file,
            seconds,
            smoke,
        } => audio::run(runs, file, seconds, smoke),
        Scenario::AudioPeak { file, probe } => audio::peak(&file, probe),
        Scenario::Crash(options) => runtime()?.block_on(crash::run(options)),
        Scenario::Baseline { bind } => {
            runtime()?.block_on(baseline::serve(&bind))
        }
        Scenario::QuotaMemory { users, waves, keep } => {
            actix_rt::System::new().block_on(quota_memory(users, waves, keep))
        }
        Scenario::Verify { iterations, rounds } => {
            actix_rt::System::new().block_on(verify(iterations, rounds))
        }
        Scenario::Login {
            url,
            concurrency,
            logins,
        } => tokio::runtime::Runtime::new()?.block_on(login(&url, concurrency, logins)),
        Scenario::QuotaLatency {
            url,
            requests,
            rounds,
        } => tokio::runtime::Runtime::new()?.block_on(quota(&url, requests, rounds)),
    }
}

fn settings() -> AuthSettings {
    AuthSettings {
        keys: KeySource::Hs256 {
            secret: vec![7; 64],
            previous: vec![],
        },
        issuer: "palaver".into(),
        audience: None,
        leeway_seconds: 5,
        access_ttl: Duration::from_secs(1800),
        refresh_ttl: Duration::from_secs(86400),
        ticket_ttl: Duration::from_secs(30),
        login_failures_per_email: 5,
        login_failures_per_ip: 50,
        login_window: Duration::from_secs(900),
        registrations_per_ip_per_hour: 10,
        registrations_per_hour: 100,
        demo: DemoSettings {
            enabled: true,
            lifetime: Duration::from_secs(900),
            per_ip_per_hour: 1000,
            gc_after: Duration::from_secs(3600),
        },
        external: Vec::new(),
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The rejected design: one actor that verifies every token.
struct Verifier(Auth);

impl Actor for Verifier {
    type Context = Context<Self>;
}

struct Verify(Arc<str>);

impl Message for Verify {
    type Result = Result<(), AuthError>;
}

impl Handler<Verify> for Verifier {
    type Result = Result<(), AuthError>;
    fn handle(&mut self, msg: Verify, _: &mut Self::Context) -> Self::Result {
        verify_now(&self.0, &msg.0).map(|_| ())
    }
}

/// palaver's own token verified on this thread: its verification never
/// waits (only another issuer's may), so the future is ready when polled.
fn verify_now(auth: &Auth, token: &str) -> Result<palaver_actors::auth::Principal, AuthError> {
    use futures_util::FutureExt;
    auth.verify_access(token)
        .now_or_never()
        .expect("palaver's own tokens verify without waiting")
}

/// This process's resident set, in bytes.
fn own_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The QuotaRegistry over a real store (64 MiB sled cache): `waves` waves of
/// `users` distinct demo users, each making one counted request, the demos
/// then ending; between waves the QuotaKeeper evicts (or, with `keep`, does
/// not: every counter seen since start stays, the design before the keeper).
/// Prints RSS and the counters held after each wave.
async fn quota_memory(users: usize, waves: usize, keep: bool) -> Result<()> {
    use palaver_actors::quota::{Evict, Policy, QuotaKeeper, QuotaRegistry, IDLE_AFTER};
    use palaver_storage::{Store, StoreConfig, UserId};
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreConfig {
        path: dir.path().to_path_buf(),
        cache_bytes: 64 << 20,
        fsync: false,
    })?;
    let registry = QuotaRegistry::new(store.clone());
    let keeper = (!keep).then(|| QuotaKeeper::new(registry.clone()).start());
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let start = palaver_actors::auth::now_secs();
    println!(
        "quota memory: {waves} waves of {users} demo users, eviction {}",
        if keep { "off" } else { "on" }
    );
    for wave in 0..waves as u64 {
        let now = start + wave * 1000;
        let policy = Policy::Demo {
            limit: 5,
            ends_at: now + 900,
            lifetime: 900,
        };
        for _ in 0..users {
            registry.admit(UserId::new(), policy, now)?;
        }
        let (at_peak, peak_bytes) = registry.footprint();
        if let Some(keeper) = &keeper {
            keeper
                .send(Evict {
                    now: now + 901,
                    idle: IDLE_AFTER,
                })
                .await?;
        }
        let (held, bytes) = registry.footprint();
        println!(
            "  wave {}: {at_peak} counters in memory ({:.1} MiB of tables) after the wave, \
             {held} ({:.1} MiB) after its demos ended; process RSS {:.1} MiB (mostly sled)",
            wave + 1,
            mib(peak_bytes as u64),
            mib(bytes as u64),
            mib(own_rss()),
        );
    }
    Ok(())
}

async fn verify(iterations: u32, rounds: u32) -> Result<()> {
    let store = Store::temporary()?;
    let booted = Supervisor::boot(
        store.clone(),
        settings(),
        AnalysisSettings {
            engine: EngineKind::Echo,
            workers: 1,
            queue: 16,
            max_streams: 16,
            token_delay: Duration::ZERO,
            finish_on_disconnect: true,
            max_track_samples: u64::MAX,
            openai: None,
        },
        WsLimits {
            max_messages_per_minute: 120,
            max_message_bytes: 65536,
            max_buffered_bytes: 1 << 20,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            expiry_warning: Duration::from_secs(60),
            max_question_chars: 4000,
            resume_window: Duration::from_secs(3600),
        },
        palaver_actors::SessionRetention::KEEP,
    )?;
    let auth = booted.auth;
    store
        .users()
        .create(NewUser {
            email: "bench@example.com".into(),
            password_hash: password::hash("bench-password")?,
            is_demo: false,
            demo_expires_at: None,
        })
        .await?;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let pair = auth
        .login("bench@example.com", "bench-password", ip)
        .await?;
    let token: Arc<str> = pair.access.into();

    // What one [[auth.external]] entry adds to palaver's own tokens: their
    // `iss` is read first, to pick the source.
    let sources = palaver_actors::auth::external::Sources::new(
        &[palaver_actors::auth::ExternalSettings {
            name: "django".into(),
            issuer: String::new(),
            audience: None,
            algorithms: vec![jsonwebtoken::Algorithm::HS256],
            key: palaver_actors::auth::ExternalKey::Secret(vec![7; 50]),
            user_claim: "user_id".into(),
            token_type_claim: Some("token_type".into()),
            demo_claim: None,
            leeway_seconds: 5,
        }],
        &settings().keys,
        &settings().issuer,
    )?;
    let mut routing = Vec::new();
    let mut decode_only = Vec::new();
    let mut in_caller = Vec::new();
    let mut via_actor = Vec::new();
    let mut in_caller_2 = Vec::new();
    let verifier = Verifier(auth.clone()).start();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..iterations {
            auth.tokens().decode(&token).expect("valid");
        }
        decode_only.push(t.elapsed().as_nanos() as f64 / iterations as f64);

        let t = Instant::now();
        for _ in 0..iterations {
            let route = sources.route(&token).expect("palaver's own");
            assert!(matches!(route, palaver_actors::auth::external::Route::Own));
        }
        routing.push(t.elapsed().as_nanos() as f64 / iterations as f64);

        let t = Instant::now();
        for _ in 0..iterations {
            verify_now(&auth, &token).expect("valid");
        }
        in_caller.push(t.elapsed().as_nanos() as f64 / iterations as f64);

        // Two threads verifying at once (what two actix workers do).
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                let (auth, token) = (auth.clone(), token.clone());
                s.spawn(move || {
                    for _ in 0..iterations / 2 {
                        verify_now(&auth, &token).expect("valid");
                    }
                });
            }
        });
        in_caller_2.push(t.elapsed().as_nanos() as f64 / iterations as f64);

        // Through the mailbox, 64 requests in flight.
        let t = Instant::now();
        let mut pending = Vec::with_capacity(64);
        for _ in 0..iterations {
            pending.push(verifier.send(Verify(token.clone())));
            if pending.len() == 64 {
                for p in pending.drain(..) {
                    p.await.context("mailbox")?.expect("valid");
                }
            }
        }
        for p in pending {
            p.await.context("mailbox")?.expect("valid");
        }
        via_actor.push(t.elapsed().as_nanos() as f64 / iterations as f64);
    }
    println!("access-token verification, {iterations} per round, median of {rounds} rounds (ns per verification):");
    println!(
        "  signature + claims only       {:>8.0}",
        median(decode_only)
    );
    println!(
        "  full, in the caller (1 thread){:>8.0}",
        median(in_caller.clone())
    );
    println!(
        "  + reading `iss` (with [[auth.external]] entries){:>8.0}",
        median(routing)
    );
    println!(
        "  full, in the caller (2 threads, wall ns per op){:>8.0}",
        median(in_caller_2)
    );
    println!(
        "  full, through one actor       {:>8.0}",
        median(via_actor.clone())
    );
    println!(
        "  actor / caller ratio          {:>8.2}",
        median(via_actor) / median(in_caller)
    );
    Ok(())
}

async fn login(url: &str, concurrency: usize, logins: usize) -> Result<()> {
    let http = reqwest::Client::new();
    let email = format!("bench-{}@example.com", std::process::id());
    let password = "bench-password-123";
    let res = http
        .post(format!("{url}/api/auth/register/"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await?;
    anyhow::ensure!(
        res.status() == 201,
        "register: {} (is registration open?)",
        res.status()
    );
    let per_task = logins / concurrency;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, email) = (http.clone(), url.to_owned(), email.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                let res = http
                    .post(format!("{url}/api/auth/login/"))
                    .json(&serde_json::json!({"email": email, "password": password}))
                    .send()
                    .await?;
                anyhow::ensure!(res.status() == 200, "login: {}", res.status());
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = latencies.len();
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "login: {n} logins, {concurrency} concurrent: {:.1}/s, latency p50 {:.1} ms, p99 {:.1} ms",
        n as f64 / elapsed,
        latencies[n / 2],
        latencies[(n * 99 / 100).min(n - 1)]
    );
    Ok(())
}

async fn quota(url: &str, requests: usize, rounds: usize) -> Result<()> {
    let http = reqwest::Client::new();
    let email = format!("quota-bench-{}@example.com", std::process::id());
    let password = "bench-password-123";
    let res = http
        .post(format!("{url}/api/auth/register/"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await?;
    anyhow::ensure!(res.status() == 201, "register: {}", res.status());
    let login: serde_json::Value = http
        .post(format!("{url}/api/auth/login/"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let demo: serde_json::Value = http
        .post(format!("{url}/api/auth/demo/"))
        .send()
        .await?
        .json()
        .await?;
    let tokens = [
        (
            "quota off (regular user)",
            login["access"].as_str().context("access")?.to_owned(),
        ),
        (
            "quota on (demo user)",
            demo["access"].as_str().context("access")?.to_owned(),
        ),
    ];
    let mut medians = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, (_, token)) in tokens.iter().enumerate() {
            let mut latencies = Vec::with_capacity(requests);
            for _ in 0..requests {
                let t = Instant::now();
                let res = http
                    .post(format!("{url}/api/sessions/"))
                    .bearer_auth(token)
                    .json(&serde_json::json!({}))
                    .send()
                    .await?;
                anyhow::ensure!(res.status() == 201, "create: {}", res.status());
                latencies.push(t.elapsed().as_secs_f64() * 1e6);
            }
            medians[i].push(median(latencies));
        }
    }
    println!(
        "POST /api/sessions/, {requests} sequential per round, median of {rounds} round medians:"
    );
    let off = median(medians[0].clone());
    let on = median(medians[1].clone());
    println!("  {:<28} {:>8.0} µs", tokens[0].0, off);
    println!("  {:<28} {:>8.0} µs", tokens[1].0, on);
    println!(
        "  admission adds               {:>8.1} %",
        (on / off - 1.0) * 100.0
    );
    Ok(())
}

/// `pool-scaling`: each run's figures, then the medians by worker count.
async fn pool_scaling(
    runs: usize,
    history: usize,
    words: usize,
    sockets: usize,
    replies: usize,
) -> Result<()> {
    let bin = target::palaver_binary()?;
    let mut results: Vec<pool::ScalingRun> = Vec::new();
    for _ in 0..runs {
        for workers in [1, 2] {
            let r = pool::scaling(&bin, workers, history, words, sockets, replies).await?;
            eprintln!("pool scaling: {r:?}");
            results.push(r);
        }
    }
    println!(
        "CPU-bound tool call per reply (session_summary over {history} questions of {words} words), \
         {sockets} sockets, {replies} replies per run, median of {runs} runs:"
    );
    println!("| workers | replies per second | time to done p50 | p99 | server CPU per reply | server cores busy | one reply alone | flushes > 5 ms |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut rates = Vec::new();
    for workers in [1, 2] {
        let of = |f: fn(&pool::ScalingRun) -> f64| {
            median(
                results
                    .iter()
                    .filter(|r| r.workers == workers)
                    .map(f)
                    .collect(),
            )
        };
        let rate = of(|r| r.replies_per_sec);
        rates.push(rate);
        println!(
            "| {workers} | {rate:.1} /s | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} | {:.1} ms | {:.0} of {:.0} |",
            of(|r| r.done_p50_ms),
            of(|r| r.done_p99_ms),
            of(|r| r.cpu_ms),
            of(|r| r.cores_busy),
            of(|r| r.alone_ms),
            of(|r| r.flushes_over_5ms as f64),
            of(|r| r.flushes as f64),
        );
    }
    println!(
        "2 workers / 1 worker: {:.2}× the replies per second",
        rates[1] / rates[0]
    );
    Ok(())
}

/// `slow-streams`: one run, printed.
async fn slow_streams(n: usize, words: usize, delay_ms: u64) -> Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let bin = target::palaver_binary()?;
    let r = pool::slow_streams(&bin, n, words, Duration::from_millis(delay_ms)).await?;
    eprintln!("slow streams: {r:?}");
    let kib = |b: u64| b as f64 / 1024.0;
    let peak = r.rss_streaming.iter().copied().max().unwrap_or(r.rss_idle);
    let first = r.rss_streaming.first().copied().unwrap_or(r.rss_idle);
    let last = r.rss_streaming.last().copied().unwrap_or(r.rss_idle);
    println!(
        "{} replies streaming at once ({words} tokens each, one every {delay_ms} ms, echo, max_streams = {n}):",
        r.streams
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!("| replies refused `busy` | {} |", r.busy);
    println!("| replies complete | {} of {} |", r.complete, r.streams);
    println!(
        "| `palaver_analysis_active_streams` once all had a token | {} |",
        r.active_gauge
    );
    println!("| one more question meanwhile | {} |", r.one_more);
    println!(
        "| gap between tokens p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        r.gap_p50_ms, r.gap_p99_ms, r.gap_max_ms
    );
    println!(
        "| server RSS, connections idle | {:.1} MiB |",
        kib(r.rss_idle) / 1024.0
    );
    println!(
        "| server RSS while streaming ({} samples, 500 ms apart): first / last / peak | {:.1} / {:.1} / {:.1} MiB |",
        r.rss_streaming.len(),
        kib(first) / 1024.0,
        kib(last) / 1024.0,
        kib(peak) / 1024.0
    );
    println!(
        "| server RSS per stream (peak − idle) / {} | {:.1} KiB |",
        r.streams,
        kib(peak.saturating_sub(r.rss_idle)) / r.streams as f64
    );
    println!(
        "| server RSS after every reply ended, per reply (stored messages, allocator) | {:.1} KiB |",
        kib(r.rss_after.saturating_sub(r.rss_idle)) / r.streams as f64
    );
    println!("| server CPU per token | {:.1} µs |", r.cpu_us_per_token);
    println!(
        "| wall time, first question to last `done` | {:.1} s |",
        r.wall_s
    );
    Ok(())
}

/// Sizes of one `all` run.
struct Sizes {
    handshakes: usize,
    handshake_concurrency: usize,
    hold: usize,
    stream_sockets: usize,
    stream_questions: usize,
    quota_requests: usize,
    quota_concurrency: usize,
    open_sockets: usize,
    open_seconds: u64,
    open_runs: usize,
}

async fn all(smoke: bool, hold: usize) -> Result<()> {
    use scenarios::Setup;
    use target::Target;

    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => eprintln!("open files limit: {limit}"),
        Err(e) => eprintln!("cannot raise the open files limit: {e}"),
    }
    let sizes = if smoke {
        Sizes {
            handshakes: 40,
            handshake_concurrency: 4,
            hold: 20,
            stream_sockets: 2,
            stream_questions: 3,
            quota_requests: 20,
            quota_concurrency: 2,
            open_sockets: 10,
            open_seconds: 2,
            open_runs: 1,
        }
    } else {
        Sizes {
            handshakes: 5_000,
            handshake_concurrency: 50,
            hold,
            stream_sockets: 50,
            stream_questions: 20,
            quota_requests: 2_000,
            quota_concurrency: 8,
            open_sockets: 1_000,
            open_seconds: 10,
            open_runs: 3,
        }
    };
    let bin = target::palaver_binary()?;
    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    let mut row = |what: &str, p: f64, b: Option<f64>, unit: &str| {
        let ratio = b.map_or("".to_owned(), |b| format!("{:.2}", p / b));
        rows.push((
            what.to_owned(),
            format!("{p:.1} {unit}"),
            b.map_or("—".to_owned(), |b| format!("{b:.1} {unit}")),
            ratio,
        ));
    };

    // handshake
    let base = Target::baseline()?;
    let bh = scenarios::handshake(
        &base,
        None,
        sizes.handshakes,
        sizes.handshake_concurrency,
        0,
    )
    .await?;
    drop(base);
    let pal = Target::palaver(&bin)?;
    let setup = Setup::palaver(&pal, 1).await?;
    let ph = scenarios::handshake(
        &pal,
        Some(&setup),
        sizes.handshakes,
        sizes.handshake_concurrency,
        20,
    )
    .await?;
    drop(pal);
    eprintln!("handshake: palaver {ph:?}\nhandshake: baseline {bh:?}");
    anyhow::ensure!(
        ph.refused == sizes.handshakes / 20,
        "every forged token must be refused: {ph:?}"
    );
    anyhow::ensure!(
        ph.ok + ph.refused == sizes.handshakes && bh.ok == sizes.handshakes,
        "every handshake answered"
    );
    row("handshakes per second", ph.per_sec, Some(bh.per_sec), "/s");
    row("handshake latency p50", ph.p50_ms, Some(bh.p50_ms), "ms");
    row("handshake latency p99", ph.p99_ms, Some(bh.p99_ms), "ms");
    row("server CPU per handshake", ph.cpu_us, Some(bh.cpu_us), "µs");

    // hold
    let base = Target::baseline()?;
    let bhold = scenarios::hold(&base, None, sizes.hold).await?;
    drop(base);
    let pal = Target::palaver(&bin)?;
    // One session per connection: each asks a question of its own.
    let setup = Setup::palaver(&pal, sizes.hold).await?;
    let phold = scenarios::hold(&pal, Some(&setup), sizes.hold).await?;
    drop(pal);
    eprintln!("hold: palaver {phold:?}\nhold: baseline {bhold:?}");
    row(
        &format!("server RSS per idle connection ({} held)", phold.held),
        phold.rss_per_conn / 1024.0,
        Some(bhold.rss_per_conn / 1024.0),
        "KiB",
    );
    row(
        "the same, after one question each (palaver: with the stored messages)",
        phold.rss_per_conn_after_traffic / 1024.0,
        Some(bhold.rss_per_conn_after_traffic / 1024.0),
        "KiB",
    );

    // stream
    let base = Target::baseline()?;
    let bs = scenarios::stream(&base, None, sizes.stream_sockets, sizes.stream_questions).await?;
    drop(base);
    let pal = Target::palaver(&bin)?;
    let setup = Setup::palaver(&pal, sizes.stream_sockets).await?;
    let ps = scenarios::stream(
        &pal,
        Some(&setup),
        sizes.stream_sockets,
        sizes.stream_questions,
    )
    .await?;
    eprintln!("stream: palaver {ps:?}\nstream: baseline {bs:?}");
    row(
        "streamed replies per second (echo, persisted)",
        ps.replies_per_sec,
        Some(bs.replies_per_sec),
        "/s",
    );
    row(
        "time to first token p50",
        ps.ttft_p50_ms,
        Some(bs.ttft_p50_ms),
        "ms",
    );
    row(
        "time to first token p99",
        ps.ttft_p99_ms,
        Some(bs.ttft_p99_ms),
        "ms",
    );
    row(
        "time to done p50",
        ps.done_p50_ms,
        Some(bs.done_p50_ms),
        "ms",
    );
    row(
        "time to done p99",
        ps.done_p99_ms,
        Some(bs.done_p99_ms),
        "ms",
    );
    row("server CPU per reply", ps.cpu_us, Some(bs.cpu_us), "µs");

    // open loop: many sockets, one question per second each; its tail is
    // the noisiest figure, so the medians of several runs.
    let open = open_loop_runs(
        &bin,
        sizes.open_runs,
        sizes.open_sockets,
        sizes.open_seconds,
    )
    .await?;
    let med = |f: fn(&scenarios::OpenLoopResult) -> f64, palaver: bool| {
        median(
            open.iter()
                .map(|r| f(if palaver { &r.palaver } else { &r.baseline }))
                .collect(),
        )
    };
    let label = format!(
        "open loop ({} sockets × 1 question/s, median of {} runs): time to first token p50",
        sizes.open_sockets, sizes.open_runs
    );
    for (label, f) in [
        (
            label.as_str(),
            (|r| r.ttft_p50_ms) as fn(&scenarios::OpenLoopResult) -> f64,
        ),
        ("open loop: time to first token p99", |r| r.ttft_p99_ms),
        ("open loop: time to first token max", |r| r.ttft_max_ms),
    ] {
        row(label, med(f, true), Some(med(f, false)), "ms");
    }

    // quota (palaver only: the baseline has no quotas)
    let q = scenarios::quota(&pal, &setup, sizes.quota_requests, sizes.quota_concurrency).await?;
    drop(pal);
    row(
        "counted requests per second, quota off",
        q.off_per_sec,
        None,
        "/s",
    );
    row(
        "counted requests per second, quota on",
        q.on_per_sec,
        Some(q.off_per_sec),
        "/s",
    );
    row(
        "server CPU per counted request, quota off",
        q.off_cpu_us,
        None,
        "µs",
    );
    row(
        "server CPU per counted request, quota on",
        q.on_cpu_us,
        Some(q.off_cpu_us),
        "µs",
    );

    println!("| scenario | palaver | baseline | ratio |");
    println!("|---|---|---|---|");
    for (what, p, b, r) in rows {
        println!("| {what} | {p} | {b} | {r} |");
    }
    Ok(())
}
