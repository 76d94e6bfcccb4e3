//! The RTSP server for NVRs (Frigate, Home Assistant, any recorder): `rtsp://HOST:PORT/{camera}`
//! (and `/live`, the first camera) serves that camera's shared stream — the same capture and
//! encoder elements as WebRTC viewers, not another encode — over UDP or TCP interleaved, with
//! GStreamer's RTSP server. A path that names no camera is answered 404.
//!
//! Each RTSP client gets a small media pipeline of its own: one appsrc per shared stream,
//! subscribed to the shared encoder like a call's send branch, fed once it runs (the encoders
//! stay shared: no client costs an encode of video). Not one media for every client: a
//! DESCRIBE that found the shared media while the last client's departure was unpreparing it
//! got 503 ("media was not unprepared"; 27 of 41 when a recorder probes as another leaves).
//! Audio goes out as Opus and as PCMA (for recorders that know only G.711; that transcode of
//! the Opus stream is per client). With tokens configured,
//! RTSP asks for Basic credentials: user `webrtcd`, password a token (either scope).
//!
//! The server runs its own GLib main loop on a thread of its own: its handlers may block
//! (starting the camera for the first client) without touching tokio's workers. It accepts
//! no connection itself: [`front`] admits them and hands them over.

pub mod front;
mod listen;
mod mounts;

pub use listen::listen;
pub use mounts::Mounts;

use std::sync::{Arc, Mutex, Weak};

use anyhow::Context;
use gst::prelude::*;
use gst_rtsp_server::prelude::*;

use crate::media::cameras::{Camera, Cameras};
use crate::media::codecs::{Codec, MediaKind};
use crate::media::fragments;
use crate::media::shared::{Encoders, Subscription};
use crate::sync::lock;

/// The first camera's path, as NVRs were given it before there were several.
pub const PATH: &str = "/live";
/// The Basic-auth user name that goes with a token as password.
pub const USER: &str = "webrtcd";
const ROLE: &str = "viewer";

/// A client's media pipeline fed by a camera's shared stream, while it is prepared: a client
/// that starts playing asks its own for a keyframe (the encoders limit how often one is
/// made), and a reload closes the clients of a camera it replaces.
struct Feed {
    camera: String,
    media: glib::WeakRef<gst_rtsp_server::RTSPMedia>,
    subscription: Weak<Subscription>,
}

type Feeds = Arc<Mutex<Vec<Feed>>>;

