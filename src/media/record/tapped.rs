//! What a recorder takes from its camera: the H.264 stream (MP4 takes it as it is) and, when
//! the camera has one, its microphone's Opus, and whether that still flows.

use std::time::{Duration, Instant};

use crate::media::cameras::Camera;
use crate::media::codecs::{Codec, MediaKind};

/// A microphone silent this long is taken to be gone (Opus packets come every 20 ms; with DTX
/// at most every 400 ms).
const AUDIO_QUIET: Duration = Duration::from_millis(1000);

/// The camera's microphone as the recorder hears it.
#[derive(Default)]
pub(super) struct Audio {
    pub(super) caps: Option<gst::Caps>,
    /// When its last packet came.
    pub(super) last: Option<Instant>,
}

impl Audio {
    /// Packets came within the last [`AUDIO_QUIET`].
    pub(super) fn flowing(&self) -> bool {
        self.caps.is_some() && self.last.is_some_and(|at| at.elapsed() < AUDIO_QUIET)
    }
}

/// Whether the camera has Opus audio (recorded alongside its video).
pub(super) fn has_opus(camera: &Camera) -> bool {
    camera
        .encoders
        .codecs(MediaKind::Audio)
        .contains(&Codec::Opus)
}

/// What a camera is recorded as: its H.264 stream (MP4 takes it as it is).
pub(super) fn recorded_codec(camera: &Camera) -> Option<Codec> {
    camera
        .encoders
        .codecs(MediaKind::Video)
        .into_iter()
        .find(|codec| *codec == Codec::H264)
}
