//! Pipeline profiles (`pipelines/*.toml`): what a device sends — one camera, or several
//! (`[[camera]]`, [`cameras`]) — and what it does with what it receives. Validated when
//! loaded; an error names the file, the camera, the key and what is wrong.

mod cameras;
mod motion;
mod receive;
mod sources;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use cameras::{CameraConfig, MAX_CAMERAS};
pub use motion::MotionSettings;
pub use receive::{Receive, SinkKind};
pub use sources::{
    AudioSend, AudioSourceKind, KNOWN_FORMATS, MAX_RUNGS, Rung, VideoSend, VideoSourceKind,
};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// A short name for logs.
    pub name: String,
    /// Calls beyond this many are answered with `hangup` reason `busy`.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// What an incoming call does: `auto` is answered at once (a camera), `ring` rings until
    /// someone accepts or rejects it (an intercom), `reject` is refused (do not disturb).
    #[serde(default)]
    pub answer: AnswerPolicy,
    /// A call ringing this long without a decision ends with `no-answer`.
    #[serde(default = "default_ring_timeout_secs")]
    pub ring_timeout_secs: u64,
    /// Whether this device, calling, opens a DataChannel (ping/pong, chat, the bridge).
    /// `false` for a camera whose viewers only watch: each call is then lighter (no SCTP
    /// association and its threads); the round-trip time is not measured.
    #[serde(default = "default_true")]
    pub datachannel: bool,
    /// An offer or answer with more m-lines than this is refused (`hangup` reason
    /// `bad-sdp`): each m-line costs threads and elements, and a call needs 3.
    #[serde(default = "default_max_mlines")]
    pub max_mlines: usize,
    /// One camera's video and audio (the profile's `name` names the camera). A profile with
    /// several cameras lists them in `camera` instead.
    pub video: Option<VideoSend>,
    pub audio: Option<AudioSend>,
    /// The one camera's motion watch (`[motion]`).
    pub motion: Option<MotionSettings>,
    /// Several cameras (`[[camera]]`), the first being the one used where none is named.
    #[serde(default)]
    pub camera: Vec<CameraConfig>,
    #[serde(default)]
    pub receive: Receive,
    /// Delays the building of this device's media, as a slow camera would. For tests and
    /// for reproducing ordering problems; 0 in every shipped profile.
    #[serde(default)]
    pub media_start_delay_ms: u64,
    /// Encode separately for every call (the way webrtcsink does), for comparison. By default
    /// one capture and one encoder per codec serve every call.
    #[serde(default)]
    pub per_viewer_encoder: bool,
    /// Forward error correction on the video sent (ULP FEC in RED, RFC 5109): the receiver
    /// rebuilds lost packets without waiting a round trip for a retransmission. For links with
    /// a long round trip; it costs `fec_percentage` % more video rate.
    #[serde(default)]
    pub fec: bool,
    #[serde(default = "default_fec_percentage")]
    pub fec_percentage: u32,
    /// How long a shared encoder keeps running after its last viewer left.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// A shared source that fails (error, end of stream, unplugged) is restarted with backoff,
    /// at most this many times a minute; beyond that its calls end with `source-error`.
    #[serde(default = "default_source_restart_limit")]
    pub source_restart_limit: usize,
    /// In a camera's own view of the profile ([`Profile::for_camera`]): another camera's
    /// microphone cancels the speaker's echo, so calls feed the speaker's sound to it.
    #[serde(skip)]
    pub(crate) speaker_feeds_canceller: bool,
}

/// What an incoming call does (`answer` in a profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerPolicy {
    #[default]
    Auto,
    Ring,
    Reject,
}

fn default_source_restart_limit() -> usize {
    5
}
fn default_fec_percentage() -> u32 {
    25
}

fn default_linger_ms() -> u64 {
    2000
}
fn default_max_sessions() -> usize {
    8
}
fn default_true() -> bool {
    true
}
fn default_ring_timeout_secs() -> u64 {
    30
}
fn default_max_mlines() -> usize {
    16
}

impl Profile {
    pub fn load(file: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(file).map_err(|source| ProfileError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Profile::parse(&text, file)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Profile, ProfileError> {
        let invalid = |message: String| ProfileError::Invalid {
            file: file.to_path_buf(),
            message,
        };
        let profile: Profile =
            toml::from_str(text).map_err(|e| invalid(crate::toml_error::describe(text, &e)))?;
        profile.validate().map_err(invalid)?;
        Ok(profile)
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.fec_percentage) {
            return Err("fec_percentage: must be between 1 and 100".into());
        }
        if self.max_sessions == 0 {
            return Err("max_sessions: must be at least 1".into());
        }
        if !(1..=600).contains(&self.ring_timeout_secs) {
            return Err("ring_timeout_secs: must be between 1 and 600".into());
        }
        if !(1..=64).contains(&self.max_mlines) {
            return Err("max_mlines: must be between 1 and 64".into());
        }
        self.check_cameras()?;
        if matches!(self.receive.video, SinkKind::Alsa) {
            return Err("receive.video: alsa is an audio output".into());
        }
        if matches!(self.receive.audio, SinkKind::Kms | SinkKind::Wayland) {
            return Err("receive.audio: kms and wayland are video outputs".into());
        }
        // Neither [video] nor [audio]: a receive-only viewer (it answers calls; it cannot
        // place them, having nothing to offer).
        if self.receive.measure_latency && matches!(self.receive.video, SinkKind::Frames) {
            return Err("receive.measure_latency: needs decoded video (video = \"count\")".into());
        }
        Ok(())
    }

    /// Checks what only this machine can tell: the camera exists, the plugins are there.
    /// Needs GStreamer initialised. Fails fast with the file and key, instead of a call that
    /// hangs on a missing device.
    pub fn check_devices(&self, file: &Path) -> Result<(), ProfileError> {
        let invalid = |message: String| ProfileError::Invalid {
            file: file.to_path_buf(),
            message,
        };
        for camera in self.cameras() {
            let checked = camera
                .video
                .as_ref()
                .map_or(Ok(()), VideoSend::check_devices)
                .and_then(|()| {
                    camera
                        .audio
                        .as_ref()
                        .map_or(Ok(()), AudioSend::check_devices)
                });
            checked.map_err(|message| invalid(self.about(&camera, message)))?;
        }
        Ok(())
    }

    /// Whether calls put an echo probe in their speaker path.
    pub fn echo_cancel(&self) -> bool {
        self.speaker_feeds_canceller || self.audio.as_ref().is_some_and(|a| a.echo_cancel)
    }

    pub fn media_start_delay(&self) -> Duration {
        Duration::from_millis(self.media_start_delay_ms)
    }
}
