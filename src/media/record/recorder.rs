//! One camera's recorder: a thread of its own that taps the camera's shared encoder (its best
//! rendition: no encode of its own) and writes segments of `segment_secs`, each from a
//! keyframe, cut where the next segment's keyframe begins (asked for just before), so that one
//! segment ends exactly where the next starts.
//!
//! The shared stream hands frames over through a bounded queue it never waits on; the thread
//! does the blocking work (files, state changes, retention). Frames are stamped by when they
//! came from the encoder, and each is written once the next has come (its duration is then
//! known: no gap, no overlap between frames or segments).
//!
//! A write that fails (a full, gone or read-only disk) ends the segment where it got to and
//! pauses recording — a log line, `recording_paused` and the recorder's state — and it is
//! tried again every [`RETRY`] until a segment can be written: the calls on the camera never
//! notice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::preroll::{self, Preroll};
use super::segment::SegmentWriter;
use super::store::{Container, Segment, SegmentId, Store};
use super::tapped::{Audio, has_opus, recorded_codec};
use super::writing::Writing;
use super::{Settings, mp4};
use crate::media::camera_events::{CameraEvent, OnCameraEvent};
use crate::media::cameras::{Camera, Cameras};
use crate::media::codecs::Codec;
use crate::media::motion::Motions;
use crate::media::shared::{Subscription, Tapped};
use crate::sync::lock;

/// Frames waiting for the recorder's thread at most (4 s at 30 fps): a thread held up longer
/// (a slow disk) loses frames, and the segment goes on from the next keyframe.
const QUEUE: usize = 120;
// The next segment's keyframe is asked for a frame and a half before its time (an encoder
// makes it of the next picture it takes), and a keyframe within half a frame of the time
// starts the next segment: segments end within a frame of `segment_secs` (measured: a 300 ms
// lead cut 4 s segments at 3.77 s).
/// Asked again if it has not come within this.
const ASK_AGAIN: Duration = Duration::from_secs(1);
/// No frame for this long: the segment ends (the source is lost or the camera replaced).
const SILENCE: Duration = Duration::from_secs(3);
/// A paused recorder tries again this often.
const RETRY: Duration = Duration::from_secs(5);

enum Message {
    Tapped(Tapped),
    /// The camera's Opus.
    Audio(Tapped),
    /// The shared stream gave up for good.
    Failed,
}

/// What a recorder is doing, for `GET /api/recordings` and the page.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RecorderState {
    /// `recording`, `waiting` (no frames yet), `standby` (`mode = "motion"`, nothing moves)
    /// or `paused`.
    pub state: &'static str,
    /// Why it is paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A running recorder; dropping it does not stop it: [`Recorder::stop`].
pub struct Recorder {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<RecorderState>>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    pub fn start(
        camera: String,
        cameras: Arc<Cameras>,
        store: Arc<Store>,
        settings: Settings,
        on_event: OnCameraEvent,
        motions: Option<Arc<Motions>>,
    ) -> std::io::Result<Recorder> {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(RecorderState {
            state: "waiting",
            reason: None,
        }));
        let mut worker = Worker {
            camera: camera.clone(),
            cameras,
            store,
            settings,
            stop: Arc::clone(&stop),
            state: Arc::clone(&state),
            paused_until: None,
            on_event,
            motions,
            preroll: Preroll::default(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("record-{camera}"))
            .spawn(move || worker.run())?;
        Ok(Recorder {
            stop,
            state,
            thread: Some(thread),
        })
    }

    pub fn state(&self) -> RecorderState {
        lock(&self.state).clone()
    }

    /// Ends the segment being written and the thread (blocking: up to a few seconds).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    camera: String,
    cameras: Arc<Cameras>,
    store: Arc<Store>,
    settings: Settings,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<RecorderState>>,
    /// Paused (a write failed): no segment before this.
    paused_until: Option<Instant>,
    on_event: OnCameraEvent,
    /// Motion now, for `mode = "motion"`.
    motions: Option<Arc<Motions>>,
    /// In `mode = "motion"`, what is held while nothing moves.
    preroll: Preroll,
}

/// Why a subscription's loop ended.
enum Ended {
    Stop,
    /// Resubscribe (the stream failed, or the camera was replaced).
    Again,
}

