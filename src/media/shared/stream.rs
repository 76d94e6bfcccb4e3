//! A shared stream's state: what it encodes (one codec, one rung per rendition), where it
//! is in its life, who watches it, and how it is described to `gst-launch`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use gst::prelude::*;

use super::feed::Feed;
use super::retune::rates_of;
use super::{Encoders, RAW_TAP, SINK, recent};
use crate::media::codecs::{Codec, MediaKind};
use crate::media::profile::{Profile, Rung};
use crate::media::{MediaError, fragments};
use crate::sync::lock;

/// Counters of one shared stream.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub frames: AtomicU64,
    pub keyframes_forced: AtomicU64,
    pub frames_dropped: AtomicU64,
}

pub struct SharedStream {
    pub(super) codec: Codec,
    /// The renditions (video with a ladder); empty: one encoding, no valves.
    pub(super) rungs: Vec<Rung>,
    /// Frames encoded per rung.
    pub(super) rung_frames: Vec<AtomicU64>,
    /// The camera's view of the profile (swapped by a reload that changes only rates).
    pub(super) profile: Mutex<Arc<Profile>>,
    /// The target rate of each encoding (kbit/s), as the profile now says.
    pub(super) rates: Mutex<Vec<u32>>,
    pub(super) factory: String,
    /// The video source's launch description, made at the first start (the camera's caps
    /// are read then) and kept to rebuild the pipeline after a source failure.
    pub(super) source: std::sync::OnceLock<String>,
    pub(super) life: Mutex<Life>,
    /// Held by whoever builds or tears down the pipeline (blocking threads only).
    pub(super) starting: Mutex<()>,
    pub(super) subscribers: Mutex<Vec<Arc<Subscriber>>>,
    /// Calls holding a [`Subscription`], activated or not yet: the stream lingers and stops
    /// only when this is 0 (a call between building its branch and activating it is a viewer
    /// too). Changed under the `streams` lock.
    pub(super) holders: std::sync::atomic::AtomicUsize,
    /// Per rung.
    pub(super) last_keyframe_request: Vec<Mutex<Option<Instant>>>,
    /// Per rung (video only): where a call that starts connecting now may start.
    pub(super) recent: Vec<recent::Recent>,
    /// The next frame's number (any rung).
    pub(super) next_seq: AtomicU64,
    /// When the source failed recently (for the restart limit and backoff).
    pub(super) failures: Mutex<VecDeque<Instant>>,
    pub(super) restart_limit: usize,
    /// Write capture times into the pictures (`video.stamp_capture_time`).
    pub(super) stamp_capture_time: bool,
    pub(super) owner: Weak<Encoders>,
    pub(super) runtime: Option<tokio::runtime::Handle>,
    pub stats: StreamStats,
    /// When the pipeline last started, or last handed out a frame (for the health check).
    pub(super) last_progress: Mutex<Instant>,
    /// The loss the encoder protects against now (per cent; audio: see `loss.rs`).
    pub(super) loss_protection: Mutex<u8>,
    /// The source failed (or went quiet) and has not delivered since: its device is lost
    /// (`/api/calls`, `webrtcd_devices_down`).
    pub(super) lost: AtomicBool,
    pub(super) frames_metric: prometheus_client::metrics::counter::Counter,
    pub(super) keyframes_metric: prometheus_client::metrics::counter::Counter,
}

pub(super) struct Running {
    pub(super) pipeline: gst::Pipeline,
    /// Where raw pictures pass before any encoding (video): snapshots are taken here.
    pub(super) raw_tap: Option<gst::Pad>,
    /// One per rung.
    pub(super) sinks: Vec<gst_app::AppSink>,
    /// One per rung with a ladder, none without.
    pub(super) valves: Vec<gst::Element>,
}

