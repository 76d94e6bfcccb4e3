//! Motion detection: each camera whose profile enables it (`[motion]`, `[camera.motion]`) is
//! watched by a thread of its own that keeps the camera's capture running and puts a pad
//! probe where its raw pictures pass (before any encoding: no decode, no extra branch).
//! Five times a second the probe samples the picture's brightness on a 64×48 grid
//! ([`grid`]) and compares it with the last ([`detect`]); a change of state raises
//! `motion-start` or `motion-end` for the camera.

pub mod detect;
mod grid;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use watch::MotionState;

use crate::media::camera_events::OnCameraEvent;
use crate::media::cameras::Cameras;
use crate::sync::lock;
use watch::Watcher;

/// The motion watchers of every camera that has motion enabled.
pub struct Motions {
    cameras: Arc<Cameras>,
    on_event: OnCameraEvent,
    running: Mutex<HashMap<String, Watcher>>,
}

impl Motions {
    /// Starts watching every camera with motion enabled (blocking: threads started).
    pub fn start(cameras: Arc<Cameras>, on_event: OnCameraEvent) -> Arc<Motions> {
        let motions = Arc::new(Motions {
            cameras,
            on_event,
            running: Mutex::default(),
        });
        motions.sync();
        motions
    }

    /// After a reload: watchers for cameras that enable motion now, none for the others
    /// (blocking: a stopped watcher's thread is joined).
    pub fn sync(&self) {
        let wanted: Vec<String> = self
            .cameras
            .all()
            .iter()
            .filter(|c| c.profile.motion.as_ref().is_some_and(|m| m.enabled))
            .map(|c| c.name.as_str().to_string())
            .collect();
        let gone: Vec<Watcher> = {
            let mut running = lock(&self.running);
            for name in &wanted {
                if running.contains_key(name) {
                    continue;
                }
                match Watcher::start(name, &self.cameras, &self.on_event) {
                    Ok(watcher) => {
                        running.insert(name.clone(), watcher);
                    }
                    Err(err) => tracing::error!(camera = name, %err, "cannot watch for motion"),
                }
            }
            let stale: Vec<String> = running
                .keys()
                .filter(|name| !wanted.contains(name))
                .cloned()
                .collect();
            stale
                .iter()
                .filter_map(|name| running.remove(name))
                .collect()
        };
        for watcher in gone {
            watcher.stop();
        }
    }

    /// `camera`'s motion now (`None`: not watched).
    pub fn state(&self, camera: &str) -> Option<MotionState> {
        lock(&self.running).get(camera).map(Watcher::state)
    }

    /// Each watched camera's motions since it was first watched (the newest 512; not kept
    /// across restarts): (camera, start, end — none while it goes on), in milliseconds since
    /// the Unix epoch.
    pub fn history(&self) -> Vec<(String, u64, Option<u64>)> {
        let mut all: Vec<(String, u64, Option<u64>)> = lock(&self.running)
            .iter()
            .flat_map(|(name, w)| {
                w.history()
                    .into_iter()
                    .map(move |(start, end)| (name.clone(), start, end))
            })
            .collect();
        all.sort_by_key(|m| m.1);
        all
    }

    pub fn stop_all(&self) {
        let all: Vec<Watcher> = lock(&self.running).drain().map(|(_, w)| w).collect();
        for watcher in all {
            watcher.stop();
        }
    }
}
