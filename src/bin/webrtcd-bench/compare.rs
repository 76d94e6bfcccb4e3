//! `--compare`: webrtcd and GStreamer's webrtcsink in the same scaling scenario, in the same
//! run: the same picture (videotestsrc's ball, 1280×720@30, H.264 at 2 Mbit/s, and a tone in
//! Opus), the same viewer counts, and receivers spread over five processes that depayload
//! without decoding, webrtcbin in every one. webrtcd's are its own viewer daemons (the
//! scaling scenario of the main benchmark); webrtcsink's are gst-plugins-rs's webrtcsrc
//! through webrtcsink's signalling server. (webrtcsrc cannot watch webrtcd: it offers H.264
//! without `packetization-mode=1`, which a 720p stream needs, and webrtcd declines it.)
//! webrtcsink runs from `bench/webrtcsink` (its own cargo project, built by
//! `make bench-compare` into `target/webrtcsink`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procs::{Killed, poll, usage};
use crate::scenarios::{Load, Scaling};

const CODEC: &str = "h264";
const RECEIVER_PROCESSES: usize = 5;

/// The webrtcsink side's program.
fn runner() -> anyhow::Result<PathBuf> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/webrtcsink/release/webrtcsink-bench");
    if !path.exists() {
        bail!(
            "{} is missing: `make bench-compare` builds it",
            path.display()
        );
    }
    Ok(path)
}

/// A child process that dies with the benchmark.
fn spawn(dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let mut command = Command::new(runner()?);
    // SAFETY: prctl is async-signal-safe; runs in the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
        .args(args)
        .env("GST_DEBUG", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {name}"))
}

/// One receiver process: takes `add` lines, reports frames per receiver every second.
struct Receivers {
    child: Killed,
    stdin: ChildStdin,
    /// Per receiver: frames so far, and ms to its first (0: none yet).
    frames: Arc<Mutex<(Vec<u64>, Vec<u64>)>>,
}

impl Receivers {
    fn start(dir: &Path, name: &str, kind: &str, url: &str) -> anyhow::Result<Receivers> {
        let mut child = spawn(dir, name, &["viewers", kind, url])?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let frames = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let latest = Arc::clone(&frames);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let list = |key: &str| serde_json::from_value::<Vec<u64>>(v[key].clone()).ok();
                if let (Some(f), Some(first)) = (list("frames"), list("first_frame_ms")) {
                    *webrtcd::sync::lock(&latest) = (f, first);
                }
            }
        });
        Ok(Receivers {
            child: Killed(child),
            stdin,
            frames,
        })
    }

    fn add(&mut self) -> anyhow::Result<()> {
        self.stdin.write_all(b"add\n")?;
        Ok(self.stdin.flush()?)
    }

    fn frames(&self) -> Vec<u64> {
        webrtcd::sync::lock(&self.frames).0.clone()
    }

    fn first_frames(&self) -> Vec<u64> {
        webrtcd::sync::lock(&self.frames).1.clone()
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }
}

/// CPU seconds the receiver processes have used so far, together.
fn receivers_cpu(receivers: &[Receivers]) -> f64 {
    receivers
        .iter()
        .filter_map(|r| usage(r.pid()).ok())
        .map(|u| u.cpu_secs)
        .sum()
}

/// What serves the viewers: its process, and where receivers find it.
struct Server {
    name: &'static str,
    pid: u32,
    kind: &'static str,
    url: String,
    _processes: Vec<Killed>,
}

fn webrtcsink(dir: &Path) -> anyhow::Result<Server> {
    let mut signalling = spawn(dir, "cmp-signalling", &["signalling"])?;
    let stdout = signalling.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("port ")
        .context("the signalling server's port")?
        .to_string();
    let url = format!("ws://127.0.0.1:{port}");
    let producer = spawn(
        dir,
        "cmp-webrtcsink",
        &["producer", &url, CODEC, "1280", "720", "2000"],
    )?;
    let pid = producer.id();
    Ok(Server {
        name: "webrtcsink",
        pid,
        kind: "webrtcsink",
        url,
        _processes: vec![Killed(producer), Killed(signalling)],
    })
}

/// libnice ignores the loopback interface, and webrtcsink and webrtcsrc (unlike webrtcd's
/// `--ice-address`) cannot be told to use it: give 127.0.0.1 a second device in this
/// benchmark's own namespace (an `ifb`, which drops what is sent to it; loopback traffic
/// still goes through `lo`).
fn loopback_for_libnice() -> anyhow::Result<()> {
    for args in [
        &["link", "add", "nl0", "type", "ifb"][..],
        &["addr", "add", "127.0.0.1/32", "dev", "nl0"],
        &["link", "set", "nl0", "up"],
    ] {
        let status = Command::new("ip").args(args).status().context("ip")?;
        if !status.success() {
            bail!("ip {}: {status}", args.join(" "));
        }
    }
    Ok(())
}

/// Both servers, one after the other, through `steps` viewers (each stops at saturation).
pub async fn measure(
    dir: &Path,
    steps: &[usize],
    window: Duration,
) -> anyhow::Result<Vec<Scaling>> {
    loopback_for_libnice()?;
    eprintln!("compare: webrtcd");
    let ours =
        crate::scenarios::scaling(dir, CODEC, false, steps, RECEIVER_PROCESSES, window).await?;
    eprintln!("compare: webrtcsink");
    let server = webrtcsink(dir)?;
    let theirs = scale(dir, &server, steps, window).await?;
    Ok(vec![ours, theirs])
}

