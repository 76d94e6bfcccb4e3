//! The aiortc peer (tests/peers/aiortc_peer.py): an independent WebRTC stack, run from the
//! venv `make test` installs. aioice never uses 127.0.0.1: tests that run it use a namespace
//! with a dummy interface (`Net::WithDummyRoute`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{Proc, artifacts_dir};

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python")
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/aiortc_peer.py")
}

/// What the aiortc peer did: its exit status, its JSON report and its stderr.
pub struct PeerRun {
    pub ok: bool,
    pub report: Value,
    pub stderr: String,
}

/// Starts the aiortc peer `id` on `daemon`'s signaling, calling `call` or answering, with
/// `extra` arguments (bounded by its `--seconds`); join the handle for its [`PeerRun`].
/// `debug_log` writes aiortc's per-packet debug log (too slow for a call with real video).
pub fn run(
    daemon: &Proc,
    id: &str,
    call: Option<&str>,
    extra: &[&str],
    debug_log: bool,
) -> std::thread::JoinHandle<PeerRun> {
    let report = artifacts_dir().join(format!("{id}-report.json"));
    let _ = std::fs::remove_file(&report);
    let mut cmd = Command::new(python());
    cmd.arg(peer_script())
        .args(["--signaling", &daemon.ws_url(), "--id", id])
        .args(extra)
        .arg("--report")
        .arg(&report);
    if debug_log {
        cmd.arg("--log")
            .arg(artifacts_dir().join(format!("{id}-{}.log", daemon.name)));
    }
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
pub async fn finished(peer: std::thread::JoinHandle<PeerRun>, daemon: &Proc) -> Value {
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