/// Starts the server on a thread of its own; connections reach it through the returned
/// [`front::Handoff`], and a reload changes its cameras through the [`Mounts`]. `secrets`:
/// the tokens (none: open).
pub fn start(
    cameras: &Cameras,
    secrets: Vec<String>,
    max_sessions: usize,
) -> anyhow::Result<(front::Handoff, Arc<Mounts>)> {
    let server = gst_rtsp_server::RTSPServer::new();
    if !secrets.is_empty() {
        let auth = gst_rtsp_server::RTSPAuth::new();
        let token = gst_rtsp_server::RTSPToken::builder()
            .field(gst_rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
            .build();
        for secret in &secrets {
            auth.add_basic(&gst_rtsp_server::RTSPAuth::make_basic(USER, secret), &token);
        }
        server.set_auth(Some(&auth));
    }
    let feeds: Feeds = Arc::default();
    let context = glib::MainContext::new();
    let mounts = Mounts::new(&server, &context, &feeds, !secrets.is_empty());
    if mounts.serve(&cameras.all(), &[]) == 0 {
        anyhow::bail!("rtsp_listen: the profile has no video or Opus audio to serve");
    }
    start_at_keyframe(&server, &feeds);

    expire_sessions(&server, max_sessions, &context);
    let main_loop = glib::MainLoop::new(Some(&context), false);
    let handoff = front::Handoff::new(server, context);
    handoff.run(main_loop).context("RTSP thread")?;
    Ok((handoff, mounts))
}

/// The factory of `camera`'s media (none when it has nothing RTSP can serve), and the
/// server's handler that keeps it up to date (disconnected when the camera is unmounted).
fn factory(
    server: &gst_rtsp_server::RTSPServer,
    camera: &Camera,
    feeds: &Feeds,
    authenticated: bool,
) -> Option<(gst_rtsp_server::RTSPMediaFactory, glib::SignalHandlerId)> {
    let encoders = &camera.encoders;
    let (video, audio) = tracks(encoders);
    let waiting = !encoders.pending(MediaKind::Video).is_empty()
        || !encoders.pending(MediaKind::Audio).is_empty();
    if video.is_none() && audio.is_none() && !waiting {
        return None;
    }
    let factory = gst_rtsp_server::RTSPMediaFactory::new();
    factory.set_launch(&launch(video, audio));
    factory.set_shared(false);
    let following = follow_codecs(server, &factory, encoders, (video, audio));
    {
        let feeds = Arc::clone(feeds);
        let encoders = Arc::clone(encoders);
        let name = camera.name.to_string();
        factory.connect_media_configure(move |_, media| {
            let (video, audio) = tracks(&encoders);
            configure(media, &encoders, (video, audio), (&name, &feeds));
        });
    }
    if authenticated {
        factory.add_role_from_structure(
            &gst::Structure::builder(ROLE)
                .field(gst_rtsp_server::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                .field(gst_rtsp_server::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                .build(),
        );
    }
    Some((factory, following))
}

/// The video and audio RTSP serves: [`preferred_video`], and Opus when the profile has it.
fn tracks(encoders: &Encoders) -> (Option<Codec>, Option<Codec>) {
    let audio = encoders
        .codecs(MediaKind::Audio)
        .into_iter()
        .find(|c| *c == Codec::Opus);
    (preferred_video(encoders), audio)
}

/// A codec chosen after start-up (its first probe ran out of time) is served from the next
/// client on: each new client finds the factory's pipeline description up to date.
fn follow_codecs(
    server: &gst_rtsp_server::RTSPServer,
    factory: &gst_rtsp_server::RTSPMediaFactory,
    encoders: &Arc<Encoders>,
    served: (Option<Codec>, Option<Codec>),
) -> glib::SignalHandlerId {
    let served = Mutex::new(served);
    let factory = factory.clone();
    let encoders = Arc::clone(encoders);
    server.connect_client_connected(move |_, _| {
        let now = tracks(&encoders);
        let mut served = lock(&served);
        if *served != now {
            tracing::info!(video = ?now.0, audio = ?now.1, "RTSP serves newly chosen codecs");
            factory.set_launch(&launch(now.0, now.1));
            *served = now;
        }
    })
}

/// H.264 first (what NVRs record), else the profile's first video codec.
fn preferred_video(encoders: &Encoders) -> Option<Codec> {
    let video = encoders.codecs(MediaKind::Video);
    video
        .iter()
        .copied()
        .find(|c| *c == Codec::H264)
        .or_else(|| video.first().copied())
}

/// One appsrc per shared stream; the RTSP server finds the tracks' payloaders as `pay0`,
/// `pay1`… The microphone goes out as Opus and, for recorders that take only G.711, also as
/// PCMA (8 kHz A-law, decoded from the shared Opus stream: no second capture of the
/// microphone, which ALSA would refuse) when this GStreamer has the elements.
fn launch(video: Option<Codec>, audio: Option<Codec>) -> String {
    let feed = |name: &str| {
        format!("appsrc name={name} is-live=true format=time do-timestamp=true min-latency=0")
    };
    let mut parts = Vec::new();
    let mut next_pay = 0;
    if let Some(codec) = video {
        parts.push(format!(
            "{} ! {}",
            feed("video"),
            fragments::payloader_named(codec, 96, "pay0")
        ));
        next_pay = 1;
    }
    if let Some(codec) = audio {
        let opus = fragments::payloader_named(codec, 97, &format!("pay{next_pay}"));
        if pcma_available() {
            parts.push(format!(
                "{} ! tee name=mic mic. ! queue ! {opus} \
                 mic. ! queue ! opusdec ! audioconvert ! audioresample ! \
                 audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay{} pt=8",
                feed("audio"),
                next_pay + 1
            ));
        } else {
            parts.push(format!("{} ! {opus}", feed("audio")));
        }
    }
    format!("( {} )", parts.join(" "))
}

fn pcma_available() -> bool {
    ["opusdec", "alawenc", "rtppcmapay"]
        .iter()
        .all(|name| gst::ElementFactory::find(name).is_some())
}

/// A new media pipeline: subscribe its appsrcs to the shared streams; each is fed from its
/// first `need-data` (the pipeline runs then: frames get the right timestamps).
fn configure(
    media: &gst_rtsp_server::RTSPMedia,
    encoders: &Arc<Encoders>,
    (video, audio): (Option<Codec>, Option<Codec>),
    (camera, feeds): (&str, &Feeds),
) {
    let Some(bin) = media.element().downcast::<gst::Bin>().ok() else {
        return;
    };
    let mut subscribed = Vec::new();
    for (codec, name) in [(video, "video"), (audio, "audio")] {
        let (Some(codec), Some(appsrc)) = (
            codec,
            bin.by_name(name)
                .and_then(|e| e.downcast::<gst_app::AppSrc>().ok()),
        ) else {
            continue;
        };
        match encoders.subscribe(codec, appsrc.clone(), || {}) {
            Ok(subscription) => {
                let subscription = Arc::new(subscription);
                let activate = Arc::downgrade(&subscription);
                appsrc.connect("need-data", false, move |_| {
                    if let Some(subscription) = activate.upgrade() {
                        subscription.activate();
                    }
                    None
                });
                subscribed.push(subscription);
            }
            Err(err) => tracing::warn!("RTSP: no {name} ({err})"),
        }
    }
    tracing::info!(camera, tracks = subscribed.len(), "RTSP media configured");
    {
        let mut feeds = lock(feeds);
        feeds.retain(|feed| feed.subscription.strong_count() > 0);
        feeds.extend(subscribed.iter().map(|s| Feed {
            camera: camera.to_string(),
            media: media.downgrade(),
            subscription: Arc::downgrade(s),
        }));
    }
    // Held while the media is prepared; unprepared (its client left): let go, and the
    // shared streams linger and stop as after a call.
    let held = Mutex::new(subscribed);
    media.connect_unprepared(move |_| {
        tracing::info!("RTSP media unprepared");
        lock(&held).clear();
    });
}

/// At most `max` sessions at once (each has a media pipeline; more SETUPs are answered 503:
/// `max` is [`front::MAX_SESSIONS_PER_CLIENT`] per admitted connection, so the pool is never
/// what a recorder runs into),
/// and sessions whose client went without a TEARDOWN expire (60 s without a keep-alive) and
/// let go of their media: gst-rtsp-server removes expired sessions only when asked.
fn expire_sessions(server: &gst_rtsp_server::RTSPServer, max: usize, context: &glib::MainContext) {
    let Some(pool) = server.session_pool() else {
        return;
    };
    pool.set_max_sessions(u32::try_from(max).unwrap_or(u32::MAX));
    pool.create_watch(Some("rtsp-sessions"), glib::Priority::DEFAULT, |pool| {
        let expired = pool.cleanup();
        if expired > 0 {
            tracing::info!(expired, "RTSP sessions expired");
        }
        glib::ControlFlow::Continue
    })
    .attach(Some(context));
}

/// A client that starts playing gets a keyframe at once, of its own media's streams (a
/// recorder joining mid-stream would otherwise wait for the next periodic one).
fn start_at_keyframe(server: &gst_rtsp_server::RTSPServer, feeds: &Feeds) {
    let feeds = Arc::clone(feeds);
    server.connect_client_connected(move |_, client| {
        let feeds = Arc::clone(&feeds);
        client.connect_play_request(move |_, context| {
            let Some(session) = context.session() else {
                return;
            };
            let medias: Vec<gst_rtsp_server::RTSPMedia> = session
                .filter(Some(&mut |_, _| gst_rtsp_server::RTSPFilterResult::Ref))
                .iter()
                .filter_map(|session_media| session_media.media())
                .collect();
            let playing: Vec<Arc<Subscription>> = lock(&feeds)
                .iter()
                .filter(|feed| feed.media.upgrade().is_some_and(|m| medias.contains(&m)))
                .filter_map(|feed| feed.subscription.upgrade())
                .collect();
            for feed in playing {
                feed.start_at_keyframe();
            }
        });
    });
}
