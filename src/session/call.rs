//! The session task: the one place that calls webrtcbin for a call.
//!
//! Ordering (the reason this project exists):
//! - caller: send `call`, build and link tracks, create the DataChannel, then offer;
//! - callee: build tracks on `call`; hold an offer that arrives before they are ready; read the
//!   offer's codecs and payload types, link matching send branches, then set-remote →
//!   create-answer → set-local → answer;
//! - remote candidates that arrive before the remote description are held.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_webrtc::{WebRTCDataChannel, WebRTCPeerConnectionState, WebRTCSDPType};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::adapt::Adapter;
use super::events::Event;
use super::loss_estimate::LossEstimate;
use super::notify::Notifier;
use super::rtcp_budget;
use super::{
    CallInfo, CallSettings, CallState, ChannelState, Estimator, Role, Sending, ice, identity, sdp,
    webrtc,
};
use crate::media::codecs::{self, MediaKind};
use crate::media::profile::AnswerPolicy;
use crate::media::{self, receive, send, shared};
use crate::protocol::{EndReason, Message, Route, escape_for_log};

/// How long a call may take from its start (or, when it rang, from its acceptance) to a
/// connected peer connection; a WHEP session, `whep_connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

fn connect_timeout(info: &CallInfo, settings: &CallSettings) -> Duration {
    if info.role == Role::Whep {
        settings.whep_connect_timeout
    } else {
        CONNECT_TIMEOUT
    }
}
/// A caller whose callee rings waits at most this long for a decision (the callee's own
/// `ring_timeout_secs`, at most 600, normally ends it first with `no-answer`).
const RING_WAIT: Duration = Duration::from_secs(600 + 30);
/// How long webrtcbin may take to answer one promise (create-offer, set-*-description).
const PROMISE_TIMEOUT: Duration = Duration::from_secs(10);
/// The session task goes round its loop at least this often (see `CallInfo::beat`).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// DataChannel pings, for the round-trip time.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Pings remembered while waiting for their pongs.
const PINGS_IN_FLIGHT: usize = 16;
/// Remote candidates held until the remote description is set; a peer sending more before
/// it has offered or answered is not a real one.
const MAX_HELD_CANDIDATES: usize = 64;
/// Messages from the peer (signaling and DataChannel text) waiting for the session task;
/// beyond this they are dropped.
pub const PEER_QUEUE: usize = 64;
/// The id an offer gives the transport-wide congestion control header extension.
const TRANSPORT_CC_ID: u32 = 3;
/// A call's own encoder runs at this share of its link's estimate...
const OWN_ENCODER_SHARE: f64 = 0.9;
/// ...and never below this rate (kbit/s).
const OWN_ENCODER_MIN_KBPS: u32 = 100;
/// The loss-based estimate (peers without transport-cc) never goes below this (kbit/s).
const LOSS_ESTIMATE_MIN_KBPS: u32 = 50;
/// A second in which the peer asked for a keyframe counts as this much loss for it: with
/// retransmission on, receiver reports hide loss, and a receiver that lost more than it could
/// get back (a link far narrower than the stream) mostly stops NACKing and asks for keyframes.
const KEYFRAME_REQUEST_LOSS: f64 = 0.2;
/// A WHIP publication whose endpoint has sent nothing (RTCP reports) for this long ends, and
/// its publisher publishes again.
const WHIP_RECOVERY: Duration = Duration::from_secs(4);
/// The side that offered restarts ICE once a connected call's path has not worked both ways
/// for this long (its peer's path is likely gone: a phone left its Wi-Fi)...
const ICE_RESTART_AFTER: Duration = Duration::from_secs(5);
/// ...and again this often while it lasts (until `ice_recovery_secs` ends the call). libnice
/// gives up on a restart's checks after about 2 s, so one made while the path is still down
/// fails, and the next one finds the path back.
const ICE_RESTART_INTERVAL: Duration = Duration::from_secs(5);
/// An ICE restart the peer asks for sooner than this after the last one is ignored.
const MIN_RESTART_GAP: Duration = Duration::from_secs(2);
/// Heard from again after a silence this long, the peer gets a keyframe at once: what was
/// sent into the dead path is gone.
const RESUMED_AFTER: Duration = Duration::from_secs(2);

/// Why a call ends, what went wrong (for logs and the peer), and whether the peer still
/// needs telling.
#[derive(Debug)]
pub struct CallEnd {
    pub reason: EndReason,
    pub detail: String,
    pub tell_peer: bool,
}

impl CallEnd {
    pub fn local(reason: EndReason, detail: impl Into<String>) -> CallEnd {
        CallEnd {
            reason,
            detail: detail.into(),
            tell_peer: true,
        }
    }

    fn media(detail: impl Into<String>) -> CallEnd {
        CallEnd::local(EndReason::MediaError, detail)
    }

    fn bad_sdp(detail: impl Into<String>) -> CallEnd {
        CallEnd::local(EndReason::BadSdp, detail)
    }

    /// The `hangup` that tells the peer.
    pub fn hangup(&self, info: &CallInfo) -> Message {
        let mut msg = Message::hangup(&info.peer, &info.session, self.reason);
        if let Message::Hangup { message, .. } = &mut msg
            && !self.detail.is_empty()
        {
            *message = Some(self.detail.clone());
        }
        msg
    }
}

/// What the peer sends the session: bounded (see [`PEER_QUEUE`]).
#[derive(Debug)]
pub enum PeerInput {
    Signaling(Message),
    ChannelText(String),
}

/// A peer's DataChannel message larger than this is not handed to local programs.
const MAX_LOCAL_MESSAGE: usize = 64 * 1024;
/// Text local programs (the bridge) send a call's peer, waiting for its task; beyond this it
/// is dropped. A queue of its own: local programs never crowd out the peer's signaling.
pub const LOCAL_QUEUE: usize = 16;

/// What reaches a call's task, and the senders its handlers post with.
pub struct Inputs {
    pub events_tx: UnboundedSender<Event>,
    pub events: UnboundedReceiver<Event>,
    pub peer: mpsc::Receiver<PeerInput>,
    pub peer_tx: mpsc::Sender<PeerInput>,
    /// See [`LOCAL_QUEUE`].
    pub local: mpsc::Receiver<String>,
}

type Step = Result<(), CallEnd>;

