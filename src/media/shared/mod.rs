//! Encode once, fan out: one capture and one encoder per codec, shared by every call.
//!
//! The shared pipeline ends in an appsink; each call's send branch is the call's own payloader
//! (payload types differ per call), fed directly from the appsink's thread once the call's
//! connection is up ([`feed`] says why that never waits on a call). That thread hands each
//! encoded frame to every subscriber without ever blocking on one:
//! - a new subscriber waits for a keyframe, forced for it at once (for a call: as it starts
//!   connecting, kept by its feed until the connection is up);
//! - a subscriber with a queue of its own (the RTSP server's appsrc) whose queue is full drops
//!   frames, then waits for the next keyframe, which it asks for (rate-limited);
//! - a keyframe request from a viewer (PLI/FIR, arriving as an upstream force-key-unit event
//!   on its feed) reaches the encoder, rate-limited per stream.
//!
//! A stream starts with its first subscriber and stops `linger` after its last one left.
//!
//! A video profile with a ladder (`[[video.ladder]]`) encodes one capture at several
//! renditions ("rungs"): the capture is split, and each rung scales and encodes behind a
//! valve that is open only while a call is on that rung (or moving to it). A call moves to
//! another rung at that rung's next keyframe, which is asked for at once, through its own
//! payloader: its viewer sees the new size start at a keyframe, and the SSRC,
//! sequence numbers and timestamps run on.
//!
//! A stream's life is one state ([`Life`]: starting, running, restarting, stopped), and
//! starting it — which may wait seconds on a camera — runs on the calling (blocking) thread
//! without holding any lock that async code takes: `/api/status` and the health check read
//! a starting stream at once. A start that fails leaves nothing running.

mod feed;
mod recent;
mod reprobe;
mod snapshot;

pub use snapshot::SnapshotError;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::codecs::{Codec, MediaKind};
use super::encoder::{self, Probe};
use super::profile::{Profile, Rung};
use super::send::{self, SendBranch};
use super::{MediaError, fragments};
use feed::{DirectFeed, Feed, Frame, Opened};

/// Each encoding ends in one of these, named `out0`, `out1`… (the rung's index follows).
/// Not `async`: a rung behind a closed valve gets no frame to preroll with, and would hold
/// the whole pipeline in PAUSED.
const SINK: &str = "appsink sync=false async=false max-buffers=4 drop=true name=out";
/// The element (a passthrough `identity`) after a video source, before any encoding.
const RAW_TAP: &str = "rawtap";
/// Frames that may wait in one subscriber's appsrc before it counts as stalled.
const MAX_QUEUED: u64 = 30;
/// Source failures counted towards the restart limit are those within this window.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(250);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(4);
/// Keyframes asked for by viewers (PLI/FIR, stalls) are at least this far apart.
const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// A keyframe asked for this recently (as the call started connecting) is taken to be on its
/// way: the encoder makes one within a frame interval and an encode.
const KEYFRAME_ON_ITS_WAY: Duration = Duration::from_millis(150);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where calls get their send branches: shared encoders, or (`per_viewer_encoder = true`)
/// a capture and encoder of their own.
pub struct Encoders {
    profile: Arc<Profile>,
    /// The encoder element chosen for each usable codec, by probing.
    chosen: Mutex<HashMap<Codec, String>>,
    /// Codecs whose probes ran out of time, to be probed again (`reprobe`).
    pending: Mutex<HashMap<Codec, reprobe::Pending>>,
    streams: Mutex<HashMap<Codec, Arc<SharedStream>>>,
    linger: Duration,
    /// The runtime the linger timers run on when a stream is let go of elsewhere (the RTSP
    /// server's GLib thread): made where the encoders were (probing runs on tokio's
    /// blocking pool).
    runtime: Option<tokio::runtime::Handle>,
    next_id: AtomicU64,
    me: Weak<Encoders>,
}

/// Counters of one shared stream.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub frames: AtomicU64,
    pub keyframes_forced: AtomicU64,
    pub frames_dropped: AtomicU64,
}

pub struct SharedStream {
    codec: Codec,
    /// The renditions (video with a ladder); empty: one encoding, no valves.
    rungs: Vec<Rung>,
    /// Frames encoded per rung.
    rung_frames: Vec<AtomicU64>,
    profile: Arc<Profile>,
    factory: String,
    /// The launch description, made at the first start (the camera's caps are read then)
    /// and kept to rebuild the pipeline after a source failure.
    desc: std::sync::OnceLock<String>,
    life: Mutex<Life>,
    /// Held by whoever builds or tears down the pipeline (blocking threads only).
    starting: Mutex<()>,
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    /// Calls holding a [`Subscription`], activated or not yet: the stream lingers and stops
    /// only when this is 0 (a call between building its branch and activating it is a viewer
    /// too). Changed under the `streams` lock.
    holders: std::sync::atomic::AtomicUsize,
    /// Per rung.
    last_keyframe_request: Vec<Mutex<Option<Instant>>>,
    /// Per rung (video only): where a call that starts connecting now may start.
    recent: Vec<recent::Recent>,
    /// The next frame's number (any rung).
    next_seq: AtomicU64,
    /// When the source failed recently (for the restart limit and backoff).
    failures: Mutex<VecDeque<Instant>>,
    restart_limit: usize,
    /// Write capture times into the pictures (`video.stamp_capture_time`).
    stamp_capture_time: bool,
    owner: Weak<Encoders>,
    runtime: Option<tokio::runtime::Handle>,
    pub stats: StreamStats,
    /// When the pipeline last started, or last handed out a frame (for the health check).
    last_progress: Mutex<Instant>,
    frames_metric: prometheus_client::metrics::counter::Counter,
    keyframes_metric: prometheus_client::metrics::counter::Counter,
}

struct Running {
    pipeline: gst::Pipeline,
    /// Where raw pictures pass before any encoding (video): snapshots are taken here.
    raw_tap: Option<gst::Pad>,
    /// One per rung.
    sinks: Vec<gst_app::AppSink>,
    /// One per rung with a ladder, none without.
    valves: Vec<gst::Element>,
}

/// Where a shared stream is in its life.
enum Life {
    /// Its pipeline is being built and started.
    Starting,
    Running(Running),
    /// The source failed; a restart is scheduled, and will take the failed pipeline down.
    Restarting(Option<gst::Pipeline>),
    /// For good: no viewers left, shutdown, or the source failed too often.
    Stopped,
}

impl Life {
    fn name(&self) -> &'static str {
        match self {
            Life::Starting => "starting",
            Life::Running(_) => "running",
            Life::Restarting(_) => "restarting",
            Life::Stopped => "stopped",
        }
    }
}

struct Subscriber {
    id: u64,
    feed: Feed,
    /// The rung whose frames it gets now (shared with its keyframe-request probe).
    rung: Arc<AtomicUsize>,
    /// The rung it moves to at that rung's next keyframe (= `rung` when not moving).
    target: AtomicUsize,
    waiting_for_keyframe: AtomicBool,
    caps: Mutex<Option<gst::Caps>>,
    /// Called if the source is given up on: the call ends with `source-error`.
    on_failure: Box<dyn Fn() + Send + Sync>,
}

