//! The crash loop's fast variant (`palaver-bench crash --kills 10`): the
//! debug palaver killed with SIGKILL ten times at random moments under the
//! mixed workload, restarted on its data and checked each time; and the
//! proof that the checks can fail (a server that lost its data is caught).
//! The full run (100 kills, release build) is in docs/RELIABILITY.md.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The palaver binary cargo built for this workspace (beside the test's
/// `deps/` directory).
fn palaver_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("palaver");
    assert!(
        bin.is_file(),
        "{} missing: run `cargo test --workspace` (it builds palaver)",
        bin.display()
    );
    bin
}

fn crash(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palaver-bench"))
        .arg("crash")
        .arg("--palaver")
        .arg(palaver_binary())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn ten_kills_lose_no_acknowledged_write() {
    let out = crash(&["--kills", "10", "--seed", "18"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("| broken promises | 0 |"), "{stdout}");
    // The run did write, and the checks did read it back.
    let row = |name: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {name}")))
            .unwrap_or_else(|| panic!("no {name:?} row in:\n{stdout}"));
        line.trim_end_matches(" |")
            .rsplit("| ")
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    assert!(row("acknowledged writes |") > 0, "{stdout}");
    assert!(
        row("acknowledged writes found as acknowledged") > 0,
        "{stdout}"
    );
}

#[test]
fn a_server_that_loses_its_data_is_caught() {
    let out = crash(&[
        "--kills",
        "10",
        "--seed",
        "18",
        "--min-life-ms",
        "800",
        "--sabotage",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("broken promise"), "{stderr}");
    assert!(
        stderr.contains("no longer verifies") || stderr.contains("cannot log in"),
        "{stderr}"
    );
}
