//! The intercom's voice processing: the speaker's echo removed from the microphone, with
//! noise suppression and gain control when the profile asks.
//!
//! GStreamer 1.22's `webrtcdsp` (webrtc-audio-processing 0.3) removed 1.7–2.5 dB of a door's
//! echo end to end (BENCHMARKS.md, "The intercom's audio"): its delay-agnostic mode finds
//! ~20 ms where a door's speaker-to-microphone path is ~300 ms. This is WebRTC's newer canceller, AEC3, through the
//! `aec3` crate (a Rust port, with its high-pass filter, noise suppressor and AGC2), which
//! estimates the delay itself, up to about a second.
//!
//! Two halves meet here, found by each other through this module (the microphone lives in a
//! shared pipeline, each call's speaker in the call's own):
//! - the **capture** side ([`attach_capture`]): a pad probe on the microphone's 48 kHz mono
//!   float stream hands each buffer to the canceller's own thread (AEC3 is not `Send`) and
//!   writes back what it returns, 10 ms later;
//! - the **reference** ([`speaker_tap`]): an element in front of a call's speaker that copies
//!   what is about to be played, as 10 ms mono frames, to the running canceller. One call at
//!   a time is the reference (an intercom plays one far end); another call's speaker becomes
//!   it when the first ends.

mod canceller;
mod reference;

pub use canceller::attach_capture;
pub use reference::speaker_tap;

use std::sync::atomic::{AtomicUsize, Ordering};

/// 10 ms at 48 kHz: AEC3's frame.
pub(crate) const FRAME: usize = 480;

/// The element in the microphone's description the canceller attaches to.
pub const CAPTURE_TAP: &str = "webrtcd-voice";

/// Reference frames a canceller may hold before the speaker's copies are dropped (1 s).
const REFERENCE_QUEUE: usize = 100;

static CANCELLERS: AtomicUsize = AtomicUsize::new(0);
static SPEAKERS: AtomicUsize = AtomicUsize::new(0);

/// What runs now: cancellers (microphones with one) and speaker taps.
pub fn live() -> (usize, usize) {
    (
        CANCELLERS.load(Ordering::Relaxed),
        SPEAKERS.load(Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests;
