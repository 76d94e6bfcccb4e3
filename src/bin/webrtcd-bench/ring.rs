//! Ring → accept → the caller's first frame: a door station (`answer = "ring"`) rings, a
//! person accepts a moment later (`POST /api/calls/{session}/accept`), and the caller's first
//! frame of the door's camera follows. The caller is another daemon (which takes an early
//! answer: its connection is up before the accept), or Chromium showing the minimal page, as
//! a 1.1 client (answered on the accept) and taking the early answer; the door is pinned to
//! core 0 and the caller to core 1. The accept is timed
//! by the bench's clock, the frame by the caller's (the same machine's): a daemon caller's
//! first frame from its call's age and `first_frame_ms` (no polling error), the page's from
//! its own report.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::chromium::{Browser, Engine};
use crate::cold_page::{Reports, pin};
use crate::procs::{Daemon, poll};
use crate::scenarios::{Spread, camera_profile, epoch_ms, spread};

/// How long a person takes to accept: the door's encoders warm meanwhile.
const DECIDING: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize)]
pub struct Row {
    /// `daemon`, or `Chromium` with the minimal page, and whether it takes an early answer.
    pub caller: &'static str,
    /// Accept → the caller's first decoded frame.
    pub accept_to_frame: Spread,
}

/// The door's ringing call from `peer`, once it rings.
async fn ringing_from(door: &Daemon, peer: &str) -> anyhow::Result<String> {
    poll(Duration::from_secs(20), || async {
        door.calls()
            .await
            .ok()?
            .into_iter()
            .find(|c| c["peer"] == peer && c["state"] == "ringing")
            .and_then(|c| c["session"].as_str().map(str::to_string))
    })
    .await
    .with_context(|| format!("no call from {peer} rang"))
}

/// Accepts `session` on the door after a person's moment; returns when (epoch ms).
async fn accept(door: &Daemon, session: &str) -> anyhow::Result<f64> {
    tokio::time::sleep(DECIDING).await;
    let url = format!("http://{}/api/calls/{session}/accept", door.addr);
    let at = epoch_ms();
    let (status, text) =
        webrtcd::service::api_client::request("POST", &url, Some("{}".into()), None).await?;
    anyhow::ensure!(status < 300, "accept: {status} {text}");
    Ok(at)
}

/// When the caller's call `session` showed its first frame (epoch ms), from its age and
/// `first_frame_ms` as the caller's API reports them.
async fn caller_frame_at(caller: &Daemon, session: &str) -> anyhow::Result<f64> {
    let (read_at, call) = poll(Duration::from_secs(20), || async {
        let call = caller
            .calls()
            .await
            .ok()?
            .into_iter()
            .find(|c| c["session"] == session && c["first_frame_ms"].is_number())?;
        Some((epoch_ms(), call))
    })
    .await
    .with_context(|| format!("{session}: the caller showed no frame"))?;
    let age = call["age_ms"].as_f64().context("age_ms")?;
    let first = call["first_frame_ms"].as_f64().context("first_frame_ms")?;
    Ok(read_at - age + first)
}

async fn daemon_calls(door: &Daemon, dir: &Path, calls: usize) -> anyhow::Result<Vec<f64>> {
    // A kiosk calling: a camera of its own (a daemon that only receives offers nothing to
    // receive), the door's picture decoded and counted.
    let kiosk = format!(
        "{}video = \"count\"\naudio = \"count\"\n",
        camera_profile("vp8", false, 600_000, false)
    );
    let caller = Daemon::start(dir, "ring-caller", &kiosk, &["--relay", &door.ws_url()])?;
    pin(caller.pid(), 1)?;
    caller.wait_peer(&door.name).await?;
    let mut times = Vec::new();
    // The first call (untimed) starts the door's encoders; they linger.
    for i in 0..=calls {
        let session = caller.call(&door.name).await?;
        ringing_from(door, &caller.name).await?;
        let accepted = accept(door, &session).await?;
        let frame = caller_frame_at(&caller, &session).await?;
        caller.hang_up(&session).await?;
        caller.wait_no_calls().await?;
        door.wait_no_calls().await?;
        if i > 0 {
            times.push(frame - accepted);
        }
    }
    Ok(times)
}

async fn chromium_calls(
    door: &Daemon,
    dir: &Path,
    calls: usize,
    early: bool,
) -> anyhow::Result<Vec<f64>> {
    crate::harness::default_route().map_err(anyhow::Error::msg)?;
    let reports = Reports::default();
    let proxy = reports.proxy(&door.addr).await?;
    let mut times = Vec::new();
    // One browser, a fresh page per call, as a person reloads it; the first call untimed.
    let (prefix, early) = if early {
        ("ring-early", "&early=1")
    } else {
        ("ring-page", "")
    };
    let url = format!(
        "http://{proxy}/minimal.html?id={prefix}-0&camera={}&pages={}&i=0{early}",
        door.name,
        calls + 1
    );
    let browser = Browser::open(Engine::Chromium, &url, dir, false, Some(1))?;
    for i in 0..=calls {
        let id = format!("{prefix}-{i}");
        let session = ringing_from(door, &id).await?;
        let accepted = accept(door, &session).await?;
        let report = reports.of(&id, Duration::from_secs(20)).await?;
        let frame = report["phases"]["frame"]
            .as_f64()
            .with_context(|| format!("{id}: no frame in {report}"))?;
        if i > 0 {
            times.push(frame - accepted);
        }
    }
    drop(browser);
    door.wait_no_calls().await?;
    Ok(times)
}

pub async fn measure(dir: &Path, codec: &str, calls: usize) -> anyhow::Result<Vec<Row>> {
    let profile = format!(
        "answer = \"ring\"\n{}",
        camera_profile(codec, false, 600_000, false)
    );
    let door = Daemon::start(dir, "ring-door", &profile, &[])?;
    pin(door.pid(), 0)?;
    let mut rows = Vec::new();
    let times = daemon_calls(&door, dir, calls).await?;
    rows.push(Row {
        caller: "daemon caller (early answer)",
        accept_to_frame: spread(times).context("no daemon calls")?,
    });
    for (early, caller) in [
        (
            false,
            "Chromium caller, minimal page (1.1: answered on accept)",
        ),
        (
            true,
            "Chromium caller, minimal page taking the early answer",
        ),
    ] {
        let times = chromium_calls(&door, dir, calls, early).await?;
        rows.push(Row {
            caller,
            accept_to_frame: spread(times).context("no Chromium calls")?,
        });
    }
    Ok(rows)
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| ring → accept → caller's first frame | median ms | p95 ms | max ms | calls |\n\
         |---|---|---|---|---|\n",
    );
    for r in rows {
        let s = &r.accept_to_frame;
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {} |\n",
            r.caller, s.median_ms, s.p95_ms, s.max_ms, s.samples
        ));
    }
    out
}