/// Where a shared stream is in its life.
pub(super) enum Life {
    /// Its pipeline is being built and started.
    Starting,
    Running(Running),
    /// The source failed; a restart is scheduled, and will take the failed pipeline down.
    Restarting(Option<gst::Pipeline>),
    /// For good: no viewers left, shutdown, or the source failed too often.
    Stopped,
}

impl Life {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Life::Starting => "starting",
            Life::Running(_) => "running",
            Life::Restarting(_) => "restarting",
            Life::Stopped => "stopped",
        }
    }
}

pub(super) struct Subscriber {
    pub(super) id: u64,
    pub(super) feed: Feed,
    /// The rung whose frames it gets now (shared with its keyframe-request probe).
    pub(super) rung: Arc<AtomicUsize>,
    /// The rung it moves to at that rung's next keyframe (= `rung` when not moving).
    pub(super) target: AtomicUsize,
    pub(super) waiting_for_keyframe: AtomicBool,
    pub(super) caps: Mutex<Option<gst::Caps>>,
    /// Called if the source is given up on: the call ends with `source-error`.
    pub(super) on_failure: Box<dyn Fn() + Send + Sync>,
    /// The loss its peer reports on this stream (per cent; audio: see `loss.rs`).
    pub(super) loss_percent: std::sync::atomic::AtomicU8,
}

impl Subscriber {
    /// Sends caps ahead of a frame when they differ from the last ones it got.
    pub(super) fn send_caps(&self, caps: Option<&gst::CapsRef>) {
        let mut known = lock(&self.caps);
        if known.as_ref().map(|c| c.as_ref()) != caps {
            let taken = self.feed.set_caps(caps.map(|c| c.to_owned()).as_ref());
            *known = if taken {
                caps.map(|c| c.to_owned())
            } else {
                None
            };
        }
    }
}

/// What `GET /api/status` shows about a shared stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamInfo {
    /// The camera whose capture it encodes.
    pub camera: String,
    pub codec: String,
    /// `starting`, `running`, `restarting` or `stopped`.
    pub state: &'static str,
    pub subscribers: usize,
    pub frames: u64,
    pub keyframes_forced: u64,
    pub frames_dropped: u64,
    /// The renditions of a ladder (empty without one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<RungInfo>,
}

/// One rendition of a shared video stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RungInfo {
    /// `1280x720`.
    pub rendition: String,
    pub bitrate_kbps: u32,
    /// Calls on it, or moving to it.
    pub viewers: usize,
    /// Its encoder runs (its valve is open).
    pub encoding: bool,
    pub frames: u64,
}

impl SharedStream {
    pub(super) fn new(
        profile: &Arc<Profile>,
        codec: Codec,
        factory: String,
        owner: Weak<Encoders>,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Arc<SharedStream> {
        let rungs = match (codec.kind(), &profile.video) {
            (MediaKind::Video, Some(video)) if video.ladder.len() > 1 => video.rungs(),
            _ => Vec::new(),
        };
        let encodings = rungs.len().max(1);
        Arc::new(SharedStream {
            codec,
            rung_frames: (0..encodings).map(|_| AtomicU64::new(0)).collect(),
            last_keyframe_request: (0..encodings).map(|_| Mutex::new(None)).collect(),
            recent: (0..encodings).map(|_| recent::Recent::default()).collect(),
            next_seq: AtomicU64::new(0),
            rates: Mutex::new(rates_of(profile, codec)),
            rungs,
            profile: Mutex::new(Arc::clone(profile)),
            source: std::sync::OnceLock::new(),
            life: Mutex::new(Life::Starting),
            starting: Mutex::new(()),
            subscribers: Mutex::default(),
            holders: std::sync::atomic::AtomicUsize::new(0),
            failures: Mutex::default(),
            restart_limit: profile.source_restart_limit,
            stamp_capture_time: codec.is_video()
                && profile.video.as_ref().is_some_and(|v| v.stamp_capture_time),
            owner,
            // Started from the RTSP server's GLib thread, its timers (restarts, the quiet
            // watch) still run on the daemon's runtime.
            runtime: tokio::runtime::Handle::try_current().ok().or(runtime),
            stats: StreamStats::default(),
            last_progress: Mutex::new(Instant::now()),
            loss_protection: Mutex::new(crate::media::encoder::FEC_FLOOR_PERCENT),
            lost: AtomicBool::new(false),
            frames_metric: crate::metrics::get()
                .frames_encoded
                .get_or_create(&crate::metrics::EncoderLabel {
                    encoder: factory.clone(),
                    camera: profile.name.clone(),
                })
                .clone(),
            keyframes_metric: crate::metrics::get()
                .keyframes_forced
                .get_or_create(&crate::metrics::CodecLabel {
                    codec: codec.name(),
                    camera: profile.name.clone(),
                })
                .clone(),
            factory,
        })
    }

    /// What its source is to a user: a camera or a microphone.
    pub(super) fn device(&self) -> &'static str {
        match self.codec.kind() {
            MediaKind::Video => "camera",
            MediaKind::Audio => "microphone",
        }
    }

