//! Imperfect links: one viewer's path made lossy, narrow or cut (nftables, on the viewer's own
//! loopback address inside the benchmark's namespace), with the shared encoder ladder on and
//! off; and what ten viewers spread over three rungs cost the camera against ten encoders of
//! their own.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::procs::{Daemon, poll, usage};

/// How long each condition is watched; the figures are from its second half (settled).
const WINDOW: Duration = Duration::from_secs(20);
/// The cut's length.
const CUT: Duration = Duration::from_secs(6);

/// A camera at 640×360 (what three daemons fit on two cores; the tests use the same), VP8,
/// a moving zone plate (every rung needs about the rate it is given). With `ladder`, also
/// 320×180 @ 300 and 160×90 @ 100 kbit/s.
fn camera_profile(ladder: bool, per_viewer: bool) -> String {
    let rungs = if ladder {
        "[[video.ladder]]\nwidth = 640\nheight = 360\nbitrate_kbps = 1000\n\
         [[video.ladder]]\nwidth = 320\nheight = 180\nbitrate_kbps = 300\n\
         [[video.ladder]]\nwidth = 160\nheight = 90\nbitrate_kbps = 100\n"
    } else {
        ""
    };
    format!(
        "name = \"net-camera\"\nmax_sessions = 64\nper_viewer_encoder = {per_viewer}\n\
         [video]\nsource = \"launch\"\n\
         launch = \"videotestsrc is-live=true pattern=zone-plate kx2=20 ky2=20 kt=1\"\n\
         width = 640\nheight = 360\nframerate = 30\ncodecs = [\"vp8\"]\nbitrate_kbps = 1000\n\
         {rungs}"
    )
}

/// A viewer that decodes and counts what it gets, with the shipped receive settings (the
/// scaling runs' viewers hold nothing back in their jitterbuffer, fine on a perfect loopback;
/// here that would make every retransmission too late).
fn viewer_profile() -> String {
    "name = \"net-viewer\"\nmax_sessions = 64\n[receive]\nvideo = \"count\"\naudio = \"count\"\n"
        .into()
}

#[derive(Debug, Clone, Copy, Serialize)]
pub enum Condition {
    Clean,
    /// Random loss, percent.
    Loss(u32),
    /// Policed to this rate (kbit/s), no queue.
    Rate(u32),
    /// All UDP to and from the viewer dropped for [`CUT`].
    Cut,
}

impl Condition {
    pub const ALL: [Condition; 6] = [
        Condition::Clean,
        Condition::Loss(2),
        Condition::Loss(5),
        Condition::Rate(1000),
        Condition::Rate(300),
        Condition::Cut,
    ];

    fn name(self) -> String {
        match self {
            Condition::Clean => "clean".into(),
            Condition::Loss(p) => format!("{p} % loss"),
            Condition::Rate(k) if k >= 1000 => format!("{} Mbit/s", k / 1000),
            Condition::Rate(k) => format!("{k} kbit/s"),
            Condition::Cut => format!("{} s cut", CUT.as_secs()),
        }
    }
}

