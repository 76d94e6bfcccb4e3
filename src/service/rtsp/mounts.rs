//! Which cameras the RTSP server serves, at which paths: `/{name}` for each, `/live` for the
//! first. A reload mounts new and changed cameras and unmounts removed ones, closing the
//! connections of clients that were playing them (whatever path they used: an NVR
//! reconnects, and finds the camera changed, or gone: 404).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gst_rtsp_server::RTSPFilterResult;
use gst_rtsp_server::prelude::*;

use super::{Feeds, PATH, factory};
use crate::media::cameras::Camera;
use crate::sync::lock;

/// A mounted camera's factory, and its server handler that follows the codecs chosen.
type Mounted = (gst_rtsp_server::RTSPMediaFactory, glib::SignalHandlerId);

/// The server's cameras.
pub struct Mounts {
    server: gst_rtsp_server::RTSPServer,
    /// The server's thread's context: clients are closed there (a connection is not closed
    /// from another thread while the server's watch may use it).
    context: glib::MainContext,
    feeds: Feeds,
    authenticated: bool,
    mounted: Mutex<HashMap<String, Mounted>>,
}

impl Mounts {
    pub(super) fn new(
        server: &gst_rtsp_server::RTSPServer,
        context: &glib::MainContext,
        feeds: &Feeds,
        authenticated: bool,
    ) -> Arc<Mounts> {
        Arc::new(Mounts {
            server: server.clone(),
            context: context.clone(),
            feeds: Arc::clone(feeds),
            authenticated,
            mounted: Mutex::default(),
        })
    }

    /// Serves `cameras` (in the profile's order) from now on: `replaced` (changed or removed
    /// since) are unmounted first and their clients closed; cameras not mounted yet are
    /// mounted. How many cameras are served. Building a factory may probe an encoder: call
    /// from a blocking thread.
    pub fn serve(&self, cameras: &[Arc<Camera>], replaced: &[String]) -> usize {
        let Some(points) = self.server.mount_points() else {
            return 0;
        };
        if !replaced.is_empty() {
            // Pointed again below; meanwhile no client reaches a camera being replaced.
            points.remove_factory(PATH);
        }
        for name in replaced {
            let Some((_, handler)) = lock(&self.mounted).remove(name) else {
                continue;
            };
            points.remove_factory(&format!("/{name}"));
            self.server.disconnect(handler);
            self.close_clients_of(name);
        }
        let missing: Vec<&Arc<Camera>> = {
            let mounted = lock(&self.mounted);
            let missing = cameras.iter();
            missing
                .filter(|c| !mounted.contains_key(c.name.as_str()))
                .collect()
        };
        // Built without the lock held (a factory may wait for an encoder probe).
        let built: Vec<(String, Option<Mounted>)> = missing
            .into_iter()
            .map(|c| {
                let made = factory(&self.server, c, &self.feeds, self.authenticated);
                (c.name.to_string(), made)
            })
            .collect();
        let mut mounted = lock(&self.mounted);
        for (name, made) in built {
            match made {
                Some((factory, handler)) => {
                    points.add_factory(&format!("/{name}"), factory.clone());
                    mounted.insert(name, (factory, handler));
                }
                None => tracing::info!(
                    camera = %name,
                    "RTSP: the camera has no video or Opus audio to serve"
                ),
            }
        }
        // `/live` is the first camera's, unless a camera has that name.
        if !cameras.iter().any(|c| format!("/{}", c.name) == PATH) {
            let first = cameras.first().and_then(|c| mounted.get(c.name.as_str()));
            match first {
                Some((factory, _)) => points.add_factory(PATH, factory.clone()),
                None => points.remove_factory(PATH),
            }
        }
        mounted.len()
    }

    /// Closes, on the server's thread, the connection of every client with a session on a
    /// media pipeline of `camera` (fed by its encoders: `/live` or `/{name}` alike).
    fn close_clients_of(&self, camera: &str) {
        let server = self.server.clone();
        let feeds = std::sync::Arc::clone(&self.feeds);
        let camera = camera.to_string();
        self.context.invoke(move || {
            let medias: Vec<gst_rtsp_server::RTSPMedia> = lock(&feeds)
                .iter()
                .filter(|feed| feed.camera == camera)
                .filter_map(|feed| feed.media.upgrade())
                .collect();
            let mut closed = 0;
            for client in server.client_filter(Some(&mut |_, _| RTSPFilterResult::Ref)) {
                let plays = client
                    .session_filter(Some(&mut |_, _| RTSPFilterResult::Ref))
                    .iter()
                    .flat_map(|session| session.filter(Some(&mut |_, _| RTSPFilterResult::Ref)))
                    .filter_map(|session_media| session_media.media())
                    .any(|media| medias.contains(&media));
                if plays {
                    client.close();
                    closed += 1;
                }
            }
            tracing::info!(camera, closed, "RTSP: the camera's clients closed");
        });
    }
}
