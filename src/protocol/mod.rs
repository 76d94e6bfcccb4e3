//! Signaling protocol v1: the JSON messages exchanged over `GET /signaling`.
//!
//! Pure data and (de)serialisation; no I/O lives here so the relay, the daemon's signaling
//! client and the tests all share one definition. The wire format is described for humans in
//! `docs/protocol.md`. Field names of SDP and candidates follow the browser's
//! `RTCSessionDescriptionInit` / `RTCIceCandidateInit` so a page can pass them straight through.

use serde::{Deserialize, Serialize};

/// The `reason` of a `peer-left` sent because the peer's relay died (not the peer).
pub const RELAY_GONE: &str = "relay-gone";

/// Largest text frame the relay accepts; bigger ones are answered with `too-large`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Addressing shared by every message the relay routes from one peer to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The recipient's registered id.
    pub to: String,
    /// The sender's registered id. Set by the relay; whatever a client puts here is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The call this message belongs to, chosen by the caller.
    pub session: String,
}

/// Every message of protocol v1, tagged by its `type` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Message {
    /// Client → relay: claim an id (or let the relay pick one).
    Register {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Relay → client: the id now owned by this connection and who else is online.
    Registered { id: String, peers: Vec<String> },
    /// Relay → everyone: a peer registered.
    PeerJoined { id: String },
    /// Relay → everyone: a peer's connection went away. `reason` (1.1) [`RELAY_GONE`]: its
    /// relay died (a relay cluster), so the peer itself may well be alive and about to
    /// register with another relay: calls already connected need not end.
    PeerLeft {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Relay → client: something the client sent could not be handled.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// Routed: an invitation to a call. Carries no SDP; the caller offers next.
    Call {
        #[serde(flatten)]
        route: Route,
    },
    /// Routed (v1.1), callee → caller: the call rings; a person will accept or reject it.
    /// The callee holds the offer until then. Clients that predate it ignore it.
    Ringing {
        #[serde(flatten)]
        route: Route,
    },
    /// Routed: an SDP offer.
    Offer {
        #[serde(flatten)]
        route: Route,
        sdp: String,
    },
    /// Routed: an SDP answer.
    Answer {
        #[serde(flatten)]
        route: Route,
        sdp: String,
    },
    /// Routed: one trickled ICE candidate; an empty `candidate` means end of candidates.
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
    /// Routed: the call is over.
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
    Other,
}

impl EndReason {
    const ALL: [EndReason; 19] = [
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

/// Peer-supplied text made safe for a log line: control characters escaped, length bounded.
pub fn escape_for_log(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    let mut out: String = text
        .chars()
        .take(MAX_CHARS)
        .flat_map(|c| {
            // Control characters forge lines; format characters (bidi overrides, zero-width)
            // make text read as something it is not.
            let escaped: Vec<char> = if c.is_control() || invisible(c) {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// The longest id, in characters.
pub const MAX_ID_CHARS: usize = 64;

/// Whether `id` may name a peer: 1 to 64 characters, none of them a space, a control
/// character or an invisible one (bidi overrides such as U+202E, zero-width characters), so
/// that two ids that look the same are the same id.
pub fn check_id(id: &str) -> Result<(), &'static str> {
    if !(1..=MAX_ID_CHARS).contains(&id.chars().count()) {
        return Err("an id is 1 to 64 characters");
    }
    if !all_visible(id) {
        return Err("an id may not hold spaces, control characters or invisible characters");
    }
    Ok(())
}

/// The longest session id, in characters.
pub const MAX_SESSION_CHARS: usize = 128;

/// Whether `session` may name a call: 1 to 128 visible characters, no spaces.
pub fn check_session(session: &str) -> Result<(), &'static str> {
    if !(1..=MAX_SESSION_CHARS).contains(&session.chars().count()) {
        return Err("a session id is 1 to 128 characters");
    }
    if !all_visible(session) {
        return Err("a session id may not hold spaces, control characters or invisible characters");
    }
    Ok(())
}

/// No space, control character or invisible character anywhere in `text`.
fn all_visible(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || invisible(c))
}

/// Characters that show nothing, or change how the text around them shows.
fn invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        G::Format
            | G::Control
            | G::SpaceSeparator
            | G::LineSeparator
            | G::ParagraphSeparator
            | G::PrivateUse
            | G::Surrogate
            | G::Unassigned
    )
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

/// Why a text frame could not be turned into a [`Message`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message is {0} bytes, the limit is {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("not a valid protocol v1 message: {0}")]
    Invalid(#[from] serde_json::Error),
    #[error("{field}: {why}")]
    BadField {
        field: &'static str,
        why: &'static str,
    },
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

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge(_) => ErrorCode::TooLarge,
            DecodeError::Invalid(_) | DecodeError::BadField { .. } => ErrorCode::BadMessage,
        }
    }
}

impl Message {
    /// Parses one text frame, enforcing the size limit before touching the JSON.
    pub fn decode(text: &str) -> Result<Message, DecodeError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge(text.len()));
        }
        let msg: Message = serde_json::from_str(text)?;
        if let Some(route) = msg.route() {
            // These end up in logs and lists: nothing in them may forge a line or hide.
            let bad = |field, why| DecodeError::BadField { field, why };
            check_id(&route.to).map_err(|why| bad("to", why))?;
            if let Some(from) = &route.from {
                check_id(from).map_err(|why| bad("from", why))?;
            }
            check_session(&route.session).map_err(|why| bad("session", why))?;
        }
        Ok(msg)
    }

    pub fn encode(&self) -> String {
        // Serialising these plain enums of strings cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}")) // ok: infallible
    }

    /// The wire `type` (`offer`, `peer-joined`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Register { .. } => "register",
            Message::Registered { .. } => "registered",
            Message::PeerJoined { .. } => "peer-joined",
            Message::PeerLeft { .. } => "peer-left",
            Message::Error { .. } => "error",
            Message::Call { .. } => "call",
            Message::Ringing { .. } => "ringing",
            Message::Offer { .. } => "offer",
            Message::Answer { .. } => "answer",
            Message::Candidate { .. } => "candidate",
            Message::Hangup { .. } => "hangup",
        }
    }

    /// The routing header of a peer-to-peer message; `None` for relay control messages.
    pub fn route(&self) -> Option<&Route> {
        match self {
            Message::Call { route }
            | Message::Ringing { route }
            | Message::Offer { route, .. }
            | Message::Answer { route, .. }
            | Message::Candidate { route, .. }
            | Message::Hangup { route, .. } => Some(route),
            _ => None,
        }
    }

    pub fn route_mut(&mut self) -> Option<&mut Route> {
        match self {
            Message::Call { route }
            | Message::Ringing { route }
            | Message::Offer { route, .. }
            | Message::Answer { route, .. }
            | Message::Candidate { route, .. }
            | Message::Hangup { route, .. } => Some(route),
            _ => None,
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>, session: Option<String>) -> Message {
        Message::Error {
            code,
            message: message.into(),
            session,
        }
    }

    pub fn hangup(to: &str, session: &str, reason: EndReason) -> Message {
        Message::Hangup {
            route: Route::new(to, session),
            reason: reason.as_str().to_string(),
            message: None,
        }
    }
}