/// nftables rules on traffic toward (and for a cut, from) `ip`, in table `table`.
struct Rules(&'static str);

impl Rules {
    fn apply(table: &'static str, ip: &str, rule: &str) -> anyhow::Result<Rules> {
        nft(&format!("add table inet {table}"))?;
        nft(&format!(
            "add chain inet {table} input {{ type filter hook input priority 0; }}"
        ))?;
        nft(&format!("add rule inet {table} input {rule}"))?;
        let _ = ip;
        Ok(Rules(table))
    }

    fn condition(table: &'static str, ip: &str, c: Condition) -> anyhow::Result<Option<Rules>> {
        let rule = match c {
            Condition::Clean => return Ok(None),
            Condition::Loss(p) => {
                format!("ip daddr {ip} meta l4proto udp numgen random mod 100 < {p} drop")
            }
            Condition::Rate(kbit) => format!(
                "ip daddr {ip} meta l4proto udp limit rate over {} kbytes/second burst 16 kbytes drop",
                police_kbytes(kbit)
            ),
            Condition::Cut => {
                let rules =
                    Rules::apply(table, ip, &format!("ip daddr {ip} meta l4proto udp drop"))?;
                nft(&format!(
                    "add rule inet {table} input ip saddr {ip} meta l4proto udp drop"
                ))?;
                return Ok(Some(rules));
            }
        };
        Rules::apply(table, ip, &rule).map(Some)
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {}", self.0));
    }
}

/// nftables counts kbytes as 1024 bytes.
fn police_kbytes(kbit: u32) -> u32 {
    (kbit * 1000 / 8 / 1024).max(1)
}

fn nft(command: &str) -> anyhow::Result<()> {
    let args: Vec<&str> = command.split_whitespace().collect();
    let status = std::process::Command::new("nft")
        .args(&args)
        .status()
        .context("nft (Debian package nftables)")?;
    anyhow::ensure!(status.success(), "nft {command}");
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct NetRow {
    pub condition: String,
    pub ladder: bool,
    /// Frames per second the viewer decoded, second half of the window.
    pub fps: f64,
    /// Freezes (no new frame for > 200 ms) per minute, second half of the window.
    pub freezes_per_min: f64,
    /// The rendition the camera sends at the end.
    pub rendition: String,
    /// From the condition starting to the camera's last change of rendition (none: it never
    /// changed).
    pub adapted_after_s: Option<f64>,
    /// The cut: from the restore to 10 more frames decoded.
    pub recovered_after_s: Option<f64>,
}

fn frames(call: &Value) -> u64 {
    call["video_frames"].as_u64().unwrap_or(0)
}

fn freezes(call: &Value) -> u64 {
    call["receive"]["freezes"].as_u64().unwrap_or(0)
}

/// One call from the camera to the viewer under `condition`.
async fn one(
    camera: &Daemon,
    viewer: &Daemon,
    ip: &str,
    condition: Condition,
    ladder: bool,
) -> anyhow::Result<NetRow> {
    let session = camera.call(&viewer.name).await?;
    viewer
        .wait_call(&session, Duration::from_secs(30), |c| frames(c) > 30)
        .await?;
    let rendition_now = || async {
        camera
            .wait_call(&session, Duration::from_secs(5), |_| true)
            .await
            .map(|c| c["send"]["rendition"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let mut rendition = rendition_now().await;
    let started = Instant::now();
    let rules = Rules::condition("netbench", ip, condition)?;
    if matches!(condition, Condition::Cut) {
        tokio::time::sleep(CUT).await;
        let before = frames(
            &viewer
                .wait_call(&session, Duration::from_secs(5), |_| true)
                .await?,
        );
        drop(rules);
        let restored = Instant::now();
        let back = poll(Duration::from_secs(30), || async {
            let call = viewer
                .wait_call(&session, Duration::from_secs(5), |_| true)
                .await
                .ok()?;
            (frames(&call) >= before + 10).then_some(())
        })
        .await;
        let recovered = back.map(|_| restored.elapsed().as_secs_f64());
        // The picture as it runs again.
        let begin = viewer
            .wait_call(&session, Duration::from_secs(5), |_| true)
            .await?;
        let window = WINDOW / 2;
        tokio::time::sleep(window).await;
        let end = viewer
            .wait_call(&session, Duration::from_secs(5), |_| true)
            .await?;
        let secs = window.as_secs_f64();
        rendition = rendition_now().await;
        camera.hang_up(&session).await?;
        return Ok(NetRow {
            condition: condition.name(),
            ladder,
            fps: frames(&end).saturating_sub(frames(&begin)) as f64 / secs,
            freezes_per_min: freezes(&end).saturating_sub(freezes(&begin)) as f64 * 60.0 / secs,
            rendition,
            adapted_after_s: None,
            recovered_after_s: recovered,
        });
    }
    let _rules = rules;
    let mut adapted = None;
    let mut half = None;
    while started.elapsed() < WINDOW {
        let now = rendition_now().await;
        if now != rendition {
            rendition = now;
            adapted = Some(started.elapsed().as_secs_f64());
        }
        if half.is_none() && started.elapsed() >= WINDOW / 2 {
            half = Some(
                viewer
                    .wait_call(&session, Duration::from_secs(5), |_| true)
                    .await?,
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let end = viewer
        .wait_call(&session, Duration::from_secs(5), |_| true)
        .await?;
    let half = half.unwrap_or_else(|| end.clone());
    let secs = (WINDOW / 2).as_secs_f64();
    camera.hang_up(&session).await?;
    Ok(NetRow {
        condition: condition.name(),
        ladder,
        fps: frames(&end).saturating_sub(frames(&half)) as f64 / secs,
        freezes_per_min: freezes(&end).saturating_sub(freezes(&half)) as f64 * 60.0 / secs,
        rendition,
        adapted_after_s: adapted,
        recovered_after_s: None,
    })
}

/// Every condition, with the ladder on and off: a fresh call each.
pub async fn conditions(dir: &Path) -> anyhow::Result<Vec<NetRow>> {
    let mut rows = Vec::new();
    for ladder in [true, false] {
        let tag = if ladder { "ladder" } else { "flat" };
        let camera = Daemon::start(
            dir,
            &format!("net-camera-{tag}"),
            &camera_profile(ladder, false),
            &[],
        )?;
        let viewer_name = format!("net-viewer-{tag}");
        let ip = "127.0.0.3";
        let viewer = Daemon::start_at(
            dir,
            &viewer_name,
            &viewer_profile(),
            ip,
            &["--relay", &camera.ws_url()],
        )?;
        camera.wait_peer(&viewer_name).await?;
        for condition in Condition::ALL {
            let row = one(&camera, &viewer, ip, condition, ladder)
                .await
                .with_context(|| format!("{} ({tag})", condition.name()))?;
            eprintln!(
                "  {tag} {}: {:.1} fps, {:.0} freezes/min, {}, adapted {:?}, recovered {:?}",
                row.condition,
                row.fps,
                row.freezes_per_min,
                row.rendition,
                row.adapted_after_s,
                row.recovered_after_s
            );
            rows.push(row);
            camera.wait_idle().await.ok();
        }
    }
    Ok(rows)
}

#[derive(Debug, Clone, Serialize)]
pub struct SpreadCost {
    /// "shared ladder" or "per-viewer encoders".
    pub mode: String,
    pub viewers: usize,
    /// Camera CPU, % of one core, settled.
    pub cpu_pct: f64,
    pub threads: u64,
    /// Renditions the camera sends, and how many calls get each.
    pub renditions: Vec<(String, usize)>,
    /// Encoders running (rungs with viewers, or one per call).
    pub encoders: usize,
    pub mean_fps: f64,
}

/// Ten viewers: four on a clean path, three sharing ~1.2 Mbit/s, three sharing ~450 kbit/s
/// (each group a viewer process on its own address). With the ladder they spread over its
/// three rungs; with per-viewer encoders each call's encoder follows its estimate.
pub async fn spread_cost(dir: &Path, per_viewer: bool) -> anyhow::Result<SpreadCost> {
    let tag = if per_viewer { "pv" } else { "ladder" };
    let camera = Daemon::start(
        dir,
        &format!("spread-camera-{tag}"),
        &camera_profile(!per_viewer, per_viewer),
        &[],
    )?;
    // (address, calls, policed rate in kbit/s for the whole group)
    let groups = [
        ("127.0.0.3", 4, None),
        ("127.0.0.4", 3, Some(1200)),
        ("127.0.0.5", 3, Some(450)),
    ];
    let mut viewers = Vec::new();
    let mut rules = Vec::new();
    let tables = ["spread3", "spread4", "spread5"];
    for (i, (ip, _, rate)) in groups.iter().enumerate() {
        let name = format!("spread-viewer{i}-{tag}");
        let viewer = Daemon::start_at(
            dir,
            &name,
            &viewer_profile(),
            ip,
            &["--relay", &camera.ws_url()],
        )?;
        camera.wait_peer(&name).await?;
        viewers.push(viewer);
        if let Some(kbit) = rate {
            rules.push(Rules::condition(tables[i], ip, Condition::Rate(*kbit))?);
        }
    }
    let mut sessions = Vec::new();
    for (viewer, (_, calls, _)) in viewers.iter().zip(groups.iter()) {
        for _ in 0..*calls {
            sessions.push((camera.call(&viewer.name).await?, viewer));
        }
    }
    // Settle: estimates fall, calls move rungs (or encoders their rates).
    tokio::time::sleep(Duration::from_secs(25)).await;
    let before = frames_of(&sessions).await;
    let cpu0 = usage(camera.pid())?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let secs = started.elapsed().as_secs_f64();
    let cpu1 = usage(camera.pid())?;
    let after = frames_of(&sessions).await;
    let mean_fps = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b) as f64 / secs)
        .sum::<f64>()
        / sessions.len().max(1) as f64;
    let mut renditions: Vec<(String, usize)> = Vec::new();
    for call in camera.calls().await? {
        let r = call["send"]["rendition"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let r = if per_viewer {
            format!(
                "{r} @ {} kbit/s",
                call["send"]["target_kbps"].as_u64().unwrap_or(0) / 100 * 100
            )
        } else {
            r
        };
        match renditions.iter_mut().find(|(name, _)| *name == r) {
            Some((_, n)) => *n += 1,
            None => renditions.push((r, 1)),
        }
    }
    renditions.sort();
    let status = camera.get("/api/status").await?;
    let encoders = if per_viewer {
        sessions.len()
    } else {
        status["shared_streams"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["rungs"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["encoding"] == true)
            .count()
    };
    drop(rules);
    Ok(SpreadCost {
        mode: if per_viewer {
            "per-viewer encoders"
        } else {
            "shared ladder"
        }
        .into(),
        viewers: sessions.len(),
        cpu_pct: (cpu1.cpu_secs - cpu0.cpu_secs) / secs * 100.0,
        threads: cpu1.threads,
        renditions,
        encoders,
        mean_fps,
    })
}

/// Frames each call has decoded so far.
async fn frames_of(sessions: &[(String, &Daemon)]) -> Vec<u64> {
    let mut total = Vec::new();
    for (session, viewer) in sessions {
        let call = viewer
            .wait_call(session, Duration::from_secs(5), |_| true)
            .await;
        total.push(call.map(|c| frames(&c)).unwrap_or(0));
    }
    total
}

pub fn markdown(rows: &[NetRow], costs: &[SpreadCost]) -> String {
    let mut out = String::new();
    out.push_str(
        "| link | ladder | fps | freezes / min | rendition | adapted after | recovered after |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let secs = |v: Option<f64>| v.map_or("–".to_string(), |s| format!("{s:.1} s"));
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} | {} | {} | {} |",
            r.condition,
            if r.ladder { "on" } else { "off" },
            r.fps,
            r.freezes_per_min,
            r.rendition,
            secs(r.adapted_after_s),
            secs(r.recovered_after_s)
        );
    }
    out.push_str(
        "\n| 10 viewers over three links | camera CPU % | encoders | threads | renditions | mean fps |\n\
         |---|---|---|---|---|---|\n",
    );
    for c in costs {
        let renditions: Vec<String> = c
            .renditions
            .iter()
            .map(|(r, n)| format!("{n}× {r}"))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {:.1} |",
            c.mode,
            c.cpu_pct,
            c.encoders,
            c.threads,
            renditions.join(", "),
            c.mean_fps
        );
    }
    out
}
