//! gst-launch fragments for sources, encoders and payloaders: the pieces both the shared
//! encoder and the per-viewer branches are built from.

use super::codecs::Codec;
use super::encoder::{self, EncodeSettings};
use super::profile::{AudioSend, AudioSourceKind, VideoSend, VideoSourceKind};
use super::v4l2;

/// Raw video from the profile's source, at its size and rate. `camera_caps` is what the
/// camera offers (from the device monitor), used to pick a capture format when the profile
/// names none.
pub fn video_source(video: &VideoSend, camera_caps: Option<&gst::CapsRef>) -> String {
    let (w, h, f) = (video.width, video.height, video.framerate);
    let size = format!("width={w},height={h},framerate={f}/1");
    let device = video.device.as_deref().unwrap_or("");
    let capture = match video.source {
        VideoSourceKind::Test => {
            format!("videotestsrc is-live=true pattern=ball ! video/x-raw,{size}")
        }
        VideoSourceKind::V4l2 => {
            let format = video
                .format
                .clone()
                .or_else(|| camera_caps.and_then(|caps| v4l2::choose_format(caps, w, h, f)));
            match format.as_deref() {
                Some("MJPG") => {
                    format!("v4l2src device=\"{device}\" ! image/jpeg,{size} ! jpegdec")
                }
                Some(raw) => {
                    format!("v4l2src device=\"{device}\" ! video/x-raw,format={raw},{size}")
                }
                None => format!("v4l2src device=\"{device}\" ! video/x-raw,{size}"),
            }
        }
        VideoSourceKind::Libcamera => {
            let name = if device.is_empty() {
                String::new()
            } else {
                format!(" camera-name=\"{device}\"")
            };
            format!("libcamerasrc{name} ! video/x-raw,{size}")
        }
        VideoSourceKind::Launch => format!(
            "{} ! videoconvert ! videoscale ! videorate ! video/x-raw,{size}",
            video.launch.as_deref().unwrap_or("")
        ),
    };
    format!(
        "{capture} ! videoconvert ! \
         queue name=raw max-size-buffers=2 max-size-bytes=0 max-size-time=0 leaky=downstream"
    )
}

/// Raw 48 kHz stereo audio from the profile's source.
pub fn audio_source(audio: &AudioSend) -> String {
    let capture = match audio.source {
        AudioSourceKind::Test => {
            "audiotestsrc is-live=true wave=sine freq=440 volume=0.2".to_string()
        }
        AudioSourceKind::Alsa => format!(
            "alsasrc device=\"{}\"",
            audio.device.as_deref().unwrap_or("default")
        ),
        AudioSourceKind::Launch => audio.launch.clone().unwrap_or_default(),
    };
    // The echo canceller (media::voice) attaches to the tap by name once the pipeline is
    // built; it works on 48 kHz mono floats.
    let echo = if audio.echo_cancel {
        format!(
            " ! audio/x-raw,format=F32LE,rate=48000,channels=1,layout=interleaved ! \
             identity name={} silent=true ! audioconvert",
            super::voice::CAPTURE_TAP
        )
    } else {
        String::new()
    };
    format!(
        "{capture} ! audioconvert ! audioresample{echo} ! audio/x-raw,rate=48000,channels=2 ! \
         queue max-size-time=100000000 leaky=downstream"
    )
}

/// The chosen encoder for a video codec, with the profile's rate and keyframe settings.
pub fn video_encoder(codec: Codec, factory: &str, video: &VideoSend) -> String {
    video_encoder_at(codec, factory, video, video.bitrate_kbps)
}

/// The same at another rate (a rung of a ladder).
pub fn video_encoder_at(codec: Codec, factory: &str, video: &VideoSend, kbps: u32) -> String {
    let settings = EncodeSettings {
        bitrate_kbps: kbps,
        keyframe_interval: video.keyframe_interval,
        fec: false,
    };
    encoder::fragment(codec, factory, settings)
}

pub fn audio_encoder(codec: Codec, factory: &str, audio: &AudioSend) -> String {
    let settings = EncodeSettings {
        bitrate_kbps: audio.bitrate_kbps,
        keyframe_interval: 0,
        fec: audio.fec,
    };
    encoder::fragment(codec, factory, settings)
}

/// The RTP payloader for `codec` with payload type `pt`.
pub fn payloader(codec: Codec, pt: u32) -> String {
    payloader_named(codec, pt, "pay")
}

/// [`payloader`] with the element named `name` (the RTSP server finds its streams' payloaders
/// as `pay0`, `pay1`…).
pub fn payloader_named(codec: Codec, pt: u32, name: &str) -> String {
    match codec {
        Codec::Vp8 => format!("rtpvp8pay name={name} pt={pt} mtu=1200 picture-id-mode=15-bit"),
        Codec::H264 => format!(
            "rtph264pay name={name} pt={pt} mtu=1200 config-interval=-1 aggregate-mode=zero-latency"
        ),
        Codec::Opus => format!("rtpopuspay name={name} pt={pt}"),
    }
}
