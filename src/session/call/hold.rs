//! A call on hold while it rings, when the caller takes an early answer (protocol 1.2).
//!
//! The ringing callee answers at once, in `ringing`, so that ICE and DTLS come up while a
//! person decides: an accept then costs no round trip of descriptions and no handshake. Until
//! someone accepts, nothing is sent or played either way: the callee's feeds stay closed,
//! whatever reaches webrtcbin's pads on the callee is dropped there, and the DataChannel
//! carries only keepalives (channel.rs). Accepting lets the media through, and the callee
//! sends the same answer again as `answer` — which tells the caller.

use gst::prelude::*;

use super::promises::parse_sdp;
use super::{Call, Step, blocking};
use crate::protocol::{Route, Signal};
use crate::session::CallState;

/// A pad of webrtcbin whose buffers are dropped while the call is on hold.
pub(super) struct HeldPad {
    pad: gst::Pad,
    probe: gst::PadProbeId,
    /// A stream from the peer's camera: its decoder needs a keyframe once let through.
    received_video: bool,
}

impl Call {
    /// While the call is on hold, `pad` passes nothing (a send branch linked into webrtcbin,
    /// or a stream from the peer) until [`Call::release_held`].
    pub(super) fn hold_pad(&mut self, pad: &gst::Pad, received_video: bool) {
        if !self.talk.on_hold() {
            return;
        }
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

    /// Caller: the callee answered early, in `ringing`. Its description is set, and ICE and
    /// DTLS run while it rings; the call stays `ringing` until the `answer` comes.
    pub(super) async fn take_early_answer(&mut self, text: &str) -> Step {
        let answer = parse_sdp(text, self.settings.profile.max_mlines)?;
        tracing::info!(session = %self.info.session, "the callee answered early");
        self.choose_estimator(super::super::sdp::transport_cc_id(&answer).is_some());
        self.set_remote_description(gst_webrtc::WebRTCSDPType::Answer, &answer)
            .await?;
        self.talk.set_remote(answer);
        self.apply_held_candidates();
        Ok(())
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
        self.talk.remote_ringing = false;
        self.talk.connect_by = tokio::time::Instant::now() + self.connect_timeout();
        self.release_held().await?;
        self.off_hold();
        Ok(())
    }

    /// Accepted: the encoders make (or already have) the first keyframe, and a connection
    /// that came up while ringing goes live at once.
    fn off_hold(&mut self) {
        for subscription in &self.media.subscriptions {
            subscription.connecting();
        }
        if self.talk.up_on_hold {
            self.go_live();
        } else {
            self.info.set_state(CallState::Connecting);
        }
    }
}
