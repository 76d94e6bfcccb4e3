//! gst-launch fragments for sources, encoders and payloaders: the pieces both the shared
//! encoder and the per-viewer branches are built from.

use super::codecs::Codec;
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

/// The software encoder for `codec`, tuned for live low-latency streaming.
pub fn video_encoder(codec: Codec, video: &VideoSend) -> Option<String> {
    let kbps = video.bitrate_kbps;
    let kf = video.keyframe_interval;
    match codec {
        Codec::Vp8 => Some(format!(
            "vp8enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate={bps} \
             keyframe-max-dist={kf} lag-in-frames=0 error-resilient=partitions threads=2",
            bps = kbps * 1000
        )),
        Codec::H264 => Some(format!(
            "x264enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max={kf} ! \
             video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au"
        )),
        Codec::Opus => None,
    }
}

pub fn audio_encoder(codec: Codec, audio: &AudioSend) -> Option<String> {
    match codec {
        Codec::Opus => Some(format!(
            "opusenc bitrate={bps} frame-size=20",
            bps = audio.bitrate_kbps * 1000
        )),
        Codec::Vp8 | Codec::H264 => None,
    }
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