async fn scale(
    dir: &Path,
    server: &Server,
    steps: &[usize],
    window: Duration,
) -> anyhow::Result<Scaling> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = usage(server.pid)?;
    let mut receivers = Vec::new();
    for i in 0..RECEIVER_PROCESSES {
        let name = format!("cmp-{}-receivers{i}", server.name);
        receivers.push(Receivers::start(dir, &name, server.kind, &server.url)?);
    }
    let mut out = Scaling {
        codec: CODEC.into(),
        server: server.name.into(),
        per_viewer_encoder: server.name == "webrtcsink",
        idle_rss_mib: idle.rss_mib,
        idle_threads: idle.threads,
        rows: Vec::new(),
        stopped: None,
    };
    let all = |receivers: &[Receivers]| -> Vec<u64> {
        receivers.iter().flat_map(Receivers::frames).collect()
    };
    let mut placed = 0;
    let mut measured = [0usize; RECEIVER_PROCESSES];
    for &target in steps {
        while placed < target {
            receivers[placed % RECEIVER_PROCESSES].add()?;
            placed += 1;
            // As viewers arrive one by one, not all in the same instant.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let all_up = poll(Duration::from_secs(60), || async {
            let up = all(&receivers).iter().filter(|f| **f > 0).count();
            (up >= target).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = all(&receivers);
        let cpu0 = usage(server.pid)?;
        let view0 = receivers_cpu(&receivers);
        let started = Instant::now();
        tokio::time::sleep(window).await;
        let secs = started.elapsed().as_secs_f64();
        let after = all(&receivers);
        let cpu1 = usage(server.pid)?;
        let view1 = receivers_cpu(&receivers);
        // The receivers added at this step: ms from start to first frame.
        let mut first_frames = Vec::new();
        for (r, done) in receivers.iter().zip(measured.iter_mut()) {
            let first = r.first_frames();
            first_frames.extend(
                first
                    .iter()
                    .skip(*done)
                    .filter(|ms| **ms > 0)
                    .map(|ms| *ms as f64),
            );
            *done = first.len();
        }
        // Receivers report once a second: the window's frames, per receiver.
        let fps: Vec<f64> = after
            .iter()
            .enumerate()
            .map(|(i, f)| (f - before.get(i).copied().unwrap_or(0).min(*f)) as f64 / secs)
            .collect();
        let window = crate::scenarios::Window {
            server: (cpu0, cpu1),
            viewers_cpu_secs: (view0, view1),
            secs,
        };
        let row = Load::measured(
            CODEC,
            out.per_viewer_encoder,
            target,
            after.iter().filter(|f| **f > 0).count(),
            &window,
            fps,
            first_frames,
        );
        eprintln!(
            "  {} {target:>3} viewers: {:.0}% CPU, {:.1} MiB, {} threads; receivers {:.0}% CPU; fps min {:.1} mean {:.1}",
            server.name,
            row.cpu_pct,
            row.rss_mib,
            row.threads,
            row.viewers_cpu_pct,
            row.min_fps,
            row.mean_fps
        );
        out.stopped = crate::scenarios::stop_reason(all_up.is_some(), &row);
        out.rows.push(row);
        if out.stopped.is_some() {
            break;
        }
    }
    Ok(out)
}

/// Both servers in one table, and the ratios at the viewer counts both reached.
pub fn markdown(runs: &[Scaling]) -> String {
    let mut out = String::from(
        "| server | viewers | up | CPU % | RSS MiB | threads | receivers' CPU % | fps min / mean | first frame ms |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        out.push_str(&format!(
            "| {} | idle | – | – | {:.1} | {} | – | – | – |\n",
            run.server, run.idle_rss_mib, run.idle_threads
        ));
        for r in &run.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {:.0} | {:.1} | {} | {:.0} | {:.1} / {:.1} | {} |\n",
                run.server,
                r.viewers,
                r.connected,
                r.cpu_pct,
                r.rss_mib,
                r.threads,
                r.viewers_cpu_pct,
                r.min_fps,
                r.mean_fps,
                r.first_frame_ms.map_or("–".into(), |ms| format!("{ms:.0}"))
            ));
        }
        if let Some(why) = &run.stopped {
            out.push_str(&format!("| {} | {why} | | | | | | | |\n", run.server));
        }
    }
    if let [ours, theirs] = runs {
        out.push_str(
            "\n| viewers | webrtcsink ÷ webrtcd: CPU | threads | RSS |\n|---|---|---|---|\n",
        );
        for o in &ours.rows {
            if let Some(t) = theirs.rows.iter().find(|t| t.viewers == o.viewers) {
                out.push_str(&format!(
                    "| {} | {:.1}× | {:.1}× | {:.1}× |\n",
                    o.viewers,
                    t.cpu_pct / o.cpu_pct.max(0.1),
                    t.threads as f64 / o.threads.max(1) as f64,
                    t.rss_mib / o.rss_mib.max(0.1)
                ));
            }
        }
    }
    out
}
