//! The server under test for the crash loop: the palaver binary on a data
//! directory that outlives it, started again and again on the same data, and
//! stopped only with SIGKILL (a crash, not a shutdown).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The HS256 secret the harness gives palaver: tokens stay valid across
/// restarts (the generated one would too; this keeps the run reproducible).
pub const SECRET: &str = "palaver-crash-secret-0123456789abcdef0123456789abcdef";

/// The settings every start gets (besides `storage.fsync`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub fsync: bool,
    /// `demo.request_limit`.
    pub demo_limit: u32,
    /// `analysis.token_delay`, in ms: replies long enough to be cut by a kill.
    pub token_delay_ms: u64,
    /// How long a start may take before the run fails.
    pub start_timeout: Duration,
}

/// One process of palaver on the run's data directory.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// From spawn to the `listening on` line (storage opened, recovery done,
    /// the listener bound).
    pub started_in: Duration,
    /// Lines the server printed that name a panic or an error.
    pub alarms: Arc<Mutex<Vec<String>>>,
    /// Set once the child was reaped: its pid may then belong to another
    /// process, so nothing is sent to it any more.
    reaped: bool,
}

impl Server {
    /// Starts `bin` on `data` and waits for its address.
    pub fn start(bin: &Path, data: &Path, settings: &Settings) -> Result<Server> {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--data"])
            .arg(data)
            .current_dir(data.parent().unwrap_or(data))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PALAVER_AUTH__SECRET", SECRET)
            .env("PALAVER_AUTH__ALLOW_REGISTRATION", "true")
            .env("PALAVER_AUTH__REGISTRATIONS_PER_IP_PER_HOUR", "0")
            .env("PALAVER_AUTH__REGISTRATIONS_PER_HOUR", "0")
            // Tokens outlive the run (a 100-kill run takes longer than the
            // 30-minute default), and so do the demo users.
            .env("PALAVER_AUTH__ACCESS_TTL", "24h")
            .env("PALAVER_DEMO__LIFETIME", "24h")
            .env(
                "PALAVER_DEMO__REQUEST_LIMIT",
                settings.demo_limit.to_string(),
            )
            .env("PALAVER_DEMO__PER_IP_PER_HOUR", "1000000")
            .env("PALAVER_ANALYSIS__ENGINE", "echo")
            .env(
                "PALAVER_ANALYSIS__TOKEN_DELAY",
                format!("{}ms", settings.token_delay_ms),
            )
            .env("PALAVER_WS__MAX_MESSAGES_PER_MINUTE", "1000000")
            .env("PALAVER_STORAGE__FSYNC", settings.fsync.to_string())
            .env("PALAVER_LOGGING__LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().context("stdout piped")?;
        let stderr = child.stderr.take().context("stderr piped")?;
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(pos) = line.find("listening on http://") {
                    if let Some(tx) = tx.take() {
                        let url = line[pos + "listening on ".len()..].trim().to_owned();
                        let _ = tx.send((url, spawned.elapsed()));
                    }
                }
            }
        });
        let alarms = Arc::new(Mutex::new(Vec::new()));
        let sink = alarms.clone();
        let said = Arc::new(Mutex::new(Vec::new()));
        let tail = said.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("panicked") || line.contains("ERROR") {
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(line.clone());
                }
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() < 50 {
                    tail.push(line);
                }
            }
        });
        let mut server = Server {
            child,
            base: String::new(),
            started_in: Duration::ZERO,
            alarms,
            reaped: false,
        };
        // Its address, unless it exits first or the bound passes.
        let deadline = spawned + settings.start_timeout;
        let failure = loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok((base, took)) => {
                    server.base = base;
                    server.started_in = took;
                    return Ok(server);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break "exited".to_owned(),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() > deadline => {
                    break format!("printed no address within {:?}", settings.start_timeout)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        };
        let status = server.sigkill();
        // What it printed on stderr (the pump may lag the exit a little).
        let printed = || said.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
        let pumped = Instant::now() + Duration::from_secs(2);
        while printed().is_empty() && Instant::now() < pumped {
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("palaver {failure} ({status}); it said:\n{}", printed())
    }

    pub fn ws_base(&self) -> String {
        self.base.replace("http://", "ws://")
    }

    /// SIGKILL, then reaps the child; says how it ended.
    pub fn sigkill(&mut self) -> String {
        if self.reaped {
            return "already reaped".into();
        }
        let _ = self.child.kill();
        let status = self.child.wait();
        self.reaped = true;
        match status {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        }
    }

    /// Whether the process exited by itself (it must not: only kills end it).
    pub fn exited(&mut self) -> Option<String> {
        if self.reaped {
            return None;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.reaped = true;
                Some(status.to_string())
            }
            _ => None,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// The palaver binary beside this one, or `explicit`.
pub fn binary(explicit: Option<PathBuf>) -> Result<PathBuf> {
    match explicit {
        Some(path) if path.is_file() => Ok(path),
        Some(path) => bail!("no palaver binary at {}", path.display()),
        None => crate::target::palaver_binary(),
    }
}
