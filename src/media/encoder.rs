//! Encoder choice: a ranked list of candidates per codec (hardware first), each tried with a
//! short real encode at start; the first that works is used. A profile may pin its own list
//! or exclude candidates. Bitrate, keyframe interval and low-latency settings are mapped per
//! encoder, because every vendor names them differently.

use std::time::Duration;

use gst::prelude::*;
use serde::Serialize;

use super::codecs::{Codec, MediaKind};

/// Candidates in order of preference: hardware encoders first, software last.
pub fn candidates(codec: Codec) -> &'static [&'static str] {
    match codec {
        Codec::H264 => &[
            "v4l2h264enc",   // Raspberry Pi and other V4L2 M2M SoCs
            "vah264enc",     // VA-API (new va plugin)
            "vaapih264enc",  // VA-API (gstreamer-vaapi)
            "nvh264enc",     // NVIDIA NVENC
            "nvv4l2h264enc", // NVIDIA Jetson
            "qsvh264enc",    // Intel Quick Sync
            "x264enc",
            "openh264enc",
        ],
        Codec::Vp8 => &["v4l2vp8enc", "vavp8enc", "vaapivp8enc", "vp8enc"],
        Codec::Opus => &["opusenc"],
    }
}

/// What a short real encode with one candidate showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "result", content = "why")]
pub enum ProbeResult {
    Works,
    Missing,
    Failed(String),
    /// No output within the time limit: a busy machine as likely as a broken encoder
    /// (probed again later).
    TimedOut,
}

#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub codec: Codec,
    pub encoder: String,
    pub result: ProbeResult,
}

/// Rate and keyframe settings every encoder is given.
#[derive(Debug, Clone, Copy)]
pub struct EncodeSettings {
    pub bitrate_kbps: u32,
    /// Frames between keyframes (video).
    pub keyframe_interval: u32,
    /// Speech that survives loss (Opus): in-band FEC, at a strength set from the calls'
    /// measured loss (`packet-loss-percentage`, see `media::shared` `protect_against_loss`).
    pub fec: bool,
}

/// The loss Opus's in-band FEC protects against before any call reports loss (and below
/// what they report): a door on the edge of its Wi-Fi loses packets in bursts, and receiver
/// reports come every few seconds. At 10 % random loss, wideband PESQ 3.1 with it, 2.0
/// without (BENCHMARKS.md, "Speech under loss").
pub const FEC_FLOOR_PERCENT: u8 = 10;

/// Launch syntax for `factory` encoding `codec` live, at low latency, with `settings`.
/// Unknown (pinned) encoders get no properties. H.264 output is constrained baseline
/// byte-stream: what browsers decode and RTP payloading expects.
pub fn fragment(codec: Codec, factory: &str, s: EncodeSettings) -> String {
    let kbps = s.bitrate_kbps;
    let bps = kbps * 1000;
    let kf = s.keyframe_interval;
    let element = match factory {
        "x264enc" => format!(
            "x264enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max={kf}"
        ),
        "openh264enc" => format!(
            "openh264enc bitrate={bps} gop-size={kf} rate-control=bitrate complexity=low \
             usage-type=camera"
        ),
        "v4l2h264enc" => format!(
            "v4l2h264enc extra-controls=\"controls,video_bitrate={bps},h264_i_frame_period={kf},\
             repeat_sequence_header=1\""
        ),
        "vah264enc" => format!("vah264enc bitrate={kbps} key-int-max={kf} rate-control=cbr"),
        "vaapih264enc" => {
            format!("vaapih264enc bitrate={kbps} keyframe-period={kf} rate-control=cbr")
        }
        "nvh264enc" => {
            format!("nvh264enc bitrate={kbps} gop-size={kf} preset=low-latency-hq zerolatency=true")
        }
        "nvv4l2h264enc" => {
            format!("nvv4l2h264enc bitrate={bps} iframeinterval={kf} insert-sps-pps=true")
        }
        "qsvh264enc" => format!("qsvh264enc bitrate={kbps} gop-size={kf} target-usage=7"),
        "vp8enc" => format!(
            "vp8enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate={bps} \
             keyframe-max-dist={kf} lag-in-frames=0 error-resilient=partitions threads={}",
            vp8_threads()
        ),
        "vaapivp8enc" | "vavp8enc" => {
            format!("{factory} bitrate={kbps} keyframe-period={kf}")
        }
        "v4l2vp8enc" => format!("v4l2vp8enc extra-controls=\"controls,video_bitrate={bps}\""),
        // Voice: SILK or hybrid below 64 kbit/s, the modes that carry in-band FEC (a coarse
        // copy of the previous frame), protecting against FEC_FLOOR_PERCENT loss from the
        // first packet (raised when calls report more); DTX: silence costs a byte a frame.
        // The payloader still sends those frames (no gaps in the stream: a speaker fed in
        // bursts would move the echo path an intercom's canceller tracks).
        "opusenc" if s.fec => format!(
            "opusenc bitrate={bps} frame-size=20 audio-type=voice dtx=true inband-fec=true \
             packet-loss-percentage={FEC_FLOOR_PERCENT}"
        ),
        "opusenc" => format!("opusenc bitrate={bps} frame-size=20 audio-type=voice dtx=true"),
        other => other.to_string(),
    };
    match codec {
        Codec::H264 => format!(
            "{element} ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,\
             alignment=au"
        ),
        Codec::Vp8 | Codec::Opus => element,
    }
}

