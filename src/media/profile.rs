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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoSend {
    /// `test` (videotestsrc), `v4l2` (a camera), `libcamera`, or `launch` (a gst-launch
    /// fragment producing raw video, for experts).
    pub source: VideoSourceKind,
    /// The camera: `/dev/video0` (v4l2) or a libcamera camera name.
    pub device: Option<String>,
    /// Capture format: `YUY2`, `NV12`, `I420`, `MJPG`… (v4l2; default: chosen from what the
    /// camera offers at the wanted size and rate).
    pub format: Option<String>,
    /// With `source = "launch"`: the gst-launch fragment.
    pub launch: Option<String>,
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
    /// Write the capture time into every picture (a row of blocks at the top), so a receiver
    /// with `receive.measure_latency` can measure capture → decoded frame. For benchmarks.
    #[serde(default)]
    pub stamp_capture_time: bool,
    /// Renditions of the shared encoder, best first (`[[video.ladder]]`): each call gets the
    /// best one its link carries. Empty: one rendition, `width`×`height` at `bitrate_kbps`.
    #[serde(default)]
    pub ladder: Vec<Rung>,
}

/// One rendition of a video ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    pub width: u32,
    pub height: u32,
    pub bitrate_kbps: u32,
}

impl Rung {
    /// `1280x720`, as the API shows it.
    pub fn name(&self) -> String {
        format!("{}x{}", self.width, self.height)
    }
}

