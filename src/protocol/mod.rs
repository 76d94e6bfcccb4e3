//! Signaling protocol v1: the JSON messages exchanged over `GET /signaling`.
//!
//! Pure data and (de)serialisation; no I/O lives here so the relay, the daemon's signaling
//! client and the tests all share one definition. The wire format is described for humans in
//! `docs/protocol.md`. Field names of SDP and candidates follow the browser's
//! `RTCSessionDescriptionInit` / `RTCIceCandidateInit` so a page can pass them straight through.
//!
//! Typed by direction ([`messages`]): what a client may send the relay ([`ToRelay`]), what
//! the relay sends ([`FromRelay`]), what peers tell each other ([`Signal`]). Ids
//! ([`PeerId`], [`SessionId`]) are checked once, as a message is read.

mod ids;
mod messages;
mod reason;
#[cfg(test)]
mod tests;

pub use crate::camera_name::{CameraName, MAX_CAMERA_CHARS, check_camera};
pub use ids::{
    MAX_ID_CHARS, MAX_SESSION_CHARS, PeerId, SessionId, check_id, check_session, escape_for_log,
};
pub use messages::{FromRelay, Route, Signal, ToRelay};
pub use reason::{EndReason, ErrorCode};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The `reason` of a `peer-left` sent because the peer's relay died (not the peer).
pub const RELAY_GONE: &str = "relay-gone";

/// Largest text frame the relay accepts; bigger ones are answered with `too-large`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Why a text frame could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message is {0} bytes, the limit is {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("not a valid protocol v1 message: {0}")]
    Invalid(#[from] serde_json::Error),
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge(_) => ErrorCode::TooLarge,
            DecodeError::Invalid(_) => ErrorCode::BadMessage,
        }
    }
}

/// One text frame, its size checked before the JSON is touched.
fn decode<T: DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(text.len()));
    }
    Ok(serde_json::from_str(text)?)
}

fn encode<T: Serialize>(msg: &T) -> String {
    // Serialising these plain enums of strings cannot fail.
    serde_json::to_string(msg).unwrap_or_else(|_| String::from("{}")) // ok: infallible
}

impl ToRelay {
    pub fn decode(text: &str) -> Result<ToRelay, DecodeError> {
        decode(text)
    }

    pub fn encode(&self) -> String {
        encode(self)
    }
}

impl FromRelay {
    pub fn decode(text: &str) -> Result<FromRelay, DecodeError> {
        decode(text)
    }

    pub fn encode(&self) -> String {
        encode(self)
    }
}

impl Signal {
    pub fn decode(text: &str) -> Result<Signal, DecodeError> {
        decode(text)
    }

    pub fn encode(&self) -> String {
        encode(self)
    }
}
