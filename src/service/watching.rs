//! What runs on the cameras besides calls: the recorders (`[recording]`) and the motion
//! watchers (`[motion]` in the profile). Both raise camera events, handed to `/api/events`
//! and the hooks; both follow a reload, and stop before the cameras at shutdown.

use std::sync::Arc;

use crate::media::camera_events::OnCameraEvent;
use crate::media::cameras::Cameras;
use crate::media::motion::Motions;
use crate::media::record::Recorders;
use crate::service::config::Config;
use crate::session::CallManager;

pub struct Watching {
    pub recorders: Option<Arc<Recorders>>,
    pub motions: Arc<Motions>,
}

impl Watching {
    /// Starts them (their threads, the recordings' directory read: off the async workers).
    pub async fn start(
        config: &Config,
        cameras: &Arc<Cameras>,
        calls: &Arc<CallManager>,
    ) -> anyhow::Result<Arc<Watching>> {
        let notify = Arc::clone(calls);
        let on_event: OnCameraEvent = Arc::new(move |event| notify.notifier().camera(event));
        let (config, cameras) = (config.clone(), Arc::clone(cameras));
        tokio::task::spawn_blocking(move || {
            let motions = Motions::start(Arc::clone(&cameras), Arc::clone(&on_event));
            let recorders = super::recordings::start(&config, &cameras, on_event, &motions)?;
            Ok(Arc::new(Watching { recorders, motions }))
        })
        .await?
    }

    /// After a reload: cameras added are watched and recorded, those removed no longer.
    pub async fn sync(self: &Arc<Self>) {
        let watching = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(recorders) = &watching.recorders {
                recorders.sync();
            }
            watching.motions.sync();
        })
        .await;
    }

    /// Each recorder writes its segment's end; the watchers let go of the cameras.
    pub async fn stop(self: &Arc<Self>) {
        let watching = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(recorders) = &watching.recorders {
                recorders.stop_all();
            }
            watching.motions.stop_all();
        })
        .await;
    }
}