impl VideoSend {
    /// The renditions, best first: the ladder, or the one the profile describes.
    pub fn rungs(&self) -> Vec<Rung> {
        if self.ladder.is_empty() {
            vec![Rung {
                width: self.width,
                height: self.height,
                bitrate_kbps: self.bitrate_kbps,
            }]
        } else {
            self.ladder.clone()
        }
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VideoSourceKind {
    Test,
    V4l2,
    Libcamera,
    Launch,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSend {
    /// `test` (audiotestsrc), `alsa` (a microphone), or `launch` (a gst-launch fragment).
    pub source: AudioSourceKind,
    /// The ALSA capture device, e.g. `default` or `hw:1,0`.
    pub device: Option<String>,
    pub launch: Option<String>,
    pub codecs: Vec<Codec>,
    #[serde(default = "default_audio_kbps")]
    pub bitrate_kbps: u32,
    #[serde(default)]
    pub encoders: Vec<String>,
    #[serde(default)]
    pub exclude_encoders: Vec<String>,
    /// Cancel the echo of the speaker in the microphone (AEC3: media::voice).
    #[serde(default)]
    pub echo_cancel: bool,
    /// With echo_cancel: also suppress stationary noise.
    #[serde(default)]
    pub noise_suppression: bool,
    /// With echo_cancel: automatic gain control of the microphone.
    #[serde(default)]
    pub gain_control: bool,
    /// Opus in-band FEC, its strength set from the calls' measured loss (on by default).
    #[serde(default = "default_true")]
    pub fec: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AudioSourceKind {
    Test,
    Alsa,
    Launch,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Receive {
    pub video: SinkKind,
    pub audio: SinkKind,
    /// With `audio = "alsa"`: the ALSA playback device (`default`, `hw:0,0`, …).
    pub audio_device: Option<String>,
    /// Receive jitterbuffer latency; webrtcbin's default of 200 ms delays the first frame.
    pub latency_ms: u32,
    /// Read capture times stamped into received pictures (`video.stamp_capture_time` on the
    /// sender) and report capture → decoded-frame latency in `/api/calls`.
    pub measure_latency: bool,
    /// Ask peers to send their Opus with redundancy (RED, RFC 2198; Chromium does): a lost
    /// packet is replaced by its copy in the next one (session::red).
    pub audio_red: bool,
}

/// Each key's default (an absent `[receive]` is an empty one).
impl Default for Receive {
    fn default() -> Receive {
        Receive {
            video: SinkKind::default(),
            audio: SinkKind::default(),
            audio_device: None,
            latency_ms: default_latency_ms(),
            measure_latency: false,
            audio_red: true,
        }
    }
}

/// What happens to decoded remote media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// Decode and count (the test profile, and a headless device that only reports).
    #[default]
    Count,
    /// Depayload and count frames without decoding (benchmark viewers: cheap receivers).
    Frames,
    /// Decode and play on the default output (autovideosink / autoaudiosink).
    Auto,
    /// Audio to an ALSA device (`receive.audio_device`).
    Alsa,
    /// Video straight to the display, without a desktop (kmssink).
    Kms,
    /// Video to a Wayland compositor (waylandsink).
    Wayland,
}

/// Capture formats a v4l2 camera may be asked for.
pub const KNOWN_FORMATS: &[&str] = &["YUY2", "UYVY", "NV12", "I420", "YV12", "RGB", "BGR", "MJPG"];

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
            match video.source {
                VideoSourceKind::V4l2 if video.device.is_none() => {
                    return Err(
                        "video.device: a v4l2 source needs a device, e.g. \"/dev/video0\"".into(),
                    );
                }
                VideoSourceKind::Launch
                    if video.launch.as_deref().unwrap_or("").trim().is_empty() =>
                {
                    return Err("video.launch: a launch source needs a gst-launch fragment".into());
                }
                _ => {}
            }
            let unknown_format = video
                .format
                .as_ref()
                .filter(|f| !KNOWN_FORMATS.contains(&f.as_str()));
            if let Some(format) = unknown_format {
                return Err(format!(
                    "video.format: {format:?} is not one of {}",
                    KNOWN_FORMATS.join(", ")
                ));
            }
            check_ladder(video)?;
        }
        if let Some(audio) = &self.audio {
            if audio.codecs.is_empty() {
                return Err("audio.codecs: name at least one codec".into());
            }
            if let Some(c) = audio.codecs.iter().find(|c| c.is_video()) {
                return Err(format!("audio.codecs: {c:?} is not an audio codec"));
            }
            if audio.source == AudioSourceKind::Launch
                && audio.launch.as_deref().unwrap_or("").trim().is_empty()
            {
                return Err("audio.launch: a launch source needs a gst-launch fragment".into());
            }
            if audio.echo_cancel && self.per_viewer_encoder {
                // One microphone pipeline per call would mean a canceller per call, and the
                // speaker's reference goes to one canceller (media::voice).
                return Err(
                    "audio.echo_cancel: not with per_viewer_encoder (one shared microphone)".into(),
                );
            }
        }
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
        let has = |factory: &str| gst::ElementFactory::find(factory).is_some();
        if let Some(video) = &self.video {
            match video.source {
                VideoSourceKind::V4l2 => {
                    let device = video.device.as_deref().unwrap_or("");
                    if !Path::new(device).exists() {
                        return Err(invalid(format!(
                            "video.device: {device} does not exist (is the camera plugged in? \
                             `webrtcd devices` lists cameras)"
                        )));
                    }
                    if !has("v4l2src") {
                        return Err(invalid(
                            "video.source: v4l2src is missing (install gstreamer1.0-plugins-good)"
                                .into(),
                        ));
                    }
                }
                VideoSourceKind::Libcamera if !has("libcamerasrc") => {
                    return Err(invalid(
                        "video.source: libcamerasrc is missing (install gstreamer1.0-libcamera)"
                            .into(),
                    ));
                }
                VideoSourceKind::Launch => {
                    let fragment = video.launch.as_deref().unwrap_or("");
                    gst::parse::bin_from_description(fragment, true)
                        .map_err(|e| invalid(format!("video.launch: {e}")))?;
                }
                _ => {}
            }
        }
        if let Some(audio) = &self.audio {
            match audio.source {
                AudioSourceKind::Alsa if !has("alsasrc") => {
                    return Err(invalid(
                        "audio.source: alsasrc is missing (install gstreamer1.0-alsa)".into(),
                    ));
                }
                AudioSourceKind::Launch => {
                    let fragment = audio.launch.as_deref().unwrap_or("");
                    gst::parse::bin_from_description(fragment, true)
                        .map_err(|e| invalid(format!("audio.launch: {e}")))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether calls put an echo probe in their speaker path.
    pub fn echo_cancel(&self) -> bool {
        self.audio.as_ref().is_some_and(|a| a.echo_cancel)
    }

    pub fn media_start_delay(&self) -> Duration {
        Duration::from_millis(self.media_start_delay_ms)
    }
}

/// A ladder goes from the best rendition down: sizes and rates that fall, none larger than
/// what is captured, at most [`MAX_RUNGS`] (each rung in use is an encoder running).
fn check_ladder(video: &VideoSend) -> Result<(), String> {
    let ladder = &video.ladder;
    if ladder.len() > MAX_RUNGS {
        return Err(format!("video.ladder: at most {MAX_RUNGS} renditions"));
    }
    for (i, rung) in ladder.iter().enumerate() {
        if rung.width == 0 || rung.height == 0 || rung.bitrate_kbps == 0 {
            return Err(format!(
                "video.ladder[{i}]: width, height and bitrate_kbps must be positive"
            ));
        }
        if rung.width > video.width || rung.height > video.height {
            return Err(format!(
                "video.ladder[{i}]: {} is larger than what is captured ({}x{})",
                rung.name(),
                video.width,
                video.height
            ));
        }
        if rung.width % 2 == 1 || rung.height % 2 == 1 {
            return Err(format!("video.ladder[{i}]: width and height must be even"));
        }
        if let Some(better) = i.checked_sub(1).map(|j| ladder[j])
            && rung.bitrate_kbps >= better.bitrate_kbps
        {
            return Err(format!(
                "video.ladder[{i}]: list renditions best first (bitrate_kbps must fall)"
            ));
        }
    }
    Ok(())
}

/// Renditions a ladder may have.
pub const MAX_RUNGS: usize = 4;

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
    fn a_camera_that_is_not_there_is_a_clear_error() {
        let _ = gst::init();
        let f = Path::new("camera.toml");
        let text = "name='cam'\n[video]\nsource='v4l2'\ndevice='/dev/video-does-not-exist'\ncodecs=['h264']";
        let p = Profile::parse(text, f).unwrap();
        let err = p.check_devices(f).unwrap_err().to_string();
        assert!(
            err.starts_with("camera.toml: video.device: /dev/video-does-not-exist does not exist"),
            "{err}"
        );
        let err = Profile::parse("name='cam'\n[video]\nsource='v4l2'\ncodecs=['h264']", f)
            .unwrap_err()
            .to_string();
        assert!(err.contains("video.device"), "{err}");
        let err = Profile::parse("name='cam'\n[video]\nsource='v4l2'\ndevice='/dev/video0'\nformat='H265'\ncodecs=['h264']", f)
            .unwrap_err()
            .to_string();
        assert!(err.contains("video.format"), "{err}");
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
        // One canceller takes the speaker's reference: one shared microphone.
        let audio = "[audio]\nsource='test'\ncodecs=['opus']\necho_cancel=true";
        let err = Profile::parse(&format!("name='a'\nper_viewer_encoder=true\n{audio}"), f)
            .unwrap_err()
            .to_string();
        assert!(err.contains("per_viewer_encoder"), "{err}");
        assert!(Profile::parse(&format!("name='a'\n{audio}"), f).is_ok());
    }

    #[test]
    fn a_ladder_goes_from_the_best_rendition_down() {
        let f = Path::new("l.toml");
        let with = |rungs: &str| {
            Profile::parse(
                &format!(
                    "name='l'\n[video]\nsource='test'\ncodecs=['vp8']\nwidth=1280\nheight=720\n{rungs}"
                ),
                f,
            )
        };
        let rung = |w: u32, h: u32, k: u32| {
            format!("[[video.ladder]]\nwidth={w}\nheight={h}\nbitrate_kbps={k}\n")
        };
        let good =
            with(&(rung(1280, 720, 2000) + &rung(640, 360, 600) + &rung(320, 180, 150))).unwrap();
        let rungs = good.video.unwrap().rungs();
        assert_eq!(rungs.len(), 3);
        assert_eq!(rungs[1].name(), "640x360");
        let single = with("").unwrap().video.unwrap().rungs();
        assert_eq!(
            single.len(),
            1,
            "no ladder: the profile's own size and rate"
        );
        let rising = with(&(rung(640, 360, 600) + &rung(1280, 720, 2000))).unwrap_err();
        assert!(rising.to_string().contains("video.ladder[1]"), "{rising}");
        let too_big = with(&rung(1920, 1080, 4000)).unwrap_err();
        assert!(
            too_big.to_string().contains("larger than what is captured"),
            "{too_big}"
        );
        let odd = with(&rung(641, 360, 600)).unwrap_err();
        assert!(odd.to_string().contains("even"), "{odd}");
    }
}
