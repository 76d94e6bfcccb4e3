//! A keyframe asked for → that keyframe out of the encoder, per encoder this machine has.
//!
//! The pipeline is the shared stream's (the profile's source, `fragments::video_encoder`,
//! the appsink), and a keyframe is asked for the way a joining viewer asks: an upstream
//! force-key-unit event sent into the appsink. Each ask comes at a random moment between two
//! frames, after the encoder has run a while, so the figure is what a call that starts
//! connecting waits for. Split in two: the wait for the next frame to reach the encoder (at
//! most a frame interval, more if frames queue in front of it) and the encode of the frame
//! that became the keyframe. From the appsink to the wire is the call's payloader: no queue.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use gst::prelude::*;
use serde::Serialize;

use webrtcd::media::codecs::Codec;
use webrtcd::media::{encoder, fragments, profile::VideoSend};

use crate::scenarios::{Spread, spread};

#[derive(Debug, Serialize)]
pub struct Row {
    pub codec: String,
    pub encoder: String,
    /// `2` (free), or `1` (pinned to core 0, as a daemon on a one-core device or pinned
    /// apart from the browser is).
    pub cores: usize,
    /// Ask → keyframe at the appsink (ms).
    pub total: Option<Spread>,
    /// Ask → the next frame entering the encoder (ms, median).
    pub to_encoder_ms: f64,
    /// That frame's encode (ms, median).
    pub encode_ms: f64,
    /// A delta frame's encode, for comparison (ms, median).
    pub delta_encode_ms: f64,
    /// Keyframe size (bytes, median).
    pub keyframe_bytes: u64,
    /// Asks not answered within a second (the encoder ignored them).
    pub missed: usize,
}

/// What the pads saw: when each frame entered the encoder, and when each left it.
#[derive(Default)]
struct Seen {
    entered: Vec<Instant>,
    /// (left at, keyframe, bytes, entered at of the same frame)
    left: Vec<(Instant, bool, usize, Option<Instant>)>,
}

/// The profile every figure is for: the bench camera's video (1280×720 at 30 fps, 2 Mbit/s,
/// test source) with `codec`.
fn video(codec: Codec) -> anyhow::Result<VideoSend> {
    let name = format!("{codec:?}").to_lowercase();
    toml::from_str(&format!(
        "source = \"test\"\ncodecs = [\"{name}\"]\nwidth = 1280\nheight = 720\n\
         bitrate_kbps = 2000\n"
    ))
    .context("the bench's video profile")
}

/// Every candidate encoder for the video codecs that works on this machine.
pub fn encoders() -> Vec<(Codec, &'static str)> {
    [Codec::Vp8, Codec::H264]
        .into_iter()
        .flat_map(|codec| {
            encoder::candidates(codec)
                .iter()
                .filter(move |factory| {
                    encoder::probe(codec, factory) == encoder::ProbeResult::Works
                })
                .map(move |factory| (codec, *factory))
        })
        .collect()
}