pub struct Call {
    info: Arc<CallInfo>,
    /// Where the call's lifecycle and its peer's DataChannel messages are told.
    notifier: Arc<Notifier>,
    settings: Arc<CallSettings>,
    signaling: mpsc::Sender<Message>,
    events: UnboundedSender<Event>,
    pipeline: media::OwnedPipeline,
    webrtcbin: gst::Element,
    media_ready: bool,
    /// Callee: ringing (until `Event::Accept`); the offer is held meanwhile.
    ringing: bool,
    /// Caller: the callee said it rings, and has not answered yet.
    remote_ringing: bool,
    /// The call must be connected by then (moved by ringing and accepting).
    connect_by: tokio::time::Instant,
    /// Callee: a ringing call ends with `no-answer` then.
    ring_by: tokio::time::Instant,
    /// Callee: the shared encoders kept running while the call rings.
    warm: Vec<shared::Warm>,
    held_offer: Option<String>,
    held_candidates: Vec<RemoteCandidate>,
    /// Candidates dropped past [`MAX_HELD_CANDIDATES`] (logged once).
    dropped_candidates: usize,
    remote: Option<gst_sdp::SDPMessage>,
    /// The SSRCs of the peer's video, from `remote`.
    remote_video_ssrcs: Vec<u32>,
    /// What the call carries, for its RTCP budget (how soon a lost packet is asked for).
    session_bandwidth: rtcp_budget::SessionBandwidth,
    local_mids: Vec<Option<String>>,
    channel: Option<WebRTCDataChannel>,
    channel_open: bool,
    pings: VecDeque<(u64, Instant)>,
    next_ping: u64,
    sent_end_of_candidates: bool,
    /// Holds the shared encoders feeding this call.
    subscriptions: Vec<shared::Subscription>,
    /// With echo cancellation: the speaker-side probe, made before the microphone starts.
    echo_probe: Option<gst::Element>,
    /// Where the DataChannel's text goes (bounded, like signaling from the peer).
    peer_tx: mpsc::Sender<PeerInput>,
    /// Send branches linked (each is a transceiver, in order): whether each carries video.
    send_video: Vec<bool>,
    /// The rung of the video ladder this call's link carries (shared encoder with a ladder).
    adapter: Option<Adapter>,
    /// Which of `subscriptions` is the video.
    video_subscription: Option<usize>,
    /// The call's own video encoder (`per_viewer_encoder`), and the rate it is set to.
    own_encoder: Option<gst::Element>,
    own_encoder_kbps: u32,
    /// The best video rate the profile sends (kbit/s).
    max_video_kbps: u32,
    /// The RTP header extension id of transport-wide congestion control, when negotiated.
    transport_cc: Option<u32>,
    /// What this call sends can follow its link (a ladder, or an encoder of its own): only
    /// then is the link estimated (transport-cc feedback, rtpgccbwe).
    adapts: bool,
    /// The local candidates sent to the peer: after an ICE restart the peer has forgotten
    /// them, and libnice does not gather again (the same sockets serve the new checks).
    sent_candidates: Vec<RemoteCandidate>,
    /// Caller: an ICE restart's offer is out and its answer not yet in.
    awaiting_restart_answer: bool,
    /// When this side last restarted ICE.
    last_restart: Option<Instant>,
    /// The connection was up once: a later `failed` is a path to recover, not a call that
    /// never connected.
    connected_once: bool,
    /// Whether the peer sends transport-wide feedback (`webrtc::FEEDBACK_*`), shared with the
    /// estimator's handlers.
    feedback: Arc<AtomicU8>,
    /// Without transport-cc: the estimate from the peer's receiver reports, the latest report
    /// on our video, and whether the reports are watched yet.
    loss_estimate: Option<LossEstimate>,
    latest_report: Arc<webrtc::LatestReport>,
    reports_watched: bool,
    /// What the last second's loss was measured against: the report used last (its highest
    /// sequence number), NACKs received, video packets sent, keyframe requests received.
    loss_seen: (Option<u32>, u64, u64, u64),
    /// The SSRC of the video this call sends.
    video_ssrc: Option<u32>,
}

struct RemoteCandidate {
    candidate: String,
    sdp_mid: Option<String>,
    sdp_mline_index: Option<u32>,
}

/// Notices a media path that died under a connected call. libnice (without consent
/// freshness, which webrtcbin 1.22 does not turn on) keeps a dead pair "connected" forever;
/// the peer's RTP, RTCP and DataChannel traffic say whether anything still arrives. A short
/// cut heals by itself; a path silent for `recovery` ends the call with `network`.
struct PathWatch {
    recovery: Duration,
    last_activity: u64,
    heard_at: Instant,
    /// Heard from again after at least [`RESUMED_AFTER`] of silence (taken by the task).
    resumed: bool,
    /// DataChannel pongs: one proves the path works both ways (a path can fail one way only:
    /// the peer still heard while it hears nothing).
    pongs: u64,
    pong_at: Instant,
}

impl PathWatch {
    fn new(recovery: Duration) -> PathWatch {
        PathWatch {
            recovery,
            last_activity: 0,
            heard_at: Instant::now(),
            resumed: false,
            pongs: 0,
            pong_at: Instant::now(),
        }
    }

    /// How long a connected call has had no pong to its pings.
    fn round_trip_silence(&self) -> Duration {
        self.pong_at.elapsed()
    }

    /// How long a connected call has heard nothing from its peer.
    fn silence(&self) -> Duration {
        self.heard_at.elapsed()
    }

    fn take_resumed(&mut self) -> bool {
        std::mem::take(&mut self.resumed)
    }

    fn check(&mut self, info: &CallInfo) -> Step {
        let activity = info.peer_activity();
        let pongs = info.pongs_received.load(Ordering::Relaxed);
        if info.state() != CallState::Connected || pongs != self.pongs {
            self.pongs = pongs;
            self.pong_at = Instant::now();
        }
        // Until connected, the connect timeout is the bound.
        if info.state() != CallState::Connected || activity != self.last_activity {
            if info.state() == CallState::Connected && self.heard_at.elapsed() >= RESUMED_AFTER {
                self.resumed = true;
            }
            self.last_activity = activity;
            self.heard_at = Instant::now();
            return Ok(());
        }
        let silent = self.heard_at.elapsed();
        if silent >= self.recovery {
            crate::metrics::get().ice_failures.inc();
            return Err(CallEnd::local(
                EndReason::Network,
                format!(
                    "nothing arrived from the peer for {} s: the network path is gone",
                    silent.as_secs()
                ),
            ));
        }
        Ok(())
    }
}

/// Runs one call to its end. Returns once the pipeline has been handed to teardown.
/// Milliseconds since `since`, for the debug lines that time a call's set-up steps.
fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

pub async fn run(
    info: Arc<CallInfo>,
    notifier: Arc<Notifier>,
    settings: Arc<CallSettings>,
    signaling: mpsc::Sender<Message>,
    inputs: Inputs,
) -> CallEnd {
    let Inputs {
        events_tx,
        mut events,
        mut peer,
        peer_tx,
        mut local,
    } = inputs;
    let asked = Instant::now();
    let call = Call::new(
        Arc::clone(&info),
        notifier,
        settings,
        signaling.clone(),
        events_tx.clone(),
        peer_tx,
    );
    tracing::debug!(session = %info.session, ms = elapsed_ms(asked), "call pipeline made");
    let mut call = match call {
        Ok(call) => call,
        Err(end) => {
            tracing::warn!(session = %info.session, "call could not start: {}", end.detail);
            let _ = signaling.send(end.hangup(&info)).await;
            info.set_state(CallState::Ended);
            return end;
        }
    };
    let end = call.drive(&mut events, &mut peer, &mut local).await;
    call.finish(&end).await;
    end
}

impl Call {
    fn connect_timeout(&self) -> Duration {
        connect_timeout(&self.info, &self.settings)
    }

