//! One camera's motion watch: a thread that keeps the camera's capture running (a `Warm`
//! hold, as a ringing call's), keeps a probe on the pad its raw pictures pass (a new pad
//! after each restart or reload), and ends motion on time when no picture comes. The probe
//! itself runs on the capture's streaming thread: it samples the picture at most five times a
//! second, never waits for a lock (a look that finds the detector busy is skipped) and raises
//! events through a function that never blocks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use gst::prelude::*;

use super::detect::{Change, Detector};
use super::grid;
use crate::media::camera_events::{CameraEvent, OnCameraEvent};
use crate::media::cameras::{Camera, Cameras};
use crate::media::codecs::{Codec, MediaKind};
use crate::media::profile::MotionSettings;
use crate::media::shared::Warm;
use crate::sync::lock;

/// Motions kept per camera for the page's timeline (the newest; a day of a busy street).
const HISTORY: usize = 512;

/// Looks at most this often.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// The thread checks the camera, the pad and the time this often.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// A camera's motion, for `GET /api/cameras`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MotionState {
    /// Motion now.
    pub active: bool,
    /// When the last motion started and ended (milliseconds since the Unix epoch).
    pub last_start_ms: Option<u64>,
    pub last_end_ms: Option<u64>,
    /// The share of the picture that changed at the last look (0–1).
    pub changed: f64,
}

/// What the probe and the thread share.
struct Shared {
    camera: String,
    detector: Mutex<Detector>,
    last_look: Mutex<Option<Instant>>,
    state: Mutex<MotionState>,
    /// Motions (start, end: none while it goes on), in milliseconds since the Unix epoch.
    history: Mutex<std::collections::VecDeque<(u64, Option<u64>)>>,
    on_event: OnCameraEvent,
}

impl Shared {
    fn report(&self, change: Change) {
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let event = {
            let mut state = lock(&self.state);
            match change {
                Change::Start => {
                    state.active = true;
                    state.last_start_ms = Some(now_ms);
                    let mut history = lock(&self.history);
                    if history.len() >= HISTORY {
                        history.pop_front();
                    }
                    history.push_back((now_ms, None));
                    "motion-start"
                }
                Change::End => {
                    state.active = false;
                    state.last_end_ms = Some(now_ms);
                    if let Some(last) = lock(&self.history).back_mut() {
                        last.1.get_or_insert(now_ms);
                    }
                    "motion-end"
                }
            }
        };
        tracing::info!(camera = self.camera, event, "motion");
        (self.on_event)(CameraEvent {
            event,
            camera: self.camera.clone(),
            reason: None,
        });
    }

    /// On the streaming thread: a picture passes.
    fn picture(&self, pad: &gst::Pad, buffer: &gst::BufferRef) {
        let now = Instant::now();
        {
            let Ok(mut last) = self.last_look.try_lock() else {
                return;
            };
            if last.is_some_and(|at| now.saturating_duration_since(at) < LOOK_EVERY) {
                return;
            }
            *last = Some(now);
        }
        let Some(info) = pad
            .current_caps()
            .and_then(|caps| gst_video::VideoInfo::from_caps(&caps).ok())
        else {
            return;
        };
        let Some(samples) = grid::sample(buffer, &info) else {
            return;
        };
        let (change, share) = {
            let Ok(mut detector) = self.detector.try_lock() else {
                return;
            };
            let change = detector.look(samples, now);
            (change, detector.last_share)
        };
        lock(&self.state).changed = share;
        if let Some(change) = change {
            self.report(change);
        }
    }
}

pub struct Watcher {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    pub fn start(
        camera: &str,
        cameras: &Arc<Cameras>,
        on_event: &OnCameraEvent,
    ) -> std::io::Result<Watcher> {
        let settings = cameras
            .get(Some(camera))
            .and_then(|c| c.profile.motion.clone())
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            camera: camera.to_string(),
            detector: Mutex::new(Detector::new(&settings)),
            last_look: Mutex::new(None),
            state: Mutex::default(),
            history: Mutex::default(),
            on_event: Arc::clone(on_event),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut looping = Looping {
            shared: Arc::clone(&shared),
            cameras: Arc::clone(cameras),
            stop: Arc::clone(&stop),
            settings,
            held: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("motion-{camera}"))
            .spawn(move || looping.run())?;
        Ok(Watcher {
            shared,
            stop,
            thread: Some(thread),
        })
    }

