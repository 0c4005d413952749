//! The servers under test, each in a process of its own: palaver (the
//! release binary beside this one, with its own temporary data directory) and
//! the bare baseline (this binary, `baseline` subcommand). Their CPU time and
//! memory are read from /proc, which the load generator does not distort.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The HS256 secret the harness gives palaver, so it can mint tokens itself.
pub const SECRET: &str = "palaver-bench-secret-0123456789abcdef0123456789abcdef";

pub struct Target {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// palaver's data directory (none for the baseline).
    data: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    /// Bytes of palaver's database files now (0 for the baseline).
    pub fn data_bytes(&self) -> u64 {
        self.data.as_ref().map_or(0, |d| dir_bytes(&d.join("db")))
    }

    /// Starts palaver (`bin`) on a loopback port with the benchmark settings.
    pub fn palaver(bin: &Path) -> Result<Target> {
        Self::palaver_with(bin, &[])
    }

    /// The same, with `env` (`PALAVER_…` settings) over the benchmark's.
    pub fn palaver_with(bin: &Path, env: &[(&str, &str)]) -> Result<Target> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        Self::palaver_in(bin, env, &data, Some(dir))
    }

    /// The same on the data directory `data`, which outlives the server
    /// (`keep` is a temporary directory to remove with it, if any).
    pub fn palaver_in(
        bin: &Path,
        env: &[(&str, &str)],
        data: &Path,
        keep: Option<tempfile::TempDir>,
    ) -> Result<Target> {
        let workdir = data.parent().context("data directory has a parent")?;
        std::fs::create_dir_all(workdir)?;
        // A profiler to run palaver under, e.g. `valgrind --tool=massif`
        // (the figures are then the profiler's, the profile is the point).
        let wrapper = std::env::var("BENCH_SERVER_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut cmd = Command::new(program);
                cmd.args(words).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--data"])
            .arg(data)
            .current_dir(workdir)
            .env("PALAVER_AUTH__SECRET", SECRET)
            .env("PALAVER_AUTH__ALLOW_REGISTRATION", "true")
            .env("PALAVER_AUTH__REGISTRATIONS_PER_IP_PER_HOUR", "0")
            .env("PALAVER_AUTH__REGISTRATIONS_PER_HOUR", "0")
            .env("PALAVER_ANALYSIS__ENGINE", "echo")
            .env("PALAVER_WS__MAX_CONNECTIONS_PER_USER", "1000000")
            // The load comes from 8 loopback addresses, thousands of
            // connections each (`hold`).
            .env("PALAVER_SERVER__MAX_CONNECTIONS_PER_IP", "0")
            .env("PALAVER_WS__MAX_MESSAGES_PER_MINUTE", "100000000")
            .env("PALAVER_DEMO__REQUEST_LIMIT", "4000000000")
            .env("PALAVER_DEMO__PER_IP_PER_HOUR", "1000000")
            .env("PALAVER_LOGGING__LEVEL", "warn");
        cmd.envs(env.iter().copied());
        Self::spawn(cmd, "palaver", Some(data.to_owned()), keep)
    }

    /// Starts the bare baseline server.
    pub fn baseline() -> Result<Target> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["baseline", "--bind", "127.0.0.1:0"]);
        Self::spawn(cmd, "baseline", None, None)
    }

    fn spawn(
        mut cmd: Command,
        name: &'static str,
        data: Option<PathBuf>,
        dir: Option<tempfile::TempDir>,
    ) -> Result<Target> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(pos) = line.find("listening on http://") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line[pos + "listening on ".len()..].trim().to_owned());
                    }
                }
            }
        });
        // Under a profiler, everything it says.
        let verbose = std::env::var_os("BENCH_SERVER_WRAPPER").is_some();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if verbose || line.contains("ERROR") || line.contains("panicked") {
                    eprintln!("[server] {line}");
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                bail!("{name} did not start");
            }
        };
        Ok(Target {
            child,
            base,
            data,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://127.0.0.1:PORT` for a server at `base` (`http://…`).
    pub fn ws_base_of(base: &str) -> String {
        base.replace("http://", "ws://")
    }

    /// User + system CPU seconds the server has used.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may contain spaces) in parens.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 (1-based) of the whole line,
        // 12 and 13 (0-based) after the command name.
        (ticks(11) + ticks(12)) / clock_ticks()
    }

    /// Resident memory, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

impl Drop for Target {
    /// SIGTERM (a profiler writes its report as the server exits cleanly),
    /// then SIGKILL if it has not exited within 30 s.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The palaver binary built beside this one (`cargo build --release -p palaver`).
pub fn palaver_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no parent directory")?;
    for candidate in [dir.join("palaver"), dir.join("../palaver")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no palaver binary beside {}: build it with `cargo build --release -p palaver` (or use bench/run)",
        exe.display()
    )
}

/// Bytes of the files under `dir`, recursively (0 for what cannot be read).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
