//! gst-launch fragments for sources, encoders and payloaders: the pieces both the shared
//! encoder and the per-viewer branches are built from.

use super::codecs::Codec;
use super::encoder::{self, EncodeSettings};
use super::profile::{AudioSend, AudioSourceKind, VideoSend, VideoSourceKind};

/// Raw video from the profile's source, at its size and rate.
pub fn video_source(video: &VideoSend) -> String {
    let source = match video.source {
        VideoSourceKind::Test => "videotestsrc is-live=true pattern=ball",
    };
    format!(
        "{source} ! video/x-raw,width={w},height={h},framerate={f}/1 ! videoconvert ! \
         queue max-size-buffers=2 max-size-bytes=0 max-size-time=0 leaky=downstream",
        w = video.width,
        h = video.height,
        f = video.framerate,
    )
}

/// Raw 48 kHz stereo audio from the profile's source.
pub fn audio_source(audio: &AudioSend) -> String {
    let source = match audio.source {
        AudioSourceKind::Test => "audiotestsrc is-live=true wave=sine freq=440 volume=0.2",
    };
    format!(
        "{source} ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 ! \
         queue max-size-time=100000000 leaky=downstream"
    )
}

/// The chosen encoder for a video codec, with the profile's rate and keyframe settings.
pub fn video_encoder(codec: Codec, factory: &str, video: &VideoSend) -> String {
    let settings = EncodeSettings {
        bitrate_kbps: video.bitrate_kbps,
        keyframe_interval: video.keyframe_interval,
    };
    encoder::fragment(codec, factory, settings)
}

pub fn audio_encoder(codec: Codec, factory: &str, audio: &AudioSend) -> String {
    let settings = EncodeSettings {
        bitrate_kbps: audio.bitrate_kbps,
        keyframe_interval: 0,
    };
    encoder::fragment(codec, factory, settings)
}

/// The RTP payloader for `codec` with payload type `pt`.
pub fn payloader(codec: Codec, pt: u32) -> String {
    match codec {
        Codec::Vp8 => format!("rtpvp8pay pt={pt} mtu=1200 picture-id-mode=15-bit"),
        Codec::H264 => {
            format!("rtph264pay pt={pt} mtu=1200 config-interval=-1 aggregate-mode=zero-latency")
        }
        Codec::Opus => format!("rtpopuspay pt={pt}"),
    }
}