impl Subscriber {
    /// Sends caps ahead of a frame when they differ from the last ones it got.
    fn send_caps(&self, caps: Option<&gst::CapsRef>) {
        let mut known = lock(&self.caps);
        if known.as_ref().map(|c| c.as_ref()) != caps {
            self.feed.set_caps(caps.map(|c| c.to_owned()).as_ref());
            *known = caps.map(|c| c.to_owned());
        }
    }
}

/// A call's hold on a shared stream; dropping it unsubscribes. It receives frames only once
/// [`Subscription::activate`]d.
pub struct Subscription {
    stream: Arc<SharedStream>,
    id: u64,
    owner: Weak<Encoders>,
    pending: Mutex<Option<Arc<Subscriber>>>,
    /// The same subscriber, pending or not: its feed opens once the call's connection is up.
    subscriber: Arc<Subscriber>,
}

/// What `GET /api/status` shows about a shared stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamInfo {
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

impl std::fmt::Debug for Encoders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoders")
            .field("streams", &self.streams())
            .finish()
    }
}

impl Encoders {
    /// Probes encoders for every codec the profile lists. A codec with no working encoder is
    /// dropped (with a warning); a kind of media left with no codec is an error.
    pub fn probe(profile: Arc<Profile>) -> Result<(Arc<Encoders>, Vec<Probe>), MediaError> {
        let mut chosen = HashMap::new();
        let mut pending = Vec::new();
        let mut probes = Vec::new();
        let lists = [
            profile
                .video
                .as_ref()
                .map(|v| (&v.codecs, &v.encoders, &v.exclude_encoders)),
            profile
                .audio
                .as_ref()
                .map(|a| (&a.codecs, &a.encoders, &a.exclude_encoders)),
        ];
        for (codecs, pinned, excluded) in lists.into_iter().flatten() {
            for &codec in codecs {
                let (encoder, tried) = encoder::choose(codec, pinned, excluded);
                probes.extend(tried);
                match encoder {
                    Some(encoder) => {
                        tracing::info!(?codec, %encoder, "encoder chosen");
                        chosen.insert(codec, encoder);
                    }
                    None if reprobe::timed_out(&probes, codec) => tracing::warn!(
                        ?codec,
                        "encoder probe ran out of time; codec not offered until a later probe works"
                    ),
                    None => tracing::warn!(?codec, "no working encoder; codec not offered"),
                }
            }
            pending.extend(reprobe::pending_from(codecs, &chosen, &probes));
            if !codecs
                .iter()
                .any(|c| chosen.contains_key(c) || pending.contains(c))
            {
                return Err(MediaError::NoEncoder {
                    codecs: codecs.clone(),
                    probes,
                });
            }
        }
        let encoders = Encoders::new(profile, chosen);
        lock(&encoders.pending).extend(pending.into_iter().map(|c| (c, reprobe::Pending::new())));
        Ok((encoders, probes))
    }

    pub fn new(profile: Arc<Profile>, chosen: HashMap<Codec, String>) -> Arc<Encoders> {
        Arc::new_cyclic(|me| Encoders {
            linger: Duration::from_millis(profile.linger_ms),
            runtime: tokio::runtime::Handle::try_current().ok(),
            chosen: Mutex::new(chosen),
            pending: Mutex::default(),
            profile,
            streams: Mutex::default(),
            next_id: AtomicU64::new(1),
            me: Weak::clone(me),
        })
    }

    /// Forgets a stream that stopped for good, so the next call starts a fresh one.
    fn forget(&self, stream: &Arc<SharedStream>) {
        let mut streams = lock(&self.streams);
        if streams
            .get(&stream.codec)
            .is_some_and(|s| Arc::ptr_eq(s, stream))
        {
            streams.remove(&stream.codec);
        }
    }

    /// The profile's codecs for `kind` that have a working encoder, in preference order.
    pub fn codecs(&self, kind: MediaKind) -> Vec<Codec> {
        let listed = match kind {
            MediaKind::Video => self.profile.video.as_ref().map(|v| v.codecs.clone()),
            MediaKind::Audio => self.profile.audio.as_ref().map(|a| a.codecs.clone()),
        };
        // A codec still waiting for a probe that works is tried now, for the next call.
        self.reprobe_now(kind);
        let chosen = lock(&self.chosen);
        listed
            .unwrap_or_default()
            .into_iter()
            .filter(|c| chosen.contains_key(c))
            .collect()
    }

    fn encoder_for(&self, codec: Codec) -> Result<String, MediaError> {
        lock(&self.chosen)
            .get(&codec)
            .cloned()
            .ok_or(MediaError::NoSource(codec))
    }

    /// A send branch for `codec` with payload type `pt`. `on_failure` is called if the
    /// shared source fails for good while this branch uses it.
    pub fn branch(
        self: &Arc<Self>,
        codec: Codec,
        pt: u32,
        on_failure: impl Fn() + Send + Sync + 'static,
    ) -> Result<SendBranch, MediaError> {
        let factory = self.encoder_for(codec)?;
        if self.profile.per_viewer_encoder {
            return match codec.kind() {
                MediaKind::Video => {
                    let video = self
                        .profile
                        .video
                        .as_ref()
                        .ok_or(MediaError::NoSource(codec))?;
                    send::video(video, codec, &factory, pt)
                }
                MediaKind::Audio => {
                    let audio = self
                        .profile
                        .audio
                        .as_ref()
                        .ok_or(MediaError::NoSource(codec))?;
                    send::audio(audio, codec, &factory, pt)
                }
            };
        }
        let mut branch = send::build(&fragments::payloader(codec, pt), codec, pt)?;
        let feed = Feed::Direct(DirectFeed::new(&branch.bin)?);
        branch.subscription = Some(self.subscribe_feed(codec, feed, on_failure)?);
        Ok(branch)
    }

    /// Subscribes `appsrc` (in a pipeline of the caller's: a call's send branch, the RTSP
    /// server's media) to the shared stream of `codec`, started if need be (blocks then:
    /// call from a blocking thread). Frames flow once the subscription is activated, and
    /// its keyframe requests (force-key-unit events) reach the encoder.
    pub fn subscribe(
        self: &Arc<Self>,
        codec: Codec,
        appsrc: gst_app::AppSrc,
        on_failure: impl Fn() + Send + Sync + 'static,
    ) -> Result<Subscription, MediaError> {
        self.subscribe_feed(codec, Feed::AppSrc(appsrc), on_failure)
    }

