//! The daemon's cameras by name. Each camera is its own view of the profile
//! ([`Profile::for_camera`]) and its own shared encoders: its captures, ladder, restarts and
//! failures touch no other camera's viewers. The first camera is the one used wherever a
//! client names none (every client that predates cameras).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::MediaError;
use super::encoder::{self, Probe};
use super::profile::Profile;
use super::shared::Encoders;
use crate::camera_name::CameraName;
use crate::sync::lock;

/// One camera: what it sends and the encoders that send it.
#[derive(Debug)]
pub struct Camera {
    pub name: CameraName,
    /// The profile as this camera is served (its video and audio at the top).
    pub profile: Arc<Profile>,
    pub encoders: Arc<Encoders>,
}

/// What a reload did to the cameras.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Encoding as before (or at new rates only): their encoders and calls go on.
    pub kept: Vec<String>,
    /// Of those, the ones whose rates changed, and how many running encoders took the new
    /// rate.
    pub retuned: Vec<(String, usize)>,
    /// New in the profile.
    pub added: Vec<Arc<Camera>>,
    /// Changed: the camera before, and the one that replaces it.
    pub changed: Vec<(Arc<Camera>, Arc<Camera>)>,
    /// Taken out of the profile.
    pub removed: Vec<Arc<Camera>>,
}

/// Every camera, in the profile's order.
#[derive(Debug)]
pub struct Cameras {
    list: Mutex<Vec<Arc<Camera>>>,
}

impl Cameras {
    /// Probes the encoders of every camera of `profile` (short real encodes: call from a
    /// blocking thread). An encoder is probed once however many cameras use it. A camera
    /// with no working encoder for a kind of media it has is an error naming it.
    pub fn probe(profile: &Profile) -> Result<(Arc<Cameras>, Vec<Probe>), MediaError> {
        let mut probed = encoder::Probed::new();
        let mut list = Vec::new();
        let mut probes = Vec::new();
        for config in profile.cameras() {
            let view = Arc::new(profile.for_camera(&config));
            let (encoders, tried) =
                Encoders::probe_with(Arc::clone(&view), &mut probed).map_err(|source| {
                    MediaError::Camera {
                        camera: config.name.to_string(),
                        source: Box::new(source),
                    }
                })?;
            probes.extend(tried);
            list.push(Arc::new(Camera {
                name: config.name,
                profile: view,
                encoders,
            }));
        }
        Ok((Cameras::new(list), probes))
    }

    /// Serves `profile` from now on (a reload): a camera that encodes as before keeps its
    /// encoders (and so its calls), a new or changed one gets new encoders, probed here
    /// (blocking). Nothing changes when a probe fails. The cameras taken out or replaced
    /// are returned: their calls are the caller's to end.
    pub fn reload(&self, profile: &Profile) -> Result<Reloaded, MediaError> {
        let old = self.all();
        let mut probed = encoder::Probed::new();
        let mut list = Vec::new();
        let mut reloaded = Reloaded::default();
        // New rates are set once every new camera's probe has worked.
        let mut retunes = Vec::new();
        for config in profile.cameras() {
            let view = Arc::new(profile.for_camera(&config));
            let before = old.iter().find(|c| c.name == config.name);
            if let Some(before) = before.filter(|b| b.profile.rates_differ_only(&view)) {
                if !before.profile.encodes_like(&view) {
                    retunes.push((Arc::clone(&before.encoders), Arc::clone(&view)));
                }
                reloaded.kept.push(config.name.to_string());
                list.push(Arc::new(Camera {
                    name: config.name,
                    profile: view,
                    encoders: Arc::clone(&before.encoders),
                }));
                continue;
            }
            let (encoders, _) =
                Encoders::probe_with(Arc::clone(&view), &mut probed).map_err(|source| {
                    MediaError::Camera {
                        camera: config.name.to_string(),
                        source: Box::new(source),
                    }
                })?;
            let camera = Arc::new(Camera {
                name: config.name,
                profile: view,
                encoders,
            });
            match before {
                Some(before) => reloaded
                    .changed
                    .push((Arc::clone(before), Arc::clone(&camera))),
                None => reloaded.added.push(Arc::clone(&camera)),
            }
            list.push(camera);
        }
        reloaded.removed = old
            .into_iter()
            .filter(|c| !list.iter().any(|n| n.name == c.name))
            .collect();
        for (encoders, view) in retunes {
            let running = encoders.retune(Arc::clone(&view));
            reloaded.retuned.push((view.name.clone(), running));
        }
        *lock(&self.list) = list;
        Ok(reloaded)
    }

    /// Cameras already made (tests).
    pub fn new(list: Vec<Arc<Camera>>) -> Arc<Cameras> {
        Arc::new(Cameras {
            list: Mutex::new(list),
        })
    }

    /// The camera named `name`; with none, the first.
    pub fn get(&self, name: Option<&str>) -> Option<Arc<Camera>> {
        let list = lock(&self.list);
        match name {
            None => list.first().cloned(),
            Some(name) => list.iter().find(|c| c.name == name).cloned(),
        }
    }

    /// Every camera, in order.
    pub fn all(&self) -> Vec<Arc<Camera>> {
        lock(&self.list).clone()
    }

    /// Stops every camera's shared streams now (shutdown).
    pub fn stop_all(&self) {
        for camera in self.all() {
            camera.encoders.stop_all();
        }
    }

    /// Shared streams that viewers wait on but that have produced nothing for `after`, each
    /// named with its camera when there are several.
    pub fn stalled(&self, after: Duration) -> Vec<String> {
        let all = self.all();
        let several = all.len() > 1;
        all.iter()
            .flat_map(|camera| {
                camera
                    .encoders
                    .stalled(after)
                    .into_iter()
                    .map(move |why| match several {
                        true => format!("camera {}: {why}", camera.name),
                        false => why,
                    })
            })
            .collect()
    }
}
