//! Shutdown under load: a camera with 30 calls up (frames flowing to every viewer) is sent
//! SIGTERM; the figure is SIGTERM → process exit, as systemd would wait for it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::procs::{Daemon, poll};
use crate::scenarios::{Spread, camera_profile, frame_viewers, spread};

#[derive(Debug, Clone, Serialize)]
pub struct Shutdown {
    pub calls: usize,
    pub exit: Spread,
    /// Calls the viewers still had 1 s after the camera exited, over all runs: a viewer that
    /// got no hangup keeps its call until its path watch gives up (many seconds).
    pub not_told: usize,
}

/// Calls the viewers still hold.
async fn live_calls(viewers: &[Daemon]) -> usize {
    let mut live = 0;
    for v in viewers {
        live += v.calls().await.map_or(0, |c| c.len());
    }
    live
}

/// `runs` times: a fresh camera, `calls` calls spread over three viewer processes, every call
/// receiving frames, then SIGTERM and the time until the camera has exited.
pub async fn measure(
    dir: &Path,
    codec: &str,
    calls: usize,
    runs: usize,
) -> anyhow::Result<Shutdown> {
    let mut samples = Vec::new();
    let mut not_told = 0;
    for run in 0..runs {
        let mut camera = Daemon::start(
            dir,
            &format!("stop-camera{run}"),
            &camera_profile(codec, false, 0, false),
            &[],
        )?;
        let viewers = frame_viewers(dir, &camera, &format!("stop{run}-viewer"), 3).await?;
        for i in 0..calls {
            camera.call(&viewers[i % viewers.len()].name).await?;
        }
        poll(Duration::from_secs(60), || async {
            let mut flowing = 0;
            for v in &viewers {
                flowing += v
                    .calls()
                    .await
                    .ok()?
                    .iter()
                    .filter(|c| c["video_frames"].as_u64().unwrap_or(0) > 0)
                    .count();
            }
            (flowing >= calls).then_some(())
        })
        .await
        .with_context(|| format!("run {run}: not every call received frames"))?;
        let started = Instant::now();
        let status = camera.terminate(Duration::from_secs(30)).await?;
        let took = started.elapsed();
        if !status.success() {
            bail!("run {run}: the camera exited with {status}");
        }
        let told = poll(Duration::from_secs(1), || async {
            (live_calls(&viewers).await == 0).then_some(())
        })
        .await;
        let left = if told.is_some() {
            0
        } else {
            live_calls(&viewers).await
        };
        not_told += left;
        eprintln!(
            "shutdown with {calls} calls: {} ms, {left} calls not told",
            took.as_millis()
        );
        samples.push(took.as_secs_f64() * 1000.0);
    }
    Ok(Shutdown {
        calls,
        exit: spread(samples).context("no samples")?,
        not_told,
    })
}

pub fn markdown(s: &Shutdown) -> String {
    format!(
        "| shutdown under load | median ms | p95 ms | range ms | runs | viewers' calls not hung up 1 s later |\n|---|---|---|---|---|---|\n\
         | SIGTERM → exit, {} calls up | {:.0} | {:.0} | {:.0}–{:.0} | {} | {} of {} |\n",
        s.calls,
        s.exit.median_ms,
        s.exit.p95_ms,
        s.exit.min_ms,
        s.exit.max_ms,
        s.exit.samples,
        s.not_told,
        s.calls * s.exit.samples
    )
}
