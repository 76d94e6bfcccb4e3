//! What the benchmark and the integration tests both need to run real peers: Chromium's
//! flags that work on this machine, and a daemon's announced address. One copy, included by
//! the tests too (`tests/common/mod.rs`), so the two cannot drift apart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

/// Headless Chromium that stays on loopback: no background networking, no name lookups but
/// 127.0.0.1, ICE allowed on loopback. `media`: grant camera/microphone, with fake devices.
pub fn chromium_flags(profile: &Path, media: bool) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--window-size=1024,800",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.push(format!("--user-data-dir={}", profile.display()));
    if media {
        flags.push("--use-fake-ui-for-media-stream".into());
        flags.push("--use-fake-device-for-media-stream".into());
    }
    flags
}

/// The `host:port` a `webrtcd` child prints first (`… listening on http://ADDR`), read from
/// its piped stdout; the rest of its stdout is drained so it never blocks on a full pipe.
pub fn announced_address(child: &mut Child, within: Duration) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(within).ok()?;
    Some(line.rsplit("http://").next()?.trim().to_string())
}
