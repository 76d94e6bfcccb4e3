//! `webrtcd-bench`: the numbers of BENCHMARKS.md. Starts the daemon and its receiving peers as
//! separate processes, all on loopback inside a private network namespace (nothing leaves the
//! machine), measures, and prints a Markdown table. `make bench` runs it in release mode.

mod cameras;
mod chromium;
mod cluster;
mod cold_page;
mod compare;
mod echo;
mod echo_alone;
mod first_frame;
mod harness;
mod keyframe;
mod motion;
mod near_end;
mod networks;
mod players;
mod plot;
mod procs;
mod recording;
mod ring;
mod scenarios;
mod shutdown;
mod soak;
mod speech_chromium;
mod speech_loss;
mod table;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use scenarios::{Join, Latency, Scaling, Spread};

const INSIDE: &str = "WEBRTCD_BENCH_IN_NETNS";

#[derive(Parser, Debug, Clone)]
#[command(about = "Measure webrtcd: first frame, added latency, viewers per core")]
struct Args {
    /// A few seconds instead of minutes: 2 calls, 1–2 viewers, VP8 only (the test suite's
    /// smoke run).
    #[arg(long)]
    quick: bool,
    /// Codecs for the scaling runs.
    #[arg(long, value_delimiter = ',', default_value = "vp8,h264")]
    codecs: Vec<String>,
    /// Viewer counts for the scaling runs.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10,20,50")]
    viewers: Vec<usize>,
    /// Calls per first-frame figure.
    #[arg(long, default_value_t = 20)]
    calls: usize,
    /// Seconds each load level is measured over.
    #[arg(long, default_value_t = 10)]
    window: u64,
    /// Viewer processes the viewers are spread over.
    #[arg(long, default_value_t = 5)]
    viewer_processes: usize,
    /// Leave out headless Chromium.
    #[arg(long)]
    no_chromium: bool,
    /// Leave out the scaling runs (first frame and latency only).
    #[arg(long)]
    no_scaling: bool,
    /// Leave out the imperfect links (loss, narrow, cut; the ladder on and off).
    #[arg(long)]
    no_networks: bool,
    /// Only the imperfect links.
    #[arg(long)]
    networks_only: bool,
    /// Only the players (RTSP first frame, snapshots).
    #[arg(long)]
    players_only: bool,
    /// Only the relay routing latency (one relay; two relays sharing a Redis).
    #[arg(long)]
    cluster_only: bool,
    /// Only call → first frame in Chromium, both directions, cold and warm encoder.
    #[arg(long)]
    first_frame_only: bool,
    /// Only the scaling runs with the shared encoder (`--codecs`, `--viewers`): daemon CPU,
    /// threads and RSS per viewer.
    #[arg(long)]
    scaling_only: bool,
    /// Only the comparison with GStreamer's webrtcsink (720p30 H.264, `--viewers`, the same
    /// receivers for both; `make bench-compare` builds webrtcsink first).
    #[arg(long)]
    compare: bool,
    /// Only shutdown under load: SIGTERM to exit with 30 calls up, `--calls` runs (5 if less).
    #[arg(long)]
    shutdown_only: bool,
    /// Only call → first frame from a minimal page that calls on load, in a fresh browser
    /// and in a fresh page of a warm one (Chromium and Firefox; daemon and browser pinned to
    /// cores 0 and 1).
    #[arg(long)]
    cold_page_only: bool,
    /// Only ring → accept → the caller's first frame (a daemon caller, a Chromium caller).
    #[arg(long)]
    ring_only: bool,
    /// Only a keyframe asked for → out of the encoder, per encoder this machine has.
    #[arg(long)]
    keyframe_only: bool,
    /// Only the intercom's echo through a simulated room, the canceller on and off.
    #[arg(long)]
    echo_only: bool,
    /// Only several cameras: 4 cameras × 5 viewers against 1 × 20, and SIGHUP adding a
    /// camera → its first frame (`--calls` times, 5 at most).
    #[arg(long)]
    cameras_only: bool,
    /// Only recording's cost: a 720p30 H.264 camera with recording off and on.
    #[arg(long)]
    recording_only: bool,
    /// Only motion detection: its cost (a 720p30 camera, the watch off and on) and the
    /// picture moving → `motion-start` (`--calls` times, 10 at most).
    #[arg(long)]
    motion_only: bool,
    /// Messages routed one at a time for the relay routing latency.
    #[arg(long, default_value_t = 10_000)]
    routed_messages: usize,
    /// Where the plot goes (PNG; an SVG is kept beside it).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Run the soak instead: many calls, each checked on both sides, with threads,
    /// descriptors, RSS and pipelines sampled (`make soak`).
    #[arg(long)]
    soak: bool,
    /// Soak: calls one after another.
    #[arg(long, default_value_t = 10_000)]
    soak_calls: usize,
    /// Soak: then this many calls, `soak_concurrency` at a time.
    #[arg(long, default_value_t = 1_000)]
    soak_parallel_calls: usize,
    #[arg(long, default_value_t = 10)]
    soak_concurrency: usize,
    /// Soak: sample every this many sequential calls.
    #[arg(long, default_value_t = 100)]
    soak_every: usize,
}

