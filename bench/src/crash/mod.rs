//! `crash`: the crash loop (issue 18). palaver runs as a child process on a
//! data directory of its own; a mixed workload runs against it
//! (`workload`); at a random moment it is killed with SIGKILL, started again
//! on the same data, and checked (`check`) against everything the clients
//! saw acknowledged so far (`ledger`), before the next life begins. The
//! moments and the clients' choices come from one seeded RNG (the seed is
//! printed first); the interleaving is the machine's.
//!
//! Exits non-zero on any broken promise: a lost or altered acknowledged
//! write, a deletion undone, a reply left `streaming`, a demo user admitted
//! past its limit or counted below what its clients saw, a start that took
//! longer than the bound, a panic, or a contract break the clients saw
//! while the server was up.

mod check;
mod ledger;
mod powercut;
mod server;
mod workload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::target::dir_bytes;
use ledger::Ledger;
use server::{Server, Settings};

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// SIGKILLs (each followed by a restart and the checks).
    #[arg(long, default_value_t = 100)]
    pub kills: u32,
    /// The RNG seed (default: from the clock; printed either way).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run palaver with `storage.fsync = true`.
    #[arg(long)]
    pub fsync: bool,
    /// The palaver binary (default: the one beside this harness).
    #[arg(long)]
    pub palaver: Option<PathBuf>,
    /// The data directory (default: a temporary one, removed at the end).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Shortest life before a kill, in ms.
    #[arg(long, default_value_t = 50)]
    pub min_life_ms: u64,
    /// Longest life before a kill, in ms.
    #[arg(long, default_value_t = 1500)]
    pub max_life_ms: u64,
    /// Regular users' clients at once.
    #[arg(long, default_value_t = 4)]
    pub regular: usize,
    /// Demo users spending at once (each over HTTP and two WebSockets).
    #[arg(long, default_value_t = 2)]
    pub demos: usize,
    /// `demo.request_limit`.
    #[arg(long, default_value_t = 12)]
    pub demo_limit: u32,
    /// `analysis.token_delay` in ms (replies of 3–30 tokens).
    #[arg(long, default_value_t = 3)]
    pub token_delay_ms: u64,
    /// A start (spawn to `listening on`) longer than this fails the run.
    #[arg(long, default_value_t = 30)]
    pub max_start_secs: u64,
    /// For the harness's own test: after the first kill that follows an
    /// acknowledged write, the data directory is deleted before the
    /// restart (a server that forgets everything), so the checks must fail.
    #[arg(long, hide = true)]
    pub sabotage: bool,
    /// The lazyfs binary (tools/lazyfs): the data directory goes on a
    /// lazyfs mount and every kill is also a power cut (the writes not yet
    /// fsynced are lost; every other cut keeps a random half of them).
    /// Needs root and /dev/fuse. With `storage.fsync = false` losses are
    /// allowed (API.md §9): the run stops at the first and reports it.
    #[arg(long)]
    pub lazyfs: Option<PathBuf>,
    /// Leave the temporary directory (data, lazyfs's disk) for inspection.
    #[arg(long)]
    pub keep: bool,
}

