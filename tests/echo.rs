//! The intercom's audio, measured end to end: `webrtcd-bench --echo-only --quick` runs the
//! 80 ms room (tests/peers/room.py: a far end's speech into a door whose ALSA speaker reaches
//! its ALSA microphone 80 ms later at −6 dB, with a reverberant tail and 100 ppm of clock
//! drift; then the near end alone, then both) with the door's canceller on and off, and a far
//! end's speech to the door through 10 % random packet loss, Opus in-band FEC on and off
//! (scored with PESQ and STOI), from a daemon and from Chromium on the daemon's page (there
//! also with the copies Chromium sends when the door asks for RED). Bounds,
//! not speed: the canceller must remove the echo (GStreamer's webrtcdsp removed 2.2 dB here;
//! none, 0.1) and let the near end through in double talk; FEC must keep a daemon's speech
//! intelligible where concealment alone does not.

mod common;

use std::process::Command;

/// The numbers of one row of the echo table: ERLE, near end alone, change in double talk.
fn row(stdout: &str, canceller: &str) -> (f64, f64, f64) {
    let prefix = format!("| 80 ms, -100 ppm | {canceller} |");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no row {prefix:?} in:\n{stdout}"));
    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
    let number = |i: usize| {
        cells
            .get(i)
            .and_then(|c| c.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("cell {i} of {line}"))
    };
    (number(3), number(5), number(6))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doors_echo_is_removed_and_the_near_end_gets_through() {
    let _serial = common::serial().await;
    let out = Command::new(env!("CARGO_BIN_EXE_webrtcd-bench"))
        .args(["--echo-only", "--quick"])
        .output()
        .expect("run webrtcd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
    let (erle, near_alone, double_talk) = row(&stdout, "on");
    let (erle_off, _, _) = row(&stdout, "off");
    // The target is 25 dB (BENCHMARKS.md measures it); a debug build on a busy machine
    // once measured 20.1 (one half second at 9 dB in the average).
    assert!(erle >= 15.0, "echo removed by {erle} dB only:\n{stdout}");
    assert!(
        erle_off < 3.0,
        "the room has no echo to remove? off: {erle_off} dB"
    );
    assert!(
        near_alone.abs() <= 3.0,
        "near end alone changed by {near_alone} dB"
    );
    assert!(
        double_talk >= -6.0,
        "near end cut by {double_talk} dB in double talk"
    );
    // Measured: 2.8–3.4 with FEC, 1.5–1.9 without (the target is 3.0).
    let (with_fec, without) = (
        pesq(&stdout, "daemon", "on"),
        pesq(&stdout, "daemon", "off"),
    );
    protects(
        ("FEC from a daemon", with_fec),
        without,
        (2.6, 0.4),
        &stdout,
    );
    // From Chromium, the door asks for RED: Chromium repeats each frame in the next packet
    // and the door rebuilds what was lost (measured: 3.3–3.4; FEC alone 2.0–3.0, as Chromium
    // adds FEC only as its own loss estimate rises over the call; neither 1.6–2.0).
    let with_red = pesq(&stdout, "Chromium", "on | on,");
    let neither = pesq(&stdout, "Chromium", "off | off");
    let rebuilt = rebuilt(&stdout);
    assert!(
        rebuilt > 0,
        "RED rebuilt no lost packet from Chromium:\n{stdout}"
    );
    protects(
        ("RED and FEC from Chromium", with_red),
        neither,
        (2.8, 0.6),
        &stdout,
    );
    let fec_alone = pesq(&stdout, "Chromium", "on | off");
    assert!(fec_alone >= 1.0, "Chromium, FEC alone: PESQ {fec_alone}");
}

/// Protection `what` scored `with` at 10 % loss: at least `floor`, and `gain` above the
/// score `without` it.
fn protects((what, with): (&str, f64), without: f64, (floor, gain): (f64, f64), stdout: &str) {
    assert!(
        with >= floor,
        "PESQ {with} at 10 % loss with {what}:\n{stdout}"
    );
    assert!(
        with >= without + gain,
        "{what} {with} vs none {without}: it does not help"
    );
}

/// The row of the 10 % loss case whose cells after the loss start with `cells` ("on" for
/// FEC, or "on | off" for FEC and RED) in the speech table of `sender` ("daemon" or
/// "Chromium").
fn row_of<'a>(stdout: &'a str, sender: &str, cells: &str) -> &'a str {
    let table = format!("| speech, {sender} → daemon: random loss |");
    let prefix = format!("| 10 % | {cells}");
    stdout
        .lines()
        .skip_while(|l| !l.starts_with(&table))
        .take_while(|l| l.starts_with('|'))
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no row {prefix:?} in:\n{stdout}"))
}

/// Wideband PESQ of that row.
fn pesq(stdout: &str, sender: &str, cells: &str) -> f64 {
    let line = row_of(stdout, sender, cells);
    line.split('|')
        .nth(4)
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PESQ in {line}"))
}

/// How many lost packets RED rebuilt in Chromium's 10 % call with RED and FEC.
fn rebuilt(stdout: &str) -> u64 {
    let line = row_of(stdout, "Chromium", "on | on,");
    line.split('|')
        .nth(3)
        .and_then(|c| c.trim().strip_prefix("on, "))
        .and_then(|c| c.strip_suffix(" rebuilt"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of packets rebuilt in {line}"))
}
