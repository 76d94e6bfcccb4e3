//! Which cameras the RTSP server serves, at which paths: `/{name}` for each, `/live` for the
//! first. A reload mounts new and changed cameras and unmounts removed ones, closing the
//! connections of clients that were playing them (an NVR reconnects, and finds the camera
//! changed or gone: 404).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gst_rtsp_server::prelude::*;

use super::{Feeds, PATH, factory};
use crate::media::cameras::Camera;
use crate::sync::lock;

/// The server's cameras; shared with its `play-request` handler (which camera's keyframe).
pub struct Mounts {
    server: gst_rtsp_server::RTSPServer,
    feeds: Feeds,
    authenticated: bool,
    /// The mounted factories by camera name, and the names in the profile's order.
    factories: Mutex<(
        HashMap<String, gst_rtsp_server::RTSPMediaFactory>,
        Vec<String>,
    )>,
}

impl Mounts {
    pub(super) fn new(
        server: &gst_rtsp_server::RTSPServer,
        feeds: &Feeds,
        authenticated: bool,
    ) -> Arc<Mounts> {
        Arc::new(Mounts {
            server: server.clone(),
            feeds: Arc::clone(feeds),
            authenticated,
            factories: Mutex::default(),
        })
    }

    /// Serves `cameras` (in the profile's order) from now on: `replaced` (changed or removed
    /// since) are unmounted first and their clients closed; cameras not mounted yet are
    /// mounted. How many cameras are served.
    pub fn serve(&self, cameras: &[Arc<Camera>], replaced: &[String]) -> usize {
        let Some(points) = self.server.mount_points() else {
            return 0;
        };
        for name in replaced {
            let gone = lock(&self.factories).0.remove(name);
            if gone.is_some() {
                points.remove_factory(&format!("/{name}"));
                let closed = self.close_clients_of(name);
                tracing::info!(camera = %name, closed, "RTSP: camera unmounted");
            }
        }
        let mut factories = lock(&self.factories);
        for camera in cameras {
            let name = camera.name.to_string();
            if factories.0.contains_key(&name) {
                continue;
            }
            match factory(&self.server, camera, &self.feeds, self.authenticated) {
                Some(factory) => {
                    points.add_factory(&format!("/{name}"), factory.clone());
                    factories.0.insert(name, factory);
                }
                None => tracing::info!(
                    camera = %name,
                    "RTSP: the camera has no video or Opus audio to serve"
                ),
            }
        }
        factories.1 = cameras.iter().map(|c| c.name.to_string()).collect();
        // `/live` is the first camera's, unless a camera has that name.
        if !factories.1.iter().any(|n| format!("/{n}") == PATH) {
            match factories.1.first().and_then(|n| factories.0.get(n)) {
                Some(first) => points.add_factory(PATH, first.clone()),
                None => points.remove_factory(PATH),
            }
        }
        factories.0.len()
    }

    /// The camera a request's path names (`/live`: the first).
    pub(super) fn camera_of(&self, first_component: Option<&str>) -> Option<String> {
        let factories = lock(&self.factories);
        match first_component {
            Some(name) if factories.1.iter().any(|n| n == name) => Some(name.to_string()),
            _ => factories.1.first().cloned(),
        }
    }

    /// Closes the connection of every client with a session playing `camera`.
    fn close_clients_of(&self, camera: &str) -> usize {
        let path = format!("/{camera}");
        let mut closed = 0;
        self.server.client_filter(Some(&mut |_, client| {
            let mut plays = false;
            client.session_filter(Some(&mut |_, session| {
                session.filter(Some(&mut |_, media| {
                    plays |= media.matches(&path).is_some();
                    gst_rtsp_server::RTSPFilterResult::Keep
                }));
                gst_rtsp_server::RTSPFilterResult::Keep
            }));
            if plays {
                client.close();
                closed += 1;
            }
            gst_rtsp_server::RTSPFilterResult::Keep
        }));
        closed
    }
}
