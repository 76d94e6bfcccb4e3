//! What the benchmark measures, one function per row group of the table.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::chromium::{Browser, Collector};
use crate::procs::{Daemon, poll, usage};

/// The camera: test pattern (a moving ball) at 1280×720@30 and a tone. It calls viewers that
/// only watch: no DataChannel (three threads and an SCTP association per call saved).
pub fn camera_profile(codec: &str, per_viewer: bool, linger_ms: u64, stamp: bool) -> String {
    format!(
        r#"name = "bench-camera"
max_sessions = 128
datachannel = false
linger_ms = {linger_ms}
per_viewer_encoder = {per_viewer}

[video]
source = "test"
width = 1280
height = 720
framerate = 30
codecs = ["{codec}"]
bitrate_kbps = 2000
keyframe_interval = 60
stamp_capture_time = {stamp}

[audio]
source = "test"
codecs = ["opus"]

[receive]
latency_ms = 50
"#
    )
}

/// A viewer that only receives: `count` decodes (for first-frame and latency figures),
/// `frames` only depayloads (cheap, for the scaling runs). A counting viewer's jitterbuffer
/// holds nothing back (`latency_ms = 0`): the figures are the daemon's, not a buffer's (the
/// shipped profiles' 50 ms would add 50 ms to each). A scaling viewer keeps the shipped 50 ms,
/// as a browser keeps a jitter buffer: with 0, a packet that arrives behind its successor
/// (many calls sending at once on 2 busy cores) is dropped as late, and a third of the calls
/// played 20 fps while the daemon sent every packet (measured 2026-12-03).
pub fn viewer_profile(sink: &str, measure_latency: bool) -> String {
    let latency_ms = if sink == "frames" { 50 } else { 0 };
    format!(
        r#"name = "bench-viewer"
max_sessions = 64

[receive]
video = "{sink}"
audio = "{sink}"
latency_ms = {latency_ms}
measure_latency = {measure_latency}
"#
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub samples: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

pub fn spread(mut ms: Vec<f64>) -> Option<Spread> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Some(Spread {
        samples: ms.len(),
        median_ms: at(0.5),
        p95_ms: at(0.95),
        min_ms: ms[0],
        max_ms: ms[ms.len() - 1],
    })
}

pub fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// From `posted` (when the API call was made) to the callee's first decoded frame, read off
/// the callee's own clock: its call started `age_ms` before the poll, and its first frame
/// came `first_frame_ms` after that start. Poll delay cancels out.
fn post_to_first_frame(posted: Instant, polled: Instant, call: &Value) -> Option<f64> {
    let age = call["age_ms"].as_f64()?;
    let first = call["first_frame_ms"].as_f64()?;
    Some(polled.duration_since(posted).as_secs_f64() * 1000.0 - age + first)
}

/// A camera daemon and a viewer daemon registered with the camera's relay.
async fn camera_and_viewer(
    dir: &Path,
    prefix: &str,
    camera_profile: &str,
    viewer_profile: &str,
) -> anyhow::Result<(Daemon, Daemon)> {
    let camera = Daemon::start(dir, &format!("{prefix}-camera"), camera_profile, &[])?;
    let name = format!("{prefix}-viewer");
    let viewer = Daemon::start(dir, &name, viewer_profile, &["--relay", &camera.ws_url()])?;
    camera.wait_peer(&name).await?;
    Ok((camera, viewer))
}

/// Call → first decoded frame, daemon to daemon, the camera's encoder cold every time
/// (linger 0: it starts with the call, as for the first viewer of an idle camera).
pub async fn first_frame_daemon(dir: &Path, codec: &str, calls: usize) -> anyhow::Result<Spread> {
    let (camera, viewer) = camera_and_viewer(
        dir,
        "ff",
        &camera_profile(codec, false, 0, false),
        &viewer_profile("count", false),
    )
    .await?;
    let mut samples = Vec::new();
    for _ in 0..calls {
        let posted = Instant::now();
        let session = camera.call(&viewer.name).await?;
        let call = viewer
            .wait_call(&session, Duration::from_secs(20), |c| {
                c["first_frame_ms"].is_number()
            })
            .await?;
        samples.extend(post_to_first_frame(posted, Instant::now(), &call));
        camera.hang_up(&session).await?;
        camera.wait_idle().await?;
        viewer.wait_idle().await?;
    }
    spread(samples).context("no samples")
}

/// Call → first decoded frame in headless Chromium (the built-in page, auto-answering).
pub async fn first_frame_chromium(dir: &Path, codec: &str, calls: usize) -> anyhow::Result<Spread> {
    let camera = Daemon::start(
        dir,
        "ffc-camera",
        &camera_profile(codec, false, 0, false),
        &[],
    )?;
    let collector = Collector::start(&camera.addr).await?;
    let url = format!(
        "http://{}/?id=browser&autoanswer=1&report=/report",
        collector.addr
    );
    let _browser = Browser::chromium(&url, dir)?;
    camera.wait_peer("browser").await?;
    let mut samples = Vec::new();
    for _ in 0..calls {
        let posted = epoch_ms();
        let session = camera.call("browser").await?;
        let report = collector
            .first_frame_of(&session, Duration::from_secs(20))
            .await?;
        if let Some(at) = report["call"]["firstFrameAt"].as_f64() {
            samples.push(at - posted);
        }
        camera.hang_up(&session).await?;
        camera.wait_idle().await?;
        collector.call_ended().await?;
    }
    spread(samples).context("no samples")
}

#[derive(Debug, Clone, Serialize)]
pub struct Join {
    /// From the API call to the joining viewer's first decoded frame.
    pub call_to_frame: Spread,
    /// From the joining viewer's connection being up to its first decoded frame.
    pub connected_to_frame: Spread,
}

/// A viewer joining a stream that is already running (another viewer keeps it up).
pub async fn join(dir: &Path, codec: &str, joins: usize) -> anyhow::Result<Join> {
    let camera = Daemon::start(
        dir,
        "join-camera",
        &camera_profile(codec, false, 2000, false),
        &[],
    )?;
    let relay = ["--relay".to_string(), camera.ws_url()];
    let relay: Vec<&str> = relay.iter().map(String::as_str).collect();
    let first = Daemon::start(dir, "join-first", &viewer_profile("frames", false), &relay)?;
    let joiner = Daemon::start(dir, "join-viewer", &viewer_profile("count", false), &relay)?;
    camera.wait_peer("join-first").await?;
    camera.wait_peer("join-viewer").await?;
    let running = camera.call("join-first").await?;
    first
        .wait_call(&running, Duration::from_secs(20), |c| {
            c["video_frames"].as_u64().unwrap_or(0) > 30
        })
        .await?;
    let (mut to_frame, mut after_connect) = (Vec::new(), Vec::new());
    for _ in 0..joins {
        let posted = Instant::now();
        let session = camera.call("join-viewer").await?;
        let call = joiner
            .wait_call(&session, Duration::from_secs(20), |c| {
                c["first_frame_ms"].is_number() && c["connected_ms"].is_number()
            })
            .await?;
        to_frame.extend(post_to_first_frame(posted, Instant::now(), &call));
        if let (Some(f), Some(c)) = (
            call["first_frame_ms"].as_f64(),
            call["connected_ms"].as_f64(),
        ) {
            after_connect.push(f - c);
        }
        camera.hang_up(&session).await?;
        joiner.wait_idle().await?;
    }
    Ok(Join {
        call_to_frame: spread(to_frame).context("no samples")?,
        connected_to_frame: spread(after_connect).context("no samples")?,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub frames: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

/// Capture → decoded frame: the camera stamps capture time into the picture, the viewer
/// reads it from each decoded frame (same machine, same clock).
pub async fn latency(dir: &Path, codec: &str, window: Duration) -> anyhow::Result<Latency> {
    let (camera, viewer) = camera_and_viewer(
        dir,
        "lat",
        &camera_profile(codec, false, 0, true),
        &viewer_profile("count", true),
    )
    .await?;
    let session = camera.call(&viewer.name).await?;
    viewer
        .wait_call(&session, Duration::from_secs(20), |c| {
            c["first_frame_ms"].is_number()
        })
        .await?;
    tokio::time::sleep(window).await;
    let call = viewer
        .wait_call(&session, Duration::from_secs(5), |c| {
            c["latency"].is_object()
        })
        .await
        .context("no stamped frames decoded")?;
    let l = &call["latency"];
    Ok(Latency {
        frames: l["frames"].as_u64().unwrap_or(0),
        p50_ms: l["p50_ms"].as_f64().unwrap_or(0.0),
        p95_ms: l["p95_ms"].as_f64().unwrap_or(0.0),
        max_ms: l["max_ms"].as_f64().unwrap_or(0.0),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub codec: String,
    pub per_viewer_encoder: bool,
    pub viewers: usize,
    pub connected: usize,
    /// Daemon CPU, % of one core (user + system, over the window).
    pub cpu_pct: f64,
    pub rss_mib: f64,
    pub threads: u64,
    /// All viewer processes together, % of one core.
    pub viewers_cpu_pct: f64,
    pub min_fps: f64,
    pub mean_fps: f64,
    /// Frames that came > 100 ms after the previous one, all viewers, in the window.
    pub late_frames: u64,
    /// The viewers that joined at this step: median from the call's start (at the viewer) to
    /// its first frame.
    pub first_frame_ms: Option<f64>,
    /// What the daemon itself sent, whatever the receivers (sharing the two cores) managed:
    /// frames/s its shared video encoder handed out, and video RTP packets/s per call
    /// (lowest, and mean). None where not measured (webrtcsink).
    pub sent: Option<Sent>,
}

/// What a measuring window saw of the processes: the server at its start and end, the
/// viewers' CPU seconds at its start and end, and its length.
pub struct Window {
    pub server: (crate::procs::Usage, crate::procs::Usage),
    pub viewers_cpu_secs: (f64, f64),
    pub secs: f64,
}

impl Load {
    /// A row: the server's CPU, memory and threads over `window`; the receivers' frame rates
    /// (`fps`, one per call: calls that never came up count as 0 fps, up to `viewers`); the
    /// median first frame of `first_frames`. No late frames, nothing sent, until told.
    pub fn measured(
        codec: &str,
        per_viewer_encoder: bool,
        viewers: usize,
        connected: usize,
        window: &Window,
        mut fps: Vec<f64>,
        first_frames: Vec<f64>,
    ) -> Load {
        fps.resize(fps.len().max(viewers), 0.0);
        let (start, end) = &window.server;
        let (v0, v1) = window.viewers_cpu_secs;
        Load {
            codec: codec.into(),
            per_viewer_encoder,
            viewers,
            connected,
            cpu_pct: (end.cpu_secs - start.cpu_secs) / window.secs * 100.0,
            rss_mib: end.rss_mib,
            threads: end.threads,
            viewers_cpu_pct: (v1 - v0) / window.secs * 100.0,
            min_fps: fps.iter().copied().fold(f64::INFINITY, f64::min),
            mean_fps: fps.iter().sum::<f64>() / fps.len().max(1) as f64,
            late_frames: 0,
            first_frame_ms: spread(first_frames).map(|s| s.median_ms),
            sent: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sent {
    /// None with one encoder per viewer (no shared stream).
    pub fps: Option<f64>,
    pub min_pps: f64,
    pub mean_pps: f64,
}

/// The daemon's side: frames its shared video stream handed out so far, and the video RTP
/// packets each call has sent so far.
async fn sent_so_far(camera: &Daemon, codec: &str) -> (Option<u64>, Vec<(String, u64)>) {
    let frames = camera.get("/api/status").await.ok().and_then(|status| {
        status["shared_streams"]
            .as_array()?
            .iter()
            .find(|s| s["codec"] == codec)
            .and_then(|s| s["frames"].as_u64())
    });
    let calls = camera
        .calls()
        .await
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["session"].as_str().unwrap_or_default().to_string(),
                c["rtp_packets"]["video_sent"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    (frames, calls)
}

/// Per second over `secs`, from two readings of [`sent_so_far`].
fn sent_between(
    before: &(Option<u64>, Vec<(String, u64)>),
    after: &(Option<u64>, Vec<(String, u64)>),
    secs: f64,
) -> Option<Sent> {
    let fps = after
        .0
        .zip(before.0)
        .map(|(after, before)| after.saturating_sub(before) as f64 / secs);
    let pps: Vec<f64> = after
        .1
        .iter()
        .map(|(session, sent)| {
            let was = before
                .1
                .iter()
                .find(|(s, _)| s == session)
                .map_or(0, |(_, n)| *n);
            sent.saturating_sub(was) as f64 / secs
        })
        .collect();
    (!pps.is_empty()).then_some(Sent {
        fps,
        min_pps: pps.iter().copied().fold(f64::INFINITY, f64::min),
        mean_pps: pps.iter().sum::<f64>() / pps.len().max(1) as f64,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    pub codec: String,
    /// `webrtcd`, or `webrtcsink` in the comparison.
    pub server: String,
    pub per_viewer_encoder: bool,
    pub idle_rss_mib: f64,
    pub idle_threads: u64,
    pub rows: Vec<Load>,
    /// Why escalation stopped early, if it did.
    pub stopped: Option<String>,
}

/// Frames received so far by every call on these viewers (and how late, and when the
/// first came), by session.
pub async fn frames_by_session(viewers: &[Daemon]) -> Vec<(String, u64, u64, Option<f64>)> {
    let mut out = Vec::new();
    for v in viewers {
        for c in v.calls().await.unwrap_or_default() {
            out.push((
                c["session"].as_str().unwrap_or_default().to_string(),
                c["video_frames"].as_u64().unwrap_or(0),
                c["video_late"].as_u64().unwrap_or(0),
                c["first_frame_ms"].as_f64(),
            ));
        }
    }
    out
}

/// `count` viewer daemons (`PREFIX0`, `PREFIX1`…) that count frames, registered with
/// `camera`'s relay.
pub async fn frame_viewers(
    dir: &Path,
    camera: &Daemon,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<Daemon>> {
    let mut viewers = Vec::new();
    for i in 0..count {
        let name = format!("{prefix}{i}");
        viewers.push(Daemon::start(
            dir,
            &name,
            &viewer_profile("frames", false),
            &["--relay", &camera.ws_url()],
        )?);
        camera.wait_peer(&name).await?;
    }
    Ok(viewers)
}

/// Daemon CPU/RSS/threads and viewer frame rates as viewers are added: 1, 5, 10, …
pub async fn scaling(
    dir: &Path,
    codec: &str,
    per_viewer: bool,
    steps: &[usize],
    processes: usize,
    window: Duration,
) -> anyhow::Result<Scaling> {
    let tag = if per_viewer { "pv" } else { "shared" };
    let camera = Daemon::start(
        dir,
        &format!("load-{codec}-{tag}"),
        &camera_profile(codec, per_viewer, 0, false),
        &[],
    )?;
    let viewers = frame_viewers(dir, &camera, "viewer", processes).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = usage(camera.pid())?;
    let mut out = Scaling {
        codec: codec.into(),
        server: "webrtcd".into(),
        per_viewer_encoder: per_viewer,
        idle_rss_mib: idle.rss_mib,
        idle_threads: idle.threads,
        rows: Vec::new(),
        stopped: None,
    };
    let mut placed = 0usize;
    let mut seen = std::collections::HashSet::new();
    for &target in steps {
        while placed < target {
            let to = &viewers[placed % viewers.len()].name;
            camera.call(to).await?;
            placed += 1;
        }
        // Every call up (frames flowing), bounded.
        let all_up = poll(Duration::from_secs(60), || async {
            let flowing = frames_by_session(&viewers)
                .await
                .iter()
                .filter(|(_, f, _, _)| *f > 0)
                .count();
            (flowing >= target).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = frames_by_session(&viewers).await;
        let sent0 = sent_so_far(&camera, codec).await;
        let cam0 = usage(camera.pid())?;
        let view0: f64 = viewers
            .iter()
            .filter_map(|v| usage(v.pid()).ok())
            .map(|u| u.cpu_secs)
            .sum();
        let started = Instant::now();
        tokio::time::sleep(window).await;
        let secs = started.elapsed().as_secs_f64();
        let cam1 = usage(camera.pid())?;
        let view1: f64 = viewers
            .iter()
            .filter_map(|v| usage(v.pid()).ok())
            .map(|u| u.cpu_secs)
            .sum();
        let sent1 = sent_so_far(&camera, codec).await;
        let after = frames_by_session(&viewers).await;
        let mut fps = Vec::new();
        let mut late = 0;
        let mut first_frames = Vec::new();
        for (session, frames, late1, first) in &after {
            if seen.insert(session.clone())
                && let Some(ms) = first
            {
                first_frames.push(*ms);
            }
            let (f0, l0) = before
                .iter()
                .find(|(s, _, _, _)| s == session)
                .map(|(_, f, l, _)| (*f, *l))
                .unwrap_or((0, 0));
            fps.push((frames - f0.min(*frames)) as f64 / secs);
            late += late1 - l0.min(*late1);
        }
        let connected = after.iter().filter(|(_, f, _, _)| *f > 0).count();
        let window = Window {
            server: (cam0, cam1),
            viewers_cpu_secs: (view0, view1),
            secs,
        };
        let row = Load {
            late_frames: late,
            sent: sent_between(&sent0, &sent1, secs).map(|sent| Sent {
                fps: sent.fps.filter(|_| !per_viewer),
                ..sent
            }),
            ..Load::measured(
                codec,
                per_viewer,
                target,
                connected,
                &window,
                fps,
                first_frames,
            )
        };
        eprintln!(
            "  {codec} {tag} {target:>2} viewers: daemon {:.0}% CPU, {:.1} MiB, {} threads; viewers {:.0}% CPU; fps min {:.1} mean {:.1}; late {}; daemon sent {:?}",
            row.cpu_pct,
            row.rss_mib,
            row.threads,
            row.viewers_cpu_pct,
            row.min_fps,
            row.mean_fps,
            row.late_frames,
            row.sent
        );
        out.stopped = stop_reason(all_up.is_some(), &row);
        out.rows.push(row);
        if out.stopped.is_some() {
            break;
        }
    }
    Ok(out)
}

/// Why a scaling run goes no further than `row`, if it should stop there: not every viewer
/// came up, or the machine is saturated.
pub fn stop_reason(all_up: bool, row: &Load) -> Option<String> {
    let why = if !all_up {
        "not every viewer was playing within 60 s"
    } else if row.cpu_pct + row.viewers_cpu_pct > 190.0 || row.min_fps < 20.0 {
        "the machine is saturated (2 cores busy, or a viewer below 20 fps)"
    } else {
        return None;
    };
    Some(format!("stopped after {} viewers: {why}", row.viewers))
}
