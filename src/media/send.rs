//! Send branches: bins with one `src` pad of RTP that the call links to webrtcbin. The
//! payload type is a parameter because an answerer must use the offerer's number.
//!
//! Per-viewer branches (`per_viewer_encoder = true`) capture and encode inside the call's own
//! pipeline; the default shares one capture and encoder among all calls (`super::shared`,
//! which feeds a branch built here).

use gst::prelude::*;

use super::MediaError;
use super::codecs::Codec;
use super::fragments;
use super::profile::{AudioSend, VideoSend};

/// A built branch, not yet in any pipeline.
pub struct SendBranch {
    pub bin: gst::Bin,
    pub codec: Codec,
    pub payload_type: u32,
    /// The SSRC the branch sends with, fixed before any media flows. webrtcbin writes a
    /// track's `a=ssrc`/`msid` lines from the caps the branch offers, so the SDP carries it
    /// without waiting for the encoder's first frame. (Without it a browser must guess which
    /// stream is which from payload types; on a loaded machine Chromium once never played the
    /// audio.)
    pub ssrc: u32,
    /// The branch's own encoder (`per_viewer_encoder`), whose rate can follow the link.
    pub encoder: Option<gst::Element>,
}

/// Transport-wide congestion control's RTP header extension: each packet carries a
/// sequence number over the whole transport, and the receiver reports when each arrived.
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

impl SendBranch {
    /// Numbers the packets for transport-wide congestion control under extension `id` (the
    /// payloader adds the extension the caps name) and asks the peer for its feedback.
    pub fn use_transport_cc(&self, id: u32) {
        let Some(filter) = self.bin.by_name("rtpcaps") else {
            return;
        };
        let mut caps = filter.property::<gst::Caps>("caps");
        if let Some(s) = caps.make_mut().structure_mut(0) {
            s.set("rtcp-fb-transport-cc", true);
            s.set(format!("extmap-{id}"), TRANSPORT_CC_URI);
        }
        filter.set_property("caps", caps);
    }
}

pub fn video(
    video: &VideoSend,
    codec: Codec,
    factory: &str,
    payload_type: u32,
) -> Result<SendBranch, MediaError> {
    let encoder = fragments::video_encoder(codec, factory, video);
    let desc = format!(
        "{} ! {encoder} ! {}",
        fragments::video_source(video, None),
        fragments::payloader(codec, payload_type)
    );
    let mut branch = build(&desc, codec, payload_type)?;
    if video.stamp_capture_time {
        stamp_raw(&branch.bin);
    }
    branch.encoder = branch
        .bin
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == factory));
    Ok(branch)
}

pub fn audio(
    audio: &AudioSend,
    codec: Codec,
    factory: &str,
    payload_type: u32,
) -> Result<SendBranch, MediaError> {
    let encoder = fragments::audio_encoder(codec, factory, audio);
    let desc = format!(
        "{} ! {encoder} ! {}",
        fragments::audio_source(audio),
        fragments::payloader(codec, payload_type)
    );
    let branch = build(&desc, codec, payload_type)?;
    super::voice::attach_capture(&branch.bin, audio)?;
    Ok(branch)
}

/// A random SSRC (RFC 3550 wants them random; collisions across calls do not matter, each
/// call is its own RTP session).
fn random_ssrc() -> u32 {
    use std::hash::BuildHasher;
    let hasher = std::collections::hash_map::RandomState::new();
    hasher.hash_one(std::time::SystemTime::now()) as u32
}

/// Stamps the capture time into raw frames as they enter the queue after capture.
pub(super) fn stamp_raw(bin: &gst::Bin) {
    if let Some(pad) = bin.by_name("raw").and_then(|q| q.static_pad("sink")) {
        super::stamp::stamp_frames(&pad);
    }
}

/// Builds `desc ! capsfilter` as a bin with a ghost `src` pad carrying `codec`'s RTP caps.
pub(super) fn build(desc: &str, codec: Codec, payload_type: u32) -> Result<SendBranch, MediaError> {
    // The caps filter is set from code: caps inside launch syntax need fragile quoting.
    let desc = format!("{desc} ! capsfilter name=rtpcaps");
    let bin = gst::parse::bin_from_description(&desc, true)
        .map_err(|e| MediaError::Build(format!("{desc}: {e}")))?;
    let filter = bin
        .by_name("rtpcaps")
        .ok_or_else(|| MediaError::Build("capsfilter missing".into()))?;
    let ssrc = random_ssrc();
    if let Some(pay) = bin.by_name("pay") {
        pay.set_property("ssrc", ssrc);
    }
    let caps = codec.rtp_caps(payload_type);
    let caps = {
        let mut caps = caps;
        if let Some(s) = caps.make_mut().structure_mut(0) {
            s.set("ssrc", ssrc);
        }
        caps
    };
    filter.set_property("caps", caps);
    Ok(SendBranch {
        bin,
        codec,
        payload_type,
        ssrc,
        encoder: None,
    })
}
