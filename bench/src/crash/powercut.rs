//! The power cut: palaver's data directory on a lazyfs mount
//! (tools/lazyfs: a FUSE passthrough that holds every write until its file
//! is fsynced, and loses the unsynced ones when told to). After each kill
//! the harness cuts the power: alternately every unsynced page lost
//! (`cut`), or each one kept or lost by a seeded coin (`torn`, a disk that
//! wrote some of its cache back first).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{bail, Context, Result};

pub struct LazyFs {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    mountpoint: PathBuf,
    reaped: bool,
}

impl LazyFs {
    /// Mounts `backing` at `mountpoint` with the lazyfs binary `bin`.
    pub fn mount(bin: &Path, backing: &Path, mountpoint: &Path) -> Result<LazyFs> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let mut child = Command::new(bin)
            .arg(backing)
            .arg(mountpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take().context("stdin piped")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout piped")?);
        let mut fs = LazyFs {
            child,
            stdin,
            stdout,
            mountpoint: mountpoint.to_path_buf(),
            reaped: false,
        };
        let first = fs.line()?;
        if first != "mounted" {
            bail!("lazyfs did not mount: {first:?}");
        }
        Ok(fs)
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("lazyfs exited");
        }
        Ok(line.trim().to_owned())
    }

    /// Cuts the power (the server must be dead): `torn` with a seed keeps
    /// a random half of the unsynced pages, else all are lost. Says what
    /// was lost.
    pub fn cut(&mut self, torn: Option<u64>) -> Result<String> {
        let command = match torn {
            Some(seed) => format!("torn {seed}\n"),
            None => "cut\n".to_owned(),
        };
        self.stdin.write_all(command.as_bytes())?;
        self.stdin.flush()?;
        self.line()
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // `exit` unmounts; if it does not end in time, kill it and detach
        // the mount it leaves.
        let _ = self.stdin.write_all(b"exit\n");
        let _ = self.stdin.flush();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.reaped = true;
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
    }
}