impl Worker {
    fn run(&mut self) {
        tracing::info!(camera = self.camera, "recording");
        let mut wait = Duration::from_secs(1);
        while !self.stopped() {
            let Some(camera) = self.cameras.get(Some(&self.camera)) else {
                self.sleep(Duration::from_secs(1));
                continue;
            };
            let Some(codec) = recorded_codec(&camera) else {
                self.set_state(
                    "paused",
                    Some("the camera has no H.264 video to record".into()),
                );
                self.sleep(Duration::from_secs(30));
                continue;
            };
            let (sender, receiver) = sync_channel(QUEUE);
            let failed: SyncSender<Message> = sender.clone();
            let audio_sender = sender.clone();
            let tapped = camera.encoders.tap(
                codec,
                move |frame| sender.try_send(Message::Tapped(frame)).is_ok(),
                move || {
                    let _ = failed.try_send(Message::Failed);
                },
            );
            let subscription = match tapped {
                Ok(subscription) => subscription,
                Err(err) => {
                    tracing::warn!(camera = self.camera, %err, "cannot record yet; trying again");
                    self.sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            subscription.activate();
            // The microphone alongside, when the camera has one: a lost microphone leaves the
            // video recording (segments go on without audio).
            let audio = has_opus(&camera)
                .then(|| {
                    camera.encoders.tap(
                        Codec::Opus,
                        move |frame| audio_sender.try_send(Message::Audio(frame)).is_ok(),
                        || {},
                    )
                })
                .and_then(Result::ok);
            if let Some(audio) = &audio {
                audio.activate();
            }
            wait = Duration::from_secs(1);
            let ended = self.record(&camera, &subscription, &receiver);
            drop(audio);
            drop(subscription);
            if matches!(ended, Ended::Stop) {
                break;
            }
        }
        self.set_state("waiting", None);
        tracing::info!(camera = self.camera, "recording stopped");
    }

    /// Writes segments from one subscription until it ends.
    fn record(
        &mut self,
        camera: &Arc<Camera>,
        subscription: &Subscription,
        frames: &Receiver<Message>,
    ) -> Ended {
        let mut caps: Option<gst::Caps> = None;
        let mut audio = Audio::default();
        let mut writing: Option<Writing> = None;
        let mut asked_at: Option<Instant> = None;
        let mut last_frame = Instant::now();
        loop {
            if self.stopped() {
                self.finish(writing.take(), None);
                return Ended::Stop;
            }
            let tapped = match frames.recv_timeout(Duration::from_millis(250)) {
                Ok(Message::Tapped(tapped)) => tapped,
                Ok(Message::Audio(Tapped::Caps(caps))) => {
                    audio.caps = Some(caps);
                    continue;
                }
                Ok(Message::Audio(Tapped::Frame { buffer, came, .. })) => {
                    audio.last = Some(Instant::now());
                    if let Some(w) = writing.as_mut()
                        && let Err(why) = w.write_audio(came, buffer)
                    {
                        let ended = writing.take();
                        self.pause(ended, &why);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {
                    if last_frame.elapsed() >= SILENCE {
                        if writing.is_some() {
                            tracing::info!(camera = self.camera, "no frames: the segment ends");
                            self.finish(writing.take(), None);
                        }
                        let replaced = self
                            .cameras
                            .get(Some(&self.camera))
                            .is_none_or(|now| !Arc::ptr_eq(&now.encoders, &camera.encoders));
                        if replaced {
                            return Ended::Again;
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) | Ok(Message::Failed) => {
                    self.finish(writing.take(), None);
                    self.sleep(Duration::from_secs(1));
                    return Ended::Again;
                }
            };
            let (buffer, keyframe, came) = match tapped {
                Tapped::Caps(new) => {
                    caps = Some(new);
                    continue;
                }
                Tapped::Frame {
                    buffer,
                    keyframe,
                    came,
                } => (buffer, keyframe, came),
            };
            last_frame = Instant::now();
            let Some(frame_caps) = caps.clone() else {
                continue;
            };
            if let Some(w) = writing.as_mut() {
                if w.has_audio() && !audio.flowing() {
                    // The microphone went quiet: the muxer would wait for it. This segment
                    // ends; the next (from a keyframe) goes on without audio.
                    tracing::info!(camera = self.camera, "no audio: the segment ends here");
                    let ended = writing.take();
                    self.finish(ended, Some(came));
                    subscription.request_keyframe();
                    continue;
                }
                if self.motion_over(w) {
                    // `post` after the motion: this frame goes to the pre-roll.
                    tracing::debug!(camera = self.camera, "motion over: the recording ends");
                    let ended = writing.take();
                    self.finish(ended, Some(came));
                    self.set_state("standby", None);
                } else {
                    let due = came.saturating_duration_since(w.started) + w.frame_interval / 2
                        >= self.settings.segment;
                    if keyframe && (due || w.caps != frame_caps) {
                        // This keyframe begins the next segment: the last frame lasts until it.
                        let still_since = w.still_since;
                        let ended = writing.take();
                        self.finish(ended, Some(came));
                        if self.settings.motion.is_some() {
                            // Motion (or its `post`) goes on into the next segment, at once.
                            let first = vec![preroll::Held {
                                buffer,
                                keyframe,
                                came,
                            }];
                            writing = self.open_from(frame_caps, first, &audio);
                            if let Some(w) = writing.as_mut() {
                                w.still_since = still_since;
                            }
                            continue;
                        }
                    } else {
                        if let Err(why) = w.write_previous(came, buffer) {
                            let ended = writing.take();
                            self.pause(ended, &why);
                            continue;
                        }
                        if came.saturating_duration_since(w.started) + w.frame_interval * 3 / 2
                            >= self.settings.segment
                            && w.asked_at.is_none_or(|at| at.elapsed() >= ASK_AGAIN)
                        {
                            subscription.request_keyframe();
                            w.asked_at = Some(Instant::now());
                        }
                        w.progress(&self.store, &self.camera);
                        continue;
                    }
                }
            }
            // No segment open.
            let paused = self
                .paused_until
                .is_some_and(|until| Instant::now() < until);
            if let Some(motion) = self.settings.motion {
                // Held until motion comes, `pre` back from a keyframe on.
                let held = preroll::Held {
                    buffer,
                    keyframe,
                    came,
                };
                self.preroll.push(&frame_caps, held, motion.pre);
                if paused || !self.motion_now() {
                    continue;
                }
                match self.preroll.take() {
                    Some((caps, frames)) => writing = self.open_from(caps, frames, &audio),
                    // Nothing held (a recording just ended): from the next keyframe, now.
                    None => {
                        if asked_at.is_none_or(|at| at.elapsed() >= ASK_AGAIN) {
                            subscription.request_keyframe();
                            asked_at = Some(Instant::now());
                        }
                    }
                }
                continue;
            }
            if paused {
                continue;
            }
            if !keyframe {
                if asked_at.is_none_or(|at| at.elapsed() >= ASK_AGAIN) {
                    subscription.request_keyframe();
                    asked_at = Some(Instant::now());
                }
                continue;
            }
            let first = vec![preroll::Held {
                buffer,
                keyframe,
                came,
            }];
            writing = self.open_from(frame_caps, first, &audio);
        }
    }

    /// Opens a segment with `frames` (a keyframe first) written; `None` when it cannot be
    /// (recording pauses).
    fn open_from(
        &mut self,
        caps: gst::Caps,
        frames: Vec<preroll::Held>,
        audio: &Audio,
    ) -> Option<Writing> {
        let mut frames = frames.into_iter();
        let first = frames.next()?;
        let audio_caps = audio.caps.as_ref().filter(|_| audio.flowing());
        let mut w = match self.open(caps, audio_caps, first.buffer, first.came) {
            Ok(w) => w,
            Err(why) => {
                self.pause(None, &why);
                return None;
            }
        };
        for frame in frames {
            if let Err(why) = w.write_previous(frame.came, frame.buffer) {
                self.pause(Some(w), &why);
                return None;
            }
        }
        if self.paused_until.take().is_some() {
            tracing::info!(camera = self.camera, "recording resumed");
            self.raise("recording-resumed", None);
        }
        self.set_state("recording", None);
        crate::metrics::get()
            .recording_paused
            .get_or_create(&self.label())
            .set(0);
        Some(w)
    }

    /// Motion on the camera now (as its watcher sees it).
    fn motion_now(&self) -> bool {
        self.motions
            .as_ref()
            .and_then(|m| m.state(&self.camera))
            .is_some_and(|state| state.active)
    }

    /// In `mode = "motion"`: whether the motion has been over for `post`.
    fn motion_over(&self, w: &mut Writing) -> bool {
        let Some(motion) = self.settings.motion else {
            return false;
        };
        if self.motion_now() {
            w.still_since = None;
            return false;
        }
        w.still_since.get_or_insert_with(Instant::now).elapsed() >= motion.post
    }

    /// Opens a segment that starts with this keyframe; retention runs first.
    fn open(
        &self,
        caps: gst::Caps,
        audio: Option<&gst::Caps>,
        keyframe: gst::Buffer,
        came: Instant,
    ) -> Result<Writing, String> {
        self.store
            .enforce(self.settings.keep, self.settings.min_free);
        let start = OffsetDateTime::now_utc() - came.elapsed();
        let id = SegmentId::new(&self.camera, start);
        let (text, path) = self
            .store
            .create_path(&id, Container::Mp4)
            .map_err(|e| format!("cannot create the recordings' directory: {e}"))?;
        let writer = SegmentWriter::open(&path, &caps, audio).map_err(|e| e.to_string())?;
        let segment = Segment {
            id: text,
            camera: self.camera.clone(),
            start: id.start,
            duration: Duration::ZERO,
            bytes: 0,
            container: Container::Mp4,
            writing: true,
        };
        self.store.writing(segment.clone());
        tracing::debug!(recording = segment.id, "segment started");
        Ok(Writing {
            writer: Some(writer),
            segment,
            path,
            caps,
            started: came,
            last: Some((keyframe, came)),
            frame_interval: Duration::from_millis(33),
            asked_at: None,
            progress_at: Instant::now(),
            bytes_counted: 0,
            still_since: None,
            audio_next: None,
        })
    }

    /// Ends a segment; `next`: when the frame that begins the next one came (the last frame
    /// lasts until then).
    fn finish(&mut self, writing: Option<Writing>, next: Option<Instant>) {
        let Some(mut w) = writing else {
            return;
        };
        let end = next.unwrap_or_else(|| {
            w.last
                .as_ref()
                .map_or(w.started, |(_, came)| *came + w.frame_interval)
        });
        let finished = w.write_last(end).and_then(|()| match w.writer.take() {
            Some(writer) => writer.finish(),
            None => Ok(()),
        });
        match finished {
            Ok(()) => {
                w.segment.duration = end.saturating_duration_since(w.started);
                w.segment.bytes = std::fs::metadata(&w.path).map_or(0, |m| m.len());
                w.count_bytes(&self.camera);
                crate::metrics::get()
                    .recording_segments
                    .get_or_create(&self.label())
                    .inc();
                tracing::debug!(
                    recording = w.segment.id,
                    duration_s = w.segment.duration.as_secs_f64(),
                    "segment written"
                );
                self.store.finished(w.segment, true);
            }
            Err(why) => self.pause(Some(w), &why),
        }
    }

    /// A write failed: the segment keeps what reached the disk (its torn end cut off) and
    /// recording pauses.
    fn pause(&mut self, writing: Option<Writing>, why: &str) {
        if let Some(mut w) = writing {
            drop(w.writer.take());
            let repaired = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&w.path)
                .map_err(mp4::Mp4Error::from)
                .and_then(|mut file| mp4::scan_and_repair(&mut file));
            let keep = match repaired {
                Ok(scanned) if !scanned.duration.is_zero() => {
                    w.segment.duration = scanned.duration;
                    w.segment.bytes = scanned.len;
                    true
                }
                _ => {
                    let _ = std::fs::remove_file(&w.path);
                    false
                }
            };
            self.store.finished(w.segment, keep);
        }
        let first = self.paused_until.is_none();
        self.paused_until = Some(Instant::now() + RETRY);
        if first {
            tracing::warn!(
                camera = self.camera,
                reason = why,
                "recording paused: cannot write (tried again every {} s; live calls go on)",
                RETRY.as_secs()
            );
            self.raise("recording-paused", Some(why.to_string()));
        }
        self.set_state("paused", Some(why.to_string()));
        crate::metrics::get()
            .recording_paused
            .get_or_create(&self.label())
            .set(1);
    }

    fn label(&self) -> crate::metrics::CameraLabel {
        crate::metrics::CameraLabel {
            camera: self.camera.clone(),
        }
    }

    fn raise(&self, event: &'static str, reason: Option<String>) {
        (self.on_event)(CameraEvent {
            event,
            camera: self.camera.clone(),
            reason,
        });
    }

    fn set_state(&self, state: &'static str, reason: Option<String>) {
        *lock(&self.state) = RecorderState { state, reason };
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `how_long`, or less if the recorder is stopped.
    fn sleep(&self, how_long: Duration) {
        let until = Instant::now() + how_long;
        while !self.stopped() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
        }
    }
}
