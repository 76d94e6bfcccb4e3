//! The other side of `webrtcd-bench --compare`: GStreamer's webrtcsink serving the same
//! picture, and webrtcsrc receivers that watch either it or webrtcd (over WHEP), so both are
//! measured with the same receivers.
//!
//! - `signalling`: webrtcsink's own signalling server on 127.0.0.1 (prints `port N`).
//! - `producer WS_URL CODEC WIDTH HEIGHT KBPS`: a test pattern and tone through webrtcsink.
//! - `viewers webrtcsink WS_URL` | `viewers whep HTTP_URL`: adds one receiver per `add` line on
//!   stdin; prints the video frames each one received so far, one JSON line a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use gst::prelude::*;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new()?;
    match args.first().map(String::as_str) {
        Some("signalling") => runtime.block_on(signalling()),
        Some("producer") => producer(&args[1..]),
        Some("viewers") => viewers(&args[1..]),
        _ => bail!("usage: webrtcsink-bench signalling | producer … | viewers …"),
    }
}

async fn signalling() -> anyhow::Result<()> {
    use gst_plugin_webrtc_signalling::handlers::Handler;
    use gst_plugin_webrtc_signalling::server::Server;
    let server = Server::spawn(Handler::new);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("port {}", listener.local_addr()?.port());
    while let Ok((stream, _)) = listener.accept().await {
        let mut server = server.clone();
        tokio::spawn(async move { server.accept_async(stream).await });
    }
    Ok(())
}

fn init() -> anyhow::Result<()> {
    gst::init()?;
    gstrswebrtc::plugin_register_static()?;
    Ok(())
}

/// Runs until killed. Congestion control off and the bitrate pinned, as webrtcd's shared
/// encoder sends at its profile's rate.
fn producer(args: &[String]) -> anyhow::Result<()> {
    let [url, codec, width, height, kbps] = args else {
        bail!("producer WS_URL CODEC WIDTH HEIGHT KBPS");
    };
    init()?;
    let bps: u32 = kbps.parse::<u32>()? * 1000;
    let caps = match codec.as_str() {
        "h264" => "video/x-h264",
        "vp8" => "video/x-vp8",
        other => bail!("codec {other}"),
    };
    let desc = format!(
        "webrtcsink name=ws signaller::uri={url} stun-server=\"\" congestion-control=disabled \
         start-bitrate={bps} min-bitrate={bps} max-bitrate={bps} video-caps={caps} \
         audio-caps=audio/x-opus \
         videotestsrc is-live=true pattern=ball ! \
         video/x-raw,width={width},height={height},framerate=30/1 ! ws. \
         audiotestsrc is-live=true ! ws."
    );
    let pipeline = gst::parse::launch(&desc).context("webrtcsink pipeline")?;
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().context("bus")?;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        if let gst::MessageView::Error(err) = msg.view() {
            bail!("webrtcsink: {} ({:?})", err.error(), err.debug());
        }
    }
    Ok(())
}

/// Not on tokio: webrtcsrc's signaller blocks on a runtime of its own, which panics on a
/// runtime thread.
fn viewers(args: &[String]) -> anyhow::Result<()> {
    let [kind, url] = args else {
        bail!("viewers webrtcsink WS_URL | viewers whep HTTP_URL");
    };
    init()?;
    let element = match kind.as_str() {
        "webrtcsink" => format!(
            "webrtcsrc stun-server=\"\" connect-to-first-producer=true signaller::uri={url}"
        ),
        "whep" => format!("whepclientsrc stun-server=\"\" signaller::whep-endpoint={url}"),
        other => bail!("viewers of {other}"),
    };
    let (adds, added) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if line.trim() == "add" && adds.send(()).is_err() {
                break;
            }
        }
    });
    let mut counts: Vec<Arc<Counts>> = Vec::new();
    let mut pipelines = Vec::new();
    loop {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match added.recv_timeout(left) {
                Ok(()) => {
                    let count = Arc::new(Counts::default());
                    pipelines.push(receiver(&element, Arc::clone(&count))?);
                    counts.push(count);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    for p in pipelines {
                        let _ = p.set_state(gst::State::Null);
                    }
                    return Ok(());
                }
            }
        }
        let frames: Vec<String> = counts
            .iter()
            .map(|c| c.frames.load(Ordering::Relaxed).to_string())
            .collect();
        let first: Vec<String> = counts
            .iter()
            .map(|c| c.first_frame_ms.load(Ordering::Relaxed).to_string())
            .collect();
        println!(
            "{{\"frames\":[{}],\"first_frame_ms\":[{}]}}",
            frames.join(","),
            first.join(",")
        );
    }
}

/// What one receiver got: video frames, and when the first came (ms after the receiver
/// started; 0 until then).
#[derive(Default)]
struct Counts {
    frames: AtomicU64,
    first_frame_ms: AtomicU64,
}

/// One receiver: depayloaded (not decoded) video counted, audio depayloaded and dropped.
fn receiver(element: &str, count: Arc<Counts>) -> anyhow::Result<gst::Pipeline> {
    let started = std::time::Instant::now();
    let pipeline = gst::Pipeline::new();
    // One element: parsing gives the element itself.
    let src = gst::parse::launch(element).context("receiver element")?;
    pipeline.add(&src)?;
    let weak = pipeline.downgrade();
    src.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let video = pad.name().starts_with("video");
        let caps = if video {
            "video/x-h264,alignment=au;video/x-vp8"
        } else {
            "audio/x-opus"
        };
        let Ok(sink) = gst::parse::bin_from_description(
            &format!("capsfilter caps=\"{caps}\" ! fakesink sync=false async=false"),
            true,
        ) else {
            return;
        };
        if pipeline.add(&sink).is_err() {
            return;
        }
        if let Some(sinkpad) = sink.static_pad("sink") {
            if video {
                let count = Arc::clone(&count);
                sinkpad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    if count.frames.fetch_add(1, Ordering::Relaxed) == 0 {
                        let ms = started.elapsed().as_millis().max(1) as u64;
                        count.first_frame_ms.store(ms, Ordering::Relaxed);
                    }
                    gst::PadProbeReturn::Ok
                });
            }
            let _ = pad.link(&sinkpad);
        }
        let _ = sink.sync_state_with_parent();
    });
    pipeline.set_state(gst::State::Playing)?;
    Ok(pipeline)
}
