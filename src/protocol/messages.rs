//! The messages of protocol v1, typed by who sends them: a client to the relay
//! ([`ToRelay`]), the relay to a client ([`FromRelay`]), and one peer to another through the
//! relay ([`Signal`], carried both ways). One `type` field names each on the wire.

use serde::{Deserialize, Serialize};

use super::ids::{PeerId, SessionId};
use super::reason::{EndReason, ErrorCode};
use crate::camera_name::CameraName;

/// Addressing shared by every message the relay routes from one peer to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The recipient's registered id.
    pub to: PeerId,
    /// The sender's registered id. Set by the relay; whatever a client puts here is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PeerId>,
    /// The call this message belongs to, chosen by the caller.
    pub session: SessionId,
}

impl Route {
    /// A route this process makes (to a peer it already knows, for a session it knows).
    pub fn new(to: &str, session: &str) -> Route {
        Route {
            to: PeerId::local(to),
            from: None,
            session: SessionId::local(session),
        }
    }
}

/// Every signal's route, by reference or mutable reference as `$signal` is.
macro_rules! route_of {
    ($signal:expr) => {
        match $signal {
            Signal::Call { route, .. }
            | Signal::Ringing { route, .. }
            | Signal::Offer { route, .. }
            | Signal::Answer { route, .. }
            | Signal::Candidate { route, .. }
            | Signal::Hangup { route, .. } => route,
        }
    };
}

/// What one peer tells another about a call; the relay routes it by its [`Route`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Signal {
    /// An invitation to a call. Carries no SDP; the caller offers next.
    Call {
        #[serde(flatten)]
        route: Route,
        /// (v1.2) The caller takes an early answer in `ringing`: a callee that rings may
        /// answer at once, so that ICE and DTLS are up by the time someone accepts.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        early: bool,
        /// (v1.2) Which of the callee's cameras to watch; none: its first. A callee that has
        /// no camera of that name answers `hangup` reason `no-such-camera`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        camera: Option<CameraName>,
    },
    /// (v1.1) callee → caller: the call rings; a person will accept or reject it. The callee
    /// holds the offer until then. Clients that predate it ignore it.
    ///
    /// (v1.2) To a caller whose `call` said `early`, a second `ringing` may carry the answer
    /// (`sdp`): the connection comes up while it rings, and the callee sends and plays nothing
    /// until someone accepts — then the same answer comes as `answer`.
    Ringing {
        #[serde(flatten)]
        route: Route,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp: Option<String>,
    },
    Offer {
        #[serde(flatten)]
        route: Route,
        sdp: String,
    },
    Answer {
        #[serde(flatten)]
        route: Route,
        sdp: String,
    },
    /// One trickled ICE candidate; an empty `candidate` means end of candidates.
    Candidate {
        #[serde(flatten)]
        route: Route,
        candidate: String,
        #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        #[serde(
            rename = "sdpMLineIndex",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        sdp_mline_index: Option<u32>,
    },
    /// The call is over. `reason` is the sender's text, passed on by the relay as it came
    /// (peers may use reasons of their own); [`Signal::end_reason`] reads it as an
    /// [`EndReason`].
    Hangup {
        #[serde(flatten)]
        route: Route,
        #[serde(default)]
        reason: String,
        /// For people: what went wrong (e.g. why an offer was refused). Optional.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

impl Signal {
    /// Every signal's `type`.
    pub const KINDS: [&'static str; 6] =
        ["call", "ringing", "offer", "answer", "candidate", "hangup"];

    /// The wire `type` (`offer`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Signal::Call { .. } => "call",
            Signal::Ringing { .. } => "ringing",
            Signal::Offer { .. } => "offer",
            Signal::Answer { .. } => "answer",
            Signal::Candidate { .. } => "candidate",
            Signal::Hangup { .. } => "hangup",
        }
    }

    pub fn route(&self) -> &Route {
        route_of!(self)
    }

    pub fn route_mut(&mut self) -> &mut Route {
        route_of!(self)
    }

    pub fn hangup(to: &str, session: &str, reason: EndReason) -> Signal {
        Signal::Hangup {
            route: Route::new(to, session),
            reason: reason.as_str().to_string(),
            message: None,
        }
    }

    /// A hangup's reason, from the closed set (see [`EndReason::from_wire`]).
    pub fn end_reason(&self) -> Option<EndReason> {
        match self {
            Signal::Hangup { reason, .. } => Some(EndReason::from_wire(reason)),
            _ => None,
        }
    }
}

/// What a client (a page, another daemon) sends the relay.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ToRelay {
    /// Claim an id (or let the relay pick one).
    Register {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<PeerId>,
    },
    /// For another peer.
    #[serde(untagged)]
    Signal(Signal),
}

/// What the relay sends a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum FromRelay {
    /// The id now owned by this connection, and who else is online.
    Registered { id: PeerId, peers: Vec<PeerId> },
    /// A peer registered.
    PeerJoined { id: PeerId },
    /// A peer's connection went away. `reason` (1.1) [`super::RELAY_GONE`]: its relay died
    /// (a relay cluster), so the peer itself may well be alive and about to register with
    /// another relay: calls already connected need not end.
    PeerLeft {
        id: PeerId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Something the client sent could not be handled.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<SessionId>,
    },
    /// From another peer.
    #[serde(untagged)]
    Signal(Signal),
}

impl FromRelay {
    /// The relay's own messages' `type`s.
    pub const KINDS: [&'static str; 4] = ["registered", "peer-joined", "peer-left", "error"];

    pub fn error(
        code: ErrorCode,
        message: impl Into<String>,
        session: Option<SessionId>,
    ) -> FromRelay {
        FromRelay::Error {
            code,
            message: message.into(),
            session,
        }
    }

    /// The wire `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            FromRelay::Registered { .. } => "registered",
            FromRelay::PeerJoined { .. } => "peer-joined",
            FromRelay::PeerLeft { .. } => "peer-left",
            FromRelay::Error { .. } => "error",
            FromRelay::Signal(signal) => signal.kind(),
        }
    }
}

/// Read by the `type` first, so that a client is told what is wrong with its message (a
/// missing `sdp`, a bad id) rather than that it matched nothing, and that a client sending
/// what only the relay may send is told so.
impl<'de> Deserialize<'de> for ToRelay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ToRelay, D::Error> {
        use serde::de::Error;

        #[derive(Deserialize)]
        struct Register {
            #[serde(default)]
            id: Option<PeerId>,
        }

        let value = serde_json::Value::deserialize(d)?;
        let kind = value
            .get("type")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| D::Error::missing_field("type"))?
            .to_string();
        match kind.as_str() {
            "register" => Register::deserialize(value)
                .map(|r| ToRelay::Register { id: r.id })
                .map_err(D::Error::custom),
            k if Signal::KINDS.contains(&k) => Signal::deserialize(value)
                .map(ToRelay::Signal)
                .map_err(D::Error::custom),
            k if FromRelay::KINDS.contains(&k) => {
                Err(D::Error::custom("peers may not send this type"))
            }
            other => Err(D::Error::custom(format!("unknown type {other:?}"))),
        }
    }
}
