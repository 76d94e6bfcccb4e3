//! The aiortc peer (tests/peers/aiortc_peer.py): an independent WebRTC stack, run from the
//! venv `make test` installs. aioice never uses 127.0.0.1: tests that run it use a namespace
//! with a dummy interface (`Net::WithDummyRoute`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{Proc, artifacts_dir};

/// The venv's Python, with aiortc.
pub fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python")
}

fn peer_script() -> PathBuf {
    script("aiortc_peer.py")
}

/// A script of tests/peers.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
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
    let mut args: Vec<String> = ["--signaling", &daemon.ws_url()]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    if debug_log {
        let log = artifacts_dir().join(format!("{id}-{}.log", daemon.name));
        args.extend(["--log".to_string(), log.to_string_lossy().into_owned()]);
    }
    if let Some(peer) = call {
        args.extend(["--call".to_string(), peer.to_string()]);
    }
    spawn(id, &args)
}

/// Starts the aiortc peer `id` with `args` (as [`run`], for any mode: `--whep URL` …).
pub fn spawn(id: &str, args: &[String]) -> std::thread::JoinHandle<PeerRun> {
    let report = artifacts_dir().join(format!("{id}-report.json"));
    let _ = std::fs::remove_file(&report);
    let mut cmd = Command::new(python());
    cmd.arg(peer_script())
        .args(["--id", id])
        .args(args)
        .arg("--report")
        .arg(&report);
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
