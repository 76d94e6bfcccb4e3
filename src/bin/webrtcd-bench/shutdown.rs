//! Shutdown under load: a camera with 30 calls up (frames flowing to every viewer) is sent
//! SIGTERM; the figure is SIGTERM → process exit, as systemd would wait for it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::procs::{Daemon, poll};
use crate::scenarios::{Spread, camera_profile, spread, viewer_profile};

#[derive(Debug, Clone, Serialize)]
pub struct Shutdown {
    pub calls: usize,
    pub exit: Spread,
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
    for run in 0..runs {
        let mut camera = Daemon::start(
            dir,
            &format!("stop-camera{run}"),
            &camera_profile(codec, false, 0, false),
            &[],
        )?;
        let mut viewers = Vec::new();
        for i in 0..3 {
            let name = format!("stop{run}-viewer{i}");
            viewers.push(Daemon::start(
                dir,
                &name,
                &viewer_profile("frames", false),
                &["--relay", &camera.ws_url()],
            )?);
            camera.wait_peer(&name).await?;
        }
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
        eprintln!("shutdown with {calls} calls: {} ms", took.as_millis());
        samples.push(took.as_secs_f64() * 1000.0);
    }
    Ok(Shutdown {
        calls,
        exit: spread(samples).context("no samples")?,
    })
}

pub fn markdown(s: &Shutdown) -> String {
    format!(
        "| shutdown under load | median ms | p95 ms | range ms | runs |\n|---|---|---|---|---|\n\
         | SIGTERM → exit, {} calls up | {:.0} | {:.0} | {:.0}–{:.0} | {} |\n",
        s.calls, s.exit.median_ms, s.exit.p95_ms, s.exit.min_ms, s.exit.max_ms, s.exit.samples
    )
}
