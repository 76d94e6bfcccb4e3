//! The benchmark's smoke run (`webrtcd-bench --quick`): it must keep working, whatever its
//! numbers are on a busy machine (speed targets live in BENCHMARKS.md, not in tests).

mod common;

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_runs_end_to_end() {
    let _serial = common::serial().await;
    let out = Command::new(env!("CARGO_BIN_EXE_webrtcd-bench"))
        .arg("--quick")
        .output()
        .expect("run webrtcd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for row in [
        "call → first decoded frame, daemon → daemon",
        "call → first decoded frame, daemon → Chromium",
        "join running stream: connection up → first decoded frame",
        "| VP8 | shared | 1 | 1 |",
        "| VP8 | per viewer | 1 | 1 |",
        "| Chromium | fresh browser |",
        "| Chromium | fresh page, warm browser |",
        "| Firefox | fresh browser |",
        "| Firefox | fresh page, warm browser |",
        "| vp8enc (vp8) | 1 |",
        "| daemon caller (early answer) |",
        "| Chromium caller, minimal page (1.1: answered on accept) |",
        "| Chromium caller, minimal page taking the early answer |",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(row))
            .unwrap_or_else(|| panic!("no row {row:?} in:\n{stdout}"));
        assert!(!line.contains("| – |"), "{row} has no number: {line}");
    }
    // A latency row with frames read back from the pictures.
    let latency = stdout
        .lines()
        .find(|l| l.starts_with("| VP8 |") && l.matches('|').count() == 6)
        .unwrap_or_else(|| panic!("no latency row in:\n{stdout}"));
    let frames: u64 = latency
        .trim_end_matches('|')
        .rsplit('|')
        .next()
        .and_then(|f| f.trim().parse().ok())
        .unwrap_or(0);
    assert!(frames > 0, "{latency}");
    let plot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/benchmarks.png");
    assert!(plot.is_file(), "no plot drawn");
}

/// The soak's smoke run: 30 calls one after another and 20 ten at a time, each with video and
/// audio on both sides; no call may fail and no pipeline may be left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soak_smoke_run_has_no_failed_call() {
    let _serial = common::serial().await;
    let plot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/soak-smoke.png");
    let out = Command::new(env!("CARGO_BIN_EXE_webrtcd-bench"))
        .args([
            "--soak",
            "--soak-calls",
            "30",
            "--soak-parallel-calls",
            "20",
        ])
        .args(["--soak-every", "10", "--plot"])
        .arg(&plot)
        .env("WEBRTCD_BENCH_LOG", "webrtcd=info,warn")
        .output()
        .expect("run webrtcd-bench --soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("| all | 50 | 0 |"), "{stdout}");
    // The last sample: every pipeline of both daemons freed.
    let last = stdout
        .lines()
        .rfind(|l| l.starts_with("| ") && l.matches('|').count() == 9)
        .unwrap_or_else(|| panic!("no sample rows in:\n{stdout}"));
    assert!(last.trim_end().ends_with("| 0 |"), "pipelines left: {last}");
    assert!(plot.is_file(), "no soak plot drawn");
}