/// libvpx's encoder threads wait for one another by spinning: with fewer than 3 cores to run
/// on (a small device, or a daemon pinned to one core) a second thread takes the core the
/// first one waits for. Measured pinned to one core, 1280x720: a keyframe asked for came
/// 104 ms later (median) with 2 threads, 28 ms with 1 (`webrtcd-bench --keyframe-only`).
/// Chromium's own VP8 encoder also uses one thread below 3 cores.
fn vp8_threads() -> usize {
    match std::thread::available_parallelism().map(|n| n.get()) {
        Ok(cores) if cores >= 3 => 2,
        _ => 1,
    }
}

/// Sets a running encoder's target rate, in the unit its property takes. False for an
/// encoder whose rate cannot be changed while it runs (or that is not known here).
pub fn set_bitrate(encoder: &gst::Element, kbps: u32) -> bool {
    let Some(factory) = encoder.factory() else {
        return false;
    };
    let bps = kbps.saturating_mul(1000);
    match factory.name().as_str() {
        "x264enc" | "vah264enc" | "vaapih264enc" | "nvh264enc" | "qsvh264enc" | "vaapivp8enc"
        | "vavp8enc" => encoder.set_property("bitrate", kbps),
        "openh264enc" | "nvv4l2h264enc" => encoder.set_property("bitrate", bps),
        "vp8enc" => encoder.set_property("target-bitrate", i32::try_from(bps).unwrap_or(i32::MAX)),
        _ => return false,
    }
    true
}

/// How long a probe may take before it is judged [`ProbeResult::TimedOut`].
const PROBE_WITHIN: Duration = Duration::from_secs(5);

/// Tries `factory` with a short real encode (a fraction of a second).
pub fn probe(codec: Codec, factory: &str) -> ProbeResult {
    probe_within(codec, factory, PROBE_WITHIN)
}

fn probe_within(codec: Codec, factory: &str, within: Duration) -> ProbeResult {
    if gst::ElementFactory::find(factory).is_none() {
        return ProbeResult::Missing;
    }
    let settings = EncodeSettings {
        bitrate_kbps: 500,
        keyframe_interval: 30,
        fec: false,
    };
    let source = match codec.kind() {
        MediaKind::Video => {
            "videotestsrc num-buffers=10 ! video/x-raw,width=320,height=240,framerate=30/1 ! \
             videoconvert"
        }
        MediaKind::Audio => {
            "audiotestsrc num-buffers=10 ! audioconvert ! audioresample ! \
             audio/x-raw,rate=48000,channels=2"
        }
    };
    let desc = format!(
        "{source} ! {} ! fakesink name=out",
        fragment(codec, factory, settings)
    );
    let pipeline = match gst::parse::launch(&desc) {
        Ok(p) => p,
        Err(e) => return ProbeResult::Failed(e.to_string()),
    };
    // Reaching the end is not enough: some encoders report errors and output nothing.
    let encoded = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = std::sync::Arc::clone(&encoded);
    let sink_pad = pipeline
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("out"))
        .and_then(|e| e.static_pad("sink"));
    if let Some(pad) = sink_pad {
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    }
    let result = run_to_eos(&pipeline, within);
    let _ = pipeline.set_state(gst::State::Null);
    match result {
        ProbeResult::Works if encoded.load(std::sync::atomic::Ordering::Relaxed) == 0 => {
            ProbeResult::Failed("ran, but produced no encoded frames".into())
        }
        other => other,
    }
}

