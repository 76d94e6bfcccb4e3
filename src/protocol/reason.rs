//! Why calls end and why messages are refused: closed sets, named on the wire in kebab-case.

use serde::{Deserialize, Serialize};

/// Why a call ended: the `reason` of a `hangup`, a closed set (metric labels are made from
/// it, so what a peer sends cannot grow them). A reason this version does not know reads as
/// [`EndReason::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Someone hung up (the API, the page).
    Hangup,
    /// The peer hung up without saying why.
    RemoteHangup,
    Busy,
    /// The peer's connection to the relay went away.
    PeerLeft,
    /// The relay does not know the peer.
    UnknownPeer,
    /// The connection never came up in time.
    Timeout,
    IceFailed,
    /// The network path died for good.
    Network,
    MediaError,
    /// A capture device failed and could not be restarted.
    SourceError,
    /// An offer or answer that cannot be used.
    BadSdp,
    /// A fault in this daemon (the call's task failed).
    InternalError,
    /// The daemon's signaling went away mid-call.
    SignalingGone,
    Shutdown,
    Rejected,
    NoAnswer,
    Cancelled,
    /// The session id names another caller's live call (ids must be unique while live).
    SessionTaken,
    /// The `call` named a camera this device does not have.
    NoSuchCamera,
    /// The camera was taken out of the profile (a reload).
    CameraRemoved,
    /// The camera's source or encoders changed (a reload): its pipeline restarted.
    CameraChanged,
    Other,
}

impl EndReason {
    pub(super) const ALL: [EndReason; 22] = [
        EndReason::Hangup,
        EndReason::RemoteHangup,
        EndReason::Busy,
        EndReason::PeerLeft,
        EndReason::UnknownPeer,
        EndReason::Timeout,
        EndReason::IceFailed,
        EndReason::Network,
        EndReason::MediaError,
        EndReason::SourceError,
        EndReason::BadSdp,
        EndReason::InternalError,
        EndReason::SignalingGone,
        EndReason::Shutdown,
        EndReason::Rejected,
        EndReason::NoAnswer,
        EndReason::Cancelled,
        EndReason::SessionTaken,
        EndReason::NoSuchCamera,
        EndReason::CameraRemoved,
        EndReason::CameraChanged,
        EndReason::Other,
    ];

    /// The wire name (`ice-failed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Hangup => "hangup",
            EndReason::RemoteHangup => "remote-hangup",
            EndReason::Busy => "busy",
            EndReason::PeerLeft => "peer-left",
            EndReason::UnknownPeer => "unknown-peer",
            EndReason::Timeout => "timeout",
            EndReason::IceFailed => "ice-failed",
            EndReason::Network => "network",
            EndReason::MediaError => "media-error",
            EndReason::SourceError => "source-error",
            EndReason::BadSdp => "bad-sdp",
            EndReason::InternalError => "internal-error",
            EndReason::SignalingGone => "signaling-gone",
            EndReason::Shutdown => "shutdown",
            EndReason::Rejected => "rejected",
            EndReason::NoAnswer => "no-answer",
            EndReason::Cancelled => "cancelled",
            EndReason::SessionTaken => "session-taken",
            EndReason::NoSuchCamera => "no-such-camera",
            EndReason::CameraRemoved => "camera-removed",
            EndReason::CameraChanged => "camera-changed",
            EndReason::Other => "other",
        }
    }

    /// A peer's `reason` text: empty is a plain remote hangup; unknown text is `Other`.
    pub fn from_wire(text: &str) -> EndReason {
        if text.is_empty() {
            return EndReason::RemoteHangup;
        }
        EndReason::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .unwrap_or(EndReason::Other)
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Missing or empty on the wire: the peer hung up without saying why.
impl Default for EndReason {
    fn default() -> EndReason {
        EndReason::RemoteHangup
    }
}

impl Serialize for EndReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Any text reads as a reason: what this version does not know is [`EndReason::Other`].
impl<'de> Deserialize<'de> for EndReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EndReason, D::Error> {
        let text = String::deserialize(d)?;
        Ok(EndReason::from_wire(&text))
    }
}

/// Machine-readable reason carried by an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    BadMessage,
    TooLarge,
    UnknownPeer,
    IdTaken,
    NotRegistered,
    Unauthorized,
    /// Too many messages too fast, or the recipient is not keeping up: slow down.
    RateLimited,
}

impl ErrorCode {
    /// The wire name (`bad-message`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad-message",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::IdTaken => "id-taken",
            ErrorCode::NotRegistered => "not-registered",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate-limited",
        }
    }
}