impl Route {
    pub fn new(to: &str, session: &str) -> Route {
        Route {
            to: to.to_string(),
            from: None,
            session: session.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routed_fields_are_checked_when_decoding() {
        let bad_session = r#"{"type":"call","to":"door","session":"s\n<3>forged"}"#;
        assert!(matches!(
            Message::decode(bad_session),
            Err(DecodeError::BadField {
                field: "session",
                ..
            })
        ));
        let bad_to = r#"{"type":"call","to":"door\u202e","session":"s1"}"#;
        assert!(matches!(
            Message::decode(bad_to),
            Err(DecodeError::BadField { field: "to", .. })
        ));
        assert!(Message::decode(r#"{"type":"call","to":"door","session":"s1"}"#).is_ok());
    }

    #[test]
    fn ids_that_look_alike_are_refused() {
        for good in [
            "door",
            "Tür-1",
            "門",
            "a".repeat(64).as_str(),
            "é".repeat(64).as_str(),
        ] {
            assert_eq!(check_id(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "door\u{200B}",
            "\u{202E}rood",
            "do or",
            "door\u{00A0}",
            "door\n",
            "door\u{2028}",
            "door\u{FEFF}",
            "a".repeat(65).as_str(),
            "é".repeat(65).as_str(),
        ] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        // Logged, invisible characters show as escapes.
        assert_eq!(escape_for_log("a\u{202E}b\nc"), "a\\u{202e}b\\nc");
    }

    #[test]
    fn candidate_uses_browser_field_names() {
        let msg = Message::Candidate {
            route: Route::new("door", "s1"),
            candidate: "candidate:1 1 UDP 1 127.0.0.1 5000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        };
        let json: serde_json::Value = serde_json::from_str(&msg.encode()).unwrap();
        assert_eq!(json["type"], "candidate");
        assert_eq!(json["sdpMid"], "0");
        assert_eq!(json["sdpMLineIndex"], 0);
        assert_eq!(json["to"], "door");
        assert_eq!(json["session"], "s1");
        assert!(json.get("from").is_none());
    }

    #[test]
    fn decodes_browser_end_of_candidates_with_null_mid() {
        let text = r#"{"type":"candidate","to":"a","session":"s","candidate":"","sdpMid":null,"sdpMLineIndex":null}"#;
        match Message::decode(text).unwrap() {
            Message::Candidate {
                candidate, sdp_mid, ..
            } => {
                assert!(candidate.is_empty());
                assert!(sdp_mid.is_none());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn register_without_id_and_round_trip() {
        assert_eq!(
            Message::decode(r#"{"type":"register"}"#).unwrap(),
            Message::Register { id: None }
        );
        let offer = Message::Offer {
            route: Route::new("b", "s"),
            sdp: "v=0".into(),
        };
        assert_eq!(Message::decode(&offer.encode()).unwrap(), offer);
    }

    #[test]
    fn ringing_is_routed_like_call() {
        let ringing = Message::decode(r#"{"type":"ringing","to":"caller","session":"s1"}"#)
            .expect("ringing decodes");
        assert_eq!(
            ringing,
            Message::Ringing {
                route: Route::new("caller", "s1")
            }
        );
        assert_eq!(ringing.kind(), "ringing");
        assert_eq!(ringing.route().map(|r| r.to.as_str()), Some("caller"));
        assert_eq!(Message::decode(&ringing.encode()).unwrap(), ringing);
    }

    #[test]
    fn rejects_unknown_type_and_oversize() {
        assert_eq!(
            Message::decode(r#"{"type":"teleport"}"#)
                .unwrap_err()
                .code(),
            ErrorCode::BadMessage
        );
        assert_eq!(
            Message::decode("nonsense").unwrap_err().code(),
            ErrorCode::BadMessage
        );
        let big = format!(
            r#"{{"type":"offer","to":"b","session":"s","sdp":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(
            Message::decode(&big).unwrap_err().code(),
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn end_reasons_round_trip_and_peer_text_is_closed() {
        for reason in EndReason::ALL {
            assert_eq!(EndReason::from_wire(reason.as_str()), reason);
        }
        assert_eq!(EndReason::from_wire(""), EndReason::RemoteHangup);
        assert_eq!(EndReason::from_wire("x\n<3>forged"), EndReason::Other);
    }

    #[test]
    fn log_escaping_keeps_one_line() {
        assert_eq!(escape_for_log("a\n<3>b"), "a\\n<3>b");
        assert_eq!(escape_for_log(&"x".repeat(500)).chars().count(), 201);
    }

    #[test]
    fn error_codes_are_kebab_case() {
        let msg = Message::error(ErrorCode::IdTaken, "taken", None);
        assert!(msg.encode().contains(r#""code":"id-taken""#));
    }
}