    /// A microphone is tried again for as long as a call needs it (a call goes on with its
    /// video meanwhile, and gets its audio back when the device returns); a camera past the
    /// restart limit ends its calls (`source-error`).
    pub(super) fn retries_for_ever(&self) -> bool {
        self.codec.kind() == MediaKind::Audio
    }

    /// The source failed: counted once per loss, until it delivers again.
    pub(super) fn mark_lost(&self) {
        if !self.lost.swap(true, Ordering::AcqRel) {
            let label = crate::metrics::DeviceLabel {
                device: self.device(),
                camera: self.profile().name.clone(),
            };
            let metrics = crate::metrics::get();
            metrics.devices_lost.get_or_create(&label).inc();
            metrics.devices_down.get_or_create(&label).inc();
        }
    }

    /// It delivers again (a frame), or stopped: no longer counted as down.
    pub(super) fn mark_back(&self) -> bool {
        let was_lost = self.lost.swap(false, Ordering::AcqRel);
        if was_lost {
            let label = crate::metrics::DeviceLabel {
                device: self.device(),
                camera: self.profile().name.clone(),
            };
            crate::metrics::get()
                .devices_down
                .get_or_create(&label)
                .dec();
        }
        was_lost
    }

    /// The camera's view of the profile, as it is now.
    pub(super) fn profile(&self) -> Arc<Profile> {
        Arc::clone(&lock(&self.profile))
    }

    /// The renditions at the rates the profile now says (a reload may change the rates).
    pub(super) fn current_rungs(&self) -> Vec<Rung> {
        let rates = lock(&self.rates);
        let rungs = self.rungs.iter().enumerate();
        rungs
            .map(|(i, rung)| Rung {
                bitrate_kbps: rates.get(i).copied().unwrap_or(rung.bitrate_kbps),
                ..*rung
            })
            .collect()
    }

    /// The launch description: source, encoder(s) at the current rates, appsink(s). The video
    /// source is described once — its first description reads the camera's own (the device
    /// monitor), so this runs on a blocking thread — and kept for restarts: one while the
    /// camera is unplugged must not lose the capture format picked while it was there.
    pub(super) fn description(&self) -> Result<String, MediaError> {
        let codec = self.codec;
        let profile = self.profile();
        let (source, encoder) = match codec.kind() {
            MediaKind::Video => {
                let video = profile.video.as_ref().ok_or(MediaError::NoSource(codec))?;
                let source = self.source.get_or_init(|| {
                    // The camera's own description picks the capture format when none is set.
                    let caps = camera_caps(video);
                    let source = fragments::video_source(video, caps.as_ref().map(|c| c.as_ref()));
                    format!("{source} ! identity name={RAW_TAP} silent=true")
                });
                if !self.rungs.is_empty() {
                    return Ok(self.ladder_description(source, video));
                }
                let rate = lock(&self.rates)
                    .first()
                    .copied()
                    .unwrap_or(video.bitrate_kbps);
                (
                    source.clone(),
                    fragments::video_encoder_at(codec, &self.factory, video, rate),
                )
            }
            MediaKind::Audio => {
                let audio = profile.audio.as_ref().ok_or(MediaError::NoSource(codec))?;
                (
                    fragments::audio_source(audio),
                    fragments::audio_encoder(codec, &self.factory, audio),
                )
            }
        };
        Ok(format!("{source} ! {encoder} ! {SINK}0"))
    }