    fn subscribe_feed(
        self: &Arc<Self>,
        codec: Codec,
        feed: Feed,
        on_failure: impl Fn() + Send + Sync + 'static,
    ) -> Result<Subscription, MediaError> {
        // From here on the stream is held: nothing below can fail.
        let stream = self.stream(codec)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let rung = Arc::new(AtomicUsize::new(0));
        forward_keyframe_requests(
            &feed.request_pad(),
            Arc::downgrade(&stream),
            Arc::clone(&rung),
        );
        let subscriber = Arc::new(Subscriber {
            id,
            feed,
            rung,
            target: AtomicUsize::new(0),
            waiting_for_keyframe: AtomicBool::new(true),
            caps: Mutex::new(None),
            on_failure: Box::new(on_failure),
        });
        Ok(Subscription {
            stream,
            id,
            owner: Arc::downgrade(self),
            pending: Mutex::new(Some(Arc::clone(&subscriber))),
            subscriber,
        })
    }

    /// The stream for `codec`, started if there is none. Blocks while this caller starts
    /// it (call from a blocking thread); the streams' lock is held only to look it up.
    fn stream(&self, codec: Codec) -> Result<Arc<SharedStream>, MediaError> {
        let factory = self.encoder_for(codec)?;
        let stream = {
            let mut streams = lock(&self.streams);
            if let Some(stream) = streams.get(&codec) {
                stream.holders.fetch_add(1, Ordering::Relaxed);
                return Ok(Arc::clone(stream));
            }
            let stream = SharedStream::new(&self.profile, codec, factory, Weak::clone(&self.me));
            stream.holders.fetch_add(1, Ordering::Relaxed);
            streams.insert(codec, Arc::clone(&stream));
            stream
        };
        match stream.start() {
            Ok(()) => Ok(stream),
            Err(err) => {
                self.release(&stream);
                stream.give_up(&err.to_string());
                Err(err)
            }
        }
    }

    /// Starts the shared stream of `codec` (if it is not running) and keeps it running while
    /// the returned guard lives, without a branch: a ringing call warms the encoder so that
    /// accepting it does not wait for the camera. Blocks while the stream starts: call from
    /// a blocking thread.
    pub fn warm(self: &Arc<Self>, codec: Codec) -> Result<Warm, MediaError> {
        let stream = self.stream(codec)?;
        Ok(Warm {
            stream,
            owner: Arc::downgrade(self),
        })
    }

    /// A holder is done with `stream`; true when it was the last.
    fn release(&self, stream: &SharedStream) -> bool {
        let _streams = lock(&self.streams);
        stream.holders.fetch_sub(1, Ordering::Relaxed) == 1
    }

    /// Stops every shared stream now, without lingering (the daemon is shutting down).
    pub fn stop_all(&self) {
        let streams: Vec<Arc<SharedStream>> = lock(&self.streams).drain().map(|(_, s)| s).collect();
        for stream in streams {
            stream.stop();
        }
    }

    /// Shared streams that viewers wait on but that have produced nothing for `after`
    /// (neither failed nor restarting): a wedged source or encoder thread.
    pub fn stalled(&self, after: Duration) -> Vec<String> {
        lock(&self.streams)
            .values()
            .filter(|s| {
                matches!(*lock(&s.life), Life::Running(_))
                    && !lock(&s.subscribers).is_empty()
                    && lock(&s.last_progress).elapsed() > after
            })
            .map(|s| {
                format!(
                    "the shared {} encoder has produced nothing for {} s",
                    s.codec.name(),
                    lock(&s.last_progress).elapsed().as_secs()
                )
            })
            .collect()
    }

    pub fn streams(&self) -> Vec<StreamInfo> {
        let mut out: Vec<StreamInfo> = lock(&self.streams)
            .values()
            .map(|s| {
                // First: the fields below hold the life and subscribers locks to the end.
                let rungs = s.rung_info();
                StreamInfo {
                    codec: format!("{:?}", s.codec).to_lowercase(),
                    state: lock(&s.life).name(),
                    subscribers: lock(&s.subscribers).len(),
                    frames: s.stats.frames.load(Ordering::Relaxed),
                    keyframes_forced: s.stats.keyframes_forced.load(Ordering::Relaxed),
                    frames_dropped: s.stats.frames_dropped.load(Ordering::Relaxed),
                    rungs,
                }
            })
            .collect();
        out.sort_by(|a, b| a.codec.cmp(&b.codec));
        out
    }

    /// After the last subscriber left: stop the stream once `linger` has passed without a
    /// new one.
    fn schedule_stop(self: Arc<Self>, stream: Arc<SharedStream>) {
        let linger = self.linger;
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.runtime.clone());
        let stop = move || {
            let mut streams = lock(&self.streams);
            let still_ours = streams
                .get(&stream.codec)
                .is_some_and(|s| Arc::ptr_eq(s, &stream));
            if still_ours && stream.holders.load(Ordering::Relaxed) == 0 {
                streams.remove(&stream.codec);
                drop(streams);
                tracing::info!(codec = ?stream.codec, "shared encoder stopped (no viewers)");
                stream.stop();
            }
        };
        match runtime {
            Some(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(linger).await;
                    stop();
                });
            }
            // No runtime at all (unit tests): linger all the same, on a short-lived thread of
            // its own, never holding up the thread that let go.
            None => {
                let stop = std::sync::Arc::new(Mutex::new(Some(stop)));
                let run = {
                    let stop = std::sync::Arc::clone(&stop);
                    move || {
                        std::thread::sleep(linger);
                        if let Some(stop) = lock(&stop).take() {
                            stop();
                        }
                    }
                };
                if std::thread::Builder::new()
                    .name("linger".into())
                    .spawn(run)
                    .is_err()
                    && let Some(stop) = lock(&stop).take()
                {
                    stop();
                }
            }
        }
    }
}

