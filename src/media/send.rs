//! Send branches: source → encoder → payloader → RTP caps, as a bin with one `src` pad that
//! the call links to webrtcbin. The payload type is a parameter because an answerer must use
//! the offerer's number.

use gst::prelude::*;

use super::MediaError;
use super::codecs::Codec;
use super::profile::{AudioSend, AudioSourceKind, VideoSend, VideoSourceKind};

/// A built branch, not yet in any pipeline.
pub struct SendBranch {
    pub bin: gst::Bin,
    pub codec: Codec,
    pub payload_type: u32,
}

pub fn video(video: &VideoSend, codec: Codec, payload_type: u32) -> Result<SendBranch, MediaError> {
    let source = match video.source {
        VideoSourceKind::Test => "videotestsrc is-live=true pattern=ball",
    };
    let raw = format!(
        "{source} ! video/x-raw,width={w},height={h},framerate={f}/1 ! videoconvert ! \
         queue max-size-buffers=2 max-size-bytes=0 max-size-time=0 leaky=downstream",
        w = video.width,
        h = video.height,
        f = video.framerate,
    );
    let kbps = video.bitrate_kbps;
    let kf = video.keyframe_interval;
    let encode = match codec {
        Codec::Vp8 => format!(
            "vp8enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate={bps} \
             keyframe-max-dist={kf} lag-in-frames=0 error-resilient=partitions threads=2 ! \
             rtpvp8pay pt={payload_type} mtu=1200 picture-id-mode=15-bit",
            bps = kbps * 1000
        ),
        Codec::H264 => format!(
            "x264enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max={kf} ! \
             video/x-h264,profile=constrained-baseline ! \
             rtph264pay pt={payload_type} mtu=1200 config-interval=-1 aggregate-mode=zero-latency"
        ),
        Codec::Opus => return Err(MediaError::WrongKind(codec)),
    };
    build(&format!("{raw} ! {encode}"), codec, payload_type)
}

pub fn audio(audio: &AudioSend, codec: Codec, payload_type: u32) -> Result<SendBranch, MediaError> {
    let source = match audio.source {
        AudioSourceKind::Test => "audiotestsrc is-live=true wave=sine freq=440 volume=0.2",
    };
    let encode = match codec {
        Codec::Opus => format!(
            "opusenc bitrate={bps} frame-size=20 ! rtpopuspay pt={payload_type}",
            bps = audio.bitrate_kbps * 1000
        ),
        Codec::Vp8 | Codec::H264 => return Err(MediaError::WrongKind(codec)),
    };
    let desc = format!(
        "{source} ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 ! \
         queue max-size-time=100000000 leaky=downstream ! {encode}"
    );
    build(&desc, codec, payload_type)
}

fn build(desc: &str, codec: Codec, payload_type: u32) -> Result<SendBranch, MediaError> {
    // The caps filter is set from code: caps inside launch syntax need fragile quoting.
    let desc = format!("{desc} ! capsfilter name=rtpcaps");
    let bin = gst::parse::bin_from_description(&desc, true)
        .map_err(|e| MediaError::Build(format!("{desc}: {e}")))?;
    let filter = bin
        .by_name("rtpcaps")
        .ok_or_else(|| MediaError::Build("capsfilter missing".into()))?;
    filter.set_property("caps", codec.rtp_caps(payload_type));
    Ok(SendBranch {
        bin,
        codec,
        payload_type,
    })
}
