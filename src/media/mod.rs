//! Media: sources, encoders, decoders and sinks as GStreamer bins, and the pipelines' life.
//! Knows nothing of signaling or WebRTC negotiation.

pub mod camera_events;
pub mod cameras;
pub mod codecs;
pub mod devices;
pub mod encoder;
pub mod fragments;
pub mod motion;
pub mod profile;
pub mod receive;
pub mod record;
pub mod send;
pub mod shared;
pub mod speaker;
pub mod stamp;
pub mod v4l2;
pub mod voice;
pub mod work;

use std::sync::Mutex;

use gst::prelude::*;

use crate::sync::lock;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("GStreamer could not build the pipeline: {0}")]
    Build(String),
    /// Built, but it would not start: a device missing, busy or failing (worth another try,
    /// unlike a pipeline that cannot be built).
    #[error("{0} would not start")]
    WouldNotStart(String),
    #[error("{0:?} is not a codec for this kind of media")]
    WrongKind(codecs::Codec),
    #[error("GStreamer is not usable: {0}")]
    Init(String),
    #[error("the profile has no source for {0:?}")]
    NoSource(codecs::Codec),
    #[error(
        "no working encoder for any of {codecs:?}; tried: {}",
        describe_probes(probes)
    )]
    NoEncoder {
        codecs: Vec<codecs::Codec>,
        probes: Vec<encoder::Probe>,
    },
    /// Its camera was stopped for good (shutdown, or taken out of the profile).
    #[error("the camera is no longer served")]
    Retired,
    #[error("camera {camera}: {source}")]
    Camera {
        camera: String,
        source: Box<MediaError>,
    },
}

fn describe_probes(probes: &[encoder::Probe]) -> String {
    let parts: Vec<String> = probes
        .iter()
        .map(|p| match &p.result {
            encoder::ProbeResult::Works => format!("{} works", p.encoder),
            encoder::ProbeResult::Missing => format!("{} missing", p.encoder),
            encoder::ProbeResult::Failed(why) => format!("{} failed ({why})", p.encoder),
            encoder::ProbeResult::TimedOut => format!("{} timed out", p.encoder),
        })
        .collect();
    parts.join(", ")
}

/// Initialises GStreamer once for the process, with the statically linked plugins
/// (gst-plugins-rs's RTP plugin: `rtpgccbwe`, the congestion-control bandwidth estimator).
pub fn init() -> Result<(), MediaError> {
    gst::init().map_err(|e| MediaError::Init(e.to_string()))?;
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| gstrsrtp::plugin_register_static().map_err(|e| e.to_string()))
        .clone()
        .map_err(MediaError::Init)
}

/// Every pipeline this process made, weakly: one that still upgrades has not been freed.
static PIPELINES: Mutex<Vec<glib::WeakRef<gst::Pipeline>>> = Mutex::new(Vec::new());

/// A new, tracked pipeline.
pub fn new_pipeline(name: &str) -> gst::Pipeline {
    let pipeline = gst::Pipeline::with_name(name);
    let mut all = lock(&PIPELINES);
    all.retain(|w| w.upgrade().is_some());
    all.push(pipeline.downgrade());
    pipeline
}

/// How many pipelines are still alive (not yet finalized). After every call has ended this
/// must be 0: anything else is a leaked reference.
pub fn live_pipelines() -> usize {
    let mut all = lock(&PIPELINES);
    all.retain(|w| w.upgrade().is_some());
    all.len()
}

/// How many media encoders run in live pipelines, found by walking them: the honest answer
/// to "how many encoders for N viewers".
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct EncoderCount {
    pub video: usize,
    pub audio: usize,
}

fn live_elements() -> Vec<gst::Element> {
    let pipelines: Vec<gst::Pipeline> = {
        let all = lock(&PIPELINES);
        all.iter().filter_map(|w| w.upgrade()).collect()
    };
    pipelines
        .iter()
        .flat_map(|p| p.iterate_recurse().into_iter().flatten())
        .collect()
}

pub fn live_encoders() -> EncoderCount {
    let mut count = EncoderCount::default();
    for element in live_elements() {
        let klass = element
            .factory()
            .and_then(|f| f.metadata("klass").map(str::to_string))
            .unwrap_or_default();
        if klass.contains("Encoder/Video") {
            count.video += 1;
        } else if klass.contains("Encoder/Audio") {
            count.audio += 1;
        }
    }
    count
}

/// A pipeline that is torn down ([`teardown`]) when its owner drops it — also when the
/// owner's task panics or is cancelled, so a failed call never leaves a pipeline running.
pub struct OwnedPipeline(gst::Pipeline);

impl OwnedPipeline {
    /// A new, tracked pipeline.
    pub fn new(name: &str) -> OwnedPipeline {
        OwnedPipeline(new_pipeline(name))
    }
}

impl std::ops::Deref for OwnedPipeline {
    type Target = gst::Pipeline;
    fn deref(&self) -> &gst::Pipeline {
        &self.0
    }
}

impl Drop for OwnedPipeline {
    fn drop(&mut self) {
        teardown(self.0.clone());
    }
}

/// Takes a pipeline to NULL and drops it on a blocking thread (see [`work`]): state changes
/// can wait on streaming threads, so they never run on a session task or a signal handler.
pub fn teardown(pipeline: gst::Pipeline) {
    let stop = move || {
        if let Err(err) = pipeline.set_state(gst::State::Null) {
            tracing::warn!(pipeline = %pipeline.name(), "could not reach NULL: {err}");
        }
        if let Some(bus) = pipeline.bus() {
            bus.unset_sync_handler();
        }
        drop(pipeline);
        release_memory();
    };
    work::off_worker(stop);
}

/// Hands freed heap memory back to the system rather than keeping it cached (after a call,
/// and after start-up's encoder probing).
pub fn release_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