/// Runs the loop; prints the report. `Err` on any broken promise.
pub async fn run(options: Options) -> Result<()> {
    let seed = options.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("crash loop: seed {seed} (rerun with --seed {seed})");
    let bin = server::binary(options.palaver.clone())?;
    let tmp = tempfile::Builder::new()
        .disable_cleanup(options.keep)
        .tempdir()?;
    if options.keep {
        eprintln!("keeping {}", tmp.path().display());
    }
    let mut lazy = match &options.lazyfs {
        Some(bin) => Some(powercut::LazyFs::mount(
            bin,
            &tmp.path().join("disk"),
            &tmp.path().join("mnt"),
        )?),
        None => None,
    };
    // With fsync off, a power cut may lose acknowledged writes (API.md §9).
    let lossy = lazy.is_some() && !options.fsync;
    let data = match (&options.data, &lazy) {
        (Some(dir), None) => dir.clone(),
        (Some(_), Some(_)) => bail!("--data and --lazyfs do not go together"),
        (None, Some(_)) => tmp.path().join("mnt").join("data"),
        (None, None) => tmp.path().join("data"),
    };
    let settings = Settings {
        fsync: options.fsync,
        demo_limit: options.demo_limit,
        token_delay_ms: options.token_delay_ms,
        start_timeout: Duration::from_secs(options.max_start_secs),
    };
    let shape = workload::Shape {
        regular: options.regular,
        demos: options.demos,
        max_users: 40,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let began = Instant::now();

    let mut server = Server::start(&bin, &data, &settings)?;
    let mut starts = Vec::new();
    let mut checked = 0u64;
    let mut messages_read = 0u64;
    let mut last = check::Verdict::default();
    let mut early_cuts = 0usize;
    let mut failures: Vec<String> = Vec::new();
    let mut lives_ms = Vec::new();
    let mut cuts_said = Vec::new();
    let mut kills = 0u64;
    let mut allowed_losses: Option<(u64, Vec<String>)> = None;

    for life in 1..=u64::from(options.kills) {
        // One life: the workload until a random moment, then SIGKILL.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let cuts = Arc::new(Mutex::new(Vec::new()));
        let ctx = workload::Ctx {
            base: server.base.clone(),
            ws_base: server.ws_base(),
            http: http.clone(),
            ledger: ledger.clone(),
            stop: stop_rx,
            cuts: cuts.clone(),
            seed,
            life,
        };
        let clients = tokio::spawn(workload::run(ctx, shape));
        let life_ms =
            rng.gen_range(options.min_life_ms..=options.max_life_ms.max(options.min_life_ms));
        lives_ms.push(life_ms);
        tokio::time::sleep(Duration::from_millis(life_ms)).await;
        if let Some(status) = server.exited() {
            failures.push(format!(
                "life {life}: the server exited by itself ({status})"
            ));
        }
        // Taken before the signal: the kernel resets the server's
        // connections as the process dies, before it is reaped.
        let killed_at = Instant::now();
        server.sigkill();
        kills += 1;
        if let Some(lazy) = lazy.as_mut() {
            let said = lazy.cut((life % 2 == 0).then_some(seed ^ life))?;
            eprintln!("life {life}: power cut: {said}");
            cuts_said.push(said);
        }
        let _ = stop_tx.send(true);
        if tokio::time::timeout(Duration::from_secs(60), clients)
            .await
            .is_err()
        {
            bail!("life {life}: the clients did not stop within 60 s of the kill");
        }
        // A client cut well before the kill: the server dropped it while up.
        early_cuts += cuts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(at, _)| killed_at.saturating_duration_since(*at) > Duration::from_millis(100))
            .inspect(|(at, why)| {
                eprintln!(
                    "life {life}: a client was cut {} ms before the kill: {why}",
                    killed_at.saturating_duration_since(*at).as_millis()
                )
            })
            .count();
        failures.extend(take_alarms(&server, life));
        if options.sabotage
            && ledger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .counts
                .writes()
                > 0
        {
            eprintln!("sabotage: deleting {} before the restart", data.display());
            std::fs::remove_dir_all(&data)?;
        }

        // Restart on the same data, then check everything acknowledged.
        server = match Server::start(&bin, &data, &settings) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("restart {life}: {e}"));
                break;
            }
        };
        starts.push(server.started_in);
        let mut taken = std::mem::take(&mut *ledger.lock().unwrap_or_else(|e| e.into_inner()));
        let verdict = check::verify(&server.base, &http, &mut taken, settings.demo_limit).await;
        let anomalies = std::mem::take(&mut taken.anomalies);
        *ledger.lock().unwrap_or_else(|e| e.into_inner()) = taken;
        checked += verdict.checked;
        messages_read += verdict.messages_read;
        failures.extend(anomalies);
        if lossy && !verdict.violations.is_empty() {
            // Allowed: what this power cut lost is the figure.
            allowed_losses = Some((life, verdict.violations.clone()));
            last = verdict;
            break;
        }
        failures.extend(
            verdict
                .violations
                .iter()
                .map(|v| format!("after kill {life}: {v}")),
        );
        eprintln!(
            "kill {life}: after {life_ms} ms; restarted in {} ms; {} acknowledged writes so far; {} checks passed",
            server.started_in.as_millis(),
            ledger.lock().unwrap_or_else(|e| e.into_inner()).counts.writes(),
            verdict.checked
        );
        last = verdict;
        if !failures.is_empty() {
            break;
        }
    }
    failures.extend(take_alarms(&server, u64::from(options.kills) + 1));
    drop(server);
    let data_bytes = dir_bytes(&data);
    drop(lazy);

    let ledger = std::mem::take(&mut *ledger.lock().unwrap_or_else(|e| e.into_inner()));
    report(&Report {
        seed,
        kills,
        options: &options,
        ledger: &ledger,
        starts: &starts,
        checked,
        messages_read,
        last: &last,
        lives_ms: &lives_ms,
        early_cuts,
        power_cuts: &cuts_said,
        allowed_losses: allowed_losses.as_ref(),
        failures: &failures,
        wall: began.elapsed(),
        data_bytes,
    });
    if !failures.is_empty() {
        bail!(
            "{} broken promise(s); rerun with --seed {seed}:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// Panics the server printed (any is a failure); errors are shown.
fn take_alarms(server: &Server, life: u64) -> Vec<String> {
    let lines = std::mem::take(&mut *server.alarms.lock().unwrap_or_else(|e| e.into_inner()));
    let mut failures = Vec::new();
    for line in lines {
        if line.contains("panicked") {
            failures.push(format!("life {life}: the server panicked: {line}"));
        } else {
            eprintln!("life {life}: the server logged: {line}");
        }
    }
    failures
}

struct Report<'a> {
    seed: u64,
    kills: u64,
    options: &'a Options,
    ledger: &'a Ledger,
    starts: &'a [Duration],
    checked: u64,
    messages_read: u64,
    last: &'a check::Verdict,
    lives_ms: &'a [u64],
    early_cuts: usize,
    power_cuts: &'a [String],
    allowed_losses: Option<&'a (u64, Vec<String>)>,
    failures: &'a [String],
    wall: Duration,
    data_bytes: u64,
}

fn report(r: &Report<'_>) {
    let c = &r.ledger.counts;
    let mut starts: Vec<f64> = r.starts.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    starts.sort_by(f64::total_cmp);
    let median = starts.get(starts.len() / 2).copied().unwrap_or(0.0);
    let max = starts.last().copied().unwrap_or(0.0);
    let o = r.options;
    println!(
        "crash loop: seed {}, {} kills, storage.fsync = {}, {} regular and {} demo clients, demo.request_limit = {}, token delay {} ms\n",
        r.seed, r.kills, o.fsync, o.regular, o.demos, o.demo_limit, o.token_delay_ms
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| kills (SIGKILL {}–{} ms into each life; median life {} ms) | {} |",
        o.min_life_ms,
        o.max_life_ms,
        {
            let mut l = r.lives_ms.to_vec();
            l.sort_unstable();
            l.get(l.len() / 2).copied().unwrap_or(0)
        },
        r.kills
    );
    println!("| acknowledged writes | {} |", c.writes());
    println!(
        "| … of which | {} registrations, {} logins, {} demo users, {} sessions created, {} deleted, {} questions and {} replies over WebSocket ({} cancelled), {} whole answers over HTTP, {} API keys created, {} deleted |",
        c.registrations, c.logins, c.demo_users, c.sessions_created, c.sessions_deleted,
        c.questions_ws, c.replies_ws, c.cancels, c.answers_http, c.api_keys_created, c.api_keys_deleted
    );
    println!(
        "| acknowledged writes found as acknowledged, summed over every restart's check | {} |",
        r.checked
    );
    println!(
        "| messages read back, summed over every restart's check | {} |",
        r.messages_read
    );
    println!(
        "| lost or altered acknowledged writes, deletions undone | {} |",
        r.failures
            .iter()
            .filter(|f| f.contains("after kill"))
            .count()
    );
    println!(
        "| replies left `streaming` after a restart | {} |",
        r.failures
            .iter()
            .filter(|f| f.contains("`streaming`"))
            .count()
    );
    println!(
        "| replies a kill cut (`message` seen, no `done`); replies stored `failed` at the end | {}; {} |",
        r.ledger.interrupted, r.last.failed_replies
    );
    println!(
        "| demo admissions seen (HTTP 2xx + WebSocket `message`); refusals seen | {} over {} demo users; {} |",
        c.demo_admissions, c.demo_users, c.demo_refusals
    );
    println!(
        "| most admissions seen for one demo user (limit {}) | {} |",
        o.demo_limit, r.last.max_admitted
    );
    println!(
        "| restarts, spawn to `listening on` (recovery included) | {}: median {median:.0} ms, max {max:.0} ms |",
        starts.len()
    );
    println!(
        "| clients cut before a kill (server dropped them while up) | {} |",
        r.early_cuts
    );
    println!(
        "| data directory at the end | {:.1} MiB |",
        r.data_bytes as f64 / (1 << 20) as f64
    );
    println!("| wall time | {:.0} s |", r.wall.as_secs_f64());
    if !r.power_cuts.is_empty() {
        println!(
            "| power cuts (lazyfs: every unsynced write lost, or a random half of the pages kept) | {} |",
            r.power_cuts.len()
        );
        // `cut: lost N pages …` / `torn: kept K of N pages …`
        let lost: u64 = r
            .power_cuts
            .iter()
            .map(|s| {
                let n: Vec<u64> = s
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect();
                match (s.starts_with("torn"), n.as_slice()) {
                    (true, [kept, all, ..]) => all - kept,
                    (false, [lost, ..]) => *lost,
                    _ => 0,
                }
            })
            .sum();
        println!("| unsynced 4 KiB pages the cuts lost | {lost} |");
    }
    if let Some((life, losses)) = r.allowed_losses {
        println!(
            "| checks failed after power cut {life} (losses allowed with storage.fsync = false; the run stops there; the first ten below) | {} |",
            losses.len()
        );
        for loss in losses.iter().take(10) {
            println!("|   | {loss} |");
        }
    }
    println!("| broken promises | {} |", r.failures.len());
}