impl SharedStream {
    fn new(
        profile: &Arc<Profile>,
        codec: Codec,
        factory: String,
        owner: Weak<Encoders>,
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
            rungs,
            profile: Arc::clone(profile),
            desc: std::sync::OnceLock::new(),
            life: Mutex::new(Life::Starting),
            starting: Mutex::new(()),
            subscribers: Mutex::default(),
            holders: std::sync::atomic::AtomicUsize::new(0),
            failures: Mutex::default(),
            restart_limit: profile.source_restart_limit,
            stamp_capture_time: codec.is_video()
                && profile.video.as_ref().is_some_and(|v| v.stamp_capture_time),
            owner,
            runtime: tokio::runtime::Handle::try_current().ok(),
            stats: StreamStats::default(),
            last_progress: Mutex::new(Instant::now()),
            frames_metric: crate::metrics::get()
                .frames_encoded
                .get_or_create(&crate::metrics::EncoderLabel {
                    encoder: factory.clone(),
                })
                .clone(),
            keyframes_metric: crate::metrics::get()
                .keyframes_forced
                .get_or_create(&crate::metrics::CodecLabel {
                    codec: codec.name(),
                })
                .clone(),
            factory,
        })
    }

    /// The launch description: source, encoder, appsink. The first call reads the
    /// camera's description (the device monitor), so it runs on a blocking thread too.
    fn description(&self) -> Result<&str, MediaError> {
        if let Some(desc) = self.desc.get() {
            return Ok(desc);
        }
        let codec = self.codec;
        let profile = &self.profile;
        let (source, encoder) = match codec.kind() {
            MediaKind::Video => {
                let video = profile.video.as_ref().ok_or(MediaError::NoSource(codec))?;
                // The camera's own description picks the capture format when none is set.
                let caps = camera_caps(video);
                let source = fragments::video_source(video, caps.as_ref().map(|c| c.as_ref()));
                let source = format!("{source} ! identity name={RAW_TAP} silent=true");
                if !self.rungs.is_empty() {
                    let desc = self.ladder_description(&source, video);
                    return Ok(self.desc.get_or_init(|| desc));
                }
                (
                    source,
                    fragments::video_encoder(codec, &self.factory, video),
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
        let desc = format!("{source} ! {encoder} ! {SINK}0");
        Ok(self.desc.get_or_init(|| desc))
    }

    /// One capture split into the rungs: each scales and encodes behind a closed valve
    /// (opened while a call is on it; a closed rung costs no encoding).
    fn ladder_description(&self, source: &str, video: &super::profile::VideoSend) -> String {
        let mut desc = format!("{source} ! tee name=split allow-not-linked=true");
        for (i, rung) in self.rungs.iter().enumerate() {
            let encoder =
                fragments::video_encoder_at(self.codec, &self.factory, video, rung.bitrate_kbps);
            desc.push_str(&format!(
                " split. ! valve name=valve{i} drop=true ! \
                 queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 leaky=downstream ! \
                 videoscale ! video/x-raw,width={},height={} ! {encoder} ! {SINK}{i}",
                rung.width, rung.height
            ));
        }
        desc
    }

    fn rung_info(&self) -> Vec<RungInfo> {
        let valves = match &*lock(&self.life) {
            Life::Running(running) => running.valves.clone(),
            _ => Vec::new(),
        };
        let subscribers = lock(&self.subscribers);
        self.rungs
            .iter()
            .enumerate()
            .map(|(i, rung)| RungInfo {
                rendition: rung.name(),
                bitrate_kbps: rung.bitrate_kbps,
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
    fn update_valves(&self) {
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

    /// The first start. Blocks until the pipeline runs or fails.
    fn start(self: &Arc<Self>) -> Result<(), MediaError> {
        let _serial = lock(&self.starting);
        self.launch()?;
        tracing::info!(codec = ?self.codec, "shared encoder started");
        Ok(())
    }

    /// Builds the pipeline and starts it; on success it is the stream's running pipeline,
    /// on failure it is torn down. Call with `starting` held.
    fn launch(self: &Arc<Self>) -> Result<(), MediaError> {
        let codec = self.codec;
        let desc = self.description()?;
        let pipeline = super::new_pipeline(&format!("shared-{codec:?}").to_lowercase());
        let bin = gst::parse::bin_from_description(desc, false)
            .map_err(|e| MediaError::Build(format!("{desc}: {e}")))?;
        pipeline
            .add(&bin)
            .map_err(|e| MediaError::Build(e.to_string()))?;
        let encodings = self.rungs.len().max(1);
        let sinks = (0..encodings)
            .map(|i| {
                bin.by_name(&format!("out{i}"))
                    .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
                    .ok_or_else(|| MediaError::Build("appsink missing".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let valves: Vec<gst::Element> = (0..self.rungs.len())
            .filter_map(|i| bin.by_name(&format!("valve{i}")))
            .collect();
        let raw_tap = bin.by_name(RAW_TAP).and_then(|e| e.static_pad("src"));
        if self.stamp_capture_time {
            send::stamp_raw(&bin);
        }
        if let Some(bus) = pipeline.bus() {
            let weak = Arc::downgrade(self);
            bus.set_sync_handler(move |_, msg| {
                let failure = match msg.view() {
                    gst::MessageView::Error(err) => {
                        Some(format!("{} ({:?})", err.error(), err.debug()))
                    }
                    gst::MessageView::Eos(_) => Some("the source ended".to_string()),
                    _ => None,
                };
                if let (Some(why), Some(stream)) = (failure, weak.upgrade()) {
                    stream.on_source_failure(why);
                }
                gst::BusSyncReply::Drop
            });
        }
        for (rung, sink) in sinks.iter().enumerate() {
            let weak = Arc::downgrade(self);
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        match weak.upgrade() {
                            Some(stream) => {
                                stream.fan_out(rung, &sample);
                                Ok(gst::FlowSuccess::Ok)
                            }
                            None => Err(gst::FlowError::Flushing),
                        }
                    })
                    .build(),
            );
        }
        *lock(&self.last_progress) = Instant::now();
        // The slow part (a camera opening): no lock that async code takes is held here.
        if pipeline.set_state(gst::State::Playing).is_err() {
            // Nothing may stay running (or holding the device) after a failed start.
            stop_now(pipeline);
            return Err(MediaError::Build(format!(
                "{codec:?} source/encoder would not start"
            )));
        }
        let mut life = lock(&self.life);
        if matches!(*life, Life::Stopped) {
            // Stopped (shutdown, or the last viewer left) while it started.
            drop(life);
            stop_now(pipeline);
            return Ok(());
        }
        // Running, or Restarting if it already failed while starting (the restart then
        // replaces this pipeline).
        if matches!(*life, Life::Starting) {
            *life = Life::Running(Running {
                pipeline,
                raw_tap,
                sinks,
                valves,
            });
            drop(life);
            // The calls already on it (a restart) get their rungs back.
            self.update_valves();
        } else {
            drop(life);
            stop_now(pipeline);
        }
        Ok(())
    }

    /// Runs on a streaming thread (bus sync handler): only schedules the restart.
    fn on_source_failure(self: &Arc<Self>, why: String) {
        {
            let mut life = lock(&self.life);
            if matches!(*life, Life::Stopped | Life::Restarting(_)) {
                return;
            }
            // The failed pipeline stays until the restart takes it down (a state change is
            // not for a streaming thread), so the device is free before it is opened again.
            let failed = match std::mem::replace(&mut *life, Life::Restarting(None)) {
                Life::Running(running) => Some(running.pipeline),
                _ => None,
            };
            *life = Life::Restarting(failed);
        }
        let recent = {
            let mut failures = lock(&self.failures);
            let now = Instant::now();
            failures.push_back(now);
            while failures
                .front()
                .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
            {
                failures.pop_front();
            }
            failures.len()
        };
        let backoff = RESTART_BACKOFF_MIN
            .saturating_mul(1 << (recent.min(5) as u32 - 1))
            .min(RESTART_BACKOFF_MAX);
        tracing::warn!(codec = ?self.codec, failures = recent, ?backoff, "shared source failed: {why}");
        let stream = Arc::clone(self);
        let restart = move || stream.restart(recent);
        match &self.runtime {
            Some(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(backoff).await;
                    let _ = tokio::task::spawn_blocking(restart).await;
                });
            }
            None => {
                std::thread::spawn(move || {
                    std::thread::sleep(backoff);
                    restart();
                });
            }
        }
    }

    /// Replaces the failed pipeline, or gives up past the restart limit. Blocking thread.
    fn restart(self: &Arc<Self>, recent_failures: usize) {
        let _serial = lock(&self.starting);
        {
            let mut life = lock(&self.life);
            match std::mem::replace(&mut *life, Life::Starting) {
                Life::Stopped => {
                    *life = Life::Stopped;
                    return;
                }
                Life::Restarting(Some(failed)) => {
                    drop(life);
                    stop_now(failed);
                }
                // Started after the failure was seen: that pipeline is replaced too.
                Life::Running(running) => {
                    drop(life);
                    stop_now(running.pipeline);
                }
                Life::Starting | Life::Restarting(None) => {}
            }
        }
        if recent_failures > self.restart_limit {
            self.give_up("it failed too often");
            return;
        }
        match self.launch() {
            Ok(()) => {
                tracing::info!(codec = ?self.codec, "shared source restarted");
                for sub in lock(&self.subscribers).iter() {
                    sub.waiting_for_keyframe.store(true, Ordering::Relaxed);
                }
                for rung in 0..self.rung_frames.len() {
                    self.request_keyframe(rung, true);
                }
            }
            Err(err) => self.give_up(&err.to_string()),
        }
    }

    /// Stops for good and ends every call that used this source.
    fn give_up(self: &Arc<Self>, why: &str) {
        tracing::error!(codec = ?self.codec, "shared source given up: {why}");
        self.stop();
        if let Some(owner) = self.owner.upgrade() {
            owner.forget(self);
        }
        for sub in lock(&self.subscribers).iter() {
            (sub.on_failure)();
        }
    }

    fn stop(&self) {
        let old = std::mem::replace(&mut *lock(&self.life), Life::Stopped);
        match old {
            Life::Running(Running { pipeline, .. }) | Life::Restarting(Some(pipeline)) => {
                super::teardown(pipeline);
            }
            _ => {}
        }
    }

    /// Adds a viewer; a stream that has stopped for good calls its `on_failure` instead.
    fn subscribe(&self, subscriber: Arc<Subscriber>) {
        let rung = subscriber.rung.load(Ordering::Relaxed);
        {
            // Under the life lock: `give_up` either sees this subscriber or we see Stopped.
            let life = lock(&self.life);
            if matches!(*life, Life::Stopped) {
                drop(life);
                (subscriber.on_failure)();
                return;
            }
            lock(&self.subscribers).push(Arc::clone(&subscriber));
        }
        self.update_valves();
        // A joining viewer must not wait for the next scheduled keyframe. A direct feed that
        // is still closed asks once its call starts connecting: a keyframe now would go
        // nowhere.
        let takes_frames = match &subscriber.feed {
            Feed::AppSrc(_) => true,
            Feed::Direct(direct) => direct.is_open(),
        };
        if takes_frames {
            self.request_keyframe(rung, true);
        }
    }

    fn unsubscribe(&self, id: u64) {
        lock(&self.subscribers).retain(|s| s.id != id);
        self.update_valves();
    }

    /// Moves a viewer to `rung` at that rung's next keyframe (asked for now).
    fn move_to(&self, id: u64, rung: usize) {
        let rung = rung.min(self.rung_frames.len() - 1);
        let moved = lock(&self.subscribers)
            .iter()
            .find(|s| s.id == id)
            .is_some_and(|s| s.target.swap(rung, Ordering::Relaxed) != rung);
        if moved {
            self.update_valves();
            self.request_keyframe(rung, true);
        }
    }

    /// Runs on a streaming thread of the shared pipeline (the one of `rung`): never blocks
    /// on a subscriber.
    fn fan_out(&self, rung: usize, sample: &gst::Sample) {
        let Some(buffer) = sample.buffer() else {
            return;
        };
        self.stats.frames.fetch_add(1, Ordering::Relaxed);
        if let Some(frames) = self.rung_frames.get(rung) {
            frames.fetch_add(1, Ordering::Relaxed);
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.frames_metric.inc();
        *lock(&self.last_progress) = Instant::now();
        let caps = sample.caps();
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        if keyframe && self.codec.kind() == MediaKind::Video {
            // How long a keyframe took from its request (first frames wait for it).
            let asked = self
                .last_keyframe_request
                .get(rung)
                .and_then(|last| *lock(last));
            tracing::debug!(
                codec = ?self.codec,
                rung,
                since_request_ms = asked.map(|at| at.elapsed().as_millis() as u64),
                bytes = buffer.size(),
                "keyframe"
            );
        }
        let frame = Frame {
            buffer,
            caps,
            keyframe,
            seq,
        };
        if let Some(recent) = self.recent.get(rung)
            && self.codec.kind() == MediaKind::Video
        {
            recent.record(&frame);
        }
        let mut stalled = false;
        let mut moved = false;
        // Pushing runs each call's send path: not under the lock that calls joining and
        // leaving take.
        let subscribers = lock(&self.subscribers).clone();
        for sub in &subscribers {
            let on = sub.rung.load(Ordering::Relaxed);
            if rung != on {
                // Not its rung, unless it is moving here and this keyframe is where it may.
                if sub.target.load(Ordering::Relaxed) != rung || !keyframe {
                    continue;
                }
                sub.rung.store(rung, Ordering::Relaxed);
                moved = true;
            }
            if !sub.feed.admit(&frame)
                || sub.waiting_for_keyframe.load(Ordering::Relaxed) && !keyframe
            {
                continue;
            }
            if sub.feed.backlog() >= MAX_QUEUED {
                // This viewer stopped taking frames: skip it, resume at a keyframe.
                sub.waiting_for_keyframe.store(true, Ordering::Relaxed);
                self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                stalled = true;
                continue;
            }
            sub.send_caps(caps);
            // Each call's feed stamps the frame with its own pipeline's clock.
            let mut out = buffer.copy();
            {
                let out = out.make_mut();
                out.set_pts(gst::ClockTime::NONE);
                out.set_dts(gst::ClockTime::NONE);
            }
            if sub.feed.push(out) {
                sub.waiting_for_keyframe.store(false, Ordering::Relaxed);
            } else {
                // Not running (yet): what it was given is gone, caps included. Start over
                // at a keyframe, with caps, once it takes buffers.
                *lock(&sub.caps) = None;
                sub.waiting_for_keyframe.store(true, Ordering::Relaxed);
            }
        }
        if stalled {
            self.request_keyframe(rung, false);
        }
        if moved {
            // The rung it left may have no viewer now.
            self.update_valves();
        }
    }

    /// Whether `rung`'s next frame is likely a keyframe anyway: it made no frame yet (an
    /// encoder starts with one), or one was asked for so recently that it may not have come.
    fn keyframe_on_its_way(&self, rung: usize) -> bool {
        let none_yet = self
            .rung_frames
            .get(rung)
            .is_some_and(|frames| frames.load(Ordering::Relaxed) == 0);
        let asked = self
            .last_keyframe_request
            .get(rung)
            .is_some_and(|last| lock(last).is_some_and(|at| at.elapsed() < KEYFRAME_ON_ITS_WAY));
        none_yet || asked
    }

    /// `sub`'s direct feed just opened (see [`Subscription::start_at_keyframe`]): asks for
    /// its keyframe unless it got one or one is on its way. `pending`: not subscribed yet,
    /// so nothing to ask for.
    fn opened(&self, sub: &Subscriber, opened: &Opened, pending: bool) {
        let on_its_way = opened
            .armed_at
            .is_some_and(|at| at.elapsed() < KEYFRAME_ON_ITS_WAY);
        tracing::debug!(
            codec = ?self.codec,
            held = opened.held,
            armed_ms = opened.armed_at.map(|at| at.elapsed().as_millis() as u64),
            "feed opened"
        );
        if !opened.pushed_held && !on_its_way && !pending {
            self.request_keyframe(sub.rung.load(Ordering::Relaxed), true);
        }
    }

    /// Asks the encoder for a keyframe now. Requests from viewers are rate-limited;
    /// `joining` ones are not (a new viewer must see a picture at once).
    fn request_keyframe(&self, rung: usize, joining: bool) {
        let Some(last) = self.last_keyframe_request.get(rung) else {
            return;
        };
        {
            let mut last = lock(last);
            let recent = last.is_some_and(|t| t.elapsed() < KEYFRAME_MIN_INTERVAL);
            if recent && !joining {
                return;
            }
            *last = Some(Instant::now());
        }
        if self.codec.kind() != MediaKind::Video {
            return;
        }
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        let sink = match &*lock(&self.life) {
            Life::Running(running) => running.sinks.get(rung).cloned(),
            _ => None,
        };
        if sink.is_some_and(|sink| sink.send_event(event)) {
            self.stats.keyframes_forced.fetch_add(1, Ordering::Relaxed);
            self.keyframes_metric.inc();
        }
    }
}

/// Takes a pipeline to NULL on this (blocking) thread.
fn stop_now(pipeline: gst::Pipeline) {
    let _ = pipeline.set_state(gst::State::Null);
    if let Some(bus) = pipeline.bus() {
        bus.unset_sync_handler();
    }
}

/// What the profile's V4L2 camera offers, from the device monitor.
fn camera_caps(video: &super::profile::VideoSend) -> Option<gst::Caps> {
    if video.source != super::profile::VideoSourceKind::V4l2 || video.format.is_some() {
        return None;
    }
    let device = video.device.as_deref()?;
    super::devices::list()
        .into_iter()
        .find(|d| d.path.as_deref() == Some(device))
        .and_then(|d| d.formats.join("; ").parse().ok())
}

/// A viewer's PLI/FIR reaches its feed as an upstream force-key-unit event: pass it on to
/// the shared encoder (rate-limited there) instead of to a feed that cannot act on it.
fn forward_keyframe_requests(
    pad: &Option<gst::Pad>,
    stream: Weak<SharedStream>,
    rung: Arc<AtomicUsize>,
) {
    let Some(pad) = pad else {
        return;
    };
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        let is_key_request = info
            .event()
            .is_some_and(|e| gst_video::ForceKeyUnitEvent::is(e));
        if !is_key_request {
            return gst::PadProbeReturn::Ok;
        }
        if let Some(stream) = stream.upgrade() {
            stream.request_keyframe(rung.load(Ordering::Relaxed), false);
        }
        // Taken and `Handled`, not `Drop`: gstreamer-rs takes the event out of the probe's
        // info (leaving NULL) and unrefs it on `Drop`, and GStreamer 1.22 then unrefs the
        // NULL it reads back: a GStreamer-CRITICAL per keyframe request (each PLI or FIR
        // from the peer). `Handled` tells GStreamer the probe kept the event.
        drop(info.take_event());
        gst::PadProbeReturn::Handled
    });
}

impl Subscription {
    /// Starts feeding the call's branch (a direct feed: once its connection is up, too).
    /// Only once it runs in its pipeline: a feed stamps each frame with its pipeline's clock
    /// and base time, and before it runs that base time is 0 — a frame stamped then lies
    /// hours in the future, and webrtcbin's clocksync holds the track (it sent one packet,
    /// then nothing: the calls without audio).
    pub fn activate(&self) {
        if let Some(subscriber) = lock(&self.pending).take() {
            if let Err(err) = subscriber.feed.attach() {
                tracing::warn!(%err, "cannot feed a send branch");
            }
            self.stream.subscribe(subscriber);
        }
    }

    /// The call starts connecting (its descriptions are set, or about to be): a video feed
    /// keeps its frames until the connection is up, from the keyframe its rung made just
    /// before if there is one (see [`recent`]), else from one asked for now — unless one is
    /// on its way already — which the encoder makes while ICE and DTLS run (see [`feed`]).
    /// Once per connection.
    pub fn connecting(&self) {
        let Feed::Direct(direct) = &self.subscriber.feed else {
            return;
        };
        if self.stream.codec.kind() != MediaKind::Video || self.is_pending() {
            return;
        }
        let rung = self.subscriber.rung.load(Ordering::Relaxed);
        let Some(recent) = self.stream.recent.get(rung) else {
            return;
        };
        let (armed, from_recent) = recent.start_from(|frames| {
            let from_recent = !frames.is_empty();
            (direct.arm(frames), from_recent)
        });
        if armed && !from_recent && !self.stream.keyframe_on_its_way(rung) {
            self.stream.request_keyframe(rung, true);
        }
    }

    /// The call's connection just came up (or its peer is heard again): a direct feed opens
    /// now, pushing the keyframe it kept since [`Subscription::connecting`] (and what
    /// followed) first. Without one, the viewer starts over at a fresh keyframe, asked for
    /// now rather than left to the viewer's PLI a round trip later — unless the one asked for
    /// while connecting is still on its way.
    pub fn start_at_keyframe(&self) {
        let sub = &self.subscriber;
        let pending = self.is_pending();
        // A frame after the opening must be a keyframe, unless kept frames (from a keyframe
        // on) go first.
        sub.waiting_for_keyframe.store(true, Ordering::Relaxed);
        let Feed::Direct(direct) = &sub.feed else {
            self.stream
                .request_keyframe(sub.rung.load(Ordering::Relaxed), true);
            return;
        };
        if let Some(opened) = direct.open_unless_kept() {
            self.stream.opened(sub, &opened, pending);
            return;
        }
        // Pushing the kept frames runs the call's send path: on a blocking thread, not the
        // call's task.
        let (sub, stream) = (Arc::clone(sub), Arc::clone(&self.stream));
        let open = move || {
            let Feed::Direct(direct) = &sub.feed else {
                return;
            };
            let mut last = None;
            let opened = direct.open(|held| {
                sub.send_caps(held.caps.as_deref());
                last = direct.push_held(held, last);
                if last.is_some() {
                    sub.waiting_for_keyframe.store(false, Ordering::Relaxed);
                }
                last.is_some()
            });
            stream.opened(&sub, &opened, pending);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(open)),
            Err(_) => open(),
        }
    }

    fn is_pending(&self) -> bool {
        lock(&self.pending).is_some()
    }

    /// The renditions this call can move between, best first (empty: one, no choice).
    pub fn rungs(&self) -> &[Rung] {
        &self.stream.rungs
    }

    /// The rung this call gets now.
    pub fn rung(&self) -> usize {
        if let Some(pending) = lock(&self.pending).as_ref() {
            return pending.rung.load(Ordering::Relaxed);
        }
        lock(&self.stream.subscribers)
            .iter()
            .find(|s| s.id == self.id)
            .map_or(0, |s| s.rung.load(Ordering::Relaxed))
    }

    /// Moves this call to `rung` (an index into [`Subscription::rungs`]) at that rung's next
    /// keyframe; before activation it simply starts there.
    pub fn set_rung(&self, rung: usize) {
        if self.stream.rungs.is_empty() {
            return;
        }
        let rung = rung.min(self.stream.rungs.len() - 1);
        if let Some(pending) = lock(&self.pending).as_ref() {
            pending.rung.store(rung, Ordering::Relaxed);
            pending.target.store(rung, Ordering::Relaxed);
            return;
        }
        self.stream.move_to(self.id, rung);
    }
}

/// Keeps a shared stream running (see [`Encoders::warm`]); it lingers and stops, as after a
/// call, once the last holder lets go.
pub struct Warm {
    stream: Arc<SharedStream>,
    owner: Weak<Encoders>,
}

impl Warm {
    pub fn codec(&self) -> Codec {
        self.stream.codec
    }

    /// A call will start connecting on this stream within moments (its offer is on its
    /// way): asks for the keyframe it will start from now, so that the encoder makes it
    /// while the offer and answer travel (see [`recent`]). Not for a stream that made no
    /// frame yet (its first is a keyframe), nor one that has just made a keyframe the call
    /// can start from.
    pub fn expect_call(&self) {
        let stream = &self.stream;
        let just_made = stream
            .recent
            .first()
            .is_some_and(|r| r.has_keyframe_within(recent::MAX_AGE / 2));
        if stream.codec.kind() == MediaKind::Video && !stream.keyframe_on_its_way(0) && !just_made {
            // Calls start on the first rung. Rate-limited, as a viewer's request is: `call`
            // costs a peer nothing, and each keyframe costs every viewer bandwidth (a call that
            // misses out asks, unlimited, as it connects).
            stream.request_keyframe(0, false);
        }
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.upgrade()
            && owner.release(&self.stream)
        {
            owner.schedule_stop(Arc::clone(&self.stream));
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stream.unsubscribe(self.id);
        if let Some(owner) = self.owner.upgrade()
            && owner.release(&self.stream)
        {
            owner.schedule_stop(Arc::clone(&self.stream));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The calls without audio: an appsrc fed before it ran stamped a frame hours in the
    /// future, and webrtcbin's `clocksync sync=true` held the track for good (one packet, then
    /// nothing). A branch is now fed only once activated, after it runs in its pipeline.
    /// Shared encoders for a test tone in Opus.
    fn opus_encoders(linger_ms: u64) -> Arc<Encoders> {
        gst::init().unwrap();
        let text =
            format!("name='t'\nlinger_ms={linger_ms}\n[audio]\nsource='test'\ncodecs=['opus']\n");
        let profile = Profile::parse(&text, Path::new("t.toml")).unwrap();
        let chosen = HashMap::from([(Codec::Opus, "opusenc".to_string())]);
        Encoders::new(Arc::new(profile), chosen)
    }

    /// What a feed gave the call's payloader: (keyframe?, timestamp) per frame, in order.
    type Given = Vec<(bool, Option<gst::ClockTime>)>;

    /// A call's branch on a 320×240 VP8 test stream, in a running pipeline of its own, and
    /// the frames its feed gave it.
    struct TestCall {
        encoders: Arc<Encoders>,
        subscription: Subscription,
        pipeline: gst::Pipeline,
        frames: Arc<Mutex<Given>>,
    }

    impl TestCall {
        fn new() -> TestCall {
            gst::init().unwrap();
            let text = "name='t'\nlinger_ms=0\n[video]\nsource='test'\ncodecs=['vp8']\nwidth=320\nheight=240\n";
            let profile = Profile::parse(text, Path::new("t.toml")).unwrap();
            let chosen = HashMap::from([(Codec::Vp8, "vp8enc".to_string())]);
            let encoders = Encoders::new(Arc::new(profile), chosen);
            let mut branch = encoders.branch(Codec::Vp8, 96, || {}).unwrap();
            let pipeline = gst::Pipeline::new();
            let sink = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .property("async", false)
                .build()
                .unwrap();
            pipeline.add_many([branch.bin.upcast_ref(), &sink]).unwrap();
            branch.bin.link(&sink).unwrap();
            pipeline.set_state(gst::State::Playing).unwrap();
            let frames = Arc::new(Mutex::new(Vec::new()));
            let seen = Arc::clone(&frames);
            branch.bin.static_pad("sink").unwrap().add_probe(
                gst::PadProbeType::BUFFER,
                move |_, info| {
                    if let Some(buffer) = info.buffer() {
                        let key = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                        lock(&seen).push((key, buffer.pts()));
                    }
                    gst::PadProbeReturn::Ok
                },
            );
            let subscription = branch.subscription.take().unwrap();
            subscription.activate();
            TestCall {
                encoders,
                subscription,
                pipeline,
                frames,
            }
        }

        /// The fakesink at the end of the call's branch.
        fn sink(&self) -> gst::Element {
            self.pipeline
                .iterate_sinks()
                .next()
                .ok()
                .flatten()
                .expect("a sink")
        }

        /// Keyframes forced on the stream so far.
        fn forced(&self) -> u64 {
            self.encoders
                .streams()
                .first()
                .map_or(0, |s| s.keyframes_forced)
        }

        /// Connects the call: ten frames from then on, checked to start at a keyframe, in
        /// order, each once.
        fn connected(&self) -> Given {
            assert!(lock(&self.frames).is_empty(), "fed before connected");
            self.subscription.start_at_keyframe();
            let deadline = Instant::now() + Duration::from_secs(5);
            while lock(&self.frames).len() < 10 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let frames = lock(&self.frames).clone();
            assert!(frames.len() >= 10, "frames held back: {frames:?}");
            assert!(
                frames[0].0,
                "the call did not start at a keyframe: {frames:?}"
            );
            assert!(
                frames.windows(2).all(|w| w[0].1 < w[1].1),
                "frames out of order or twice: {frames:?}"
            );
            frames
        }
    }

    impl Drop for TestCall {
        fn drop(&mut self) {
            self.pipeline.set_state(gst::State::Null).unwrap();
            self.encoders.stop_all();
        }
    }

    /// Long enough for the stream's last keyframe to be too old to start a call from.
    const PAST_ITS_KEYFRAME: Duration = Duration::from_millis(800);

    /// The keyframe asked for as the call starts connecting is kept until the connection is
    /// up and goes out first: no second keyframe is forced for it, and nothing goes out
    /// before.
    #[test]
    fn a_call_starts_with_the_keyframe_asked_for_while_it_connected() {
        let call = TestCall::new();
        std::thread::sleep(PAST_ITS_KEYFRAME);
        call.subscription.connecting();
        // Long enough for the encoder to make the keyframe, shorter than the hold lasts.
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(call.forced(), 1, "one keyframe asked for while connecting");
        call.connected();
        assert_eq!(call.forced(), 1, "a second keyframe was forced");
    }

    /// A keyframe request from the call's side (the force-key-unit event webrtcbin sends
    /// upstream on a PLI or FIR) reaches the encoder, and is taken without a
    /// GStreamer-CRITICAL (it was `gst_mini_object_unref: assertion 'mini_object != NULL'`
    /// for every request while the probe returned `Drop`).
    #[test]
    fn a_keyframe_request_from_the_call_reaches_the_encoder_without_a_critical() {
        let call = TestCall::new();
        let criticals = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&criticals);
        let handler = glib::log_set_handler(
            Some("GStreamer"),
            glib::LogLevels::LEVEL_CRITICAL,
            false,
            false,
            move |_, _, message| {
                if message.contains("gst_mini_object_unref") {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            },
        );
        std::thread::sleep(PAST_ITS_KEYFRAME);
        let pad = call.sink().static_pad("sink").expect("sink pad");
        let request = || {
            gst_video::UpstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build()
        };
        assert!(pad.push_event(request()), "the request was refused");
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(call.forced(), 1, "the encoder was not asked");
        // Again, past the rate limit.
        std::thread::sleep(KEYFRAME_MIN_INTERVAL);
        assert!(pad.push_event(request()));
        std::thread::sleep(Duration::from_millis(150));
        glib::log_remove_handler(Some("GStreamer"), handler);
        assert_eq!(call.forced(), 2);
        assert_eq!(criticals.load(Ordering::Relaxed), 0, "GStreamer-CRITICAL");
    }

    /// A callee's encoder is asked for a keyframe on `call` (`Warm::expect_call`); the call
    /// starts connecting once the offer comes, after that keyframe (or while it is on its
    /// way), and starts from it: no second keyframe is forced.
    #[test]
    fn a_call_starts_from_the_keyframe_asked_for_when_it_was_expected() {
        for offer_after in [Duration::from_millis(200), Duration::from_millis(5)] {
            let call = TestCall::new();
            std::thread::sleep(PAST_ITS_KEYFRAME);
            let warm = call.encoders.warm(Codec::Vp8).unwrap();
            warm.expect_call();
            assert_eq!(call.forced(), 1);
            std::thread::sleep(offer_after);
            call.subscription.connecting();
            std::thread::sleep(Duration::from_millis(150));
            call.connected();
            assert_eq!(
                call.forced(),
                1,
                "a second keyframe was forced ({offer_after:?})"
            );
        }
    }

    /// A peer that sends `call` after `call` forces no keyframe after keyframe: expecting a
    /// call asks at most once per KEYFRAME_MIN_INTERVAL.
    #[test]
    fn calls_expected_in_a_burst_force_one_keyframe() {
        let call = TestCall::new();
        std::thread::sleep(PAST_ITS_KEYFRAME);
        let warm = call.encoders.warm(Codec::Vp8).unwrap();
        // 400 ms: past the time a keyframe counts as on its way, or as just made.
        for _ in 0..20 {
            warm.expect_call();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(call.forced(), 1);
    }

    /// An encoder starts with a keyframe: a call on a stream that has just started asks for
    /// none, neither when it is expected nor as it connects.
    #[test]
    fn a_call_on_a_starting_stream_forces_no_keyframe() {
        let call = TestCall::new();
        // Its first frame (a keyframe) has come, a moment ago.
        std::thread::sleep(Duration::from_millis(100));
        let warm = call.encoders.warm(Codec::Vp8).unwrap();
        warm.expect_call();
        call.subscription.connecting();
        std::thread::sleep(Duration::from_millis(250));
        call.connected();
        assert_eq!(call.forced(), 0);
    }

    #[test]
    fn a_branch_is_fed_only_once_running_and_connected_and_its_frames_pass_a_syncing_clocksync() {
        let encoders = opus_encoders(2000);
        let mut branch = encoders.branch(Codec::Opus, 111, || {}).unwrap();
        let subscribers = |e: &Encoders| e.streams().first().map_or(0, |s| s.subscribers);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(subscribers(&encoders), 0, "fed before it runs");

        // What webrtcbin does with each send stream: a clocksync that waits for each
        // buffer's running time.
        let pipeline = gst::Pipeline::new();
        let clocksync = gst::ElementFactory::make("clocksync")
            .property("sync", true)
            .build()
            .unwrap();
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .unwrap();
        pipeline.add_many([&clocksync, &sink]).unwrap();
        clocksync.link(&sink).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let passed = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&passed);
        sink.static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                count.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        pipeline.add(&branch.bin).unwrap();
        branch
            .bin
            .static_pad("src")
            .unwrap()
            .link(&clocksync.static_pad("sink").unwrap())
            .unwrap();
        branch.bin.sync_state_with_parent().unwrap();
        let subscription = branch.subscription.take().unwrap();
        subscription.activate();
        assert_eq!(subscribers(&encoders), 1);
        // A call's branch is fed directly, and only once its connection is up.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(passed.load(Ordering::Relaxed), 0, "fed before connected");
        subscription.start_at_keyframe();
        // 20 ms Opus frames: ~50 in a second, none held back.
        let deadline = Instant::now() + Duration::from_secs(5);
        while passed.load(Ordering::Relaxed) < 25 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(passed.load(Ordering::Relaxed) >= 25, "frames held back");
        drop(subscription);
        pipeline.set_state(gst::State::Null).unwrap();
        encoders.stop_all();
    }

    /// A call that has built its branch but not yet activated it holds the stream: the
    /// last active viewer leaving must not stop it under the new one (found by the soak:
    /// a call placed as the linger ran out ended with `source-error`).
    #[test]
    fn a_branch_not_yet_activated_keeps_the_stream_alive() {
        let encoders = opus_encoders(0);
        let mut first = encoders.branch(Codec::Opus, 111, || {}).unwrap();
        let first = first.subscription.take().unwrap();
        first.activate();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&failed);
        let mut second = encoders
            .branch(Codec::Opus, 111, move || {
                flag.store(true, Ordering::Relaxed)
            })
            .unwrap();
        // No runtime here: the last viewer leaving decides on a thread of its own, once the
        // linger (0 here) has passed, whether to stop.
        drop(first);
        let second = second.subscription.take().unwrap();
        second.activate();
        assert!(
            !failed.load(Ordering::Relaxed),
            "the new call lost its source"
        );
        assert_eq!(encoders.streams().first().map(|s| s.state), Some("running"));
        drop(second);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !encoders.streams().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            encoders.streams().is_empty(),
            "stopped once nobody holds it"
        );
    }
}
