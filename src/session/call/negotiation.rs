//! Offer, answer and ringing: who offers when, the callee's held offer, the caller's wait on
//! a ringing callee. The decisions are plain functions of [`Negotiation`] (unit-tested
//! below); the webrtcbin calls they lead to are `Call`'s.

use std::sync::Arc;
use std::time::Duration;

use gst_webrtc::WebRTCSDPType;

use super::promises::parse_sdp;
use super::{Call, CallEnd, Step};
use crate::media::codecs::MediaKind;
use crate::protocol::{EndReason, Route, Signal, escape_for_log};
use crate::session::{CallState, Role, sdp};

/// A caller whose callee rings waits at most this long for a decision (the callee's own
/// `ring_timeout_secs`, at most 600, normally ends it first with `no-answer`).
const RING_WAIT: Duration = Duration::from_secs(600 + 30);

/// Where the offer/answer exchange stands.
pub(super) struct Negotiation {
    /// The call's own media may start (`media_start_delay` has passed).
    pub media_ready: bool,
    /// Callee: ringing (until `Event::Accept`); the offer is held meanwhile.
    pub ringing: bool,
    /// Caller: the callee said it rings, and has not answered yet.
    pub remote_ringing: bool,
    /// Callee: the caller takes an early answer (its `call` said `early`): a ringing call
    /// answers its offer at once, in `ringing`, and holds its media until accepted.
    pub early_answer: bool,
    /// Callee: the answer sent early, sent again as `answer` when someone accepts.
    pub answered_early: Option<String>,
    /// The connection came up while the call was on hold (it rang): it goes live when
    /// someone accepts.
    pub up_on_hold: bool,
    /// The call must be connected by then (moved by ringing and accepting).
    pub connect_by: tokio::time::Instant,
    /// Callee: a ringing call ends with `no-answer` then.
    pub ring_by: tokio::time::Instant,
    /// Callee: an offer that came before its media was ready, or while it rings.
    pub held_offer: Option<String>,
    /// The peer's description, once set.
    pub remote: Option<gst_sdp::SDPMessage>,
    /// The SSRCs of the peer's video, from `remote`.
    pub remote_video_ssrcs: Vec<u32>,
    /// The mids of our description, by m-line (for the candidates we send).
    pub local_mids: Vec<Option<String>>,
}

/// What a callee does with an offer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum OnOffer {
    /// A description is already set: an ICE restart, or a renegotiation (ignored).
    Again,
    /// One offer is already held.
    IgnoreSecond,
    AnswerNow,
    /// Ringing, and the caller takes an early answer.
    AnswerEarly,
    /// Media not ready, or ringing: answered later.
    Hold,
}

/// What follows once the call's media may start.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum OnMediaReady {
    Offer,
    /// Ringing: the encoders start while a person decides.
    Warm,
    Answer(String),
    /// Ringing with an offer held, and the caller takes an early answer.
    AnswerEarly(String),
    /// A callee without an offer yet: warm the encoders and wait.
    AwaitOffer,
}

/// What follows `accept` on a ringing call.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum OnAccept {
    /// Not ringing: nothing.
    Nothing,
    /// Media not ready yet: the answer comes with it.
    Starting,
    Answer(String),
    AwaitOffer,
    /// Answered early: the same answer goes out as `answer`, and the media is let through.
    AnsweredEarly(String),
}

impl Negotiation {
    pub fn new(connect_by: tokio::time::Instant) -> Negotiation {
        Negotiation {
            media_ready: false,
            ringing: false,
            remote_ringing: false,
            early_answer: false,
            answered_early: None,
            up_on_hold: false,
            connect_by,
            ring_by: tokio::time::Instant::now(),
            held_offer: None,
            remote: None,
            remote_video_ssrcs: Vec::new(),
            local_mids: Vec::new(),
        }
    }

    pub fn on_offer(&self) -> OnOffer {
        if self.remote.is_some() {
            OnOffer::Again
        } else if self.held_offer.is_some() {
            OnOffer::IgnoreSecond
        } else if self.media_ready && !self.ringing {
            OnOffer::AnswerNow
        } else if self.media_ready && self.early_answer {
            OnOffer::AnswerEarly
        } else {
            OnOffer::Hold
        }
    }

