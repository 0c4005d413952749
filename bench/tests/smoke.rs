//! The harness in smoke mode (tiny sizes) against the real servers, so it
//! cannot rot between benchmark runs. Measures nothing: asserts it runs and
//! prints a complete table.

use std::path::PathBuf;
use std::process::Command;

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

#[test]
fn all_scenarios_run_in_smoke_mode() {
    // The harness looks for palaver beside itself: put both in one folder.
    let dir = tempfile::tempdir().unwrap();
    let harness = dir.path().join("palaver-bench");
    std::fs::copy(env!("CARGO_BIN_EXE_palaver-bench"), &harness).unwrap();
    std::fs::copy(palaver_binary(), dir.path().join("palaver")).unwrap();
    let out = Command::new(&harness)
        .args(["all", "--smoke"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "handshakes per second",
        "server CPU per handshake",
        "server RSS per idle connection",
        "streamed replies per second",
        "time to first token p99",
        "counted requests per second, quota on",
        "open loop: time to first token p99",
    ] {
        assert!(stdout.contains(row), "no {row:?} row in:\n{stdout}");
    }
}
