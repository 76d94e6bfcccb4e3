//! What `/metrics` shows, in one registry every layer records into.
//!
//! A leaf module like `protocol`: it knows nothing of calls, media or HTTP; they call in.
//! Labels are kept to small, fixed sets (roles, media kinds, encoder names, short reasons)
//! so a misbehaving peer cannot grow the series without bound.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    pub role: &'static str,
    /// The camera the call watches (a profile's camera names: a closed set).
    pub camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabels {
    pub role: &'static str,
    /// One of the closed set of end reasons (`protocol::EndReason`).
    pub reason: &'static str,
    pub camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabel {
    /// `camera`, `microphone` or `speaker`.
    pub device: &'static str,
    /// Whose camera or microphone (empty: the speaker, the daemon's own).
    pub camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EncoderLabel {
    pub encoder: String,
    pub camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodecLabel {
    pub codec: &'static str,
    pub camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CameraLabel {
    pub camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub sessions_active: Family<RoleLabel, Gauge>,
    pub sessions_ended: Family<EndLabels, Counter>,
    pub negotiation_seconds: Histogram,
    pub first_frame_seconds: Histogram,
    pub ice_failures: Counter,
    pub rtp_bytes_sent: Family<KindLabel, Counter>,
    pub rtp_packets_sent: Family<KindLabel, Counter>,
    pub rtp_bytes_received: Family<KindLabel, Counter>,
    pub rtp_packets_received: Family<KindLabel, Counter>,
    pub frames_encoded: Family<EncoderLabel, Counter>,
    pub keyframes_forced: Family<CodecLabel, Counter>,
    pub relay_peers: Gauge,
    pub relay_routed: Family<TypeLabel, Counter>,
    pub relay_rejected: Family<ReasonLabel, Counter>,
    pub connections_refused: Counter,
    pub rendition_switches: Counter,
    pub packets_retransmitted: Counter,
    pub ice_restarts: Counter,
    pub devices_lost: Family<DeviceLabel, Counter>,
    pub devices_down: Family<DeviceLabel, Gauge>,
    pub recording_bytes: Family<CameraLabel, Counter>,
    pub recording_segments: Family<CameraLabel, Counter>,
    pub recordings_deleted: Family<ReasonLabel, Counter>,
    pub recording_paused: Family<CameraLabel, Gauge>,
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("webrtcd"),
            sessions_active: Family::default(),
            sessions_ended: Family::default(),
            // 10 ms … ~20 s.
            negotiation_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            first_frame_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            ice_failures: Counter::default(),
            rtp_bytes_sent: Family::default(),
            rtp_packets_sent: Family::default(),
            rtp_bytes_received: Family::default(),
            rtp_packets_received: Family::default(),
            frames_encoded: Family::default(),
            keyframes_forced: Family::default(),
            relay_peers: Gauge::default(),
            relay_routed: Family::default(),
            relay_rejected: Family::default(),
            connections_refused: Counter::default(),
            rendition_switches: Counter::default(),
            packets_retransmitted: Counter::default(),
            ice_restarts: Counter::default(),
            devices_lost: Family::default(),
            devices_down: Family::default(),
            recording_bytes: Family::default(),
            recording_segments: Family::default(),
            recordings_deleted: Family::default(),
            recording_paused: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "sessions_active",
            "Calls in progress",
            m.sessions_active.clone(),
        );
        r.register(
            "sessions_ended",
            "Calls ended, by role and end reason",
            m.sessions_ended.clone(),
        );
        r.register(
            "negotiation_seconds",
            "From a call's start to its peer connection being connected",
            m.negotiation_seconds.clone(),
        );
        r.register(
            "first_frame_seconds",
            "From a call's start to its first decoded video frame",
            m.first_frame_seconds.clone(),
        );
        r.register(
            "ice_failures",
            "Calls whose connection failed or never came up",
            m.ice_failures.clone(),
        );
        r.register(
            "rtp_sent_bytes",
            "RTP bytes handed to the peer connections (before SRTP)",
            m.rtp_bytes_sent.clone(),
        );
        r.register(
            "rtp_sent_packets",
            "RTP packets handed to the peer connections",
            m.rtp_packets_sent.clone(),
        );
        r.register(
            "rtp_received_bytes",
            "RTP bytes received from peers (after SRTP)",
            m.rtp_bytes_received.clone(),
        );
        r.register(
            "rtp_received_packets",
            "RTP packets received from peers",
            m.rtp_packets_received.clone(),
        );
        r.register(
            "frames_encoded",
            "Frames out of each encoder",
            m.frames_encoded.clone(),
        );
        r.register(
            "keyframes_forced",
            "Keyframes asked of shared encoders (joining viewers, PLI/FIR, stalls)",
            m.keyframes_forced.clone(),
        );
        r.register(
            "relay_peers",
            "Peers registered with the embedded relay",
            m.relay_peers.clone(),
        );
        r.register(
            "relay_messages_routed",
            "Messages the relay delivered, by type",
            m.relay_routed.clone(),
        );
        r.register(
            "relay_messages_rejected",
            "Messages the relay refused, by error code",
            m.relay_rejected.clone(),
        );
        r.register(
            "connections_refused",
            "HTTP connections closed at once: the total or per-address cap was reached",
            m.connections_refused.clone(),
        );
        r.register(
            "rendition_switches",
            "Calls moved to another rendition of a video ladder (the link's estimate changed)",
            m.rendition_switches.clone(),
        );
        r.register(
            "packets_retransmitted",
            "RTP packets sent again because a peer reported them lost (NACK, RTX)",
            m.packets_retransmitted.clone(),
        );
        r.register(
            "ice_restarts",
            "ICE restarts on running calls, made or answered (a peer's path changed)",
            m.ice_restarts.clone(),
        );
        r.register(
            "devices_lost",
            "Times a shared source's device failed or went quiet (unplugged, a sound server \
             that lost it), by device",
            m.devices_lost.clone(),
        );
        r.register(
            "devices_down",
            "Shared sources whose device is lost now (retried until it returns), by device",
            m.devices_down.clone(),
        );
        r.register(
            "recording_written_bytes",
            "Bytes of recordings written, by camera",
            m.recording_bytes.clone(),
        );
        r.register(
            "recording_segments",
            "Recording segments finished, by camera",
            m.recording_segments.clone(),
        );
        r.register(
            "recordings_deleted",
            "Recording segments deleted by retention, by reason (age, space)",
            m.recordings_deleted.clone(),
        );
        r.register(
            "recording_paused",
            "1 while a camera's recording is paused (its disk cannot be written)",
            m.recording_paused.clone(),
        );
        m
    }

    /// The Prometheus text exposition of everything.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_prefix_and_eof() {
        get().ice_failures.inc();
        let text = get().encode();
        assert!(text.contains("webrtcd_ice_failures_total"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
