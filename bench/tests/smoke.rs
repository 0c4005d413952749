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

/// Runs the harness with `args`, palaver beside it (where it looks for
/// it); its stdout, once it succeeded.
fn harness(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let harness = dir.path().join("palaver-bench");
    std::fs::copy(env!("CARGO_BIN_EXE_palaver-bench"), &harness).unwrap();
    std::fs::copy(palaver_binary(), dir.path().join("palaver")).unwrap();
    let out = Command::new(&harness).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn all_scenarios_run_in_smoke_mode() {
    let stdout = harness(&["all", "--smoke"]);
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

#[test]
fn the_cost_and_stream_scenarios_run_at_tiny_sizes() {
    let cost = harness(&[
        "cost",
        "--rounds",
        "2",
        "--handshakes",
        "40",
        "--sockets",
        "2",
        "--questions",
        "3",
    ]);
    for row in [
        "| streamed replies per second |",
        "| server CPU per reply (µs) |",
        "| handshakes per second |",
        "| server CPU per handshake (µs) |",
    ] {
        assert!(cost.contains(row), "no {row:?} row in:\n{cost}");
    }
    let stream = harness(&[
        "stream",
        "--runs",
        "1",
        "--sockets",
        "2",
        "--questions",
        "3",
    ]);
    assert!(stream.contains("| 1 | "), "{stream}");
    assert!(stream.contains("flushes per reply"), "{stream}");
}

#[test]
fn the_pool_scenarios_run_at_tiny_sizes() {
    let scaling = harness(&[
        "pool-scaling",
        "--runs",
        "1",
        "--history",
        "20",
        "--words",
        "10",
        "--sockets",
        "2",
        "--replies",
        "4",
    ]);
    assert!(scaling.contains("| 1 | "), "{scaling}");
    assert!(scaling.contains("| 2 | "), "{scaling}");
    assert!(scaling.contains("2 workers / 1 worker"), "{scaling}");
    // 20 replies of 100 tokens 20 ms apart: two seconds of streaming.
    let slow = harness(&[
        "slow-streams",
        "--n",
        "20",
        "--words",
        "100",
        "--delay-ms",
        "20",
    ]);
    assert!(slow.contains("| replies refused `busy` | 0 |"), "{slow}");
    assert!(slow.contains("| replies complete | 20 of 20 |"), "{slow}");
    assert!(slow.contains("server RSS per stream"), "{slow}");
}

#[test]
fn the_flood_scenario_runs_at_tiny_sizes() {
    let flood = harness(&[
        "flood",
        "--rounds",
        "1",
        "--handshakes",
        "20",
        "--flooders",
        "2",
        "--rate",
        "100",
    ]);
    assert!(flood.contains("| 1 | "), "{flood}");
    assert!(flood.contains("median: idle p99"), "{flood}");
}

/// `audio --smoke`: a 3-second track through palaver-audio and ffmpeg, and
/// the memory rows from its child processes.
#[test]
fn the_audio_benchmark_runs_at_tiny_sizes() {
    let out = Command::new(env!("CARGO_BIN_EXE_palaver-bench"))
        .args(["audio", "--smoke"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in ["| WAV | ", "| MP3 | ", "min WAV ("] {
        assert!(stdout.contains(row), "no {row:?} row in:\n{stdout}");
    }
}

#[test]
fn the_soak_samples_and_draws_at_tiny_sizes() {
    let out = tempfile::tempdir().unwrap();
    let stdout = harness(&[
        "soak",
        "--minutes",
        "0.05",
        "--interval",
        "1",
        "--sockets",
        "2",
        "--rate",
        "20",
        "--conversation",
        "5",
        "--demos",
        "1",
        "--http",
        "5",
        "--reopen",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(stdout.contains("| load |"), "{stdout}");
    assert!(stdout.contains("| reopened |"), "{stdout}");
    let csv = std::fs::read_to_string(out.path().join("soak.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(rows.len() >= 3, "{csv}");
    // Every load row: a live server (RSS, open files) that answered.
    for row in rows.iter().filter(|r| r.contains(",load,")) {
        let fields: Vec<&str> = row.split(',').collect();
        assert!(fields[2].parse::<f64>().unwrap() > 0.0, "{row}");
        assert!(fields[3].parse::<u64>().unwrap() > 0, "{row}");
        assert_eq!(fields[14], "0", "errors in {row}");
    }
    let svg = std::fs::read_to_string(out.path().join("soak.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
}
