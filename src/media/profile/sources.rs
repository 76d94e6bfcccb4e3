//! What a camera sends: its video (`[video]`, `[camera.video]`) and audio (`[audio]`,
//! `[camera.audio]`), and the checks of each. A message names the key relative to its table
//! (`video.codecs`); the caller says which camera.

use std::path::Path;

use serde::Deserialize;

use crate::media::codecs::Codec;

#[derive(Debug, Clone, PartialEq, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VideoSourceKind {
    Test,
    V4l2,
    Libcamera,
    Launch,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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

/// Capture formats a v4l2 camera may be asked for.
pub const KNOWN_FORMATS: &[&str] = &["YUY2", "UYVY", "NV12", "I420", "YV12", "RGB", "BGR", "MJPG"];

fn default_true() -> bool {
    true
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

impl VideoSend {
    /// What can be told from the file alone.
    pub(super) fn check(&self) -> Result<(), String> {
        let video = self;
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
            VideoSourceKind::Launch if video.launch.as_deref().unwrap_or("").trim().is_empty() => {
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
        check_ladder(video)
    }

    /// What only this machine can tell: the camera is there, the plugins are.
    pub(super) fn check_devices(&self) -> Result<(), String> {
        match self.source {
            VideoSourceKind::V4l2 => {
                let device = self.device.as_deref().unwrap_or("");
                if !Path::new(device).exists() {
                    return Err(format!(
                        "video.device: {device} does not exist (is the camera plugged in? \
                         `webrtcd devices` lists cameras)"
                    ));
                }
                if !has("v4l2src") {
                    return Err(
                        "video.source: v4l2src is missing (install gstreamer1.0-plugins-good)"
                            .into(),
                    );
                }
            }
            VideoSourceKind::Libcamera if !has("libcamerasrc") => {
                return Err(
                    "video.source: libcamerasrc is missing (install gstreamer1.0-libcamera)".into(),
                );
            }
            VideoSourceKind::Launch => {
                let fragment = self.launch.as_deref().unwrap_or("");
                gst::parse::bin_from_description(fragment, true)
                    .map_err(|e| format!("video.launch: {e}"))?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl AudioSend {
    /// What can be told from the file alone.
    pub(super) fn check(&self, per_viewer_encoder: bool) -> Result<(), String> {
        let audio = self;
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
        if audio.echo_cancel && per_viewer_encoder {
            // One microphone pipeline per call would mean a canceller per call, and the
            // speaker's reference goes to one canceller (media::voice).
            return Err(
                "audio.echo_cancel: not with per_viewer_encoder (one shared microphone)".into(),
            );
        }
        Ok(())
    }

    /// What only this machine can tell: the plugins are there, the fragment parses.
    pub(super) fn check_devices(&self) -> Result<(), String> {
        match self.source {
            AudioSourceKind::Alsa if !has("alsasrc") => {
                Err("audio.source: alsasrc is missing (install gstreamer1.0-alsa)".into())
            }
            AudioSourceKind::Launch => {
                let fragment = self.launch.as_deref().unwrap_or("");
                gst::parse::bin_from_description(fragment, true)
                    .map(|_| ())
                    .map_err(|e| format!("audio.launch: {e}"))
            }
            _ => Ok(()),
        }
    }
}

fn has(factory: &str) -> bool {
    gst::ElementFactory::find(factory).is_some()
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