    fn new(
        info: Arc<CallInfo>,
        notifier: Arc<Notifier>,
        settings: Arc<CallSettings>,
        signaling: mpsc::Sender<Message>,
        events: UnboundedSender<Event>,
        peer_tx: mpsc::Sender<PeerInput>,
    ) -> Result<Call, CallEnd> {
        let pipeline = media::OwnedPipeline::new(&format!("call-{}", info.session));
        let webrtcbin = webrtc::create(&settings).map_err(|e| CallEnd::media(e.to_string()))?;
        pipeline
            .add(&webrtcbin)
            .map_err(|e| CallEnd::media(e.to_string()))?;
        webrtc::wire(&webrtcbin, &events, &peer_tx);
        webrtc::count_peer_rtcp(&webrtcbin, &info);
        let video_rungs = settings
            .profile
            .video
            .as_ref()
            .map(|v| v.rungs())
            .unwrap_or_default();
        // Only where the estimate can act (a ladder, or an encoder of its own): rtpgccbwe also
        // paces everything the call sends at its estimate, with a thread and a queue of its
        // own, a cost not worth paying for a number nothing would use.
        let adapts = video_rungs.len() > 1 || settings.profile.per_viewer_encoder;
        let feedback = Arc::new(AtomicU8::new(webrtc::FEEDBACK_UNKNOWN));
        if let Some(top) = video_rungs.first().filter(|_| adapts) {
            webrtc::estimate_bandwidth(&webrtcbin, &info, top.bitrate_kbps, Arc::clone(&feedback));
        }
        webrtc::watch_bus(&pipeline, &events);
        let echo_probe = if settings.profile.echo_cancel() {
            Some(receive::echo_probe().map_err(|e| CallEnd::media(e.to_string()))?)
        } else {
            None
        };
        let connect_by = tokio::time::Instant::now() + connect_timeout(&info, &settings);
        Ok(Call {
            info,
            notifier,
            settings,
            signaling,
            events,
            pipeline,
            webrtcbin,
            media_ready: false,
            ringing: false,
            remote_ringing: false,
            connect_by,
            ring_by: tokio::time::Instant::now(),
            warm: Vec::new(),
            held_offer: None,
            held_candidates: Vec::new(),
            dropped_candidates: 0,
            remote: None,
            remote_video_ssrcs: Vec::new(),
            session_bandwidth: rtcp_budget::SessionBandwidth::default(),
            local_mids: Vec::new(),
            channel: None,
            channel_open: false,
            pings: VecDeque::new(),
            next_ping: 0,
            sent_end_of_candidates: false,
            subscriptions: Vec::new(),
            echo_probe,
            peer_tx,
            send_video: Vec::new(),
            adapter: None,
            video_subscription: None,
            own_encoder: None,
            own_encoder_kbps: 0,
            max_video_kbps: video_rungs.first().map_or(0, |r| r.bitrate_kbps),
            transport_cc: None,
            adapts,
            sent_candidates: Vec::new(),
            awaiting_restart_answer: false,
            last_restart: None,
            connected_once: false,
            feedback,
            loss_estimate: None,
            latest_report: Arc::default(),
            reports_watched: false,
            loss_seen: (None, 0, 0, 0),
            video_ssrc: None,
        })
    }

