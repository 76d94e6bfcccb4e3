//! Recording: each recorded camera's shared encoder gets one more subscriber, a recorder
//! ([`recorder`]) writing segments of fragmented MP4 ([`segment`]) into a directory whose
//! index ([`store`]) lists, serves, deletes and ages them out; a segment cut short by a crash
//! is repaired at the next start ([`mp4`]). Nothing here knows HTTP: the service serves it.

pub mod mp4;
mod preroll;
mod recorder;
mod segment;
pub mod splice;
pub mod store;
mod tapped;
#[cfg(test)]
mod tests;
mod writing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use recorder::RecorderState;
pub use store::{Segment, Store};

use crate::media::camera_events::OnCameraEvent;
use crate::media::cameras::Cameras;
use crate::media::motion::Motions;
use crate::sync::lock;
use recorder::Recorder;

/// How recordings are made and kept.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A segment's length.
    pub segment: Duration,
    /// Segments older than this are deleted (none: kept until space runs short).
    pub keep: Option<Duration>,
    /// The oldest segments are deleted while the file system has less free than this (bytes).
    pub min_free: u64,
    /// The cameras recorded (none: all).
    pub cameras: Option<Vec<String>>,
    /// `mode = "motion"`: recorded only while a camera's motion lasts (none: continuously).
    pub motion: Option<MotionMode>,
}

/// `mode = "motion"`: how much before and after the motion is kept.
#[derive(Debug, Clone, Copy)]
pub struct MotionMode {
    /// Kept before the motion started (from the keyframe at least this far back).
    pub pre: Duration,
    /// Kept after it ended.
    pub post: Duration,
}

/// The recorders of every recorded camera, and their store.
pub struct Recorders {
    store: Arc<Store>,
    cameras: Arc<Cameras>,
    settings: Settings,
    on_event: OnCameraEvent,
    motions: Option<Arc<Motions>>,
    running: Mutex<HashMap<String, Recorder>>,
}

impl Recorders {
    /// Starts a recorder for each recorded camera (blocking: threads started).
    /// `on_event`: `recording-paused` and `recording-resumed`; `motions`: what
    /// `mode = "motion"` records by.
    pub fn start(
        store: Arc<Store>,
        cameras: Arc<Cameras>,
        settings: Settings,
        on_event: OnCameraEvent,
        motions: Option<Arc<Motions>>,
    ) -> Arc<Recorders> {
        let recorders = Arc::new(Recorders {
            store,
            cameras,
            settings,
            on_event,
            motions,
            running: Mutex::default(),
        });
        recorders.sync();
        recorders
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn motions(&self) -> Option<&Arc<Motions>> {
        self.motions.as_ref()
    }

    /// After a reload: recorders for cameras that came, none for those that went (blocking:
    /// a stopped recorder writes its segment's end).
    pub fn sync(&self) {
        let names: Vec<String> = self
            .cameras
            .all()
            .iter()
            .map(|c| c.name.as_str().to_string())
            .filter(|name| {
                self.settings
                    .cameras
                    .as_ref()
                    .is_none_or(|wanted| wanted.contains(name))
            })
            .collect();
        let gone: Vec<Recorder> = {
            let mut running = lock(&self.running);
            let gone: Vec<String> = running
                .keys()
                .filter(|name| !names.contains(name))
                .cloned()
                .collect();
            for name in &names {
                if running.contains_key(name) {
                    continue;
                }
                match Recorder::start(
                    name.clone(),
                    Arc::clone(&self.cameras),
                    Arc::clone(&self.store),
                    self.settings.clone(),
                    Arc::clone(&self.on_event),
                    self.motions.clone(),
                ) {
                    Ok(recorder) => {
                        running.insert(name.clone(), recorder);
                    }
                    Err(err) => tracing::error!(camera = name, %err, "cannot start a recorder"),
                }
            }
            gone.iter()
                .filter_map(|name| running.remove(name))
                .collect()
        };
        for recorder in gone {
            recorder.stop();
        }
    }

    /// Each recorded camera's recorder state.
    pub fn states(&self) -> Vec<(String, RecorderState)> {
        let mut states: Vec<(String, RecorderState)> = lock(&self.running)
            .iter()
            .map(|(name, r)| (name.clone(), r.state()))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }

    /// Ends every segment being written (blocking).
    pub fn stop_all(&self) {
        let all: Vec<Recorder> = lock(&self.running).drain().map(|(_, r)| r).collect();
        for recorder in all {
            recorder.stop();
        }
    }
}
