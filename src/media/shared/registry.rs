//! The shared streams by codec: which encoder each codec uses (probed), starting a stream
//! for its first holder, and stopping it `linger` after its last.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::fanout::forward_keyframe_requests;
use super::feed::{DirectFeed, Feed, Tap, Tapped};
use super::reprobe;
use super::stream::{Life, SharedStream, StreamInfo, Subscriber};
use super::subscription::{Subscription, Warm};
use crate::media::codecs::{Codec, MediaKind};
use crate::media::encoder::{self, Probe};
use crate::media::profile::Profile;
use crate::media::send::{self, SendBranch};
use crate::media::{MediaError, fragments};
use crate::sync::lock;

/// A call's send branch and, with a shared encoder, the subscription that feeds it.
pub struct FedBranch {
    pub branch: SendBranch,
    /// Keeps the shared encoder feeding the branch; dropping it unsubscribes. None: the
    /// branch has an encoder of its own (`per_viewer_encoder`).
    pub subscription: Option<Subscription>,
}

/// Where calls get their send branches: shared encoders, or (`per_viewer_encoder = true`)
/// a capture and encoder of their own.
pub struct Encoders {
    /// The camera's view of the profile; a reload that changes only rates swaps it
    /// (`retune.rs`).
    pub(super) profile: Mutex<Arc<Profile>>,
    /// The encoder element chosen for each usable codec, by probing.
    pub(super) chosen: Mutex<HashMap<Codec, String>>,
    /// Codecs whose probes ran out of time, to be probed again (`reprobe`).
    pub(super) pending: Mutex<HashMap<Codec, reprobe::Pending>>,
    pub(super) streams: Mutex<HashMap<Codec, Arc<SharedStream>>>,
    pub(super) linger: Duration,
    /// The runtime the linger timers run on when a stream is let go of elsewhere (the RTSP
    /// server's GLib thread): made where the encoders were (probing runs on tokio's
    /// blocking pool).
    pub(super) runtime: Option<tokio::runtime::Handle>,
    pub(super) next_id: AtomicU64,
    /// Stopped for good (`stop_all`: shutdown, or the camera taken out): no stream starts
    /// again (a client arriving late must not hold the device a new camera needs).
    pub(super) retired: AtomicBool,
    pub(super) me: Weak<Encoders>,
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
        Encoders::probe_with(profile, &mut encoder::Probed::new())
    }

    /// [`Encoders::probe`], reusing (and adding to) the results of earlier probes.
    pub fn probe_with(
        profile: Arc<Profile>,
        probed: &mut encoder::Probed,
    ) -> Result<(Arc<Encoders>, Vec<Probe>), MediaError> {
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
                let (encoder, tried) = encoder::choose_with(codec, pinned, excluded, probed);
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
            profile: Mutex::new(profile),
            streams: Mutex::default(),
            next_id: AtomicU64::new(1),
            retired: AtomicBool::new(false),
            me: Weak::clone(me),
        })
    }

    /// The camera's view of the profile, as it is now.
    pub fn profile(&self) -> Arc<Profile> {
        Arc::clone(&lock(&self.profile))
    }

    /// Forgets a stream that stopped for good, so the next call starts a fresh one.
    pub(super) fn forget(&self, stream: &Arc<SharedStream>) {
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
            MediaKind::Video => self.profile().video.as_ref().map(|v| v.codecs.clone()),
            MediaKind::Audio => self.profile().audio.as_ref().map(|a| a.codecs.clone()),
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

    pub(super) fn encoder_for(&self, codec: Codec) -> Result<String, MediaError> {
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
    ) -> Result<FedBranch, MediaError> {
        let factory = self.encoder_for(codec)?;
        let profile = self.profile();
        if profile.per_viewer_encoder {
            let own = match codec.kind() {
                MediaKind::Video => profile
                    .video
                    .as_ref()
                    .map(|video| send::video(video, codec, &factory, pt)),
                MediaKind::Audio => profile
                    .audio
                    .as_ref()
                    .map(|audio| send::audio(audio, codec, &factory, pt)),
            }
            .ok_or(MediaError::NoSource(codec))?;
            return own.map(|branch| FedBranch {
                branch,
                subscription: None,
            });
        }
        let branch = send::build(&fragments::payloader(codec, pt), codec, pt)?;
        let feed = Feed::Direct(DirectFeed::new(&branch.bin)?);
        let subscription = Some(self.subscribe_feed(codec, feed, on_failure)?);
        Ok(FedBranch {
            branch,
            subscription,
        })
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

    /// A subscriber of the daemon's own (the recorder): `tap` is handed each frame of the
    /// stream's first rung (its best), from a keyframe asked for now, once the subscription
    /// is [activated](Subscription::activate); it must never block.
    pub fn tap(
        self: &Arc<Self>,
        codec: Codec,
        tap: impl Fn(Tapped) -> bool + Send + Sync + 'static,
        on_failure: impl Fn() + Send + Sync + 'static,
    ) -> Result<Subscription, MediaError> {
        self.subscribe_feed(codec, Feed::Tap(Tap(Box::new(tap))), on_failure)
    }

    pub(super) fn subscribe_feed(
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
            loss_percent: AtomicU8::new(0),
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
    pub(super) fn stream(&self, codec: Codec) -> Result<Arc<SharedStream>, MediaError> {
        let factory = self.encoder_for(codec)?;
        let stream = {
            let mut streams = lock(&self.streams);
            // Read under the streams' lock, which `stop_all` takes after setting it.
            if self.retired.load(Ordering::Acquire) {
                return Err(MediaError::Retired);
            }
            if let Some(stream) = streams.get(&codec) {
                stream.holders.fetch_add(1, Ordering::Relaxed);
                return Ok(Arc::clone(stream));
            }
            let stream = SharedStream::new(
                &self.profile(),
                codec,
                factory,
                Weak::clone(&self.me),
                self.runtime.clone(),
            );
            stream.holders.fetch_add(1, Ordering::Relaxed);
            streams.insert(codec, Arc::clone(&stream));
            stream
        };
        match stream.start() {
            Ok(()) => Ok(stream),
            // A microphone missing now may be plugged in during the call: it goes on
            // without audio meanwhile.
            Err(err @ MediaError::WouldNotStart(_)) if stream.retries_for_ever() => {
                stream.on_source_failure(err.to_string());
                Ok(stream)
            }
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
    pub(super) fn release(&self, stream: &SharedStream) -> bool {
        let _streams = lock(&self.streams);
        stream.holders.fetch_sub(1, Ordering::Relaxed) == 1
    }

    /// Stops every shared stream now, without lingering (the daemon is shutting down, or
    /// the camera was taken out): no codec is probed again after this.
    pub fn stop_all(&self) {
        self.retired.store(true, Ordering::Release);
        lock(&self.pending).clear();
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
                    camera: s.profile().name.clone(),
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
    pub(super) fn schedule_stop(self: Arc<Self>, stream: Arc<SharedStream>) {
        let linger = self.linger;
        let runtime = self.runtime.clone();
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
        crate::media::work::after(linger, runtime.as_ref(), stop);
    }
}
