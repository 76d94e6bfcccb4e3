//! Everything that can happen to a call, as messages to its task.

use crate::protocol::Message;

#[derive(Debug)]
pub enum Event {
    /// A routed message from the peer (offer, answer, candidate, hangup).
    Remote(Message),
    /// End the call from this side (API hangup, peer left, daemon shutdown).
    End {
        reason: String,
        tell_peer: bool,
    },

    // Posted by webrtcbin's signal handlers:
    IceCandidate {
        mline: u32,
        candidate: String,
    },
    GatheringComplete,
    /// A remote stream's pad, blocked by a probe until the task links it.
    PadAdded {
        pad: gst::Pad,
        probe: Option<gst::PadProbeId>,
    },
    DataChannel(gst_webrtc::WebRTCDataChannel),
    ConnectionState(gst_webrtc::WebRTCPeerConnectionState),

    // Posted by the data channel's signal handlers:
    ChannelOpen,
    ChannelClosed,
    ChannelText(String),

    /// Posted by the pipeline's bus.
    PipelineError(String),
}
