//! SIGHUP re-reads the profile: new cameras come up, removed cameras' calls, WHEP sessions
//! and RTSP clients end (`camera-removed`), changed cameras restart (their calls end with
//! `camera-changed`), cameras whose video rates alone changed keep every call (their running
//! encoders take the new rates), and cameras that encode as before keep every call. A profile that does
//! not load is refused with its problem logged; everything goes on as it was.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::rtsp::Mounts;
use crate::media::cameras::{Camera, Reloaded};
use crate::media::profile::Profile;
use crate::protocol::EndReason;
use crate::session::CallManager;

/// What a profile reload changes.
pub struct ProfileReload {
    pub file: PathBuf,
    pub calls: Arc<CallManager>,
    pub rtsp: Option<Arc<Mounts>>,
    /// Cameras added are recorded and watched, those removed no longer.
    pub watching: Arc<super::watching::Watching>,
    /// Where the new cameras' encoder re-probes run, until `shutdown`.
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
}

/// How long a retired camera's encoders wait for its calls to end before they stop.
const RETIRE_WITHIN: Duration = Duration::from_secs(5);

impl ProfileReload {
    pub async fn reload(&self) {
        let file = self.file.clone();
        let cameras = Arc::clone(self.calls.cameras());
        // Loading checks devices and probing runs real encodes: blocking work.
        let done = tokio::task::spawn_blocking(move || -> anyhow::Result<Reloaded> {
            let profile = Profile::load(&file)?;
            profile.check_devices(&file)?;
            Ok(cameras.reload(&profile)?)
        })
        .await;
        let reloaded = match done {
            Ok(Ok(reloaded)) => reloaded,
            Ok(Err(err)) => {
                tracing::error!("profile not reloaded, keeping the one running: {err:#}");
                return;
            }
            Err(err) => {
                tracing::error!("profile not reloaded, keeping the one running: {err}");
                return;
            }
        };
        let names = |cameras: &[Arc<Camera>]| {
            cameras
                .iter()
                .map(|c| c.name.to_string())
                .collect::<Vec<_>>()
        };
        let changed: Vec<Arc<Camera>> = reloaded
            .changed
            .iter()
            .map(|(old, _)| Arc::clone(old))
            .collect();
        tracing::info!(
            kept = ?reloaded.kept,
            retuned = ?reloaded.retuned,
            added = ?names(&reloaded.added),
            changed = ?names(&changed),
            removed = ?names(&reloaded.removed),
            "profile reloaded"
        );
        let retired = [
            (&reloaded.removed, EndReason::CameraRemoved),
            (&changed, EndReason::CameraChanged),
        ];
        let mut replaced = Vec::new();
        for (cameras, reason) in retired {
            for camera in cameras.iter() {
                let ended = self.calls.end_camera(camera, reason);
                tracing::info!(camera = %camera.name, ended, %reason, "camera's calls ended");
                replaced.push(camera.name.to_string());
                self.retire(Arc::clone(camera));
            }
        }
        let fresh = reloaded
            .added
            .iter()
            .chain(reloaded.changed.iter().map(|(_, new)| new));
        for camera in fresh {
            self.tracker
                .spawn(Arc::clone(&camera.encoders).keep_reprobing(self.shutdown.clone()));
        }
        if let Some(rtsp) = &self.rtsp {
            let all = self.calls.cameras().all();
            // The RTSP server's calls take its locks: not on a worker.
            let rtsp = Arc::clone(rtsp);
            let _ = tokio::task::spawn_blocking(move || rtsp.serve(&all, &replaced)).await;
        }
        self.watching.sync().await;
    }

    /// Stops a camera taken out (or replaced) once its calls have let go of its encoders
    /// (bounded): a replaced capture device is free for the new one as soon as it can be.
    fn retire(&self, camera: Arc<Camera>) {
        let calls = Arc::clone(&self.calls);
        self.tracker.spawn(async move {
            let deadline = tokio::time::Instant::now() + RETIRE_WITHIN;
            while calls.on_camera(&camera) > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = tokio::task::spawn_blocking(move || camera.encoders.stop_all()).await;
        });
    }
}
