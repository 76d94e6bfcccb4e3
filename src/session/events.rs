//! Everything this side does to a call, as messages to its task. What the peer sends
//! (signaling, DataChannel text) comes on its own bounded queue
//! ([`PeerInput`]); these events are few by construction: one per candidate of
//! a local interface, state change, pad or channel, and one end.

use crate::protocol::{EndReason, Signal};

/// What the peer sends the session: bounded (see `call::PEER_QUEUE`).
#[derive(Debug)]
pub enum PeerInput {
    Signaling(Signal),
    ChannelText(String),
}

#[derive(Debug)]
pub enum Event {
    /// End the call from this side (API hangup, peer left, daemon shutdown).
    End {
        reason: EndReason,
        tell_peer: bool,
    },
    /// Someone accepted the ringing call: answer it.
    Accept,

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

    /// Posted by the pipeline's bus.
    PipelineError(String),
}