    async fn drive(
        &mut self,
        events: &mut UnboundedReceiver<Event>,
        peer: &mut mpsc::Receiver<PeerInput>,
        local: &mut mpsc::Receiver<String>,
    ) -> CallEnd {
        if self.info.role == Role::Caller {
            let call = Message::Call {
                route: Route::new(&self.info.peer, &self.info.session),
            };
            if let Err(end) = self.signal(call).await {
                return end;
            }
        }
        // The pipeline runs before any branch is linked: a branch fed by a shared encoder
        // must start as soon as it is added (an appsrc pushed to before it starts drops what
        // it gets). The callee can also take candidates at once. on-negotiation-needed, which
        // this fires, is not used.
        if let Err(end) = self.set_playing().await {
            return end;
        }
        if self.info.role == Role::Callee
            && self.settings.profile.answer == AnswerPolicy::Ring
            && let Err(end) = self.start_ringing().await
        {
            return end;
        }
        let media_delay = tokio::time::sleep(self.settings.profile.media_start_delay());
        tokio::pin!(media_delay);
        let deadline = tokio::time::sleep_until(self.connect_by);
        tokio::pin!(deadline);
        let ring_timer = tokio::time::sleep_until(self.ring_by);
        tokio::pin!(ring_timer);
        let mut ping = tokio::time::interval(PING_INTERVAL);
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        // A WHIP publisher whose endpoint went quiet publishes again, soon.
        let recovery = match self.info.role {
            Role::Whip => self.settings.ice_recovery.min(WHIP_RECOVERY),
            _ => self.settings.ice_recovery,
        };
        let mut path = PathWatch::new(recovery);
        loop {
            self.info.beat();
            let step = tokio::select! {
                _ = heartbeat.tick() => {
                    self.sample_retransmissions();
                    self.fit_rtcp_budget();
                    self.adapt();
                    match path.check(&self.info) {
                        Ok(()) => self.look_after_path(&mut path).await,
                        Err(end) => Err(end),
                    }
                }
                _ = &mut media_delay, if !self.media_ready => self.on_media_ready().await,
                event = events.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => Err(CallEnd::local(EndReason::Shutdown, "")),
                },
                input = peer.recv() => match input {
                    Some(PeerInput::Signaling(msg)) => self.on_remote(msg).await,
                    Some(PeerInput::ChannelText(text)) => {
                        self.on_channel_text(&text);
                        Ok(())
                    }
                    None => Err(CallEnd::local(EndReason::Shutdown, "")),
                },
                Some(text) = local.recv() => {
                    if !self.channel_open || !self.channel_send(&text) {
                        tracing::debug!(session = %self.info.session, "no open DataChannel: a local message dropped");
                    }
                    Ok(())
                }
                _ = ping.tick(), if self.channel_open => self.send_ping(),
                _ = &mut deadline, if self.info.state() != CallState::Connected && !self.ringing => {
                    crate::metrics::get().ice_failures.inc();
                    Err(CallEnd::local(EndReason::Timeout, "the connection did not come up in time"))
                }
                _ = &mut ring_timer, if self.ringing => Err(CallEnd {
                    reason: EndReason::NoAnswer,
                    detail: format!(
                        "nobody answered within {} s",
                        self.settings.profile.ring_timeout_secs
                    ),
                    tell_peer: true,
                }),
            };
            if let Err(end) = step {
                return end;
            }
            if deadline.deadline() != self.connect_by {
                deadline.as_mut().reset(self.connect_by);
            }
        }
    }

    async fn handle(&mut self, event: Event) -> Step {
        match event {
            // Hanging up while the callee rings withdraws the call.
            Event::End {
                reason: EndReason::Hangup,
                tell_peer,
            } if self.remote_ringing => Err(CallEnd {
                reason: EndReason::Cancelled,
                detail: String::new(),
                tell_peer,
            }),
            Event::End { reason, tell_peer } => Err(CallEnd {
                reason,
                detail: String::new(),
                tell_peer,
            }),
            Event::Accept => self.accept().await,
            Event::IceCandidate { mline, candidate } => {
                tracing::debug!(session = %self.info.session, mline, %candidate, "local candidate");
                let sdp_mid = self.local_mids.get(mline as usize).cloned().flatten();
                self.send_candidate(candidate, sdp_mid, Some(mline)).await
            }
            Event::GatheringComplete => self.send_end_of_candidates().await,
            Event::PadAdded { pad, probe } => self.on_pad_added(&pad, probe).await,
            Event::DataChannel(channel) => {
                self.info.channels_received.fetch_add(1, Ordering::Relaxed);
                // on-data-channel fires for a channel that is already open; on-open may follow.
                self.channel = Some(channel);
                self.on_channel_open();
                Ok(())
            }
            Event::ChannelOpen => {
                self.on_channel_open();
                Ok(())
            }
            Event::ChannelClosed => {
                self.channel_open = false;
                self.info.set_channel(ChannelState::Closed);
                Ok(())
            }
            Event::ConnectionState(state) => self.on_connection_state(state),
            Event::PipelineError(text) => {
                tracing::warn!(session = %self.info.session, "pipeline error: {text}");
                Err(CallEnd::media(text))
            }
        }
    }

    async fn on_remote(&mut self, msg: Message) -> Step {
        match msg {
            Message::Offer { sdp, .. } if !self.info.role.offers() => {
                if let Some(remote) = &self.remote {
                    let offer = parse_sdp(&sdp, self.settings.profile.max_mlines)?;
                    if sdp::ice_credentials(&offer) != sdp::ice_credentials(remote) {
                        return self.answer_ice_restart(offer).await;
                    }
                    tracing::debug!(session = %self.info.session, "ignoring a renegotiation");
                    return Ok(());
                }
                if self.held_offer.is_some() {
                    tracing::debug!(session = %self.info.session, "ignoring a second offer");
                    return Ok(());
                }
                if self.media_ready && !self.ringing {
                    self.answer(&sdp).await
                } else {
                    if self.ringing {
                        tracing::debug!(session = %self.info.session, "offer while ringing: held");
                    } else {
                        tracing::debug!(session = %self.info.session, "offer before media: held");
                    }
                    self.held_offer = Some(sdp);
                    Ok(())
                }
            }
            Message::Answer { sdp, .. } if self.info.role.offers() => {
                if self.awaiting_restart_answer {
                    return self.on_restart_answer(&sdp).await;
                }
                if self.remote.is_some() {
                    return Ok(());
                }
                if self.remote_ringing {
                    // Accepted: from now on the usual time to connect.
                    self.remote_ringing = false;
                    self.connect_by = tokio::time::Instant::now() + self.connect_timeout();
                }
                let answer = parse_sdp(&sdp, self.settings.profile.max_mlines)?;
                self.choose_estimator(sdp::transport_cc_id(&answer).is_some());
                self.set_description("set-remote-description", WebRTCSDPType::Answer, &answer)
                    .await?;
                self.set_remote(answer);
                self.start_connecting();
                self.apply_held_candidates();
                Ok(())
            }
            Message::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
                ..
            } => {
                self.on_remote_candidate(RemoteCandidate {
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                });
                Ok(())
            }
            Message::Hangup {
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
                    EndReason::Hangup | EndReason::RemoteHangup if self.ringing => {
                        EndReason::Cancelled
                    }
                    reason => reason,
                };
                Err(CallEnd {
                    reason,
                    detail: String::new(),
                    tell_peer: false,
                })
            }
            Message::Ringing { .. } if self.info.role == Role::Caller && self.remote.is_none() => {
                tracing::info!(session = %self.info.session, "the callee rings");
                self.remote_ringing = true;
                self.connect_by = tokio::time::Instant::now() + RING_WAIT;
                self.info.set_state(CallState::Ringing);
                self.notifier.event("ringing", &self.info, None);
                Ok(())
            }
            other => {
                tracing::debug!(session = %self.info.session, kind = other.kind(), "ignored");
                Ok(())
            }
        }
    }

    async fn on_media_ready(&mut self) -> Step {
        self.media_ready = true;
        match self.info.role {
            Role::Caller | Role::Whip => self.offer().await,
            // Ringing: the offer waits for a person; the encoders start meanwhile.
            Role::Callee if self.ringing => {
                self.warm_media().await;
                Ok(())
            }
            Role::Callee | Role::Whep => match self.held_offer.take() {
                Some(offer) => self.answer(&offer).await,
                None => {
                    // The protocol's callee starts its media on `call`: the shared encoders
                    // run by the time the offer comes, and the answer does not wait for them
                    // nor, once connected, for a keyframe.
                    if self.info.role == Role::Callee {
                        self.warm_media().await;
                        for warm in &self.warm {
                            warm.expect_call();
                        }
                    }
                    self.info.set_state(CallState::AwaitingOffer);
                    Ok(())
                }
            },
        }
    }

    /// Callee (`answer = "ring"`): tells the caller the call rings, and rings until someone
    /// accepts, rejects, or `ring_timeout_secs` passes.
    async fn start_ringing(&mut self) -> Step {
        self.ringing = true;
        self.ring_by = tokio::time::Instant::now()
            + Duration::from_secs(self.settings.profile.ring_timeout_secs);
        self.info.set_state(CallState::Ringing);
        self.notifier.event("ringing", &self.info, None);
        tracing::info!(session = %self.info.session, peer = %self.info.peer, "ringing");
        let route = Route::new(&self.info.peer, &self.info.session);
        self.signal(Message::Ringing { route }).await
    }

    /// Callee: someone accepted the ringing call; answer its offer (now, or when it comes).
    async fn accept(&mut self) -> Step {
        if !self.ringing {
            return Ok(());
        }
        self.ringing = false;
        self.connect_by = tokio::time::Instant::now() + self.connect_timeout();
        tracing::info!(session = %self.info.session, "accepted");
        if !self.media_ready {
            self.info.set_state(CallState::Starting);
            return Ok(());
        }
        match self.held_offer.take() {
            Some(offer) => self.answer(&offer).await,
            None => {
                self.info.set_state(CallState::AwaitingOffer);
                Ok(())
            }
        }
    }

    /// Starts the shared encoders the answer will use (those the held offer's plan picks;
    /// without an offer yet, the profile's first video and audio codecs), so that accepting
    /// does not wait for the camera and the encoder. Best effort: a source that fails here
    /// fails again, clearly, when the call answers.
    async fn warm_media(&mut self) {
        if self.settings.profile.per_viewer_encoder {
            return;
        }
        let encoders = Arc::clone(&self.settings.encoders);
        let planned = self.held_offer.as_deref().and_then(|offer| {
            let ours = |kind| encoders.codecs(kind);
            sdp::plan_answer(offer, self.settings.profile.max_mlines, &ours)
                .ok()
                .map(|(_, plan)| plan.codecs())
        });
        let wanted = planned.unwrap_or_else(|| {
            [
                encoders.codecs(MediaKind::Video).first().copied(),
                encoders.codecs(MediaKind::Audio).first().copied(),
            ]
            .into_iter()
            .flatten()
            .collect()
        });
        for codec in wanted {
            let encoders = Arc::clone(&self.settings.encoders);
            let asked = Instant::now();
            let warmed = blocking(move || encoders.warm(codec)).await;
            tracing::debug!(session = %self.info.session, ?codec, ms = elapsed_ms(asked), "media warmed");
            match warmed {
                Ok(Ok(warm)) => self.warm.push(warm),
                Ok(Err(err)) => {
                    tracing::info!(session = %self.info.session, ?codec, "not warmed: {err}");
                }
                Err(_) => {}
            }
        }
    }

    /// Caller: tracks, then the DataChannel, then the offer.
    async fn offer(&mut self) -> Step {
        self.transport_cc = self.adapts.then_some(TRANSPORT_CC_ID);
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
            let channel = self
                .webrtcbin
                .emit_by_name::<Option<WebRTCDataChannel>>(
                    "create-data-channel",
                    &[&"chat", &None::<gst::Structure>],
                )
                .ok_or_else(|| CallEnd::local(EndReason::InternalError, "no DataChannel"))?;
            webrtc::wire_channel(&channel, &self.events, &self.peer_tx);
            self.channel = Some(channel);
            self.info.channels_created.fetch_add(1, Ordering::Relaxed);
            self.info.set_channel(ChannelState::Connecting);
        }

        webrtc::enable_loss_recovery(&self.webrtcbin, &self.send_video, self.fec());
        let mut offer = self.create_description("create-offer", "offer").await?;
        sdp::set_fingerprint(offer.sdp_mut(), self.settings.identity.fingerprint());
        self.local_mids = sdp::mids(offer.sdp());
        let text = offer.sdp().to_string();
        self.set_local(offer).await?;
        self.info.set_state(if self.remote_ringing {
            CallState::Ringing
        } else {
            CallState::Offered
        });
        let route = Route::new(&self.info.peer, &self.info.session);
        self.signal(Message::Offer { route, sdp: text }).await
    }

    /// Callee: send branches matching the offer, then set-remote → create-answer → set-local.
    async fn answer(&mut self, offer_text: &str) -> Step {
        tracing::debug!(session = %self.info.session, "answering an offer");
        let encoders = Arc::clone(&self.settings.encoders);
        let ours = move |kind| encoders.codecs(kind);
        let (offer, plan) = sdp::plan_answer(offer_text, self.settings.profile.max_mlines, &ours)
            .map_err(CallEnd::bad_sdp)?;
        // A warmed encoder the answer does not use lets go of its source first (a camera
        // opens once: another codec's capture of it would find it busy).
        let used = plan.codecs();
        self.warm.retain(|w| used.contains(&w.codec()));
        // Transport-wide congestion control only if the offer has it, under its id, and
        // accepted whenever offered (the offerer's estimator needs our feedback); our own video
        // carries it only if it adapts.
        self.transport_cc = sdp::transport_cc_id(&offer);
        self.choose_estimator(self.transport_cc.is_some());
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
        // The answer goes out within milliseconds now: ask for the first keyframes already.
        for subscription in &self.subscriptions {
            subscription.connecting();
        }
        self.set_description("set-remote-description", WebRTCSDPType::Offer, &offer)
            .await?;
        // One transceiver per audio or video m-line of the offer, in its order.
        let video: Vec<bool> = (0..offer.medias_len())
            .filter_map(|i| offer.media(i))
            .filter(|m| matches!(m.media(), Some("audio" | "video")))
            .map(|m| m.media() == Some("video"))
            .collect();
        webrtc::enable_loss_recovery(&self.webrtcbin, &video, self.fec());
        self.set_remote(offer);
        self.apply_held_candidates();
        let mut answer = self.create_description("create-answer", "answer").await?;
        if answer.sdp().medias_len() == 0 {
            return Err(CallEnd::bad_sdp("nothing in the offer could be answered"));
        }
        sdp::set_fingerprint(answer.sdp_mut(), self.settings.identity.fingerprint());
        if let Some(id) = self.transport_cc {
            sdp::add_transport_cc(answer.sdp_mut(), id);
        }
        self.local_mids = sdp::mids(answer.sdp());
        let text = answer.sdp().to_string();
        self.set_local(answer).await?;
        self.start_connecting();
        if self.info.role == Role::Whep {
            // The player's time to connect counts from the answer it gets, not from the
            // POST: a camera slow to start must not eat into it.
            self.connect_by = tokio::time::Instant::now() + self.connect_timeout();
        }
        // The call's own subscriptions hold the encoders now.
        self.warm.clear();
        let route = Route::new(&self.info.peer, &self.info.session);
        self.signal(Message::Answer { route, sdp: text }).await
    }

    /// A send branch for `codec`, built on a blocking thread: it may start a shared capture
    /// and encoder (a camera can take seconds to open).
    async fn build_send_branch(
        &self,
        codec: codecs::Codec,
        pt: u32,
    ) -> Result<send::SendBranch, CallEnd> {
        let encoders = Arc::clone(&self.settings.encoders);
        let notice = self.source_failure_notice();
        let built = tokio::task::spawn_blocking(move || encoders.branch(codec, pt, notice))
            .await
            .map_err(|e| CallEnd::local(EndReason::InternalError, e.to_string()))?;
        let branch = built.map_err(|e| {
            tracing::warn!(session = %self.info.session, "{e}");
            CallEnd::media(e.to_string())
        })?;
        if let Some(id) = self.transport_cc
            && self.adapts
            && codec.kind() == codecs::MediaKind::Video
        {
            branch.use_transport_cc(id);
        }
        Ok(branch)
    }

    /// What a shared source calls if it fails for good: this call ends with `source-error`.
    fn source_failure_notice(&self) -> impl Fn() + Send + Sync + 'static {
        let events = self.events.clone();
        move || {
            let _ = events.send(Event::End {
                reason: EndReason::SourceError,
                tell_peer: true,
            });
        }
    }

    async fn link_send_branch(&mut self, mut branch: send::SendBranch) -> Step {
        let fail = |what: &str| CallEnd::media(what.to_string());
        self.pipeline
            .add(&branch.bin)
            .map_err(|_| fail("add send branch"))?;
        let src = branch
            .bin
            .static_pad("src")
            .ok_or_else(|| fail("send branch has no src pad"))?;
        let sink = self
            .webrtcbin
            .request_pad_simple("sink_%u")
            .ok_or_else(|| fail("webrtcbin gave no sink pad"))?;
        src.link(&sink).map_err(|_| fail("link send branch"))?;
        self.send_video
            .push(branch.codec.kind() == codecs::MediaKind::Video);
        if branch.codec.kind() == codecs::MediaKind::Video {
            self.video_ssrc.get_or_insert(branch.ssrc);
        }
        webrtc::count_rtp(
            &sink,
            branch.codec.kind(),
            webrtc::Direction::Sent,
            &self.info.rtp,
        );
        let bin = branch.bin.clone();
        blocking(move || bin.sync_state_with_parent().is_ok())
            .await?
            .then_some(())
            .ok_or_else(|| fail("start send branch"))?;
        // Only a running appsrc may be fed: it stamps each frame with its pipeline's clock
        // and base time, and before it runs that base time is 0 — a frame stamped then lies
        // hours in the future, and webrtcbin's clocksync would hold the track forever.
        if branch.codec.kind() == codecs::MediaKind::Video {
            self.start_adapting(&mut branch);
        }
        if let Some(subscription) = branch.subscription.take() {
            subscription.activate();
            self.subscriptions.push(subscription);
        }
        tracing::debug!(
            session = %self.info.session,
            codec = ?branch.codec,
            pt = branch.payload_type,
            ssrc = branch.ssrc,
            "send branch linked"
        );
        Ok(())
    }

    /// The FEC percentage, if the profile sends video with FEC.
    fn fec(&self) -> Option<u32> {
        let profile = &self.settings.profile;
        profile.fec.then_some(profile.fec_percentage)
    }

    /// A video branch about to be linked: its rendition, and how it will follow the link
    /// (another rung of a ladder, or its own encoder's rate).
    fn start_adapting(&mut self, branch: &mut send::SendBranch) {
        let rungs = self
            .settings
            .profile
            .video
            .as_ref()
            .map(|v| v.rungs())
            .unwrap_or_default();
        if let Some(subscription) = &branch.subscription
            && subscription.rungs().len() > 1
        {
            let rates = subscription
                .rungs()
                .iter()
                .map(|r| r.bitrate_kbps)
                .collect();
            self.adapter = Some(Adapter::new(rates, subscription.rung()));
            self.video_subscription = Some(self.subscriptions.len());
        }
        self.own_encoder = branch.encoder.take();
        self.own_encoder_kbps = self.max_video_kbps;
        if let Some(top) = rungs.first() {
            self.info.set_sending(Sending {
                rendition: Some(top.name()),
                target_kbps: Some(top.bitrate_kbps),
            });
        }
    }

    /// PLAYING, on a blocking thread: a state change waits on streaming threads and devices.
    async fn set_playing(&self) -> Step {
        let pipeline = self.pipeline.clone();
        let asked = Instant::now();
        let started = blocking(move || pipeline.set_state(gst::State::Playing).is_ok()).await?;
        tracing::debug!(session = %self.info.session, ms = elapsed_ms(asked), "pipeline playing");
        started
            .then_some(())
            .ok_or_else(|| CallEnd::media("the pipeline would not start"))
    }

    async fn create_description(
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

    async fn set_local(&self, desc: gst_webrtc::WebRTCSessionDescription) -> Step {
        tracing::debug!(session = %self.info.session, sdp = %desc.sdp(), "local description");
        self.promise_call("set-local-description", &desc).await
    }

    async fn set_description(
        &self,
        signal: &str,
        kind: WebRTCSDPType,
        sdp: &gst_sdp::SDPMessage,
    ) -> Step {
        tracing::debug!(session = %self.info.session, %sdp, "remote description");
        let desc = gst_webrtc::WebRTCSessionDescription::new(kind, sdp.clone());
        self.promise_call(signal, &desc).await
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

    fn on_remote_candidate(&mut self, candidate: RemoteCandidate) {
        if candidate.candidate.trim().is_empty() {
            tracing::debug!(session = %self.info.session, "remote end of candidates");
            return;
        }
        // Every stream is rtcp-muxed: RTCP (component 2) candidates have no use here.
        if sdp::candidate_component(&candidate.candidate).is_some_and(|c| c != 1) {
            return;
        }
        // During an ICE restart the peer's new candidates wait for its answer too.
        if self.remote.is_none() || self.awaiting_restart_answer {
            if self.held_candidates.len() >= MAX_HELD_CANDIDATES {
                if self.dropped_candidates == 0 {
                    tracing::info!(
                        session = %self.info.session,
                        "more than {MAX_HELD_CANDIDATES} candidates before a description; dropping the rest"
                    );
                }
                self.dropped_candidates += 1;
                return;
            }
            self.held_candidates.push(candidate);
            return;
        }
        self.add_candidate(&candidate);
    }

    fn apply_held_candidates(&mut self) {
        for candidate in std::mem::take(&mut self.held_candidates) {
            self.add_candidate(&candidate);
        }
    }

    fn add_candidate(&self, candidate: &RemoteCandidate) {
        let Some(remote) = &self.remote else { return };
        // Under max-bundle everything travels on the bundle's transport, whichever m-line
        // the peer (browsers send one copy per m-line) attached the candidate to.
        let mline = sdp::bundle_transport_mline(remote)
            .or_else(|| {
                candidate
                    .sdp_mid
                    .as_deref()
                    .and_then(|mid| sdp::mline_of_mid(remote, mid))
            })
            .or(candidate.sdp_mline_index)
            .unwrap_or(0);
        // An m-line the remote description does not have would make webrtcbin log errors.
        if mline as usize >= remote.medias_len() as usize {
            return;
        }
        let line = candidate
            .candidate
            .strip_prefix("a=")
            .unwrap_or(&candidate.candidate);
        self.webrtcbin
            .emit_by_name::<()>("add-ice-candidate", &[&mline, &line]);
    }

    async fn send_candidate(
        &mut self,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u32>,
    ) -> Step {
        if !candidate.is_empty() && self.sent_candidates.len() < MAX_HELD_CANDIDATES {
            self.sent_candidates.push(RemoteCandidate {
                candidate: candidate.clone(),
                sdp_mid: sdp_mid.clone(),
                sdp_mline_index,
            });
        }
        let route = Route::new(&self.info.peer, &self.info.session);
        self.signal(Message::Candidate {
            route,
            candidate,
            sdp_mid,
            sdp_mline_index,
        })
        .await
    }

    async fn send_end_of_candidates(&mut self) -> Step {
        if self.sent_end_of_candidates {
            return Ok(());
        }
        self.sent_end_of_candidates = true;
        let mid = self.local_mids.first().cloned().flatten();
        self.send_candidate(String::new(), mid, Some(0)).await
    }

    async fn on_pad_added(&mut self, pad: &gst::Pad, probe: Option<gst::PadProbeId>) -> Step {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let is_audio = caps
            .structure(0)
            .and_then(|s| s.get::<&str>("media").ok())
            .is_some_and(|m| m == "audio");
        let echo_probe = if is_audio {
            self.echo_probe.take()
        } else {
            None
        };
        let built = receive::branch(
            &caps,
            &self.settings.profile.receive,
            &self.info.received,
            echo_probe,
        );
        let linked = built.map_err(|e| e.to_string()).and_then(|(bin, codec)| {
            self.pipeline.add(&bin).map_err(|e| e.to_string())?;
            let sink_pad = bin.static_pad("sink").ok_or("receive branch has no sink")?;
            pad.link(&sink_pad).map_err(|e| e.to_string())?;
            let kind = if is_audio {
                MediaKind::Audio
            } else {
                MediaKind::Video
            };
            webrtc::count_rtp(pad, kind, webrtc::Direction::Received, &self.info.rtp);
            Ok((bin, codec))
        });
        // Sinks open their devices in the state change (an ALSA speaker, a display).
        let result = match linked {
            Ok((bin, codec)) => blocking(move || bin.sync_state_with_parent())
                .await?
                .map(|_| codec)
                .map_err(|e| e.to_string()),
            Err(err) => Err(err),
        };
        if let Some(probe) = probe {
            pad.remove_probe(probe);
        }
        match result {
            Ok(codec) => {
                tracing::debug!(session = %self.info.session, ?codec, "receiving");
                Ok(())
            }
            Err(err) => {
                tracing::warn!(session = %self.info.session, "receive branch: {err}");
                Err(CallEnd::media(format!("receive branch: {err}")))
            }
        }
    }

    fn on_channel_open(&mut self) {
        let open = self
            .channel
            .as_ref()
            .is_some_and(|c| c.ready_state() == gst_webrtc::WebRTCDataChannelState::Open);
        if open && !self.channel_open {
            self.channel_open = true;
            self.info.set_channel(ChannelState::Open);
            tracing::debug!(session = %self.info.session, "data channel open");
        }
    }

    fn on_channel_text(&mut self, text: &str) {
        let parsed: Option<ChannelMessage> = serde_json::from_str(text).ok();
        match parsed {
            Some(ChannelMessage::Ping { id }) => {
                let pong = serde_json::json!({"type": "pong", "id": id}).to_string();
                if self.channel_send(&pong) {
                    self.info.pings_answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(ChannelMessage::Pong { id }) => {
                if let Some(pos) = self.pings.iter().position(|(n, _)| *n == id) {
                    let (_, sent) = self.pings.remove(pos).unwrap_or((id, Instant::now()));
                    let rtt = sent.elapsed().as_micros().max(1) as u64;
                    self.info.rtt_us.store(rtt, Ordering::Relaxed);
                    self.info.pongs_received.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Anything else is for the device's local programs (the bridge), if not huge.
            None if text.len() <= MAX_LOCAL_MESSAGE => self.notifier.message(&self.info, text),
            None => {
                tracing::debug!(session = %self.info.session, bytes = text.len(), "a DataChannel message too large for local programs: dropped");
            }
        }
    }

    fn send_ping(&mut self) -> Step {
        self.next_ping += 1;
        let ping = serde_json::json!({"type": "ping", "id": self.next_ping}).to_string();
        if self.channel_send(&ping) {
            if self.pings.len() == PINGS_IN_FLIGHT {
                self.pings.pop_front();
            }
            self.pings.push_back((self.next_ping, Instant::now()));
        }
        Ok(())
    }

    fn channel_send(&self, text: &str) -> bool {
        match &self.channel {
            Some(channel) => channel.send_string_full(Some(text)).is_ok(),
            None => false,
        }
    }

    /// Both descriptions are set: ICE and DTLS run now, and the encoders make this call's
    /// first keyframes meanwhile (a callee asked for them as it began its answer).
    fn start_connecting(&mut self) {
        self.info.set_state(CallState::Connecting);
        for subscription in &self.subscriptions {
            subscription.connecting();
        }
    }

    fn on_connection_state(&mut self, state: WebRTCPeerConnectionState) -> Step {
        tracing::debug!(session = %self.info.session, ?state, "connection state");
        match state {
            WebRTCPeerConnectionState::Connected => {
                if !self.connected_once {
                    self.notifier.event("connected", &self.info, None);
                }
                self.connected_once = true;
                self.info.set_state(CallState::Connected);
                for subscription in &self.subscriptions {
                    subscription.start_at_keyframe();
                }
                self.record_remote_certificate();
                Ok(())
            }
            // A path lost under a call that was up: the offerer restarts ICE, and the path
            // watch ends the call if nothing comes back within `ice_recovery_secs`.
            WebRTCPeerConnectionState::Failed if self.connected_once => {
                tracing::info!(session = %self.info.session, "connection failed; recovering");
                Ok(())
            }
            WebRTCPeerConnectionState::Failed => {
                crate::metrics::get().ice_failures.inc();
                Err(CallEnd::local(
                    EndReason::IceFailed,
                    "the connection failed",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Once a heartbeat: a peer heard from again after a silence gets a keyframe at once, and
    /// the caller restarts ICE on a connected call whose path has not worked for a while
    /// (with a DataChannel: no pong to its pings; without: nothing heard).
    async fn look_after_path(&mut self, path: &mut PathWatch) -> Step {
        if path.take_resumed() {
            tracing::info!(session = %self.info.session, "the peer is heard again");
            for subscription in &self.subscriptions {
                subscription.start_at_keyframe();
            }
        }
        let due = self
            .last_restart
            .is_none_or(|at| at.elapsed() >= ICE_RESTART_INTERVAL);
        // Pongs count only from a peer known to answer pings (ours do; another
        // implementation need not, and its healthy call must not be restarted every 5 s).
        let answers_pings = self.info.pongs_received.load(Ordering::Relaxed) > 0;
        let silence = if self.channel_open && answers_pings {
            path.round_trip_silence()
        } else {
            path.silence()
        };
        if self.info.role == Role::Caller
            && self.info.state() == CallState::Connected
            && silence >= ICE_RESTART_AFTER
            && due
        {
            return self.restart_ice().await;
        }
        Ok(())
    }

    /// Caller: restarts ICE on this call (webrtcbin keeps its DTLS and SRTP; libnice checks
    /// again), offers the new credentials, and sends its candidates again.
    async fn restart_ice(&mut self) -> Step {
        self.last_restart = Some(Instant::now());
        let credentials = match ice::restart(&self.webrtcbin) {
            Ok(credentials) => credentials,
            Err(err) => {
                tracing::info!(session = %self.info.session, "no ICE restart: {err}");
                return Ok(());
            }
        };
        tracing::info!(session = %self.info.session, "restarting ICE");
        let mut offer = self.create_description("create-offer", "offer").await?;
        sdp::set_fingerprint(offer.sdp_mut(), self.settings.identity.fingerprint());
        sdp::set_ice_credentials(offer.sdp_mut(), &credentials);
        self.local_mids = sdp::mids(offer.sdp());
        let text = offer.sdp().to_string();
        self.set_local(offer).await?;
        self.awaiting_restart_answer = true;
        self.count_restart();
        let route = Route::new(&self.info.peer, &self.info.session);
        self.signal(Message::Offer { route, sdp: text }).await?;
        self.send_candidates_again().await
    }

    /// Caller: the answer to an ICE restart.
    async fn on_restart_answer(&mut self, text: &str) -> Step {
        let answer = parse_sdp(text, self.settings.profile.max_mlines)?;
        self.set_description("set-remote-description", WebRTCSDPType::Answer, &answer)
            .await?;
        self.awaiting_restart_answer = false;
        if let Some(remote) = sdp::ice_credentials(&answer)
            && let Err(err) = ice::set_remote_credentials(&self.webrtcbin, &remote)
        {
            tracing::info!(session = %self.info.session, "ICE restart: {err}");
        }
        self.set_remote(answer);
        self.apply_held_candidates();
        Ok(())
    }

    /// Callee: the peer restarted ICE (new credentials in an offer on this call: a browser's
    /// `restartIce()`, another webrtcd whose path went away). Restart ours, answer with our
    /// new credentials and send our candidates again; media goes on over the new path.
    async fn answer_ice_restart(&mut self, offer: gst_sdp::SDPMessage) -> Step {
        // A peer restarting over and over costs a restart and a negotiation each time: one at
        // a time, at most (a real peer retries: webrtcd and the page every 5 s).
        if self
            .last_restart
            .is_some_and(|at| at.elapsed() < MIN_RESTART_GAP)
        {
            tracing::info!(session = %self.info.session, "ICE restart too soon after the last: ignored");
            return Ok(());
        }
        let credentials = match ice::restart(&self.webrtcbin) {
            Ok(credentials) => credentials,
            Err(err) => {
                tracing::info!(session = %self.info.session, "ICE restart refused: {err}");
                return Ok(());
            }
        };
        tracing::info!(session = %self.info.session, "the peer restarted ICE");
        self.last_restart = Some(Instant::now());
        self.set_description("set-remote-description", WebRTCSDPType::Offer, &offer)
            .await?;
        if let Some(remote) = sdp::ice_credentials(&offer)
            && let Err(err) = ice::set_remote_credentials(&self.webrtcbin, &remote)
        {
            tracing::info!(session = %self.info.session, "ICE restart: {err}");
        }
        self.set_remote(offer);
        let mut answer = self.create_description("create-answer", "answer").await?;
        sdp::set_fingerprint(answer.sdp_mut(), self.settings.identity.fingerprint());
        if let Some(id) = self.transport_cc {
            sdp::add_transport_cc(answer.sdp_mut(), id);
        }
        sdp::set_ice_credentials(answer.sdp_mut(), &credentials);
        self.local_mids = sdp::mids(answer.sdp());
        let text = answer.sdp().to_string();
        self.set_local(answer).await?;
        self.count_restart();
        let route = Route::new(&self.info.peer, &self.info.session);
        self.signal(Message::Answer { route, sdp: text }).await?;
        self.send_candidates_again().await
    }

    fn count_restart(&self) {
        self.info.ice_restarts.fetch_add(1, Ordering::Relaxed);
        crate::metrics::get().ice_restarts.inc();
    }

    /// After an ICE restart: the peer forgot our candidates; libnice keeps them (and their
    /// sockets), but will not announce them again.
    async fn send_candidates_again(&mut self) -> Step {
        let route = Route::new(&self.info.peer, &self.info.session);
        let mut messages: Vec<Message> = self
            .sent_candidates
            .iter()
            .map(|c| Message::Candidate {
                route: route.clone(),
                candidate: c.candidate.clone(),
                sdp_mid: c.sdp_mid.clone(),
                sdp_mline_index: c.sdp_mline_index,
            })
            .collect();
        messages.push(Message::Candidate {
            route,
            candidate: String::new(),
            sdp_mid: self.local_mids.first().cloned().flatten(),
            sdp_mline_index: Some(0),
        });
        for msg in messages {
            self.signal(msg).await?;
        }
        Ok(())
    }

    /// Keeps the peer's description, and the SSRCs of its video (for loss recovery).
    fn set_remote(&mut self, sdp: gst_sdp::SDPMessage) {
        self.remote_video_ssrcs = sdp::video_ssrcs(&sdp);
        self.remote = Some(sdp);
    }

    /// Copies the retransmission counters into the call's info (what `GET /api/calls` shows),
    /// and makes sure lost video is asked for again.
    fn sample_retransmissions(&self) {
        if self.info.state() != CallState::Connected {
            return;
        }
        let done = webrtc::loss_recovery(&self.webrtcbin, &self.remote_video_ssrcs);
        let packets = done.retransmitted;
        self.info
            .nacks_received
            .store(done.requests, Ordering::Relaxed);
        self.info
            .fec_recovered
            .store(done.fec_recovered, Ordering::Relaxed);
        let before = self
            .info
            .packets_retransmitted
            .swap(packets, Ordering::Relaxed);
        crate::metrics::get()
            .packets_retransmitted
            .inc_by(packets.saturating_sub(before));
    }

    /// A call that receives video asks for its lost packets in RTCP: its RTCP budget follows
    /// what the call carries (see [`rtcp_budget`]).
    fn fit_rtcp_budget(&mut self) {
        if self.info.state() != CallState::Connected || self.remote_video_ssrcs.is_empty() {
            return;
        }
        if let Some(bps) = self
            .session_bandwidth
            .update(&self.webrtcbin, Instant::now())
        {
            tracing::trace!(session = %self.info.session, bps, "session bandwidth for RTCP");
        }
    }

    /// Fits what this call sends to its link's estimate: another rung of the ladder, or
    /// (its own encoder) another rate.
    fn adapt(&mut self) {
        // The peer's feedback on our video, read once a tick for both uses below.
        let feedback = match (&self.adapter, &self.loss_estimate, self.video_ssrc) {
            (None, None, _) | (_, _, None) => None,
            (_, _, Some(ssrc)) => webrtc::stream_feedback(&self.webrtcbin, ssrc),
        };
        self.estimate_from_reports(feedback);
        let bps = self.info.estimate_bps.load(Ordering::Relaxed);
        if bps == 0 || self.info.state() != CallState::Connected {
            return;
        }
        let kbps = bps / 1000;
        if let Some(adapter) = &mut self.adapter {
            let before = adapter.current();
            // The peer's keyframe requests tell a probe that loses frames for good.
            let keyframe_requests = feedback.map_or(0, |f| f.keyframe_requests);
            let rung = adapter.update(kbps, keyframe_requests, std::time::Instant::now());
            let subscription = self
                .video_subscription
                .and_then(|i| self.subscriptions.get(i));
            if let Some(subscription) = subscription
                && rung != before
            {
                subscription.set_rung(rung);
                crate::metrics::get().rendition_switches.inc();
                let to = subscription.rungs().get(rung).copied();
                tracing::info!(
                    session = %self.info.session,
                    estimate_kbps = kbps,
                    to = to.map(|r| r.name()).unwrap_or_default(),
                    "rendition"
                );
                if let Some(to) = to {
                    self.info.set_sending(Sending {
                        rendition: Some(to.name()),
                        target_kbps: Some(to.bitrate_kbps),
                    });
                }
            }
        } else if let Some(encoder) = &self.own_encoder {
            // Its own encoder: just under the estimate, never above the profile's rate.
            let target = ((kbps as f64 * OWN_ENCODER_SHARE) as u32).clamp(
                OWN_ENCODER_MIN_KBPS,
                self.max_video_kbps.max(OWN_ENCODER_MIN_KBPS),
            );
            let current = self.own_encoder_kbps;
            if current.abs_diff(target) * 20 > current
                && media::encoder::set_bitrate(encoder, target)
            {
                self.own_encoder_kbps = target;
                self.info.set_sending(Sending {
                    rendition: self.info.sending().rendition,
                    target_kbps: Some(target),
                });
            }
        }
    }

    /// Once the descriptions say whether the peer sends transport-wide feedback: a call whose
    /// video can follow its link is estimated by transport-cc (`rtpgccbwe`) if so, else by
    /// the loss in the peer's receiver reports.
    fn choose_estimator(&mut self, transport_cc: bool) {
        if !self.adapts {
            return;
        }
        let (feedback, estimator) = if transport_cc {
            (webrtc::FEEDBACK_YES, Estimator::TransportCc)
        } else {
            (webrtc::FEEDBACK_NO, Estimator::Loss)
        };
        self.feedback.store(feedback, Ordering::Relaxed);
        self.info
            .estimator
            .store(estimator as u8, Ordering::Relaxed);
        if !transport_cc {
            let top = self.max_video_kbps;
            self.loss_estimate = Some(LossEstimate::new(top, LOSS_ESTIMATE_MIN_KBPS, top));
        }
    }

    /// Without transport-cc, once a second: the loss the peer's feedback shows on our video
    /// (a new receiver report's fraction lost, the share of packets it asked for again, or a
    /// keyframe request: whichever says most) and the round trip its reports give move the
    /// estimate.
    fn estimate_from_reports(&mut self, feedback: Option<webrtc::StreamFeedback>) {
        let (Some(estimate), Some(ssrc)) = (&mut self.loss_estimate, self.video_ssrc) else {
            return;
        };
        if self.info.state() != CallState::Connected {
            return;
        }
        if !self.reports_watched {
            self.reports_watched = webrtc::watch_receiver_reports(
                &self.webrtcbin,
                ssrc,
                Arc::clone(&self.latest_report),
            );
        }
        let (last_report, last_nacks, last_sent, last_keyframes) = self.loss_seen;
        let report = self
            .latest_report
            .get()
            .filter(|r| Some(r.highest_seq) != last_report);
        let nacks = self.info.nacks_received.load(Ordering::Relaxed);
        let sent = self.info.rtp.video_sent.load(Ordering::Relaxed);
        let nacked = match sent.saturating_sub(last_sent) {
            0 => 0.0,
            packets => nacks.saturating_sub(last_nacks) as f64 / packets as f64,
        };
        let keyframes = feedback.map_or(last_keyframes, |f| f.keyframe_requests);
        self.loss_seen = (
            report.map(|r| r.highest_seq).or(last_report),
            nacks,
            sent,
            keyframes,
        );
        if report.is_none() && last_sent == 0 {
            return; // nothing heard from the peer yet
        }
        // A receiver that asks for a keyframe lost what retransmission could not bring back.
        let unrecovered = if keyframes > last_keyframes {
            KEYFRAME_REQUEST_LOSS
        } else {
            0.0
        };
        let loss = report
            .map_or(0.0, |r| r.loss())
            .max(nacked)
            .max(unrecovered);
        let sent = self
            .info
            .sending()
            .target_kbps
            .unwrap_or(self.max_video_kbps);
        let kbps = estimate.update(loss, feedback.and_then(|f| f.round_trip), sent);
        self.info
            .estimate_bps
            .store(u64::from(kbps) * 1000, Ordering::Relaxed);
    }

    /// Notes which certificate the peer used in the handshake (all m-lines share one
    /// transport under max-bundle).
    fn record_remote_certificate(&self) {
        let transceiver = self
            .webrtcbin
            .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&0i32]);
        let pem = transceiver
            .and_then(|t| t.sender())
            .and_then(|s| s.transport())
            .and_then(|t| t.property::<Option<String>>("remote-certificate"));
        if let Some(fingerprint) = pem.as_deref().and_then(identity::fingerprint_of_pem) {
            tracing::debug!(session = %self.info.session, %fingerprint, "peer certificate");
            self.info.set_remote_fingerprint(fingerprint);
        }
    }

    async fn signal(&self, msg: Message) -> Step {
        self.signaling
            .send(msg)
            .await
            .map_err(|_| CallEnd::local(EndReason::SignalingGone, ""))
    }

    /// Tells the peer if needed, and hands the pipeline to teardown off this task.
    async fn finish(self, end: &CallEnd) {
        tracing::info!(
            session = %self.info.session,
            peer = %self.info.peer,
            reason = %end.reason,
            detail = %end.detail,
            "call ended"
        );
        if end.tell_peer {
            let _ = self.signaling.send(end.hangup(&self.info)).await;
        }
        self.info.set_state(CallState::Ended);
        self.info.set_channel(ChannelState::Closed);
        let Call {
            pipeline,
            webrtcbin,
            channel,
            subscriptions,
            ..
        } = self;
        // Stop being fed before the pipeline goes down (dropping it tears it down).
        drop(subscriptions);
        drop(channel);
        drop(webrtcbin);
        drop(pipeline);
    }
}

#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ChannelMessage {
    Ping { id: u64 },
    Pong { id: u64 },
}

/// Parses a peer's SDP, refusing what no real peer sends: text that is not SDP, no m-line,
/// more m-lines than the profile allows (each one costs threads and elements).
fn parse_sdp(text: &str, max_mlines: usize) -> Result<gst_sdp::SDPMessage, CallEnd> {
    sdp::check(text, max_mlines).map_err(CallEnd::bad_sdp)
}

/// A webrtcbin promise's `error` as its message text (never a pointer).
fn reply_error(reply: &gst::StructureRef) -> String {
    match reply.get::<glib::Error>("error") {
        Ok(err) => err.message().to_string(),
        Err(_) => "no reason given".into(),
    }
}

/// Runs `f` on a blocking thread: GStreamer state changes wait on streaming threads and
/// devices, and must never hold up a tokio worker.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, CallEnd> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CallEnd::local(EndReason::InternalError, e.to_string()))
}
