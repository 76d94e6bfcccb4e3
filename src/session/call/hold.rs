//! A call on hold while it rings, when the caller takes an early answer (protocol 1.2).
//!
//! The ringing callee answers at once, in `ringing`, so that ICE and DTLS come up while a
//! person decides: an accept then costs no round trip of descriptions and no handshake. Until
//! someone accepts, the callee sends nothing and plays nothing: its feeds stay closed, and
//! whatever reaches its webrtcbin pads, either way, is dropped there; its DataChannel carries
//! only keepalives (channel.rs). A webrtcd caller holds what it sends the same way (a page
//! may send; the callee drops it). Accepting lets the media through, and the callee sends the
//! same answer again as `answer` — which tells the caller.
//!
//! The caller does not drop what it receives: the callee sends nothing before the accept, and
//! its first keyframe after it may come over UDP before the `answer` through the relay.

use gst::prelude::*;

use super::{Call, Step, blocking};
use crate::protocol::{Route, Signal};

/// A pad of webrtcbin whose buffers are dropped while the call is on hold.
pub(super) struct HeldPad {
    pad: gst::Pad,
    probe: gst::PadProbeId,
    /// A stream from the peer's camera: its decoder needs a keyframe once let through.
    received_video: bool,
}

impl Call {
    /// While the call is on hold, a send branch's pad on webrtcbin passes nothing until
    /// [`Call::release_held`].
    pub(super) fn hold_sent(&mut self, pad: &gst::Pad) {
        if self.talk.on_hold() {
            self.hold_pad(pad, false);
        }
    }

    /// A ringing callee plays nothing of what its caller sends until someone accepts.
    pub(super) fn hold_received(&mut self, pad: &gst::Pad, video: bool) {
        if self.talk.ringing {
            self.hold_pad(pad, video);
        }
    }

    fn hold_pad(&mut self, pad: &gst::Pad, received_video: bool) {
        let drop_all = pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            |_, _| gst::PadProbeReturn::Drop,
        );
        if let Some(probe) = drop_all {
            self.media.held.push(HeldPad {
                pad: pad.clone(),
                probe,
                received_video,
            });
        }
    }

    /// Lets the held pads through, and asks the peer for a keyframe of each stream whose
    /// packets were dropped (its decoder starts from one; webrtcbin sends the PLI).
    async fn release_held(&mut self) -> Step {
        let held = std::mem::take(&mut self.media.held);
        if held.is_empty() {
            return Ok(());
        }
        blocking(move || {
            for HeldPad {
                pad,
                probe,
                received_video,
            } in held
            {
                pad.remove_probe(probe);
                if received_video {
                    let ask = gst_video::UpstreamForceKeyUnitEvent::builder()
                        .all_headers(true)
                        .build();
                    pad.send_event(ask);
                }
            }
        })
        .await
    }

    /// Caller: the callee answered early, in `ringing`. What this side sends is held, the
    /// answer is set, and ICE and DTLS run while it rings; the call stays `ringing` until the
    /// `answer` comes.
    pub(super) async fn take_early_answer(&mut self, text: &str) -> Step {
        tracing::info!(session = %self.info.session, "the callee answered early");
        for pad in self.media.send_pads.clone() {
            self.hold_sent(&pad);
        }
        self.set_remote_answer(text).await
    }

    /// Callee: someone accepted a call answered early: the answer again, as `answer`.
    pub(super) async fn accept_after_early_answer(&mut self, answer: String) -> Step {
        self.release_held().await?;
        let route = Route::new(&self.info.peer, &self.info.session);
        self.signal(Signal::Answer { route, sdp: answer }).await?;
        self.off_hold();
        Ok(())
    }

    /// Caller: the `answer` of a callee that answered early: accepted.
    pub(super) async fn accepted_after_early_answer(&mut self) -> Step {
        tracing::info!(session = %self.info.session, "the callee accepted");
        self.stop_waiting_on_the_ring();
        self.release_held().await?;
        self.off_hold();
        Ok(())
    }

    /// Accepted: the encoders make (or already have) the first keyframe, and a connection
    /// that came up while ringing goes live at once.
    fn off_hold(&mut self) {
        self.start_connecting();
        if self.talk.up_on_hold {
            self.go_live();
        }
    }
}
