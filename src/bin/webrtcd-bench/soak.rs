//! The soak: thousands of daemon → daemon calls, one after another and then several at a
//! time, each checked for video and audio on both sides; threads, descriptors, RSS and live
//! pipelines of both daemons sampled as it goes. A daemon that leaks shows it here.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::procs::{Daemon, usage};

/// Both ends send a small test picture and a tone and decode what they get.
fn profile(name: &str) -> String {
    format!(
        r#"name = "{name}"
max_sessions = 16
linger_ms = 2000

[video]
source = "test"
width = 320
height = 240
framerate = 30
codecs = ["vp8"]
bitrate_kbps = 300

[audio]
source = "test"
codecs = ["opus"]

[receive]
video = "count"
audio = "count"
latency_ms = 0
"#
    )
}

/// A call passes when each side decoded this many video frames and some audio.
const FRAMES: u64 = 10;
/// How long one call may take to get there.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Failed calls described in the report (all are counted).
const FAILURES_KEPT: usize = 20;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcSample {
    pub threads: u64,
    pub fds: usize,
    pub rss_mib: f64,
    pub pipelines: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Calls completed when the sample was taken (both phases counted).
    pub calls: usize,
    pub camera: ProcSample,
    pub viewer: ProcSample,
}

#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    pub sequential: usize,
    pub parallel: usize,
    pub concurrency: usize,
    pub failed: usize,
    pub failures: Vec<String>,
    pub samples: Vec<Sample>,
    pub seconds: f64,
}

async fn sample(daemon: &Daemon) -> anyhow::Result<ProcSample> {
    let u = usage(daemon.pid())?;
    let status = daemon.get("/api/status").await?;
    Ok(ProcSample {
        threads: u.threads,
        fds: std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))?.count(),
        rss_mib: u.rss_mib,
        pipelines: status["pipelines"].as_u64().unwrap_or(0),
    })
}

fn passed(c: &Value) -> bool {
    c["video_frames"].as_u64().unwrap_or(0) >= FRAMES
        && c["audio_buffers"].as_u64().unwrap_or(0) > 0
}

/// One call from the camera to the viewer: placed, checked on both sides, hung up, gone.
async fn one_call(camera: &Daemon, viewer: &Daemon) -> Result<(), String> {
    let session = camera.call(&viewer.name).await.map_err(|e| e.to_string())?;
    let mut result = Ok(());
    for side in [camera, viewer] {
        if let Err(e) = side.wait_call(&session, CALL_TIMEOUT, passed).await {
            let seen = side.calls().await.unwrap_or_default();
            let call = seen.iter().find(|c| c["session"] == session.as_str());
            result = Err(format!(
                "{session}: {e}; {}",
                call.map_or("gone".to_string(), |c| format!(
                    "state {}, frames {}, audio {}, rtp {}",
                    c["state"], c["video_frames"], c["audio_buffers"], c["rtp_packets"]
                ))
            ));
            break;
        }
    }
    let _ = camera.hang_up(&session).await;
    // Gone from both sides before the next one (bounded).
    for side in [camera, viewer] {
        let gone = crate::procs::poll(Duration::from_secs(10), || async {
            let calls = side.calls().await.ok()?;
            (!calls.iter().any(|c| c["session"] == session.as_str())).then_some(())
        })
        .await;
        if gone.is_none() && result.is_ok() {
            result = Err(format!("{session}: still on {} after hangup", side.name));
        }
    }
    result
}

async fn take_sample(camera: &Daemon, viewer: &Daemon, calls: usize) -> anyhow::Result<Sample> {
    // Idle first: shared encoders linger, teardowns run on blocking threads.
    camera.wait_idle().await?;
    viewer.wait_idle().await?;
    Ok(Sample {
        calls,
        camera: sample(camera).await?,
        viewer: sample(viewer).await?,
    })
}

