//! Pipeline profiles (`pipelines/*.toml`): what a device sends and what it does with what it
//! receives. Validated when loaded; an error names the file, the key and what is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::codecs::Codec;

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
    pub video: Option<VideoSend>,
    pub audio: Option<AudioSend>,
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
    /// How long a shared encoder keeps running after its last viewer left.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoSend {
    /// `test` (videotestsrc) for now.
    pub source: VideoSourceKind,
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
    #[serde(default = "default_framerate")]
    pub framerate: u32,
    /// Codecs in order of preference; the first is offered first.
    pub codecs: Vec<Codec>,
    #[serde(default = "default_video_kbps")]
    pub bitrate_kbps: u32,
    /// Frames between forced keyframes.
    #[serde(default = "default_keyframe_interval")]
    pub keyframe_interval: u32,
    /// Try only these encoders, in this order (default: the built-in ranking, hardware first).
    #[serde(default)]
    pub encoders: Vec<String>,
    /// Never use these encoders.
    #[serde(default)]
    pub exclude_encoders: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VideoSourceKind {
    Test,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSend {
    pub source: AudioSourceKind,
    pub codecs: Vec<Codec>,
    #[serde(default = "default_audio_kbps")]
    pub bitrate_kbps: u32,
    #[serde(default)]
    pub encoders: Vec<String>,
    #[serde(default)]
    pub exclude_encoders: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AudioSourceKind {
    Test,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receive {
    #[serde(default)]
    pub video: SinkKind,
    #[serde(default)]
    pub audio: SinkKind,
    /// Receive jitterbuffer latency; webrtcbin's default of 200 ms delays the first frame.
    #[serde(default = "default_latency_ms")]
    pub latency_ms: u32,
}

/// What happens to decoded remote media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// Decode and count (the test profile, and a headless device that only reports).
    #[default]
    Count,
    /// Decode and play on the default output (autovideosink / autoaudiosink).
    Auto,
}

fn default_linger_ms() -> u64 {
    2000
}
fn default_max_sessions() -> usize {
    8
}
fn default_width() -> u32 {
    640
}
fn default_height() -> u32 {
    480
}
fn default_framerate() -> u32 {
    30
}
fn default_video_kbps() -> u32 {
    1500
}
fn default_keyframe_interval() -> u32 {
    60
}
fn default_audio_kbps() -> u32 {
    48
}
fn default_latency_ms() -> u32 {
    50
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
        let profile: Profile = toml::from_str(text).map_err(|e| invalid(describe_toml(&e)))?;
        profile.validate().map_err(invalid)?;
        Ok(profile)
    }

    fn validate(&self) -> Result<(), String> {
        if self.max_sessions == 0 {
            return Err("max_sessions: must be at least 1".into());
        }
        if let Some(video) = &self.video {
            if video.codecs.is_empty() {
                return Err("video.codecs: name at least one codec".into());
            }
            if let Some(c) = video.codecs.iter().find(|c| !c.is_video()) {
                return Err(format!("video.codecs: {c:?} is not a video codec"));
            }
            if video.width == 0 || video.height == 0 || video.framerate == 0 {
                return Err("video: width, height and framerate must be positive".into());
            }
        }
        if let Some(audio) = &self.audio {
            if audio.codecs.is_empty() {
                return Err("audio.codecs: name at least one codec".into());
            }
            if let Some(c) = audio.codecs.iter().find(|c| c.is_video()) {
                return Err(format!("audio.codecs: {c:?} is not an audio codec"));
            }
        }
        if self.video.is_none() && self.audio.is_none() {
            return Err("a profile sends [video], [audio] or both".into());
        }
        Ok(())
    }

    pub fn media_start_delay(&self) -> Duration {
        Duration::from_millis(self.media_start_delay_ms)
    }
}

/// `key: what is wrong` from a TOML error, without the source excerpt toml prints.
fn describe_toml(err: &toml::de::Error) -> String {
    let message = err.message().trim().to_string();
    match err.span() {
        Some(span) => format!("{message} (at byte {})", span.start),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_test_profile_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/test.toml");
        let p = Profile::load(&path).unwrap();
        assert_eq!(p.video.unwrap().codecs[0], Codec::Vp8);
        assert_eq!(p.audio.unwrap().codecs[0], Codec::Opus);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_the_file() {
        let f = Path::new("x.toml");
        let err = Profile::parse(
            "name='a'\ncolour='red'\n[audio]\nsource='test'\ncodecs=['opus']",
            f,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("x.toml: "), "{err}");
        assert!(err.contains("colour"), "{err}");
        let err = Profile::parse("name='a'\n[audio]\nsource='test'\ncodecs=['vp8']", f)
            .unwrap_err()
            .to_string();
        assert!(err.contains("audio.codecs"), "{err}");
    }
}