    pub fn state(&self) -> MotionState {
        lock(&self.shared.state).clone()
    }

    /// The motions kept (start, end), oldest first.
    pub fn history(&self) -> Vec<(u64, Option<u64>)> {
        lock(&self.shared.history).iter().copied().collect()
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the thread holds on the camera it watches.
struct Held {
    camera: Arc<Camera>,
    /// Keeps the capture running.
    _warm: Warm,
    codec: Codec,
    /// The pad the probe is on, and the probe.
    probe: Option<(gst::Pad, gst::PadProbeId)>,
}

impl Held {
    fn detach(&mut self) {
        if let Some((pad, id)) = self.probe.take() {
            pad.remove_probe(id);
        }
    }
}

struct Looping {
    shared: Arc<Shared>,
    cameras: Arc<Cameras>,
    stop: Arc<AtomicBool>,
    settings: MotionSettings,
    held: Option<Held>,
}

impl Looping {
    fn run(&mut self) {
        tracing::info!(camera = self.shared.camera, "watching for motion");
        let mut wait_until = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(CHECK_EVERY);
            let change = lock(&self.shared.detector).tick(Instant::now());
            if let Some(change) = change {
                self.shared.report(change);
            }
            if Instant::now() < wait_until {
                continue;
            }
            if let Err(err) = self.follow() {
                tracing::warn!(camera = self.shared.camera, %err, "motion: cannot watch yet");
                wait_until = Instant::now() + Duration::from_secs(5);
            }
        }
        if let Some(mut held) = self.held.take() {
            held.detach();
        }
        // No longer watched (motion turned off, the camera removed, shutdown): a motion going
        // on is over, as far as anyone listening knows.
        if lock(&self.shared.detector).active() {
            self.shared.report(Change::End);
        }
    }

    /// Follows the camera (replaced by a reload), its settings and its capture's pad.
    fn follow(&mut self) -> Result<(), crate::media::MediaError> {
        let Some(camera) = self.cameras.get(Some(&self.shared.camera)) else {
            if let Some(mut held) = self.held.take() {
                held.detach();
            }
            return Ok(());
        };
        let settings = camera.profile.motion.clone().unwrap_or_default();
        if settings != self.settings {
            let was_active =
                std::mem::replace(&mut *lock(&self.shared.detector), Detector::new(&settings))
                    .active();
            self.settings = settings;
            // A motion going on ends with the detector that saw it (the new one starts still).
            if was_active {
                self.shared.report(Change::End);
            }
        }
        let replaced = self
            .held
            .as_ref()
            .is_none_or(|held| !Arc::ptr_eq(&held.camera.encoders, &camera.encoders));
        if replaced {
            if let Some(mut held) = self.held.take() {
                held.detach();
            }
            let codec = *camera
                .encoders
                .codecs(MediaKind::Video)
                .first()
                .ok_or_else(|| crate::media::MediaError::Build("the camera has no video".into()))?;
            // Starts the capture (blocking: this thread is ours).
            let warm = camera.encoders.warm(codec)?;
            self.held = Some(Held {
                camera: Arc::clone(&camera),
                _warm: warm,
                codec,
                probe: None,
            });
        }
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        let pad = held.camera.encoders.raw_pictures(held.codec);
        let attached = held.probe.as_ref().map(|(p, _)| p.clone());
        if pad == attached {
            return Ok(());
        }
        held.detach();
        if let Some(pad) = pad {
            let shared = Arc::clone(&self.shared);
            let id = pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                if let Some(buffer) = info.buffer() {
                    shared.picture(pad, buffer);
                }
                gst::PadProbeReturn::Ok
            });
            if let Some(id) = id {
                held.probe = Some((pad, id));
            }
        }
        Ok(())
    }
}
