//! Motion detection: what watching costs (a 1280×720@30 camera with one viewer, its motion
//! watch off and on, alternated), and how long from the picture starting to move to the
//! `motion-start` event a listener of `/api/events` receives.
//!
//! The moving picture starts at a known moment: the camera's source is still for its first
//! 60 frames (2.000 s at 30 fps, from when the daemon logs its capture started), then moves
//! (GStreamer's `concat` of two test sources).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::procs::{Daemon, poll, usage};
use crate::scenarios::{Spread, frame_viewers, frames_by_session, spread};

/// Still for 60 frames, then the whole picture scrolls.
const STILL_THEN_MOVING: &str = "videotestsrc is-live=true num-buffers=60 pattern=pinwheel ! c. \
     videotestsrc is-live=true pattern=smpte75 horizontal-speed=4 ! c. concat name=c";
/// When the picture starts to move, after the capture starts.
const MOVES_AFTER: Duration = Duration::from_secs(2);

fn profile(launch: &str, size: (u32, u32), enabled: bool) -> String {
    format!(
        "name = \"bench-motion\"\ndatachannel = false\nlinger_ms = 0\n[video]\n\
         source = \"launch\"\nlaunch = \"{launch}\"\nwidth = {}\nheight = {}\nframerate = 30\n\
         codecs = [\"vp8\"]\nbitrate_kbps = 1500\n[motion]\nenabled = {enabled}\n",
        size.0, size.1
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct CostRow {
    pub motion: bool,
    pub cpu_pct: f64,
    pub rss_mib: f64,
    pub viewer_fps: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Result {
    pub cost: Vec<CostRow>,
    /// The picture starts to move → `motion-start` received by an `/api/events` listener.
    pub to_event: Option<Spread>,
}

pub async fn measure(dir: &Path, window: Duration, runs: usize) -> anyhow::Result<Result> {
    let mut cost = Vec::new();
    for (i, enabled) in [false, true, false, true].into_iter().enumerate() {
        cost.push(watch_cost(dir, i, enabled, window).await?);
    }
    let mut delays = Vec::new();
    for i in 0..runs {
        delays.push(to_event(dir, i).await?);
    }
    Ok(Result {
        cost,
        to_event: spread(delays),
    })
}

async fn watch_cost(
    dir: &Path,
    i: usize,
    enabled: bool,
    window: Duration,
) -> anyhow::Result<CostRow> {
    let name = format!("motion-cost-{i}");
    let launch = "videotestsrc is-live=true pattern=smpte75 horizontal-speed=4";
    let daemon = Daemon::start(dir, &name, &profile(launch, (1280, 720), enabled), &[])?;
    let viewers = frame_viewers(dir, &daemon, &format!("{name}-viewer"), 1).await?;
    daemon.call_with(&viewers[0].name, None).await?;
    let _ = poll(Duration::from_secs(30), || async {
        let calls = frames_by_session(&viewers).await;
        calls.iter().any(|c| c.1 > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let frames = |calls: Vec<(String, u64, u64, Option<f64>)>| calls.first().map_or(0, |c| c.1);
    let f0 = frames(frames_by_session(&viewers).await);
    let start = usage(daemon.pid())?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let secs = started.elapsed().as_secs_f64();
    let end = usage(daemon.pid())?;
    let f1 = frames(frames_by_session(&viewers).await);
    if enabled {
        let cameras = daemon.get("/api/cameras").await?;
        anyhow::ensure!(
            cameras["cameras"][0]["motion"]["active"] == true,
            "the moving picture raised no motion: {cameras}"
        );
    }
    let row = CostRow {
        motion: enabled,
        cpu_pct: (end.cpu_secs - start.cpu_secs) / secs * 100.0,
        rss_mib: end.rss_mib,
        viewer_fps: f1.saturating_sub(f0) as f64 / secs,
    };
    eprintln!("  {row:?}");
    Ok(row)
}

/// One daemon whose picture moves 2 s after its capture starts: milliseconds from then to
/// the event at a listener.
async fn to_event(dir: &Path, i: usize) -> anyhow::Result<f64> {
    let name = format!("motion-event-{i}");
    let daemon = Daemon::start_with(
        dir,
        &name,
        &profile(STILL_THEN_MOVING, (640, 360), true),
        "127.0.0.1",
        &[],
        &[("RUST_LOG", Path::new("webrtcd=info"))],
    )?;
    let mut stream = tokio::net::TcpStream::connect(&daemon.addr).await?;
    stream
        .write_all(
            format!(
                "GET /api/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
                daemon.addr
            )
            .as_bytes(),
        )
        .await?;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    let received_ms = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "the event stream ended");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if text.contains("event: motion-start") {
            break now_ms();
        }
    };
    let log = std::fs::read_to_string(dir.join(format!("{name}.log")))?;
    let started = log
        .lines()
        .find(|l| l.contains("shared encoder started"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .ok_or_else(|| anyhow::anyhow!("no capture start in {name}.log"))?;
    let moved_ms =
        (started.unix_timestamp_nanos() / 1_000_000) as f64 + MOVES_AFTER.as_secs_f64() * 1000.0;
    let delay = received_ms - moved_ms;
    eprintln!("  moving → motion-start received: {delay:.0} ms");
    Ok(delay)
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

pub fn markdown(r: &Result) -> String {
    let mut out =
        String::from("| motion watch | daemon CPU % | RSS MiB | viewer fps |\n|---|---|---|---|\n");
    for row in &r.cost {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} |",
            if row.motion { "on" } else { "off" },
            row.cpu_pct,
            row.rss_mib,
            row.viewer_fps
        );
    }
    out.push_str("\n| motion | median ms | p95 ms | range ms | runs |\n|---|---|---|---|---|\n");
    crate::table::spread_row(
        &mut out,
        "the picture moves → motion-start at a listener",
        &r.to_event,
    );
    out
}
