//! An independent WebRTC stack against the daemon: aiortc, whose DTLS offers only
//! ECDHE-ECDSA cipher suites (an RSA-certificate daemon fails with "no shared cipher" when it
//! is the DTLS server) and which never trickles (candidates only in its SDP). Both directions.
//!
//! aioice never uses 127.0.0.1, so these run in a private network namespace that also has a
//! dummy interface: every packet stays inside the namespace the test made.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::browser::Net;
use common::*;
use serde_json::Value;

fn python() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python")
}

fn peer_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/aiortc_peer.py")
}

/// What the aiortc peer did: its exit status, its JSON report and its stderr.
struct PeerRun {
    ok: bool,
    report: Value,
    stderr: String,
}

/// Starts the aiortc peer (bounded by `--seconds`); join the handle for its [`PeerRun`].
fn run_aiortc(daemon: &Proc, id: &str, call: Option<&str>) -> std::thread::JoinHandle<PeerRun> {
    let report = artifacts_dir().join(format!("{id}-report.json"));
    let _ = std::fs::remove_file(&report);
    let mut cmd = Command::new(python());
    cmd.arg(peer_script())
        .args([
            "--signaling",
            &daemon.ws_url(),
            "--id",
            id,
            "--seconds",
            "40",
        ])
        .arg("--report")
        .arg(&report)
        .arg("--log")
        .arg(artifacts_dir().join(format!("{id}-{}.log", daemon.name)));
    if let Some(peer) = call {
        cmd.args(["--call", peer]);
    }
    std::thread::spawn(move || {
        let out = cmd
            .output()
            .expect("python with aiortc (make test installs it)");
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        PeerRun {
            ok: out.status.success(),
            report: serde_json::from_str(&text).unwrap_or(Value::Null),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
}

/// Waits for the peer to finish; panics with everything it said if it failed.
async fn finished(peer: std::thread::JoinHandle<PeerRun>, daemon: &Proc) -> Value {
    let run = tokio::task::spawn_blocking(move || peer.join())
        .await
        .expect("join")
        .expect("peer thread");
    assert!(
        run.ok,
        "aiortc peer failed: {}\n{}\ndaemon log: {:?}",
        run.report, run.stderr, daemon.log
    );
    run.report
}

netns_test!(an_ecdsa_only_stack_calls_the_daemon, Net::WithDummyRoute, {
    let daemon = Proc::daemon("interop-callee", &light_profile("interop-callee", ""), &[]);
    let peer = run_aiortc(&daemon, "aiortc", Some("interop-callee"));
    let daemon_call = poll(Duration::from_secs(40), || async {
        calls(&daemon)
            .await
            .into_iter()
            .find(|c| c["pongs_received"].as_u64().unwrap_or(0) >= 1)
    })
    .await;
    let report = finished(peer, &daemon).await;
    let daemon_call = daemon_call.expect("the daemon received pongs from aiortc");
    assert_eq!(report["channel_created_locally"], true);
    assert_eq!(daemon_call["role"], "callee");
    assert_eq!(daemon_call["datachannels_created"], 0);
});

netns_test!(the_daemon_calls_an_ecdsa_only_stack, Net::WithDummyRoute, {
    let daemon = Proc::daemon("interop-caller", &light_profile("interop-caller", ""), &[]);
    let peer = run_aiortc(&daemon, "aiortc", None);
    wait_peer(&daemon, "aiortc").await;
    let session = place_call(&daemon, "aiortc").await;
    let pongs = poll(Duration::from_secs(40), || async {
        calls(&daemon)
            .await
            .into_iter()
            .find(|c| c["session"] == session && c["pongs_received"].as_u64().unwrap_or(0) >= 1)
    })
    .await;
    let report = finished(peer, &daemon).await;
    assert!(pongs.is_some(), "the daemon received pongs from aiortc");
    assert_eq!(report["channel_received"], true);
});
