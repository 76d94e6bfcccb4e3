//! Receive branches: RTP from webrtcbin → depayloader → decoder → the profile's sink, with
//! counters of decoded frames so the API (and the tests) can see media really arrives.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::MediaError;
use super::codecs::{Codec, MediaKind};
use super::profile::{Receive, SinkKind};
use crate::sync::lock;

/// A video frame arriving this long after the previous one counts as late (a stall).
const LATE_AFTER: Duration = Duration::from_millis(100);
/// … and this long after, as a freeze (what a person notices).
const FREEZE_AFTER: Duration = Duration::from_millis(200);
/// Frame times kept for the frame rate (one second's worth at most).
const FPS_WINDOW: Duration = Duration::from_secs(1);
const FPS_MAX_FRAMES: usize = 240;
/// Latency samples kept (the most recent).
const LATENCY_SAMPLES: usize = 4096;

/// Remote media, counted after the decoder (or the depayloader, with the `frames` sink).
#[derive(Debug, Default)]
pub struct ReceiveCounters {
    pub video_frames: AtomicU64,
    pub audio_buffers: AtomicU64,
    /// When the first video frame was decoded.
    pub first_video: OnceLock<Instant>,
    /// Video frames that came more than 100 ms after the one before.
    pub video_late: AtomicU64,
    /// … more than 200 ms after: freezes.
    pub freezes: AtomicU64,
    /// The decoded picture's size (0 until known; re-read every 30 frames).
    pub video_width: AtomicU32,
    pub video_height: AtomicU32,
    last_video: Mutex<Option<Instant>>,
    /// When the frames of the last second were decoded (the frame rate).
    recent_frames: Mutex<VecDeque<Instant>>,
    /// Capture → decoded-frame latencies, µs (with `receive.measure_latency`).
    latency_us: Mutex<VecDeque<u32>>,
}

/// Capture → decoded-frame latency over the recent frames.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencySummary {
    pub frames: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

impl ReceiveCounters {
    fn video_frame(&self) {
        let now = Instant::now();
        if self.video_frames.fetch_add(1, Ordering::Relaxed) == 0 {
            let _ = self.first_video.set(now);
        }
        if let Some(last) = lock(&self.last_video).replace(now) {
            let gap = now.duration_since(last);
            if gap > LATE_AFTER {
                self.video_late.fetch_add(1, Ordering::Relaxed);
            }
            if gap > FREEZE_AFTER {
                self.freezes.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut recent = lock(&self.recent_frames);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > FPS_WINDOW)
            || recent.len() >= FPS_MAX_FRAMES
        {
            recent.pop_front();
        }
        recent.push_back(now);
    }

    /// Video frames decoded in the last second.
    pub fn fps(&self) -> u32 {
        let now = Instant::now();
        lock(&self.recent_frames)
            .iter()
            .filter(|t| now.duration_since(**t) <= FPS_WINDOW)
            .count() as u32
    }

    fn video_size(&self, caps: &gst::CapsRef) {
        let Some(s) = caps.structure(0) else { return };
        if let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height")) {
            self.video_width.store(w.max(0) as u32, Ordering::Relaxed);
            self.video_height.store(h.max(0) as u32, Ordering::Relaxed);
        }
    }

    fn latency(&self, us: u64) {
        let mut samples = lock(&self.latency_us);
        if samples.len() == LATENCY_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(us.min(u64::from(u32::MAX)) as u32);
    }

    pub fn latency_summary(&self) -> Option<LatencySummary> {
        let mut sorted: Vec<u32> = lock(&self.latency_us).iter().copied().collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_unstable();
        let at = |q: f64| f64::from(sorted[((sorted.len() - 1) as f64 * q) as usize]) / 1000.0;
        Some(LatencySummary {
            frames: sorted.len(),
            p50_ms: at(0.5),
            p95_ms: at(0.95),
            max_ms: at(1.0),
        })
    }
}

/// `queue ! depay ! decoder [! S16 48 kHz ! probe] ! output`, as one bin.
fn assemble(
    depay_decode: &str,
    probe: Option<gst::Element>,
    output: gst::Element,
) -> Result<gst::Bin, MediaError> {
    let err = |e: &dyn std::fmt::Display| MediaError::Build(e.to_string());
    let head = match probe {
        None => format!("queue ! {depay_decode} name=dec"),
        Some(_) => format!(
            "queue ! {depay_decode} name=dec ! audioconvert ! audioresample ! \
             capsfilter caps=\"audio/x-raw,format=S16LE,rate=48000,channels=2\""
        ),
    };
    let head = gst::parse::bin_from_description(&head, true).map_err(|e| err(&e))?;
    let chain: Vec<gst::Element> = std::iter::once(head.clone().upcast())
        .chain(probe)
        .chain(std::iter::once(output))
        .collect();
    let bin = gst::Bin::new();
    bin.add_many(&chain).map_err(|e| err(&e))?;
    gst::Element::link_many(&chain).map_err(|e| err(&e))?;
    let sink = head
        .static_pad("sink")
        .ok_or_else(|| MediaError::Build("no sink pad".into()))?;
    let ghost = gst::GhostPad::with_target(&sink).map_err(|e| err(&e))?;
    bin.add_pad(&ghost).map_err(|e| err(&e))?;
    Ok(bin)
}