    pub fn on_media_ready(&mut self, role: Role) -> OnMediaReady {
        self.media_ready = true;
        match role {
            Role::Caller | Role::Whip => OnMediaReady::Offer,
            Role::Callee if self.ringing => match self.held_offer.take() {
                Some(offer) if self.early_answer => OnMediaReady::AnswerEarly(offer),
                held => {
                    self.held_offer = held;
                    OnMediaReady::Warm
                }
            },
            Role::Callee | Role::Whep => match self.held_offer.take() {
                Some(offer) => OnMediaReady::Answer(offer),
                None => OnMediaReady::AwaitOffer,
            },
        }
    }

    /// `connect_within`: the time to connect, counted from the acceptance.
    pub fn accept(&mut self, connect_within: Duration) -> OnAccept {
        if !self.ringing {
            return OnAccept::Nothing;
        }
        self.ringing = false;
        self.connect_by = tokio::time::Instant::now() + connect_within;
        if let Some(answer) = self.answered_early.take() {
            return OnAccept::AnsweredEarly(answer);
        }
        if !self.media_ready {
            return OnAccept::Starting;
        }
        match self.held_offer.take() {
            Some(offer) => OnAccept::Answer(offer),
            None => OnAccept::AwaitOffer,
        }
    }

    /// The call rings (either side): its connection may come up, but nothing is sent or
    /// played, and the DataChannel carries only keepalives, until someone accepts.
    pub fn on_hold(&self) -> bool {
        self.ringing || self.remote_ringing
    }

    /// Keeps the peer's description, and the SSRCs of its video (for loss recovery).
    pub fn set_remote(&mut self, sdp: gst_sdp::SDPMessage) {
        self.remote_video_ssrcs = sdp::video_ssrcs(&sdp);
        self.remote = Some(sdp);
    }
}

