//! Acknowledged writes are durable: hundreds of concurrent writers all get
//! their acknowledgement (the sled 0.34.7 flush deadlock would hang them),
//! and every acknowledged write survives a SIGKILL of the writing process.
//!
//! The writer runs in a child process: this test binary re-executes itself
//! with `--ignored --exact writer_child`, and the child prints one line per
//! acknowledged write.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palaver_storage::{NewUser, Store, StoreConfig, UserId};

const DIR_ENV: &str = "PALAVER_DURABILITY_DIR";
const CONCURRENCY: usize = 300;

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        path: dir.to_path_buf(),
        cache_bytes: 16 << 20,
        fsync: false,
    }
}

fn new_user(n: usize) -> NewUser {
    NewUser {
        email: format!("writer-{n}@example.com"),
        password_hash: "x".repeat(96),
        is_demo: false,
        demo_expires_at: None,
    }
}

/// The child: waves of `CONCURRENCY` concurrent writes, forever, printing
/// `ACK <user id>` for each acknowledged one. Only runs when re-executed.
#[test]
#[ignore = "run by `acknowledged_writes_survive_sigkill` as a child process"]
fn writer_child() {
    let dir = std::env::var(DIR_ENV).expect("run only as a child of the durability test");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = Store::open(&config(Path::new(&dir))).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<UserId>();
        let mut next = 0;
        loop {
            for _ in 0..CONCURRENCY {
                let store = store.clone();
                let tx = tx.clone();
                let n = next;
                next += 1;
                tokio::spawn(async move {
                    let user = store.users().create(new_user(n)).await.unwrap();
                    let _ = tx.send(user.id);
                });
            }
            for _ in 0..CONCURRENCY {
                let id = rx.recv().await.unwrap();
                println!("ACK {id}");
            }
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());

    // Read acknowledgements until more than two full waves of concurrent
    // writes completed, then kill the writer mid-flight.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acked: Vec<UserId> = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.push(id.parse().unwrap());
        }
        if acked.len() >= 2 * CONCURRENCY + 50 || Instant::now() > deadline {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        acked.len() >= 2 * CONCURRENCY + 50,
        "the writer acknowledged only {} writes in time (flush deadlock?)",
        acked.len()
    );

    let store = Store::open(&config(dir.path())).unwrap();
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| store.users().get(**id).unwrap().is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes were lost",
        missing.len(),
        acked.len()
    );
}
