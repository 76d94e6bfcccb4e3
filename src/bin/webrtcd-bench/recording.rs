//! Recording's cost: one 1280×720@30 H.264 camera watched by one viewer (so its encoder runs
//! either way), with `[recording]` off and on, alternated: the daemon's CPU and RSS, the
//! encoders running, and what recording writes per second.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::procs::{Daemon, poll, usage};
use crate::scenarios::{frame_viewers, frames_by_session};

/// Noise (videotestsrc's snow): the encoder spends its whole 2 Mbit/s, as a real camera's
/// picture makes it (the test pattern compresses to a tenth of that).
const PROFILE: &str = "name = \"bench-rec\"\ndatachannel = false\nlinger_ms = 0\n[video]\n\
                       source = \"launch\"\nlaunch = \"videotestsrc is-live=true pattern=snow\"\n\
                       width = 1280\nheight = 720\nframerate = 30\n\
                       codecs = [\"h264\"]\nbitrate_kbps = 2000\n";

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub recording: bool,
    /// Daemon CPU, % of one core, over the window.
    pub cpu_pct: f64,
    pub rss_mib: f64,
    pub threads: u64,
    /// Video encoders running (`/api/status` `encoders.video`).
    pub video_encoders: u64,
    /// Bytes of recordings written per second (`recording_written_bytes`).
    pub write_kib_s: f64,
    pub viewer_fps: f64,
}

/// Off, on, off, on: each `window` long.
pub async fn measure(dir: &Path, window: Duration) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, recording) in [false, true, false, true].into_iter().enumerate() {
        rows.push(run(dir, i, recording, window).await?);
    }
    Ok(rows)
}

async fn run(dir: &Path, i: usize, recording: bool, window: Duration) -> anyhow::Result<Row> {
    let name = format!("rec-{i}");
    let config = dir.join(format!("{name}.config.toml"));
    let recordings = dir.join(format!("{name}-recordings"));
    let _ = std::fs::remove_dir_all(&recordings);
    let text = if recording {
        format!(
            "[recording]\npath = \"{}\"\nsegment_secs = 10\nmin_free_mb = 100\n",
            recordings.display()
        )
    } else {
        String::new()
    };
    std::fs::write(&config, text)?;
    let config = config.to_string_lossy().into_owned();
    let daemon = Daemon::start(dir, &name, PROFILE, &["--config", &config])?;
    let viewers = frame_viewers(dir, &daemon, &format!("{name}-viewer"), 1).await?;
    daemon.call_with(&viewers[0].name, None).await?;
    let _ = poll(Duration::from_secs(30), || async {
        let calls = frames_by_session(&viewers).await;
        calls.iter().any(|(_, f, _, _)| *f > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let frames = |calls: Vec<(String, u64, u64, Option<f64>)>| calls.first().map_or(0, |c| c.1);
    let written = || async {
        let url = format!("http://{}/metrics", daemon.addr);
        let (_, text) = webrtcd::service::api_client::request("GET", &url, None, None)
            .await
            .unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("webrtcd_recording_written_bytes_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let (f0, w0) = (frames(frames_by_session(&viewers).await), written().await);
    let start = usage(daemon.pid())?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let secs = started.elapsed().as_secs_f64();
    let end = usage(daemon.pid())?;
    let (f1, w1) = (frames(frames_by_session(&viewers).await), written().await);
    let status = daemon.get("/api/status").await?;
    let row = Row {
        recording,
        cpu_pct: (end.cpu_secs - start.cpu_secs) / secs * 100.0,
        rss_mib: end.rss_mib,
        threads: end.threads,
        video_encoders: status["encoders"]["video"].as_u64().unwrap_or(0),
        write_kib_s: (w1 - w0) / secs / 1024.0,
        viewer_fps: f1.saturating_sub(f0) as f64 / secs,
    };
    eprintln!("  {row:?}");
    Ok(row)
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| recording | daemon CPU % | RSS MiB | threads | video encoders | written KiB/s | viewer fps |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {} | {} | {:.0} | {:.1} |",
            if row.recording { "on" } else { "off" },
            row.cpu_pct,
            row.rss_mib,
            row.threads,
            row.video_encoders,
            row.write_kib_s,
            row.viewer_fps
        );
    }
    let mean = |on: bool, f: fn(&Row) -> f64| {
        let picked: Vec<f64> = rows.iter().filter(|r| r.recording == on).map(f).collect();
        picked.iter().sum::<f64>() / picked.len().max(1) as f64
    };
    let _ = writeln!(
        out,
        "\nRecording on costs {:+.1} % of a core and {:+.1} MiB (means of the runs).",
        mean(true, |r| r.cpu_pct) - mean(false, |r| r.cpu_pct),
        mean(true, |r| r.rss_mib) - mean(false, |r| r.rss_mib)
    );
    out
}