fn run_to_eos(pipeline: &gst::Element, timeout: Duration) -> ProbeResult {
    let Some(bus) = pipeline.bus() else {
        return ProbeResult::Failed("no bus".into());
    };
    if pipeline.set_state(gst::State::Playing).is_err() {
        // The reason, if any, is on the bus.
        let error = bus.pop_filtered(&[gst::MessageType::Error]);
        if let Some(gst::MessageView::Error(err)) = error.as_ref().map(|m| m.view()) {
            return ProbeResult::Failed(err.error().to_string());
        }
        return ProbeResult::Failed("would not start".into());
    }
    let timeout = gst::ClockTime::from_nseconds(timeout.as_nanos() as u64);
    match bus.timed_pop_filtered(timeout, &[gst::MessageType::Eos, gst::MessageType::Error]) {
        Some(msg) => match msg.view() {
            gst::MessageView::Eos(_) => ProbeResult::Works,
            gst::MessageView::Error(err) => ProbeResult::Failed(err.error().to_string()),
            _ => ProbeResult::Failed("unexpected message".into()),
        },
        None => ProbeResult::TimedOut,
    }
}

/// Probes candidates in order (the profile's pinned list, else the built-in ranking, minus
/// exclusions) and stops at the first that works. Returns it and every probe made.
pub fn choose(
    codec: Codec,
    pinned: &[String],
    excluded: &[String],
) -> (Option<String>, Vec<Probe>) {
    choose_with(codec, pinned, excluded, &mut Probed::new())
}

/// Encoders already probed in this round (codec, element) and how they did: several cameras
/// asking for one codec run its probes once.
pub type Probed = std::collections::HashMap<(Codec, String), ProbeResult>;

/// [`choose`], reusing the results in `probed` and adding the new ones to it.
pub fn choose_with(
    codec: Codec,
    pinned: &[String],
    excluded: &[String],
    probed: &mut Probed,
) -> (Option<String>, Vec<Probe>) {
    let ranked: Vec<String> = if pinned.is_empty() {
        candidates(codec).iter().map(|s| s.to_string()).collect()
    } else {
        pinned.to_vec()
    };
    let mut probes = Vec::new();
    for encoder in ranked.into_iter().filter(|e| !excluded.contains(e)) {
        let result = probed
            .entry((codec, encoder.clone()))
            .or_insert_with(|| probe(codec, &encoder))
            .clone();
        let works = result == ProbeResult::Works;
        probes.push(Probe {
            codec,
            encoder: encoder.clone(),
            result,
        });
        if works {
            return (Some(encoder), probes);
        }
    }
    (None, probes)
}

/// Every built-in candidate for every codec, probed (for `webrtcd devices`).
pub fn probe_all() -> Vec<Probe> {
    [Codec::H264, Codec::Vp8, Codec::Opus]
        .into_iter()
        .flat_map(|codec| {
            candidates(codec).iter().map(move |e| Probe {
                codec,
                encoder: e.to_string(),
                result: probe(codec, e),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() {
        let _ = gst::init();
    }

    #[test]
    fn missing_failing_and_working_encoders_are_told_apart() {
        init();
        assert_eq!(
            probe(Codec::H264, "nvh264enc-does-not-exist"),
            ProbeResult::Missing
        );
        assert_eq!(probe(Codec::Vp8, "vp8enc"), ProbeResult::Works);
        assert_eq!(probe(Codec::Opus, "opusenc"), ProbeResult::Works);
        // Out of time is not broken: it is told apart (and probed again later).
        assert_eq!(
            probe_within(Codec::Vp8, "vp8enc", Duration::ZERO),
            ProbeResult::TimedOut
        );
    }

    #[test]
    fn falls_back_past_missing_and_failing_candidates() {
        init();
        // avenc_h264_omx exists on Debian (gstreamer1.0-libav) but fails without OMX.
        let pinned = vec![
            "v4l2h264enc".to_string(),
            "avenc_h264_omx".to_string(),
            "x264enc".to_string(),
        ];
        let (chosen, probes) = choose(Codec::H264, &pinned, &[]);
        assert_eq!(chosen.as_deref(), Some("x264enc"), "{probes:?}");
        assert_eq!(probes[0].result, ProbeResult::Missing);
        let omx = &probes[1].result;
        assert!(
            matches!(omx, ProbeResult::Failed(_) | ProbeResult::Missing),
            "{omx:?}"
        );
    }

    #[test]
    fn exclusions_are_skipped() {
        init();
        let (chosen, probes) = choose(Codec::H264, &[], &["x264enc".to_string()]);
        assert_eq!(chosen.as_deref(), Some("openh264enc"), "{probes:?}");
        assert!(probes.iter().all(|p| p.encoder != "x264enc"));
    }
}
