//! Players that know nothing of webrtcd's signaling: how soon an RTSP client (GStreamer's
//! `rtspsrc`, as an NVR) decodes its first frame, and how long a JPEG snapshot takes with
//! the camera idle and with its stream running.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use gst::prelude::*;
use serde::Serialize;

use crate::procs::Daemon;

#[derive(Debug, Serialize)]
pub struct Players {
    /// rtspsrc started → first decoded frame (ms), per run.
    pub rtsp_first_frame_ms: Vec<f64>,
    /// Snapshots with nothing running (the capture starts for each), ms.
    pub snapshot_idle_ms: Vec<f64>,
    /// Snapshots while an RTSP client keeps the stream running, ms.
    pub snapshot_running_ms: Vec<f64>,
}

const PROFILE: &str = "name = \"players\"\nlinger_ms = 300\n\
    [video]\nsource = \"test\"\nwidth = 1280\nheight = 720\nframerate = 30\n\
    codecs = [\"h264\"]\nbitrate_kbps = 2000\n[audio]\nsource = \"test\"\ncodecs = [\"opus\"]\n";

pub async fn measure(dir: &Path, runs: usize) -> anyhow::Result<Players> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let rtsp_listen = format!("127.0.0.1:{port}");
    let daemon = Daemon::start(dir, "players", PROFILE, &["--rtsp-listen", &rtsp_listen])?;
    let url = format!("rtsp://{rtsp_listen}/live");
    let mut players = Players {
        rtsp_first_frame_ms: Vec::new(),
        snapshot_idle_ms: Vec::new(),
        snapshot_running_ms: Vec::new(),
    };
    for _ in 0..runs {
        // Idle: after the linger, nothing runs.
        tokio::time::sleep(Duration::from_millis(800)).await;
        players
            .snapshot_idle_ms
            .push(snapshot_ms(&daemon.addr).await?);
    }
    for _ in 0..runs {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let (first, stop) = {
            let url = url.clone();
            tokio::task::spawn_blocking(move || rtsp_first_frame(&url)).await??
        };
        players.rtsp_first_frame_ms.push(ms(first));
        // The RTSP client keeps the stream running meanwhile.
        players
            .snapshot_running_ms
            .push(snapshot_ms(&daemon.addr).await?);
        tokio::task::spawn_blocking(move || {
            let _ = stop.set_state(gst::State::Null);
        })
        .await?;
    }
    Ok(players)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One `GET /api/snapshot.jpg?width=640`, timed; fails unless it is a JPEG.
async fn snapshot_ms(addr: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (status, body) = webrtcd::service::api_client::request(
        "GET",
        &format!("http://{addr}/api/snapshot.jpg?width=640"),
        None,
        None,
    )
    .await?;
    let took = ms(started.elapsed());
    anyhow::ensure!(status == 200, "snapshot: {status} {body}");
    Ok(took)
}

/// Starts rtspsrc on `url`; returns when its first frame is decoded (and the running
/// pipeline, for the caller to stop).
fn rtsp_first_frame(url: &str) -> anyhow::Result<(Duration, gst::Pipeline)> {
    gst::init()?;
    let pipeline = gst::parse::launch(&format!(
        "rtspsrc location={url} protocols=udp latency=0 name=src \
         src. ! application/x-rtp,media=video ! rtph264depay ! avdec_h264 ! \
         appsink name=out sync=false max-buffers=2 drop=true"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let sink = pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("appsink")?;
    let started = Instant::now();
    pipeline.set_state(gst::State::Playing)?;
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(10));
    let took = started.elapsed();
    anyhow::ensure!(sample.is_some(), "rtspsrc decoded nothing in 10 s");
    Ok((took, pipeline))
}

fn p50(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn markdown(p: &Players) -> String {
    let row = |what: &str, values: &[f64]| {
        let max = values.iter().copied().fold(f64::NAN, f64::max);
        format!(
            "| {what} | {:.0} | {:.0} | {} |\n",
            p50(values),
            max,
            values.len()
        )
    };
    let mut out = String::from(
        "| players (1280×720 H.264 camera) | p50 ms | max ms | runs |\n|---|---|---|---|\n",
    );
    out.push_str(&row(
        "RTSP: rtspsrc start → first decoded frame",
        &p.rtsp_first_frame_ms,
    ));
    out.push_str(&row(
        "snapshot 640 wide, camera idle (capture starts)",
        &p.snapshot_idle_ms,
    ));
    out.push_str(&row(
        "snapshot 640 wide, stream running",
        &p.snapshot_running_ms,
    ));
    out
}
