//! Several cameras in one daemon: four 640×480 test cameras with 5 viewers each against one
//! camera with 20 (the daemon's CPU, threads and RSS, the encoders running, what the viewers
//! get), and a SIGHUP that adds a camera → that camera's first frame at a viewer.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::procs::{Daemon, poll, usage};
use crate::scenarios::{Spread, frame_viewers, frames_by_session, spread};
use crate::table::spread_row;

/// A daemon serving `names`, each a 640×480@30 VP8 test camera (no microphone), calling
/// viewers that only watch.
fn profile(names: &[String]) -> String {
    let mut text = "name = \"bench-cameras\"\nmax_sessions = 64\ndatachannel = false\n\
                    linger_ms = 0\n"
        .to_string();
    for name in names {
        let _ = write!(
            text,
            "[[camera]]\nname = \"{name}\"\n[camera.video]\nsource = \"test\"\nwidth = 640\n\
             height = 480\nframerate = 30\ncodecs = [\"vp8\"]\nbitrate_kbps = 1000\n"
        );
    }
    text
}

fn names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("cam{i}")).collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub cameras: usize,
    pub viewers: usize,
    /// Calls whose frames flowed.
    pub up: usize,
    /// Daemon CPU, % of one core, over the window.
    pub cpu_pct: f64,
    pub rss_mib: f64,
    pub threads: u64,
    /// Video encoders running (`/api/status` `encoders.video`).
    pub video_encoders: u64,
    pub min_fps: f64,
    pub mean_fps: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Result {
    pub rows: Vec<Row>,
    /// SIGHUP adding a camera → `/api/cameras` lists it.
    pub listed: Option<Spread>,
    /// SIGHUP adding a camera → a call on it has its first decoded frame at the viewer.
    pub first_frame: Option<Spread>,
}

pub async fn measure(dir: &Path, window: Duration, reloads: usize) -> anyhow::Result<Result> {
    let mut rows = Vec::new();
    for (cameras, each) in [(1, 20), (4, 5)] {
        eprintln!("cameras: {cameras} × {each} viewers");
        rows.push(load(dir, cameras, each, window).await?);
    }
    eprintln!("cameras: SIGHUP adding a camera → its first frame ({reloads} times)");
    let (listed, first_frame) = reload(dir, reloads).await?;
    Ok(Result {
        rows,
        listed: spread(listed),
        first_frame: spread(first_frame),
    })
}

/// `cameras` cameras, `each` calls on each (spread over 5 viewer processes).
async fn load(dir: &Path, cameras: usize, each: usize, window: Duration) -> anyhow::Result<Row> {
    let all = names(cameras);
    let daemon = Daemon::start(dir, &format!("cameras-{cameras}"), &profile(&all), &[])?;
    let viewers = frame_viewers(dir, &daemon, &format!("cam{cameras}-viewer"), 5).await?;
    let mut placed = 0;
    for camera in &all {
        for _ in 0..each {
            let to = &viewers[placed % viewers.len()].name;
            daemon.call_with(to, Some(camera)).await?;
            placed += 1;
        }
    }
    let flowing = || async {
        frames_by_session(&viewers)
            .await
            .iter()
            .filter(|(_, frames, _, _)| *frames > 0)
            .count()
    };
    let _ = poll(Duration::from_secs(60), || async {
        (flowing().await >= placed).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = frames_by_session(&viewers).await;
    let start = usage(daemon.pid())?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let secs = started.elapsed().as_secs_f64();
    let end = usage(daemon.pid())?;
    let after = frames_by_session(&viewers).await;
    let status = daemon.get("/api/status").await?;
    let mut fps: Vec<f64> = after
        .iter()
        .map(|(session, frames, _, _)| {
            let f0 = before
                .iter()
                .find(|(s, _, _, _)| s == session)
                .map_or(0, |(_, f, _, _)| *f);
            (frames - f0.min(*frames)) as f64 / secs
        })
        .collect();
    fps.resize(fps.len().max(placed), 0.0);
    let row = Row {
        cameras,
        viewers: placed,
        up: after.iter().filter(|(_, f, _, _)| *f > 0).count(),
        cpu_pct: (end.cpu_secs - start.cpu_secs) / secs * 100.0,
        rss_mib: end.rss_mib,
        threads: end.threads,
        video_encoders: status["encoders"]["video"].as_u64().unwrap_or(0),
        min_fps: fps.iter().copied().fold(f64::INFINITY, f64::min),
        mean_fps: fps.iter().sum::<f64>() / fps.len().max(1) as f64,
    };
    eprintln!("  {row:?}");
    Ok(row)
}

/// A daemon with one camera; `times` SIGHUPs each adding a camera, each timed to the new
/// camera being listed and to a call on it having its first frame (the call then ends).
async fn reload(dir: &Path, times: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let name = "cameras-reload";
    let daemon = Daemon::start(dir, name, &profile(&names(1)), &[])?;
    let viewer = frame_viewers(dir, &daemon, "reload-viewer", 1).await?;
    let (mut listed, mut first_frame) = (Vec::new(), Vec::new());
    for added in 1..=times {
        let all = names(added + 1);
        let new = &all[added];
        std::fs::write(dir.join(format!("{name}.toml")), profile(&all))?;
        let sent = Instant::now();
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &daemon.pid().to_string()])
            .status()
            .context("kill -HUP")?;
        anyhow::ensure!(hup.success(), "kill -HUP failed");
        let found = poll(Duration::from_secs(20), || async {
            let cameras = daemon.get("/api/cameras").await.ok()?;
            let listed = cameras["cameras"].as_array()?;
            listed
                .iter()
                .any(|c| c["name"] == new.as_str())
                .then_some(())
        })
        .await;
        anyhow::ensure!(found.is_some(), "{new} was not listed after SIGHUP");
        listed.push(sent.elapsed().as_secs_f64() * 1000.0);
        let session = daemon.call_with(&viewer[0].name, Some(new)).await?;
        let framed = poll(Duration::from_secs(20), || async {
            let calls = frames_by_session(&viewer).await;
            calls
                .iter()
                .any(|(s, frames, _, _)| *s == session && *frames > 0)
                .then_some(())
        })
        .await;
        anyhow::ensure!(framed.is_some(), "no frame from {new}");
        first_frame.push(sent.elapsed().as_secs_f64() * 1000.0);
        let url = format!("http://{}/api/calls/{session}", daemon.addr);
        let _ = webrtcd::service::api_client::request("DELETE", &url, None, None).await;
    }
    Ok((listed, first_frame))
}

pub fn markdown(r: &Result) -> String {
    let mut out = String::from(
        "| cameras × viewers | up | daemon CPU % | RSS MiB | threads | video encoders | fps min / mean |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for row in &r.rows {
        let _ = writeln!(
            out,
            "| {} × {} | {} | {:.0} | {:.1} | {} | {} | {:.1} / {:.1} |",
            row.cameras,
            row.viewers / row.cameras.max(1),
            row.up,
            row.cpu_pct,
            row.rss_mib,
            row.threads,
            row.video_encoders,
            row.min_fps,
            row.mean_fps
        );
    }
    out.push_str("\n| SIGHUP adding a camera → | median ms | p95 ms | range ms | runs |\n|---|---|---|---|---|\n");
    spread_row(&mut out, "listed in /api/cameras", &r.listed);
    spread_row(
        &mut out,
        "a call on it: first decoded frame",
        &r.first_frame,
    );
    out
}