pub async fn soak(
    dir: &Path,
    sequential: usize,
    parallel: usize,
    concurrency: usize,
    every: usize,
) -> anyhow::Result<Soak> {
    let started = Instant::now();
    let camera = Daemon::start(dir, "soak-camera", &profile("soak-camera"), &[])?;
    let relay = ["--relay".to_string(), camera.ws_url()];
    let relay: Vec<&str> = relay.iter().map(String::as_str).collect();
    let viewer = Daemon::start(dir, "soak-viewer", &profile("soak-viewer"), &relay)?;
    camera.wait_peer("soak-viewer").await?;
    let every = every.max(1);
    let mut report = Soak {
        sequential,
        parallel,
        concurrency,
        failed: 0,
        failures: Vec::new(),
        samples: vec![take_sample(&camera, &viewer, 0).await?],
        seconds: 0.0,
    };
    let fail = |report: &mut Soak, why: String| {
        eprintln!("soak: failed call: {why}");
        report.failed += 1;
        if report.failures.len() < FAILURES_KEPT {
            report.failures.push(why);
        }
    };
    for n in 1..=sequential {
        if let Err(why) = one_call(&camera, &viewer).await {
            fail(&mut report, why);
        }
        if n % every == 0 || n == sequential {
            let s = take_sample(&camera, &viewer, n).await?;
            eprintln!(
                "soak: {n} calls, {} failed; camera {} threads {} fds {:.1} MiB; viewer {} threads {} fds {:.1} MiB",
                report.failed,
                s.camera.threads,
                s.camera.fds,
                s.camera.rss_mib,
                s.viewer.threads,
                s.viewer.fds,
                s.viewer.rss_mib
            );
            report.samples.push(s);
            // A long run can be read (and plotted) while it goes on.
            report.seconds = started.elapsed().as_secs_f64();
            let _ = std::fs::write(
                dir.join("soak-progress.json"),
                serde_json::to_string(&report).unwrap_or_default(),
            );
        }
    }
    // Several at a time: `concurrency` workers share `parallel` calls.
    let camera = Arc::new(camera);
    let viewer = Arc::new(viewer);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (camera, viewer, next) = (Arc::clone(&camera), Arc::clone(&viewer), Arc::clone(&next));
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < parallel {
                if let Err(why) = one_call(&camera, &viewer).await {
                    failures.push(why);
                }
            }
            failures
        }));
    }
    for worker in workers {
        for why in worker.await? {
            fail(&mut report, format!("(parallel) {why}"));
        }
    }
    if parallel > 0 {
        let s = take_sample(&camera, &viewer, sequential + parallel).await?;
        eprintln!(
            "soak: +{parallel} calls {concurrency} at a time, {} failed in all; camera {} threads {} fds {:.1} MiB",
            report.failed, s.camera.threads, s.camera.fds, s.camera.rss_mib
        );
        report.samples.push(s);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The sample taken nearest after `calls` calls.
fn at(samples: &[Sample], calls: usize) -> Option<&Sample> {
    samples.iter().find(|s| s.calls >= calls)
}

pub fn markdown(s: &Soak) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| soak | calls | failed | seconds |\n|---|---|---|---|\n| sequential | {} | | |\n| {} at a time | {} | | |\n| all | {} | {} | {:.0} |",
        s.sequential,
        s.concurrency,
        s.parallel,
        s.sequential + s.parallel,
        s.failed,
        s.seconds
    );
    out.push_str("\n| after calls | camera threads | camera fds | camera RSS MiB | viewer threads | viewer fds | viewer RSS MiB | pipelines |\n|---|---|---|---|---|---|---|---|\n");
    let last = s.samples.last().map_or(0, |x| x.calls);
    let mut marks: Vec<usize> = vec![0, 100, 500, 1000, 5000, s.sequential, last];
    marks.sort_unstable();
    marks.dedup();
    let mut shown = Vec::new();
    for mark in marks {
        let Some(x) = at(&s.samples, mark) else {
            continue;
        };
        if shown.contains(&x.calls) {
            continue;
        }
        shown.push(x.calls);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {} | {:.1} | {} |",
            x.calls,
            x.camera.threads,
            x.camera.fds,
            x.camera.rss_mib,
            x.viewer.threads,
            x.viewer.fds,
            x.viewer.rss_mib,
            x.camera.pipelines + x.viewer.pipelines
        );
    }
    for why in &s.failures {
        let _ = writeln!(out, "\nfailed: {why}");
    }
    out
}

/// Threads, descriptors and RSS of both daemons against calls made, as SVG.
pub fn svg(s: &Soak) -> String {
    let (w, h, left, top, panel_h, gap) = (900.0, 720.0, 70.0, 40.0, 190.0, 40.0);
    let right = w - 30.0;
    let max_calls = s.samples.last().map_or(1, |x| x.calls).max(1) as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"15\">webrtcd soak: {} calls ({} sequential, then {} at a time), {} failed</text>\n",
        s.sequential + s.parallel,
        s.sequential,
        s.concurrency,
        s.failed
    );
    type Pick = fn(&ProcSample) -> f64;
    let panels: [(&str, Pick); 3] = [
        ("threads", |p| p.threads as f64),
        ("open descriptors", |p| p.fds as f64),
        ("RSS MiB", |p| p.rss_mib),
    ];
    for (i, (name, pick)) in panels.iter().enumerate() {
        let y0 = top + i as f64 * (panel_h + gap);
        let values: Vec<f64> = s
            .samples
            .iter()
            .flat_map(|x| [pick(&x.camera), pick(&x.viewer)])
            .collect();
        let max = values.iter().cloned().fold(1.0, f64::max) * 1.15;
        let _ = writeln!(
            out,
            "<rect x=\"{left}\" y=\"{y0}\" width=\"{}\" height=\"{panel_h}\" fill=\"none\" stroke=\"#888\"/>\n<text x=\"{}\" y=\"{}\">{name}</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max:.0}</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>",
            right - left,
            left + 6.0,
            y0 + 16.0,
            left - 4.0,
            y0 + 10.0,
            left - 4.0,
            y0 + panel_h
        );
        type Of = fn(&Sample) -> &ProcSample;
        let series: [(&str, Of, &str); 2] = [
            ("camera", |x| &x.camera, "#c0392b"),
            ("viewer", |x| &x.viewer, "#2471a3"),
        ];
        for (j, (label, of, colour)) in series.iter().enumerate() {
            let points: Vec<String> = s
                .samples
                .iter()
                .map(|x| {
                    let px = left + (right - left) * x.calls as f64 / max_calls;
                    let py = y0 + panel_h - panel_h * pick(of(x)) / max;
                    format!("{px:.1},{py:.1}")
                })
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{label}</text>",
                points.join(" "),
                right - 120.0 + j as f64 * 60.0,
                y0 + 16.0
            );
        }
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">calls made ({} in all)</text>\n</svg>",
        (left + right) / 2.0,
        h - 8.0,
        max_calls
    );
    out
}