/// The speaker's copy for the echo canceller ([`super::voice`]), made when the call starts.
pub fn echo_probe() -> Result<gst::Element, MediaError> {
    super::voice::speaker_tap()
}

/// Builds the receive branch for RTP with these caps; `echo_probe`, when given, goes in front
/// of the audio output, and `speaker` (an ALSA speaker's sink, see [`super::speaker`]) is
/// that output. `Ok(None)` when the codec is unknown to us: such a stream is discarded
/// rather than failing the call.
pub fn branch(
    rtp_caps: &gst::CapsRef,
    receive: &Receive,
    counters: &Arc<ReceiveCounters>,
    echo_probe: Option<gst::Element>,
    speaker: Option<gst::Element>,
) -> Result<(gst::Bin, Option<Codec>), MediaError> {
    let codec = rtp_caps
        .structure(0)
        .and_then(|s| s.get::<&str>("encoding-name").ok())
        .and_then(Codec::from_encoding_name);
    let Some(codec) = codec else {
        let bin = gst::parse::bin_from_description("fakesink sync=false async=false", true)
            .map_err(|e| MediaError::Build(e.to_string()))?;
        return Ok((bin, None));
    };
    let sink = match codec.kind() {
        MediaKind::Video => receive.video,
        MediaKind::Audio => receive.audio,
    };
    let output = match (sink, codec.kind()) {
        (SinkKind::Count | SinkKind::Frames, _) => "fakesink sync=false async=false".to_string(),
        (SinkKind::Auto, MediaKind::Video) => "videoconvert ! autovideosink sync=false".into(),
        (SinkKind::Auto, MediaKind::Audio) => "audioconvert ! audioresample ! autoaudiosink".into(),
        (SinkKind::Kms, _) => "videoconvert ! kmssink sync=false".into(),
        (SinkKind::Wayland, _) => "videoconvert ! waylandsink sync=false".into(),
        (SinkKind::Alsa, _) => format!(
            "audioconvert ! audioresample ! alsasink device=\"{}\" sync=false",
            receive.audio_device.as_deref().unwrap_or("default")
        ),
    };
    let speaker = speaker.filter(|_| !codec.is_video());
    let echo_probe = echo_probe.filter(|_| !codec.is_video());
    // The echo canceller's copy is of decoded audio.
    let depay_decode = if sink == SinkKind::Frames && echo_probe.is_none() {
        codec.depay()
    } else {
        codec.depay_decode()
    };
    let bin = match (echo_probe, speaker) {
        (None, None) => {
            let desc = format!("queue ! {depay_decode} name=dec ! {output}");
            gst::parse::bin_from_description(&desc, true)
                .map_err(|e| MediaError::Build(format!("{desc}: {e}")))?
        }
        (probe, Some(speaker)) => assemble(depay_decode, probe, speaker)?,
        (probe, None) => {
            let output = gst::parse::bin_from_description(&output, true)
                .map_err(|e| MediaError::Build(format!("{output}: {e}")))?;
            assemble(depay_decode, probe, output.upcast())?
        }
    };
    // (by_name looks inside child bins too.)
    let decoder_src = bin
        .by_name("dec")
        .and_then(|d| d.static_pad("src"))
        .ok_or_else(|| MediaError::Build("decoder has no src pad".into()))?;
    let is_video = codec.is_video();
    if is_video && receive.measure_latency && sink != SinkKind::Frames {
        let counters = Arc::clone(counters);
        super::stamp::read_frames(&decoder_src, move |us| counters.latency(us));
    }
    let counters = Arc::clone(counters);
    decoder_src.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
        if is_video {
            // The size can change (a sender switching resolution): look again now and then.
            if counters
                .video_frames
                .load(Ordering::Relaxed)
                .is_multiple_of(30)
                && let Some(caps) = pad.current_caps()
            {
                counters.video_size(&caps);
            }
            counters.video_frame();
        } else {
            counters.audio_buffers.fetch_add(1, Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    });
    Ok((bin, Some(codec)))
}