impl Call {
    pub(super) async fn on_remote(&mut self, msg: Signal) -> Step {
        match msg {
            Signal::Offer { sdp, .. } if !self.info.role.offers() => self.on_offer(sdp).await,
            Signal::Answer { sdp, .. } if self.info.role.offers() => self.on_answer(&sdp).await,
            Signal::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
                ..
            } => {
                self.on_remote_candidate(super::candidates::Candidate {
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                });
                Ok(())
            }
            Signal::Hangup {
                reason, message, ..
            } => {
                // Peer text: only at debug, escaped (it must not forge log lines).
                tracing::debug!(
                    session = %self.info.session,
                    reason = %escape_for_log(&reason),
                    text = %escape_for_log(message.as_deref().unwrap_or("")),
                    "the peer hung up"
                );
                // A caller that hangs up while we ring withdrew its call.
                let reason = match EndReason::from_wire(&reason) {
                    EndReason::Hangup | EndReason::RemoteHangup if self.talk.ringing => {
                        EndReason::Cancelled
                    }
                    reason => reason,
                };
                Err(CallEnd::plain(reason, false))
            }
            Signal::Ringing { sdp, .. }
                if self.info.role == Role::Caller && self.talk.remote.is_none() =>
            {
                if !self.talk.remote_ringing {
                    tracing::info!(session = %self.info.session, "the callee rings");
                    self.talk.remote_ringing = true;
                    self.talk.connect_by = tokio::time::Instant::now() + RING_WAIT;
                    self.info.set_state(CallState::Ringing);
                    self.notifier.event("ringing", &self.info, None);
                }
                match sdp {
                    Some(answer) => self.take_early_answer(&answer).await,
                    None => Ok(()),
                }
            }
            other => {
                tracing::debug!(session = %self.info.session, kind = other.kind(), "ignored");
                Ok(())
            }
        }
    }

    async fn on_offer(&mut self, text: String) -> Step {
        match self.talk.on_offer() {
            OnOffer::Again => {
                let offer = parse_sdp(&text, self.settings.profile.max_mlines)?;
                let restarted = self.talk.remote.as_ref().is_some_and(|remote| {
                    sdp::ice_credentials(&offer) != sdp::ice_credentials(remote)
                });
                if restarted {
                    return self.answer_ice_restart(offer).await;
                }
                tracing::debug!(session = %self.info.session, "ignoring a renegotiation");
                Ok(())
            }
            OnOffer::IgnoreSecond => {
                tracing::debug!(session = %self.info.session, "ignoring a second offer");
                Ok(())
            }
            OnOffer::AnswerNow | OnOffer::AnswerEarly => self.answer(&text).await,
            OnOffer::Hold => {
                if self.talk.ringing {
                    tracing::debug!(session = %self.info.session, "offer while ringing: held");
                } else {
                    tracing::debug!(session = %self.info.session, "offer before media: held");
                }
                self.talk.held_offer = Some(text);
                Ok(())
            }
        }
    }

    async fn on_answer(&mut self, text: &str) -> Step {
        if self.ice.awaiting_restart_answer {
            return self.on_restart_answer(text).await;
        }
        if self.talk.remote.is_some() {
            // The callee answered early, in `ringing`: this is its acceptance.
            if self.talk.remote_ringing {
                return self.accepted_after_early_answer().await;
            }
            return Ok(());
        }
        if self.talk.remote_ringing {
            self.stop_waiting_on_the_ring();
        }
        self.set_remote_answer(text).await?;
        self.start_connecting();
        Ok(())
    }

    /// Caller: the callee's answer, set (now, or early while it rings: hold.rs).
    pub(super) async fn set_remote_answer(&mut self, text: &str) -> Step {
        let answer = parse_sdp(text, self.settings.profile.max_mlines)?;
        self.choose_estimator(sdp::transport_cc_id(&answer).is_some());
        self.set_remote_description(WebRTCSDPType::Answer, &answer)
            .await?;
        self.talk.set_remote(answer);
        self.apply_held_candidates();
        Ok(())
    }

    /// Caller: accepted; from now on the usual time to connect.
    pub(super) fn stop_waiting_on_the_ring(&mut self) {
        self.talk.remote_ringing = false;
        self.talk.connect_by = tokio::time::Instant::now() + self.connect_timeout();
    }

    pub(super) async fn on_media_ready(&mut self) -> Step {
        match self.talk.on_media_ready(self.info.role) {
            OnMediaReady::Offer => self.offer().await,
            OnMediaReady::Warm => {
                self.warm_media().await;
                Ok(())
            }
            OnMediaReady::Answer(offer) | OnMediaReady::AnswerEarly(offer) => {
                self.answer(&offer).await
            }
            OnMediaReady::AwaitOffer => {
                // The protocol's callee starts its media on `call`: the shared encoders run
                // by the time the offer comes, and the answer does not wait for them nor,
                // once connected, for a keyframe.
                if self.info.role == Role::Callee {
                    self.warm_media().await;
                    for warm in &self.media.warm {
                        warm.expect_call();
                    }
                }
                self.info.set_state(CallState::AwaitingOffer);
                Ok(())
            }
        }
    }

    /// Callee (`answer = "ring"`): tells the caller the call rings, and rings until someone
    /// accepts, rejects, or `ring_timeout_secs` passes.
    pub(super) async fn start_ringing(&mut self) -> Step {
        self.talk.ringing = true;
        self.talk.ring_by = tokio::time::Instant::now()
            + Duration::from_secs(self.settings.profile.ring_timeout_secs);
        self.info.set_state(CallState::Ringing);
        self.notifier.event("ringing", &self.info, None);
        tracing::info!(session = %self.info.session, peer = %self.info.peer, "ringing");
        let route = Route::new(&self.info.peer, &self.info.session);
        self.signal(Signal::Ringing { route, sdp: None }).await
    }

    /// Callee: someone accepted the ringing call; answer its offer (now, or when it comes).
    pub(super) async fn accept(&mut self) -> Step {
        let within = self.connect_timeout();
        let next = self.talk.accept(within);
        if next != OnAccept::Nothing {
            tracing::info!(session = %self.info.session, "accepted");
        }
        match next {
            OnAccept::Nothing => Ok(()),
            OnAccept::Starting => {
                self.info.set_state(CallState::Starting);
                Ok(())
            }
            OnAccept::Answer(offer) => self.answer(&offer).await,
            OnAccept::AwaitOffer => {
                self.info.set_state(CallState::AwaitingOffer);
                Ok(())
            }
            OnAccept::AnsweredEarly(answer) => self.accept_after_early_answer(answer).await,
        }
    }

    /// Caller: tracks, then the DataChannel, then the offer.
    async fn offer(&mut self) -> Step {
        self.bandwidth.transport_cc = self
            .bandwidth
            .adapts
            .then_some(super::bandwidth::TRANSPORT_CC_ID);
        let encoders = &self.settings.encoders;
        let first_codecs = [
            encoders.codecs(MediaKind::Video).first().copied(),
            encoders.codecs(MediaKind::Audio).first().copied(),
        ];
        for codec in first_codecs.into_iter().flatten() {
            let branch = self
                .build_send_branch(codec, codec.default_payload_type())
                .await?;
            self.link_send_branch(branch).await?;
        }
        // A WHIP endpoint (an SFU) takes media only; so does a viewer of a profile without
        // a DataChannel (`datachannel = false`: its threads and SCTP association saved).
        if self.info.role == Role::Caller && self.settings.profile.datachannel {
            self.create_channel().await?;
        }
        let (video, fec) = (self.media.send_video.clone(), self.fec());
        self.in_webrtcbin(move |webrtcbin| {
            super::super::webrtc::enable_loss_recovery(webrtcbin, &video, fec)
        })
        .await?;
        let offer = self.create_description("create-offer", "offer").await?;
        let text = self.set_ours(offer, None).await?;
        self.info.set_state(if self.talk.remote_ringing {
            CallState::Ringing
        } else {
            CallState::Offered
        });
        let route = Route::new(&self.info.peer, &self.info.session);
        self.signal(Signal::Offer { route, sdp: text }).await
    }

    /// Callee: send branches matching the offer, then set-remote → create-answer → set-local.
    /// While it rings (its caller takes an early answer), the answer goes in `ringing` and
    /// the call stays on hold: see hold.rs.
    async fn answer(&mut self, offer_text: &str) -> Step {
        let early = self.talk.ringing && self.talk.early_answer;
        tracing::debug!(session = %self.info.session, early, "answering an offer");
        let encoders = Arc::clone(&self.settings.encoders);
        let ours = move |kind| encoders.codecs(kind);
        let (offer, plan) = sdp::plan_answer(offer_text, self.settings.profile.max_mlines, &ours)
            .map_err(CallEnd::bad_sdp)?;
        // A warmed encoder the answer does not use lets go of its source first (a camera
        // opens once: another codec's capture of it would find it busy).
        let used = plan.codecs();
        self.media.warm.retain(|w| used.contains(&w.codec()));
        // Transport-wide congestion control only if the offer has it, under its id, and
        // accepted whenever offered (the offerer's estimator needs our feedback); our own video
        // carries it only if it adapts.
        self.bandwidth.transport_cc = sdp::transport_cc_id(&offer);
        self.choose_estimator(self.bandwidth.transport_cc.is_some());
        // Link in the offer's m-line order so transceivers line up with its m-lines.
        for (mline, send) in plan.mlines {
            match send {
                Some((codec, pt)) => {
                    let branch = self.build_send_branch(codec, pt).await?;
                    self.link_send_branch(branch).await?;
                }
                None => tracing::info!(
                    session = %self.info.session,
                    mline,
                    "no common codec to send on this m-line; receiving only"
                ),
            }
        }
        // The answer goes out within milliseconds now: ask for the first keyframes already
        // (on hold, when someone accepts).
        if !early {
            for subscription in &self.media.subscriptions {
                subscription.connecting();
            }
        }
        self.set_remote_description(WebRTCSDPType::Offer, &offer)
            .await?;
        // One transceiver per audio or video m-line of the offer, in its order.
        let video: Vec<bool> = (0..offer.medias_len())
            .filter_map(|i| offer.media(i))
            .filter(|m| matches!(m.media(), Some("audio" | "video")))
            .map(|m| m.media() == Some("video"))
            .collect();
        let fec = self.fec();
        self.in_webrtcbin(move |webrtcbin| {
            super::super::webrtc::enable_loss_recovery(webrtcbin, &video, fec)
        })
        .await?;
        self.talk.set_remote(offer);
        self.apply_held_candidates();
        let answer = self.create_description("create-answer", "answer").await?;
        if answer.sdp().medias_len() == 0 {
            return Err(CallEnd::bad_sdp("nothing in the offer could be answered"));
        }
        let text = self.set_ours(answer, None).await?;
        // The call's own subscriptions hold the encoders now.
        self.media.warm.clear();
        let route = Route::new(&self.info.peer, &self.info.session);
        if early {
            tracing::info!(session = %self.info.session, "answered early, while ringing");
            self.talk.answered_early = Some(text.clone());
            return self
                .signal(Signal::Ringing {
                    route,
                    sdp: Some(text),
                })
                .await;
        }
        self.start_connecting();
        if self.info.role == Role::Whep {
            // The player's time to connect counts from the answer it gets, not from the
            // POST: a camera slow to start must not eat into it.
            self.talk.connect_by = tokio::time::Instant::now() + self.connect_timeout();
        }
        self.signal(Signal::Answer { route, sdp: text }).await
    }

    /// Both descriptions are set: ICE and DTLS run now, and the encoders make this call's
    /// first keyframes meanwhile (a callee asked for them as it began its answer).
    pub(super) fn start_connecting(&mut self) {
        self.info.set_state(CallState::Connecting);
        for subscription in &self.media.subscriptions {
            subscription.connecting();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Negotiation {
        Negotiation::new(tokio::time::Instant::now())
    }

    fn any_sdp() -> gst_sdp::SDPMessage {
        gst::init().expect("GStreamer");
        gst_sdp::SDPMessage::parse_buffer(b"v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n")
            .expect("a minimal SDP")
    }

    #[test]
    fn an_offer_before_the_media_is_held_and_answered_when_it_is_ready() {
        let mut talk = fresh();
        assert_eq!(talk.on_offer(), OnOffer::Hold);
        talk.held_offer = Some("offer".into());
        assert_eq!(talk.on_offer(), OnOffer::IgnoreSecond);
        assert_eq!(
            talk.on_media_ready(Role::Callee),
            OnMediaReady::Answer("offer".into())
        );
        assert!(talk.held_offer.is_none());
    }

    #[test]
    fn a_callee_whose_media_is_ready_answers_at_once() {
        let mut talk = fresh();
        assert_eq!(talk.on_media_ready(Role::Callee), OnMediaReady::AwaitOffer);
        assert_eq!(talk.on_offer(), OnOffer::AnswerNow);
        talk.set_remote(any_sdp());
        assert_eq!(talk.on_offer(), OnOffer::Again);
    }

    #[test]
    fn the_offering_roles_offer_once_their_media_is_ready() {
        assert_eq!(fresh().on_media_ready(Role::Caller), OnMediaReady::Offer);
        assert_eq!(fresh().on_media_ready(Role::Whip), OnMediaReady::Offer);
        assert_eq!(fresh().on_media_ready(Role::Whep), OnMediaReady::AwaitOffer);
    }

    #[test]
    fn a_ringing_callee_holds_the_offer_until_accepted() {
        let mut talk = fresh();
        talk.ringing = true;
        assert_eq!(talk.on_media_ready(Role::Callee), OnMediaReady::Warm);
        assert_eq!(talk.on_offer(), OnOffer::Hold);
        talk.held_offer = Some("offer".into());
        let before = tokio::time::Instant::now();
        assert_eq!(
            talk.accept(Duration::from_secs(30)),
            OnAccept::Answer("offer".into())
        );
        assert!(!talk.ringing);
        assert!(talk.connect_by >= before + Duration::from_secs(30));
        // A second accept does nothing.
        assert_eq!(talk.accept(Duration::from_secs(30)), OnAccept::Nothing);
    }

    #[test]
    fn accepted_before_the_media_or_the_offer() {
        let mut talk = fresh();
        talk.ringing = true;
        assert_eq!(talk.accept(Duration::from_secs(30)), OnAccept::Starting);
        let mut talk = fresh();
        talk.ringing = true;
        talk.on_media_ready(Role::Callee);
        assert_eq!(talk.accept(Duration::from_secs(30)), OnAccept::AwaitOffer);
    }

    #[test]
    fn a_ringing_callee_answers_early_a_caller_that_takes_it_and_stays_on_hold() {
        // The offer before the media: held, then answered early once the media is ready.
        let mut talk = fresh();
        talk.ringing = true;
        talk.early_answer = true;
        assert!(talk.on_hold());
        assert_eq!(talk.on_offer(), OnOffer::Hold);
        talk.held_offer = Some("offer".into());
        assert_eq!(
            talk.on_media_ready(Role::Callee),
            OnMediaReady::AnswerEarly("offer".into())
        );
        // The media first: warm, then the offer is answered early as it comes.
        let mut talk = fresh();
        talk.ringing = true;
        talk.early_answer = true;
        assert_eq!(talk.on_media_ready(Role::Callee), OnMediaReady::Warm);
        assert_eq!(talk.on_offer(), OnOffer::AnswerEarly);
        talk.answered_early = Some("answer".into());
        // Accepting sends that answer again, and ends the hold.
        assert_eq!(
            talk.accept(Duration::from_secs(30)),
            OnAccept::AnsweredEarly("answer".into())
        );
        assert!(!talk.on_hold());
        assert_eq!(talk.accept(Duration::from_secs(30)), OnAccept::Nothing);
    }

    #[test]
    fn a_caller_that_heard_ringing_is_on_hold() {
        let mut talk = fresh();
        assert!(!talk.on_hold());
        talk.remote_ringing = true;
        assert!(talk.on_hold());
    }
}
