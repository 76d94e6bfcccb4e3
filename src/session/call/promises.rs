//! webrtcbin's promise-based calls (create-offer/answer, set-local/remote-description), each
//! bounded in time, and the parsing of the peer's SDP.

use std::time::Instant;

use gst::prelude::*;
use gst_webrtc::WebRTCSDPType;

use super::super::{ice, red, sdp};
use super::{Call, CallEnd, Step, elapsed_ms};
use crate::protocol::EndReason;

/// How long webrtcbin may take to answer one promise (create-offer, set-*-description).
const PROMISE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Call {
    /// `create-offer` or `create-answer`; `field` names the reply's description.
    pub(super) async fn create_description(
        &self,
        signal: &str,
        field: &str,
    ) -> Result<gst_webrtc::WebRTCSessionDescription, CallEnd> {
        let (promise, reply) = gst::Promise::new_future();
        let asked = Instant::now();
        self.webrtcbin
            .emit_by_name::<()>(signal, &[&None::<gst::Structure>, &promise]);
        let reply = tokio::time::timeout(PROMISE_TIMEOUT, reply)
            .await
            .map_err(|_| CallEnd::local(EndReason::InternalError, format!("{signal} timed out")))?;
        // Where a call's setup time goes (the first-frame benchmark's phases, finer).
        tracing::debug!(session = %self.info.session, signal, ms = elapsed_ms(asked), "webrtcbin answered");
        match reply {
            Ok(Some(reply)) => reply
                .get::<gst_webrtc::WebRTCSessionDescription>(field)
                .map_err(|_| CallEnd::bad_sdp(format!("{signal} failed: {}", reply_error(&reply)))),
            _ => Err(CallEnd::local(
                EndReason::InternalError,
                format!("{signal} gave no reply"),
            )),
        }
    }

    /// Makes `desc` ours: our certificate's fingerprint in it, in an answer the transport-cc
    /// extension we accepted, after an ICE restart our new `credentials`, without
    /// `useinbandfec` when our audio has FEC off; sets it as the local
    /// description and keeps its mids (for the candidates we send). Gives its text, for the
    /// peer.
    pub(super) async fn set_ours(
        &mut self,
        mut desc: gst_webrtc::WebRTCSessionDescription,
        credentials: Option<&ice::Credentials>,
    ) -> Result<String, CallEnd> {
        let answer = desc.type_() == WebRTCSDPType::Answer;
        let ours = desc.sdp_mut();
        sdp::set_fingerprint(ours, self.settings.identity.fingerprint());
        if let (true, Some(id)) = (answer, self.bandwidth.transport_cc) {
            sdp::add_transport_cc(ours, id);
        }
        if let Some(credentials) = credentials {
            sdp::set_ice_credentials(ours, credentials);
        }
        if self.settings.profile.audio.as_ref().is_some_and(|a| !a.fec) {
            sdp::drop_in_band_fec(ours);
        }
        if self.settings.profile.receive.audio_red {
            let offer = if answer {
                self.talk.remote.as_deref()
            } else {
                None
            };
            red::prefer_red(ours, offer);
        }
        self.media.red.set(red::pairs(ours));
        self.talk.local_mids = sdp::mids(desc.sdp());
        let text = desc.sdp().to_string();
        self.set_local(desc).await?;
        Ok(text)
    }

    async fn set_local(&self, desc: gst_webrtc::WebRTCSessionDescription) -> Step {
        tracing::debug!(session = %self.info.session, sdp = %desc.sdp(), "local description");
        self.promise_call("set-local-description", &desc).await
    }

    /// `set-remote-description` with the peer's `sdp`.
    pub(super) async fn set_remote_description(
        &self,
        kind: WebRTCSDPType,
        sdp: &gst_sdp::SDPMessage,
    ) -> Step {
        tracing::debug!(session = %self.info.session, %sdp, "remote description");
        let desc = gst_webrtc::WebRTCSessionDescription::new(kind, sdp.clone());
        self.promise_call("set-remote-description", &desc).await
    }

    async fn promise_call(
        &self,
        signal: &str,
        desc: &gst_webrtc::WebRTCSessionDescription,
    ) -> Step {
        let (promise, reply) = gst::Promise::new_future();
        let asked = Instant::now();
        self.webrtcbin.emit_by_name::<()>(signal, &[desc, &promise]);
        let reply = tokio::time::timeout(PROMISE_TIMEOUT, reply)
            .await
            .map_err(|_| CallEnd::local(EndReason::InternalError, format!("{signal} timed out")))?;
        tracing::debug!(session = %self.info.session, signal, ms = elapsed_ms(asked), "webrtcbin answered");
        match reply {
            // webrtcbin replies with no structure on success, an `error` field on failure.
            Ok(None) => Ok(()),
            Ok(Some(reply)) if reply.has_field("error") => Err(CallEnd::bad_sdp(format!(
                "{signal} failed: {}",
                reply_error(&reply)
            ))),
            Ok(Some(_)) => Ok(()),
            Err(err) => Err(CallEnd::local(
                EndReason::InternalError,
                format!("{signal}: {err:?}"),
            )),
        }
    }
}

/// Parses a peer's SDP, refusing what no real peer sends: text that is not SDP, no m-line,
/// more m-lines than the profile allows (each one costs threads and elements).
pub(super) fn parse_sdp(text: &str, max_mlines: usize) -> Result<gst_sdp::SDPMessage, CallEnd> {
    sdp::check(text, max_mlines).map_err(CallEnd::bad_sdp)
}

/// A webrtcbin promise's `error` as its message text (never a pointer).
fn reply_error(reply: &gst::StructureRef) -> String {
    match reply.get::<glib::Error>("error") {
        Ok(err) => err.message().to_string(),
        Err(_) => "no reason given".into(),
    }
}