#[derive(Serialize, Default)]
struct Report {
    first_frame_daemon: Option<Spread>,
    first_frame_chromium: Option<Spread>,
    join: Option<Join>,
    latency: Vec<(String, Latency)>,
    scaling: Vec<Scaling>,
    networks: Vec<networks::NetRow>,
    spread: Vec<networks::SpreadCost>,
    players: Option<players::Players>,
    routing: Option<cluster::Routing>,
    first_frame: Vec<first_frame::Row>,
    cold_page: Vec<cold_page::Row>,
    ring: Vec<ring::Row>,
    keyframes: Vec<keyframe::Row>,
    echo: echo::Echo,
    cameras: Option<cameras::Result>,
    recording: Vec<recording::Row>,
    motion: Option<motion::Result>,
    errors: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::env::var_os(INSIDE).is_none() {
        return reexec_in_namespace();
    }
    let status = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("ip (Debian package iproute2)")?;
    anyhow::ensure!(status.success(), "cannot bring lo up in the namespace");
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Runs this same command again inside a fresh network namespace with only `lo`.
fn reexec_in_namespace() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let status = std::process::Command::new("unshare")
        .args(["-n", "--"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(INSIDE, "1")
        .status()
        .context("unshare (util-linux); needs root or unprivileged user namespaces")?;
    std::process::exit(status.code().unwrap_or(1));
}

async fn run(mut args: Args) -> anyhow::Result<()> {
    // The codec of a scenario run alone.
    let codec = args.codecs.first().cloned().unwrap_or_else(|| "vp8".into());
    let dir = procs::work_dir()?;
    if args.soak {
        return run_soak(args).await;
    }
    if args.networks_only {
        return run_networks(&mut Report::default()).await;
    }
    if args.first_frame_only {
        let rows = first_frame::measure(&dir, &codec, args.calls).await?;
        return show(&dir, "first-frame.md", &first_frame::markdown(&rows));
    }
    if args.cold_page_only {
        let rows = cold_page::measure(&dir, &codec, args.calls).await?;
        return show(&dir, "cold-page.md", &cold_page::markdown(&rows));
    }
    if args.ring_only {
        let rows = ring::measure(&dir, &codec, args.calls).await?;
        return show(&dir, "ring.md", &ring::markdown(&rows));
    }
    if args.keyframe_only {
        let rows = keyframe::measure_all(args.calls).await?;
        return show(&dir, "keyframe.md", &keyframe::markdown(&rows));
    }
    if args.echo_only {
        let rows = echo::measure(&dir, args.quick).await?;
        return show(&dir, "echo.md", &echo::markdown(&rows));
    }
    if args.cameras_only {
        let window = Duration::from_secs(args.window);
        let result = cameras::measure(&dir, window, args.calls.clamp(1, 5)).await?;
        return show(&dir, "cameras.md", &cameras::markdown(&result));
    }
    if args.motion_only {
        let window = Duration::from_secs(args.window);
        let result = motion::measure(&dir, window, args.calls.clamp(1, 10)).await?;
        return show(&dir, "motion.md", &motion::markdown(&result));
    }
    if args.recording_only {
        let rows = recording::measure(&dir, Duration::from_secs(args.window)).await?;
        return show(&dir, "recording.md", &recording::markdown(&rows));
    }
    if args.cluster_only {
        let routing = cluster::measure(&dir, args.routed_messages).await?;
        return show(&dir, "routing.md", &cluster::markdown(&routing));
    }
    if args.shutdown_only {
        let result = shutdown::measure(&dir, &codec, 30, args.calls.min(5)).await?;
        return show(&dir, "shutdown.md", &shutdown::markdown(&result));
    }
    if args.players_only {
        let players = players::measure(&dir, 5).await?;
        return show(&dir, "players.md", &players::markdown(&players));
    }
    if args.compare {
        let runs = compare::measure(&dir, &args.viewers, Duration::from_secs(args.window)).await?;
        let table = compare::markdown(&runs);
        println!("{table}");
        std::fs::write(dir.join("compare.md"), &table)?;
        std::fs::write(
            dir.join("compare.json"),
            serde_json::to_string_pretty(&runs)?,
        )?;
        let plot_path = args.plot.unwrap_or_else(|| dir.join("compare.png"));
        let title = "webrtcd and webrtcsink, 1280×720@30 H.264 + Opus, in the same run";
        plot::write_png(&plot::svg(&runs, title), &plot_path)?;
        eprintln!(
            "wrote {}/compare.md and {}",
            dir.display(),
            plot_path.display()
        );
        return Ok(());
    }
    if args.scaling_only {
        let mut report = Report::default();
        for codec in &args.codecs {
            eprintln!("scaling: {codec}, shared encoder");
            let window = Duration::from_secs(args.window);
            let processes = args.viewer_processes.max(1);
            report.scaling.push(
                scenarios::scaling(&dir, codec, false, &args.viewers, processes, window).await?,
            );
        }
        let table = table::markdown(&report);
        println!("{table}");
        std::fs::write(dir.join("scaling.md"), &table)?;
        return Ok(());
    }
    if args.quick {
        args.no_networks = true;
        args.codecs = vec!["vp8".into()];
        args.viewers = vec![1, 2];
        args.calls = 2;
        args.window = 2;
        args.viewer_processes = 1;
    }
    let window = Duration::from_secs(args.window);
    let first_codec = args.codecs.first().cloned().unwrap_or_else(|| "vp8".into());
    let mut report = Report::default();
    let note = |what: &str, e: anyhow::Error| {
        eprintln!("{what}: {e:#}");
        format!("{what}: {e:#}")
    };

    eprintln!(
        "call → first frame, daemon → daemon ({first_codec}, {} calls)",
        args.calls
    );
    match scenarios::first_frame_daemon(&dir, &first_codec, args.calls).await {
        Ok(s) => report.first_frame_daemon = Some(s),
        Err(e) => report.errors.push(note("daemon → daemon", e)),
    }
    if !args.no_chromium {
        eprintln!("call → first frame, daemon → Chromium");
        match scenarios::first_frame_chromium(&dir, &first_codec, args.calls).await {
            Ok(s) => report.first_frame_chromium = Some(s),
            Err(e) => report.errors.push(note("daemon → Chromium", e)),
        }
    }
    eprintln!("a viewer joining a running stream");
    match scenarios::join(&dir, &first_codec, args.calls).await {
        Ok(j) => report.join = Some(j),
        Err(e) => report.errors.push(note("join", e)),
    }
    for codec in &args.codecs {
        eprintln!("capture → decoded frame latency ({codec})");
        match scenarios::latency(&dir, codec, window).await {
            Ok(l) => report.latency.push((codec.clone(), l)),
            Err(e) => report.errors.push(note(&format!("latency {codec}"), e)),
        }
    }
    let scaling_codecs = if args.no_scaling {
        &[][..]
    } else {
        &args.codecs[..]
    };
    for codec in scaling_codecs {
        for per_viewer in [false, true] {
            eprintln!(
                "scaling: {codec}, {}",
                if per_viewer {
                    "one encoder per viewer"
                } else {
                    "shared encoder"
                }
            );
            let run = scenarios::scaling(
                &dir,
                codec,
                per_viewer,
                &args.viewers,
                args.viewer_processes.max(1),
                window,
            )
            .await;
            match run {
                Ok(s) => report.scaling.push(s),
                Err(e) => report.errors.push(note(&format!("scaling {codec}"), e)),
            }
        }
    }

    if !args.no_networks
        && let Err(e) = measure_networks(&dir, &mut report).await
    {
        report.errors.push(note("networks", e));
    }

    eprintln!("players: RTSP first frame, snapshots");
    let runs = if args.quick { 1 } else { 5 };
    match players::measure(&dir, runs).await {
        Ok(p) => report.players = Some(p),
        Err(e) => report.errors.push(note("players", e)),
    }

    if !args.no_chromium {
        eprintln!("call → first frame in Chromium, both directions, cold and warm");
        match first_frame::measure(&dir, &first_codec, args.calls).await {
            Ok(rows) => report.first_frame = rows,
            Err(e) => report.errors.push(note("first frame both ways", e)),
        }
    }
    if !args.no_chromium {
        eprintln!("call → first frame from a minimal page: fresh browser, fresh page");
        let calls = if args.quick { 2 } else { args.calls.min(12) };
        match cold_page::measure(&dir, &first_codec, calls).await {
            Ok(rows) => report.cold_page = rows,
            Err(e) => report.errors.push(note("cold page", e)),
        }
    }
    if !args.no_chromium {
        eprintln!("ring → accept → the caller's first frame");
        let calls = if args.quick { 2 } else { args.calls };
        match ring::measure(&dir, &first_codec, calls).await {
            Ok(rows) => report.ring = rows,
            Err(e) => report.errors.push(note("ring → accept", e)),
        }
    }
    eprintln!("keyframe asked for → out of the encoder, per encoder");
    match keyframe::measure_all(if args.quick { 3 } else { 20 }).await {
        Ok(rows) => report.keyframes = rows,
        Err(e) => report.errors.push(note("keyframes", e)),
    }
    eprintln!("the intercom's echo through a simulated room");
    match echo::in_full_run(&dir, args.quick).await {
        Ok(rows) => report.echo = rows,
        Err(e) => report.errors.push(note("echo", e)),
    }
    if !args.quick {
        eprintln!("several cameras: 4 × 5 viewers against 1 × 20, SIGHUP adding one");
        match cameras::measure(&dir, window, 5).await {
            Ok(result) => report.cameras = Some(result),
            Err(e) => report.errors.push(note("cameras", e)),
        }
        eprintln!("recording's cost: a 720p30 camera, recording off and on");
        match recording::measure(&dir, window).await {
            Ok(rows) => report.recording = rows,
            Err(e) => report.errors.push(note("recording", e)),
        }
        eprintln!("motion: its cost, and the picture moving → motion-start");
        match motion::measure(&dir, window, 5).await {
            Ok(result) => report.motion = Some(result),
            Err(e) => report.errors.push(note("motion", e)),
        }
    }
    eprintln!("relay routing: one relay, two relays through Redis");
    let routed = if args.quick {
        200
    } else {
        args.routed_messages
    };
    match cluster::measure(&dir, routed).await {
        Ok(r) => report.routing = Some(r),
        Err(e) => report.errors.push(note("relay routing", e)),
    }

    let table = table::markdown(&report);
    println!("{table}");
    std::fs::write(dir.join("report.md"), &table)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let plot_path = args.plot.unwrap_or_else(|| dir.join("benchmarks.png"));
    let title = "webrtcd, 1280×720@30 test pattern + Opus, viewers on loopback";
    if let Err(e) = plot::write_png(&plot::svg(&report.scaling, title), &plot_path) {
        report.errors.push(format!("plot: {e:#}"));
    }
    eprintln!(
        "wrote {}/report.md, report.json and {}",
        dir.display(),
        plot_path.display()
    );
    if !report.errors.is_empty() {
        anyhow::bail!("some measurements failed:\n{}", report.errors.join("\n"));
    }
    Ok(())
}

/// The imperfect links and the spread viewers' cost, into `report`.
async fn measure_networks(dir: &std::path::Path, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("imperfect links: one viewer, the ladder on and off");
    report.networks = networks::conditions(dir).await?;
    for per_viewer in [false, true] {
        eprintln!(
            "10 viewers over three links: {}",
            if per_viewer {
                "per-viewer encoders"
            } else {
                "shared ladder"
            }
        );
        let cost = networks::spread_cost(dir, per_viewer).await?;
        eprintln!("  {cost:?}");
        report.spread.push(cost);
    }
    Ok(())
}

/// `--networks-only`: just that table.
async fn run_networks(report: &mut Report) -> anyhow::Result<()> {
    let dir = procs::work_dir()?;
    measure_networks(&dir, report).await?;
    let table = networks::markdown(&report.networks, &report.spread);
    println!("{table}");
    std::fs::write(dir.join("networks.md"), &table)?;
    std::fs::write(
        dir.join("networks.json"),
        serde_json::to_string_pretty(&report.networks)?,
    )?;
    Ok(())
}

async fn run_soak(args: Args) -> anyhow::Result<()> {
    let dir = procs::work_dir()?;
    eprintln!(
        "soak: {} calls one after another, then {} calls {} at a time",
        args.soak_calls, args.soak_parallel_calls, args.soak_concurrency
    );
    let report = soak::soak(
        &dir,
        args.soak_calls,
        args.soak_parallel_calls,
        args.soak_concurrency,
        args.soak_every,
    )
    .await?;
    let table = soak::markdown(&report);
    println!("{table}");
    std::fs::write(dir.join("soak.md"), &table)?;
    std::fs::write(
        dir.join("soak.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let plot_path = args.plot.unwrap_or_else(|| dir.join("soak.png"));
    plot::write_png(&soak::svg(&report), &plot_path)?;
    eprintln!(
        "wrote {}/soak.md, soak.json and {}",
        dir.display(),
        plot_path.display()
    );
    anyhow::ensure!(report.failed == 0, "{} calls failed", report.failed);
    Ok(())
}

/// Prints a scenario's table and keeps it as `dir/file`.
fn show(dir: &std::path::Path, file: &str, table: &str) -> anyhow::Result<()> {
    println!("{table}");
    std::fs::write(dir.join(file), table)?;
    Ok(())
}
