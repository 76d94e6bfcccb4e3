//! Call → first decoded frame in headless Chromium, whoever calls: the page calls the camera
//! (a person clicks Call), and the camera calls the page. Each with the camera's encoder
//! cold (nothing running: `linger_ms = 0`, stopped between calls) and warm (still running
//! from the call before). The time is split into phases from the page's own clock: signaling
//! (call → offer, offer → answer), ICE, DTLS, first RTP, decode. The page's WebSocket reaches
//! the daemon through the report proxy (`harness::report_proxy`), which adds no delay of its
//! own: both its legs send at once (no Nagle).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::chromium::{Browser, Collector};
use crate::procs::{Daemon, poll};
use crate::scenarios::{Spread, camera_profile, spread};

/// The phases, in order: each from the end of the one before (the first from the call's
/// start on the page), as the page's report names their ends. Signaling is two: the offer
/// (made by the page, or received from the camera) and the answer (received, or made).
const PHASES: [(&str, &str); 6] = [
    ("offer", "offer"),
    ("answer", "answer"),
    ("ICE", "ice"),
    ("DTLS", "dtls"),
    ("first RTP", "rtp"),
    ("decode", "frame"),
];

#[derive(Debug, Serialize)]
pub struct Row {
    /// `browser → camera` or `camera → browser`.
    pub direction: &'static str,
    /// `cold` or `warm`.
    pub encoder: &'static str,
    /// From the call (the page's click, or the camera's API call) to the first frame.
    pub total: Spread,
    /// Median milliseconds of each phase.
    pub phases: Vec<(&'static str, f64)>,
}

/// Phase lengths (ms) from a page report, if it has them all.
fn phases_of(report: &Value) -> Option<Vec<f64>> {
    let call = &report["call"];
    let at = |name: &str| -> Option<f64> {
        if name == "frame" {
            call["firstFrameAt"].as_f64()
        } else {
            call["phases"][name].as_f64()
        }
    };
    let mut last = at("start")?;
    let mut out = Vec::new();
    for (_, end) in PHASES {
        let t = at(end)?;
        out.push((t - last).max(0.0));
        last = t.max(last);
    }
    Some(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn row(
    direction: &'static str,
    encoder: &'static str,
    totals: Vec<f64>,
    phases: Vec<Vec<f64>>,
) -> anyhow::Result<Row> {
    let phases = PHASES
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (*name, median(phases.iter().map(|p| p[i]).collect())))
        .collect();
    Ok(Row {
        direction,
        encoder,
        total: spread(totals).context("no samples")?,
        phases,
    })
}

/// The camera's shared encoders have stopped (cold runs wait for it between calls).
async fn encoders_stopped(camera: &Daemon) -> anyhow::Result<()> {
    poll(Duration::from_secs(10), || async {
        let s = camera.get("/api/status").await.ok()?;
        (s["encoders"]["video"] == 0).then_some(())
    })
    .await
    .context("the camera's encoder did not stop")
}

/// `calls` timed calls (cold: each with the encoders stopped first; warm: after one untimed
/// call that starts them, and they linger). `one(i)` makes call `i` and gives its total and
/// phases.
async fn timed_calls<F, Fut>(
    camera: &Daemon,
    calls: usize,
    cold: bool,
    mut one: F,
) -> anyhow::Result<(Vec<f64>, Vec<Vec<f64>>)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<(f64, Vec<f64>)>>>,
{
    let (mut totals, mut phases) = (Vec::new(), Vec::new());
    let first = if cold { 0 } else { 1 };
    for i in 0..calls + first {
        if cold {
            encoders_stopped(camera).await?;
        }
        let timed = one(i).await?;
        if let (Some((total, p)), true) = (timed, i >= first) {
            totals.push(total);
            phases.push(p);
        }
    }
    Ok((totals, phases))
}

/// The page calls the camera, `calls` times, a fresh page each time.
async fn browser_calls(
    dir: &Path,
    camera: &Daemon,
    collector: &Collector,
    calls: usize,
    cold: bool,
) -> anyhow::Result<(Vec<f64>, Vec<Vec<f64>>)> {
    timed_calls(camera, calls, cold, |i| async move {
        let id = format!("caller-{i}");
        // A person opens the page and clicks Call a moment later: the call starts 1 s after
        // the camera is listed. Clicked at once, the fresh browser is still starting its own
        // WebRTC machinery and the call takes 250–550 ms longer (2026-12-03).
        let url = format!(
            "http://{}/?id={id}&call={}&call_after_ms=1000&report=/report",
            collector.addr, camera.name
        );
        let browser = Browser::chromium(&url, dir)?;
        let report = poll(Duration::from_secs(30), || async {
            collector
                .latest()
                .filter(|r| r["id"] == id.as_str())
                .filter(|r| r["call"]["firstFrameAt"].is_number())
        })
        .await
        .with_context(|| format!("{id} showed no frame"))?;
        drop(browser);
        camera.wait_no_calls().await?;
        Ok(phases_of(&report).map(|p| (p.iter().sum(), p)))
    })
    .await
}

/// The camera calls the page, `calls` times, one page throughout.
async fn camera_calls(
    camera: &Daemon,
    collector: &Collector,
    calls: usize,
    cold: bool,
) -> anyhow::Result<(Vec<f64>, Vec<Vec<f64>>)> {
    timed_calls(camera, calls, cold, |_| async move {
        let posted = crate::scenarios::epoch_ms();
        let session = camera.call("browser").await?;
        let report = collector
            .first_frame_of(&session, Duration::from_secs(30))
            .await?;
        camera.hang_up(&session).await?;
        camera.wait_no_calls().await?;
        collector.call_ended().await?;
        let frame = report["call"]["firstFrameAt"].as_f64();
        Ok(phases_of(&report)
            .zip(frame)
            .map(|(p, frame)| (frame - posted, p)))
    })
    .await
}

pub async fn measure(dir: &Path, codec: &str, calls: usize) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (encoder, linger_ms) in [("cold", 0), ("warm", 600_000)] {
        let cold = encoder == "cold";
        let camera = Daemon::start(
            dir,
            &format!("ff2-{encoder}"),
            &camera_profile(codec, false, linger_ms, false),
            &[],
        )?;
        let collector = Collector::start(&camera.addr).await?;
        let (totals, phases) = browser_calls(dir, &camera, &collector, calls, cold).await?;
        rows.push(row("browser → camera", encoder, totals, phases)?);
        let url = format!(
            "http://{}/?id=browser&autoanswer=1&report=/report",
            collector.addr
        );
        let _browser = Browser::chromium(&url, dir)?;
        camera.wait_peer("browser").await?;
        let (totals, phases) = camera_calls(&camera, &collector, calls, cold).await?;
        rows.push(row("camera → browser", encoder, totals, phases)?);
    }
    Ok(rows)
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| call → first frame (Chromium) | encoder | median ms | p95 ms | signaling (offer + answer) | ICE | DTLS | first RTP | decode | calls |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let ms: Vec<f64> = r.phases.iter().map(|(_, ms)| *ms).collect();
        let mut phases = vec![format!(
            "{:.0} ({:.0} + {:.0})",
            ms[0] + ms[1],
            ms[0],
            ms[1]
        )];
        phases.extend(ms[2..].iter().map(|ms| format!("{ms:.0}")));
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {} | {} |\n",
            r.direction,
            r.encoder,
            r.total.median_ms,
            r.total.p95_ms,
            phases.join(" | "),
            r.total.samples
        ));
    }
    out
}
