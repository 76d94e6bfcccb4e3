//! Call → first frame from a page a user opens, not ours kept warm: a minimal third-party
//! page (`minimal.html`) that calls the camera on load, in a browser started for the call
//! (fresh browser) or in one that made a call before (fresh page, warm browser). Measured as
//! two machines would see it: the daemon pinned to core 0, the browser to core 1. Each phase
//! is when it ended, in ms after the page sent `call` (medians), so the table reads as a
//! timeline: offer sent, answer in, ICE connected, DTLS connected, first video packet, first
//! frame. The camera's encoder is warm (one untimed call starts it; it lingers).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::chromium::{Browser, Engine};
use crate::procs::{Daemon, poll};
use crate::scenarios::{Spread, camera_profile, spread};

/// The phases the page reports, in order, and their column names.
const PHASES: [(&str, &str); 6] = [
    ("offer", "offer sent"),
    ("answer", "answer in"),
    ("ice", "ICE connected"),
    ("dtls", "DTLS connected"),
    ("rtp", "first video packet"),
    ("frame", "first frame"),
];

#[derive(Debug, Serialize)]
pub struct Row {
    pub engine: Engine,
    /// `fresh browser` or `fresh page, warm browser`.
    pub case: &'static str,
    /// `call` → first frame.
    pub total: Spread,
    /// Median ms after `call` at which each phase ended.
    pub phases: Vec<(&'static str, f64)>,
}

/// Every report the pages posted, by page id.
#[derive(Clone, Default)]
pub struct Reports(Arc<Mutex<Vec<Value>>>);

impl Reports {
    /// A report proxy in front of the daemon at `daemon` (`host:port`) that keeps every
    /// report here; returns its `host:port` (where the browser opens `/minimal.html`).
    pub async fn proxy(&self, daemon: &str) -> anyhow::Result<String> {
        let keep = self.clone();
        let addr = crate::harness::report_proxy(
            daemon.to_string(),
            Arc::new(move |body: &[u8]| {
                if let Ok(v) = serde_json::from_slice::<Value>(body) {
                    webrtcd::sync::lock(&keep.0).push(v);
                }
            }),
        )
        .await?;
        Ok(addr)
    }

    pub async fn of(&self, id: &str, within: Duration) -> anyhow::Result<Value> {
        poll(within, || async {
            webrtcd::sync::lock(&self.0)
                .iter()
                .find(|r| r["id"] == id)
                .cloned()
        })
        .await
        .with_context(|| format!("no report from page {id}"))
    }
}

/// Phase ends in ms after `call`, if the report has them all.
fn timeline(report: &Value) -> anyhow::Result<Vec<f64>> {
    if let Some(error) = report["error"].as_str() {
        anyhow::bail!("page {}: {error}", report["id"]);
    }
    let phases = &report["phases"];
    let start = phases["start"].as_f64().context("no start")?;
    PHASES
        .iter()
        .map(|(key, _)| {
            phases[*key]
                .as_f64()
                .map(|t| t - start)
                .with_context(|| format!("page {} has no {key}", report["id"]))
        })
        .collect()
}

fn row(engine: Engine, case: &'static str, timelines: &[Vec<f64>]) -> anyhow::Result<Row> {
    let median = |i: usize| {
        let mut v: Vec<f64> = timelines.iter().map(|t| t[i]).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let totals = timelines.iter().map(|t| t[PHASES.len() - 1]).collect();
    Ok(Row {
        engine,
        case,
        total: spread(totals).context("no calls")?,
        phases: PHASES
            .iter()
            .enumerate()
            .map(|(i, (_, name))| (*name, median(i)))
            .collect(),
    })
}

/// `taskset -a -p -c CORE PID`: every thread of the process, and those it makes later.
pub fn pin(pid: u32, core: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &core.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "taskset on {pid}");
    Ok(())
}

pub async fn measure(dir: &Path, codec: &str, calls: usize) -> anyhow::Result<Vec<Row>> {
    crate::harness::default_route().map_err(anyhow::Error::msg)?;
    let camera = Daemon::start(
        dir,
        "cold-camera",
        &camera_profile(codec, false, 600_000, false),
        &[],
    )?;
    pin(camera.pid(), 0)?;
    let reports = Reports::default();
    let proxy = reports.proxy(&camera.addr).await?;
    let page = |id: &str, extra: &str| {
        format!(
            "http://{proxy}/minimal.html?id={id}&camera={}{extra}",
            camera.name
        )
    };
    let mut rows = Vec::new();
    for engine in [Engine::Chromium, Engine::Firefox] {
        let name = format!("{engine:?}").to_lowercase();
        // A fresh browser per call; the first call (untimed) starts the camera's encoder.
        let mut timelines = Vec::new();
        for i in 0..=calls {
            let id = format!("{name}-fresh{i}");
            let browser = Browser::open(engine, &page(&id, ""), dir, false, Some(1))?;
            let report = reports.of(&id, Duration::from_secs(30)).await?;
            drop(browser);
            camera.wait_no_calls().await?;
            if i > 0 {
                timelines.push(timeline(&report)?);
            }
        }
        rows.push(row(engine, "fresh browser", &timelines)?);
        // One browser, a fresh page per call (the page loads itself again); the first
        // page's call is the browser's first (untimed).
        let prefix = format!("{name}-page");
        let browser = Browser::open(
            engine,
            &page(&format!("{prefix}-0"), &format!("&pages={}&i=0", calls + 1)),
            dir,
            false,
            Some(1),
        )?;
        let mut timelines = Vec::new();
        for i in 0..=calls {
            let report = reports
                .of(&format!("{prefix}-{i}"), Duration::from_secs(30))
                .await?;
            if i > 0 {
                timelines.push(timeline(&report)?);
            }
        }
        drop(browser);
        camera.wait_no_calls().await?;
        rows.push(row(engine, "fresh page, warm browser", &timelines)?);
    }
    // Every page's report, with the browser's own statistics at its first frame.
    let all = serde_json::to_string_pretty(&*webrtcd::sync::lock(&reports.0))?;
    std::fs::write(dir.join("cold-page-reports.json"), all)?;
    Ok(rows)
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from("| browser | case | median ms | p95 ms |");
    for (_, name) in PHASES {
        out.push_str(&format!(" {name} |"));
    }
    out.push_str(" calls |\n|---|---|---|---|");
    out.push_str(&"---|".repeat(PHASES.len() + 1));
    out.push('\n');
    for r in rows {
        out.push_str(&format!(
            "| {:?} | {} | {:.0} | {:.0} |",
            r.engine, r.case, r.total.median_ms, r.total.p95_ms
        ));
        for (_, ms) in &r.phases {
            out.push_str(&format!(" {ms:.0} |"));
        }
        out.push_str(&format!(" {} |\n", r.total.samples));
    }
    out
}
