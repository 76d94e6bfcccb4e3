//! Encode once, fan out: one capture and one encoder per codec, shared by every call.
//!
//! The shared pipeline ends in an appsink; each call's send branch is the call's own payloader
//! (payload types differ per call), fed directly from the appsink's thread once the call's
//! connection is up ([`feed`] says why that never waits on a call). That thread hands each
//! encoded frame to every subscriber without ever blocking on one:
//! - a new subscriber waits for a keyframe, forced for it at once (for a call: as it starts
//!   connecting, kept by its feed until the connection is up);
//! - a subscriber with a queue of its own (the RTSP server's appsrc) whose queue is full drops
//!   frames, then waits for the next keyframe, which it asks for (rate-limited);
//! - a keyframe request from a viewer (PLI/FIR, arriving as an upstream force-key-unit event
//!   on its feed) reaches the encoder, rate-limited per stream.
//!
//! A stream starts with its first subscriber and stops `linger` after its last one left.
//!
//! A video profile with a ladder (`[[video.ladder]]`) encodes one capture at several
//! renditions ("rungs"): the capture is split, and each rung scales and encodes behind a
//! valve that is open only while a call is on that rung (or moving to it). A call moves to
//! another rung at that rung's next keyframe, which is asked for at once, through its own
//! payloader: its viewer sees the new size start at a keyframe, and the SSRC,
//! sequence numbers and timestamps run on.
//!
//! A stream's life is one state ([`Life`]: starting, running, restarting, stopped), and
//! starting it — which may wait seconds on a camera — runs on the calling (blocking) thread
//! without holding any lock that async code takes: `/api/status` and the health check read
//! a starting stream at once. A start that fails leaves nothing running.

mod fanout;
mod feed;
mod launch;
mod loss;
mod recent;
mod registry;
mod reprobe;
mod retune;
mod snapshot;
mod stream;
mod subscription;
#[cfg(test)]
mod tests;

pub use feed::Tapped;
pub use registry::{Encoders, FedBranch};
pub use snapshot::SnapshotError;
pub use stream::{RungInfo, StreamInfo, StreamStats};
pub use subscription::{Subscription, Warm};

/// Each encoding ends in one of these, named `out0`, `out1`… (the rung's index follows).
/// Not `async`: a rung behind a closed valve gets no frame to preroll with, and would hold
/// the whole pipeline in PAUSED.
const SINK: &str = "appsink sync=false async=false max-buffers=4 drop=true name=out";
/// The element (a passthrough `identity`) after a video source, before any encoding.
const RAW_TAP: &str = "rawtap";