/// `asks` keyframe requests to `factory`, ~`spacing` apart; with `one_core` the pipeline's
/// threads all run on core 0. Blocking: run on a thread of its own.
pub fn measure(
    codec: Codec,
    factory: &str,
    asks: usize,
    spacing: Duration,
    one_core: bool,
) -> anyhow::Result<Row> {
    // GStreamer's and the encoder's threads are made by this one (the state change) or by
    // those it makes: they inherit its CPU set.
    let cores = if one_core {
        pin_this_thread(Some(0))?;
        1
    } else {
        pin_this_thread(None)?;
        online_cores()
    };
    let video = video(codec)?;
    let desc = format!(
        "{} ! {} ! appsink name=out sync=false async=false max-buffers=4 drop=true \
         emit-signals=false",
        fragments::video_source(&video, None),
        fragments::video_encoder(codec, factory, &video)
    );
    let pipeline = gst::parse::launch(&desc)
        .with_context(|| desc.clone())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let element = pipeline
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == factory))
        .context("the encoder in the pipeline")?;
    let sink = pipeline.by_name("out").context("appsink")?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let into = element.static_pad("sink").context("encoder sink pad")?;
    let out = sink.static_pad("sink").context("appsink pad")?;
    let s = Arc::clone(&seen);
    into.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        if let Ok(mut seen) = s.lock() {
            seen.entered.push(Instant::now());
        }
        gst::PadProbeReturn::Ok
    });
    let s = Arc::clone(&seen);
    out.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer()
            && let Ok(mut seen) = s.lock()
        {
            // Encoders here make one output per input, in order, without lookahead.
            let n = seen.left.len();
            let entered = seen.entered.get(n).copied();
            let key = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
            seen.left
                .push((Instant::now(), key, buffer.size(), entered));
        }
        gst::PadProbeReturn::Ok
    });
    pipeline.set_state(gst::State::Playing)?;
    // Past the first keyframe and the rate control's start.
    std::thread::sleep(Duration::from_secs(2));
    let mut totals = Vec::new();
    let mut to_encoder = Vec::new();
    let mut encode = Vec::new();
    let mut bytes = Vec::new();
    let mut missed = 0;
    for i in 0..asks {
        // A random phase against the frames: 0–33 ms more each time.
        let jitter = Duration::from_micros((i as u64 * 7919) % 33_000);
        std::thread::sleep(spacing + jitter);
        let (entered_before, left_before) = match seen.lock() {
            Ok(seen) => (seen.entered.len(), seen.left.len()),
            Err(_) => anyhow::bail!("poisoned"),
        };
        let asked = Instant::now();
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        sink.send_event(event);
        let deadline = asked + Duration::from_secs(1);
        let found = loop {
            std::thread::sleep(Duration::from_millis(1));
            let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let key = seen.left[left_before.min(seen.left.len())..]
                .iter()
                .find(|l| l.1)
                .copied();
            if let Some(key) = key {
                let next_in = seen.entered.get(entered_before).copied();
                break Some((key, next_in));
            }
            if Instant::now() > deadline {
                break None;
            }
        };
        let Some(((left, _, size, entered), next_in)) = found else {
            missed += 1;
            continue;
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        totals.push(ms(left - asked));
        if let Some(next_in) = next_in {
            to_encoder.push(ms(next_in.saturating_duration_since(asked)));
        }
        if let Some(entered) = entered {
            encode.push(ms(left - entered));
        }
        bytes.push(size as f64);
    }
    let delta: Vec<f64> = match seen.lock() {
        Ok(seen) => seen
            .left
            .iter()
            .filter(|l| !l.1)
            .filter_map(|l| l.3.map(|e| (l.0 - e).as_secs_f64() * 1000.0))
            .collect(),
        Err(_) => Vec::new(),
    };
    pipeline.set_state(gst::State::Null)?;
    Ok(Row {
        codec: format!("{codec:?}").to_lowercase(),
        encoder: factory.to_string(),
        cores,
        total: spread(totals),
        to_encoder_ms: median(&to_encoder),
        encode_ms: median(&encode),
        delta_encode_ms: median(&delta),
        keyframe_bytes: median(&bytes) as u64,
        missed,
    })
}

/// The machine's cores (not this thread's CPU set, which pinning changes).
fn online_cores() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Runs this thread on `core` only, or on every core (`None`).
fn pin_this_thread(core: Option<usize>) -> anyhow::Result<()> {
    let cores = online_cores();
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it; the call
    // reads `size_of` bytes of it for the calling thread (pid 0).
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        match core {
            Some(core) => libc::CPU_SET(core, &mut set),
            None => (0..cores).for_each(|c| libc::CPU_SET(c, &mut set)),
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    anyhow::ensure!(
        result == 0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The table BENCHMARKS.md shows.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| keyframe asked for → out of the encoder (1280x720, 30 fps) | cores | median ms | p95 ms | max ms | ask → next frame in | keyframe encode | delta frame encode | keyframe bytes | missed |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (median, p95, max) = r
            .total
            .as_ref()
            .map_or((f64::NAN, f64::NAN, f64::NAN), |t| {
                (t.median_ms, t.p95_ms, t.max_ms)
            });
        out.push_str(&format!(
            "| {} ({}) | {} | {median:.0} | {p95:.0} | {max:.0} | {:.0} | {:.1} | {:.1} | {} | {} |\n",
            r.encoder,
            r.codec,
            r.cores,
            r.to_encoder_ms,
            r.encode_ms,
            r.delta_encode_ms,
            r.keyframe_bytes,
            r.missed
        ));
    }
    out
}

/// [`measure`] for every encoder this machine has, `asks` asks each, on a blocking
/// thread (GStreamer state changes and sleeps).
pub async fn measure_all(asks: usize) -> anyhow::Result<Vec<Row>> {
    // A thread of its own: it changes its CPU set.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rows = gst::init().map_err(anyhow::Error::from).and_then(|()| {
            let mut rows = Vec::new();
            for (codec, factory) in encoders() {
                for one_core in [false, true] {
                    let spacing = Duration::from_millis(400);
                    rows.push(measure(codec, factory, asks, spacing, one_core)?);
                }
            }
            Ok(rows)
        });
        let _ = tx.send(rows);
    });
    rx.await?
}
