//! Several cameras in one profile (`[[camera]]`, each with its `[camera.video]` and optional
//! `[camera.audio]`, the keys of `[video]` and `[audio]`). A profile with a top-level
//! `[video]`/`[audio]` is one camera, named after the profile. Each camera is served from a
//! view of the profile of its own ([`Profile::for_camera`]): its encoders and its calls are
//! built as a one-camera daemon's were.

use serde::Deserialize;

use super::{AudioSend, MotionSettings, Profile, VideoSend};
use crate::camera_name::{CameraName, MAX_CAMERA_CHARS};

/// Cameras a profile may list: each watched camera is a capture and its encoders running.
pub const MAX_CAMERAS: usize = 16;

/// One `[[camera]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// 1–32 of `a-z 0-9 - _`: in URLs (`/api/cameras/{name}`, `rtsp://…/{name}`) as it is.
    pub name: CameraName,
    pub video: Option<VideoSend>,
    /// A camera may have no microphone.
    pub audio: Option<AudioSend>,
    /// Watching its picture for motion (off by default).
    pub motion: Option<MotionSettings>,
}

impl Profile {
    /// The cameras, the first being the one used where none is named.
    pub fn cameras(&self) -> Vec<CameraConfig> {
        if !self.camera.is_empty() {
            return self.camera.clone();
        }
        vec![CameraConfig {
            name: name_from(&self.name),
            video: self.video.clone(),
            audio: self.audio.clone(),
            motion: self.motion.clone(),
        }]
    }

    /// The profile as `camera` is served: its video and audio in `[video]` and `[audio]`, no
    /// other camera. Encoders, snapshots and calls read only these.
    pub fn for_camera(&self, camera: &CameraConfig) -> Profile {
        let speaker_feeds_canceller = self
            .cameras()
            .iter()
            .any(|c| c.audio.as_ref().is_some_and(|a| a.echo_cancel));
        Profile {
            // Logs and metric labels of its encoders name the camera.
            name: camera.name.to_string(),
            video: camera.video.clone(),
            audio: camera.audio.clone(),
            motion: camera.motion.clone(),
            camera: Vec::new(),
            speaker_feeds_canceller,
            ..self.clone()
        }
    }

    /// Whether a camera served from this view and one served from `other` encode alike: the
    /// same sources, codecs, encoders and ladder, and the daemon's keys that its shared
    /// encoders read. A reload keeps such a camera running, its calls untouched.
    pub fn encodes_like(&self, other: &Profile) -> bool {
        self.video == other.video
            && self.audio == other.audio
            && self.per_viewer_encoder == other.per_viewer_encoder
            && self.linger_ms == other.linger_ms
            && self.source_restart_limit == other.source_restart_limit
    }

    /// Whether this view and `other` differ, if at all, only in their video rates
    /// (`bitrate_kbps`, the ladder's rates; sizes kept): a reload then sets the running
    /// encoders' rates and keeps every call.
    pub fn rates_differ_only(&self, other: &Profile) -> bool {
        let without_rates = |p: &Profile| {
            p.video.clone().map(|mut video| {
                video.bitrate_kbps = 0;
                for rung in &mut video.ladder {
                    rung.bitrate_kbps = 0;
                }
                video
            })
        };
        let other_same = Profile {
            video: without_rates(other),
            ..other.clone()
        };
        Profile {
            video: without_rates(self),
            ..self.clone()
        }
        .encodes_like(&other_same)
    }

    /// `message` about `camera`, naming the camera when the profile lists several.
    pub(super) fn about(&self, camera: &CameraConfig, message: String) -> String {
        if self.camera.is_empty() {
            message
        } else {
            format!("camera {:?}: {message}", camera.name.as_str())
        }
    }

    pub(super) fn check_cameras(&self) -> Result<(), String> {
        if !self.camera.is_empty()
            && (self.video.is_some() || self.audio.is_some() || self.motion.is_some())
        {
            return Err(
                "video, audio, motion: a profile with [[camera]] gives each camera its own \
                 [camera.video], [camera.audio] and [camera.motion]; move them there"
                    .into(),
            );
        }
        if self.camera.len() > MAX_CAMERAS {
            return Err(format!("camera: at most {MAX_CAMERAS} cameras"));
        }
        let cameras = self.cameras();
        for (i, camera) in cameras.iter().enumerate() {
            if cameras[..i].iter().any(|c| c.name == camera.name) {
                return Err(self.about(camera, "name: two cameras have this name".into()));
            }
            let checked = camera.video.as_ref().map_or(Ok(()), VideoSend::check);
            let checked = checked.and_then(|()| {
                camera
                    .audio
                    .as_ref()
                    .map_or(Ok(()), |a| a.check(self.per_viewer_encoder))
            });
            let checked = checked.and_then(|()| match &camera.motion {
                Some(motion) if motion.enabled && camera.video.is_none() => {
                    Err("motion.enabled: the camera has no video to watch".into())
                }
                Some(motion) => motion.check(),
                None => Ok(()),
            });
            checked.map_err(|message| self.about(camera, message))?;
        }
        let cancelling: Vec<&str> = cameras
            .iter()
            .filter(|c| c.audio.as_ref().is_some_and(|a| a.echo_cancel))
            .map(|c| c.name.as_str())
            .collect();
        if cancelling.len() > 1 {
            // The speaker's sound is the reference of one canceller (media::voice).
            return Err(format!(
                "audio.echo_cancel: one camera's microphone at most (cameras {})",
                cancelling.join(", ")
            ));
        }
        Ok(())
    }
}

/// A one-camera profile's camera is named after the profile: its name as a camera name
/// (lowercase, other characters as `-`), or `camera` when nothing is left of it.
fn name_from(profile: &str) -> CameraName {
    let name: String = profile
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => c,
            _ => '-',
        })
        .take(MAX_CAMERA_CHARS)
        .collect();
    CameraName::parse(name.trim_matches('-')).unwrap_or_else(|_| CameraName::local("camera"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_one_camera_profile_is_a_camera_named_after_it() {
        assert_eq!(name_from("door").as_str(), "door");
        assert_eq!(name_from("Front Door!").as_str(), "front-door");
        assert_eq!(name_from("").as_str(), "camera");
        assert_eq!(name_from("ééé").as_str(), "camera");
        assert_eq!(name_from(&"x".repeat(40)).as_str().len(), 32);
        let p = Profile::parse(
            "name='Door'\n[video]\nsource='test'\ncodecs=['vp8']",
            Path::new("p.toml"),
        )
        .unwrap();
        let cameras = p.cameras();
        assert_eq!(cameras.len(), 1);
        assert_eq!(cameras[0].name.as_str(), "door");
        assert!(cameras[0].video.is_some() && cameras[0].audio.is_none());
    }
}