    /// One capture split into the rungs: each scales and encodes behind a closed valve
    /// (opened while a call is on it; a closed rung costs no encoding).
    pub(super) fn ladder_description(
        &self,
        source: &str,
        video: &crate::media::profile::VideoSend,
    ) -> String {
        let mut desc = format!("{source} ! tee name=split allow-not-linked=true");
        let rates = lock(&self.rates).clone();
        for (i, rung) in self.rungs.iter().enumerate() {
            let rate = rates.get(i).copied().unwrap_or(rung.bitrate_kbps);
            let encoder = fragments::video_encoder_at(self.codec, &self.factory, video, rate);
            desc.push_str(&format!(
                " split. ! valve name=valve{i} drop=true ! \
                 queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 leaky=downstream ! \
                 videoscale ! video/x-raw,width={},height={} ! {encoder} ! {SINK}{i}",
                rung.width, rung.height
            ));
        }
        desc
    }

    pub(super) fn rung_info(&self) -> Vec<RungInfo> {
        let valves = match &*lock(&self.life) {
            Life::Running(running) => running.valves.clone(),
            _ => Vec::new(),
        };
        let rates = lock(&self.rates).clone();
        let subscribers = lock(&self.subscribers);
        self.rungs
            .iter()
            .enumerate()
            .map(|(i, rung)| RungInfo {
                rendition: rung.name(),
                bitrate_kbps: rates.get(i).copied().unwrap_or(rung.bitrate_kbps),
                viewers: subscribers
                    .iter()
                    .filter(|s| {
                        s.rung.load(Ordering::Relaxed) == i || s.target.load(Ordering::Relaxed) == i
                    })
                    .count(),
                encoding: valves.get(i).is_some_and(|v| !v.property::<bool>("drop")),
                frames: self.rung_frames[i].load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Opens the valve of every rung a call is on or moving to, and closes the others. The
    /// callers that bring a call to a rung ask it for a keyframe (once: not here too). Takes
    /// the life and subscribers locks in turn: never call it holding either.
    pub(super) fn update_valves(&self) {
        let valves = match &*lock(&self.life) {
            Life::Running(running) => running.valves.clone(),
            _ => return,
        };
        if valves.is_empty() {
            return;
        }
        let mut wanted = vec![false; valves.len()];
        for sub in lock(&self.subscribers).iter() {
            let on = sub.rung.load(Ordering::Relaxed);
            for rung in [on, sub.target.load(Ordering::Relaxed)] {
                if let Some(w) = wanted.get_mut(rung) {
                    *w = true;
                }
            }
        }
        for (i, valve) in valves.iter().enumerate() {
            let drop = !wanted[i];
            if valve.property::<bool>("drop") != drop {
                valve.set_property("drop", drop);
                tracing::debug!(codec = ?self.codec, rung = i, encoding = !drop, "rung valve");
            }
        }
    }
}

/// What the profile's V4L2 camera offers, from the device monitor.
pub(super) fn camera_caps(video: &crate::media::profile::VideoSend) -> Option<gst::Caps> {
    if video.source != crate::media::profile::VideoSourceKind::V4l2 || video.format.is_some() {
        return None;
    }
    let device = video.device.as_deref()?;
    crate::media::devices::list()
        .into_iter()
        .find(|d| d.path.as_deref() == Some(device))
        .and_then(|d| d.formats.join("; ").parse().ok())
}
