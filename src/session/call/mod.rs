//! The session task: the one place that calls webrtcbin for a call.
//!
//! Ordering (the reason this project exists):
//! - caller: send `call`, build and link tracks, create the DataChannel, then offer;
//! - callee: build tracks on `call`; hold an offer that arrives before they are ready; read the
//!   offer's codecs and payload types, link matching send branches, then set-remote →
//!   create-answer → set-local → answer;
//! - remote candidates that arrive before the remote description are held.

mod audio_loss;
mod bandwidth;
mod branches;
mod candidates;
mod channel;
mod devices;
mod end;
mod hold;
mod negotiation;
mod path;
mod promises;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::prelude::*;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

pub use end::CallEnd;

use super::events::{Event, PeerInput};
use super::notify::Notifier;
use super::{CallInfo, CallSettings, CallState, ChannelState, Role, identity, webrtc};
use crate::media::profile::AnswerPolicy;
use crate::media::{self, receive};
use crate::protocol::{EndReason, Route, Signal};
use bandwidth::Bandwidth;
use branches::Media;
use candidates::Candidates;
use channel::Channel;
use negotiation::Negotiation;
use path::{IceRecovery, PathWatch};

/// How long a call may take from its start (or, when it rang, from its acceptance) to a
/// connected peer connection; a WHEP session, `whep_connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The session task goes round its loop at least this often (see `CallInfo::beat`).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// DataChannel pings, for the round-trip time.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Messages from the peer (signaling and DataChannel text) waiting for the session task;
/// beyond this they are dropped.
pub const PEER_QUEUE: usize = 64;
/// Text local programs (the bridge) send a call's peer, waiting for its task; beyond this it
/// is dropped. A queue of its own: local programs never crowd out the peer's signaling.
pub const LOCAL_QUEUE: usize = 16;
/// A WHIP publication whose endpoint has sent nothing (RTCP reports) for this long ends, and
/// its publisher publishes again.
const WHIP_RECOVERY: Duration = Duration::from_secs(4);

fn connect_timeout(info: &CallInfo, settings: &CallSettings) -> Duration {
    if info.role == Role::Whep {
        settings.whep_connect_timeout
    } else {
        CONNECT_TIMEOUT
    }
}

/// What reaches a call's task, and the senders its handlers post with.
pub struct Inputs {
    pub events_tx: UnboundedSender<Event>,
    pub events: UnboundedReceiver<Event>,
    pub peer: mpsc::Receiver<PeerInput>,
    pub peer_tx: mpsc::Sender<PeerInput>,
    /// See [`LOCAL_QUEUE`].
    pub local: mpsc::Receiver<String>,
    /// Callee: the caller takes an early answer while this side rings (`call`'s `early`).
    pub early_answer: bool,
}

type Step = Result<(), CallEnd>;

/// One call, owned by its task. Each job's state is a part of its own, kept by the file
/// that does the job.
pub struct Call {
    info: Arc<CallInfo>,
    /// Where the call's lifecycle and its peer's DataChannel messages are told.
    notifier: Arc<Notifier>,
    settings: Arc<CallSettings>,
    signaling: mpsc::Sender<Signal>,
    events: UnboundedSender<Event>,
    pipeline: media::OwnedPipeline,
    webrtcbin: gst::Element,
    /// Offer, answer, ringing (negotiation.rs).
    talk: Negotiation,
    /// Candidates both ways (candidates.rs).
    candidates: Candidates,
    /// ICE restarts (path.rs).
    ice: IceRecovery,
    /// The DataChannel and its pings (channel.rs).
    channel: Channel,
    /// Branches and the encoders behind them (branches.rs).
    media: Media,
    /// The estimate and what follows it (bandwidth.rs).
    bandwidth: Bandwidth,
}

/// Milliseconds since `since`, for the debug lines that time a call's set-up steps.
fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Runs one call to its end. Returns once the pipeline has been handed to teardown.
pub async fn run(
    info: Arc<CallInfo>,
    notifier: Arc<Notifier>,
    settings: Arc<CallSettings>,
    signaling: mpsc::Sender<Signal>,
    inputs: Inputs,
) -> CallEnd {
    let Inputs {
        events_tx,
        mut events,
        mut peer,
        peer_tx,
        mut local,
        early_answer,
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
        Ok(mut call) => {
            call.talk.early_answer = early_answer;
            call
        }
        Err(end) => {
            tracing::warn!(session = %info.session, "call could not start: {}", end.chain());
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
        signaling: mpsc::Sender<Signal>,
        events: UnboundedSender<Event>,
        peer_tx: mpsc::Sender<PeerInput>,
    ) -> Result<Call, CallEnd> {
        let pipeline = media::OwnedPipeline::new(&format!("call-{}", info.session));
        let webrtcbin = webrtc::create(&settings).map_err(CallEnd::media_error)?;
        pipeline.add(&webrtcbin).map_err(CallEnd::media_error)?;
        webrtc::wire(&webrtcbin, &events, &peer_tx);
        #[cfg(debug_assertions)]
        webrtc::stall_for_tests(&webrtcbin, &info.peer);
        webrtc::count_peer_rtcp(&webrtcbin, &info);
        let bandwidth = Bandwidth::new(&webrtcbin, &info, &settings);
        webrtc::watch_bus(&pipeline, &events);
        let echo_probe = if settings.profile.echo_cancel() {
            Some(receive::echo_probe().map_err(CallEnd::media_error)?)
        } else {
            None
        };
        let red = Arc::<crate::session::red::RedPayloads>::default();
        if settings.profile.receive.audio_red {
            crate::session::red::unwrap_before_jitterbuffer(&webrtcbin, Arc::clone(&red));
        }
        let connect_by = tokio::time::Instant::now() + connect_timeout(&info, &settings);
        Ok(Call {
            info,
            notifier,
            settings,
            signaling,
            events,
            pipeline,
            webrtcbin,
            talk: Negotiation::new(connect_by),
            candidates: Candidates::default(),
            ice: IceRecovery::default(),
            channel: Channel::new(peer_tx),
            media: Media {
                echo_probe,
                red,
                ..Media::default()
            },
            bandwidth,
        })
    }

    async fn drive(
        &mut self,
        events: &mut UnboundedReceiver<Event>,
        peer: &mut mpsc::Receiver<PeerInput>,
        local: &mut mpsc::Receiver<String>,
    ) -> CallEnd {
        if self.info.role == Role::Caller {
            // `early`: a callee that rings may answer at once (hold.rs).
            let call = Signal::Call {
                route: Route::new(&self.info.peer, &self.info.session),
                early: true,
                camera: None,
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
        let deadline = tokio::time::sleep_until(self.talk.connect_by);
        tokio::pin!(deadline);
        let ring_timer = tokio::time::sleep_until(self.talk.ring_by);
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
                    self.report_audio_loss();
                    self.watch_devices();
                    match path.check(&self.info) {
                        Ok(()) => self.look_after_path(&mut path).await,
                        Err(end) => Err(end),
                    }
                }
                _ = &mut media_delay, if !self.talk.media_ready => self.on_media_ready().await,
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
                    self.send_local_text(&text);
                    Ok(())
                }
                _ = ping.tick(), if self.channel.is_open() => {
                    self.send_ping();
                    Ok(())
                }
                _ = &mut deadline, if self.info.state() != CallState::Connected && !self.talk.ringing => {
                    crate::metrics::get().ice_failures.inc();
                    Err(CallEnd::local(EndReason::Timeout, "the connection did not come up in time"))
                }
                _ = &mut ring_timer, if self.talk.ringing => Err(CallEnd::local(
                    EndReason::NoAnswer,
                    format!(
                        "nobody answered within {} s",
                        self.settings.profile.ring_timeout_secs
                    ),
                )),
            };
            if let Err(end) = step {
                return end;
            }
            if deadline.deadline() != self.talk.connect_by {
                deadline.as_mut().reset(self.talk.connect_by);
            }
        }
    }

    async fn handle(&mut self, event: Event) -> Step {
        match event {
            // Hanging up while the callee rings withdraws the call.
            Event::End {
                reason: EndReason::Hangup,
                tell_peer,
            } if self.talk.remote_ringing => Err(CallEnd::plain(EndReason::Cancelled, tell_peer)),
            Event::End { reason, tell_peer } => Err(CallEnd::plain(reason, tell_peer)),
            Event::Accept => self.accept().await,
            Event::IceCandidate { mline, candidate } => {
                self.send_local_candidate(mline, candidate).await
            }
            Event::GatheringComplete => self.send_end_of_candidates().await,
            Event::PadAdded { pad, probe } => self.on_pad_added(&pad, probe).await,
            Event::DataChannel(channel) => {
                self.on_data_channel(channel);
                Ok(())
            }
            Event::ChannelOpen => {
                self.on_channel_open();
                Ok(())
            }
            Event::ChannelClosed => {
                self.on_channel_closed();
                Ok(())
            }
            Event::ConnectionState(state) => self.on_connection_state(state).await,
            Event::PipelineError(text) => {
                tracing::warn!(session = %self.info.session, "pipeline error: {text}");
                Err(CallEnd::media(text))
            }
        }
    }

    /// Notes which certificate the peer used in the handshake (all m-lines share one
    /// transport under max-bundle).
    async fn record_remote_certificate(&self) -> Step {
        let pem = self
            .in_webrtcbin(|webrtcbin| {
                webrtcbin
                    .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>(
                        "get-transceiver",
                        &[&0i32],
                    )
                    .and_then(|t| t.sender())
                    .and_then(|s| s.transport())
                    .and_then(|t| t.property::<Option<String>>("remote-certificate"))
            })
            .await?;
        if let Some(fingerprint) = pem.as_deref().and_then(identity::fingerprint_of_pem) {
            tracing::debug!(session = %self.info.session, %fingerprint, "peer certificate");
            self.info.set_remote_fingerprint(fingerprint);
        }
        Ok(())
    }

    async fn signal(&self, msg: Signal) -> Step {
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
            detail = %end.chain(),
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
            mut channel,
            media,
            ..
        } = self;
        // Stop being fed before the pipeline goes down (dropping it tears it down).
        drop(media);
        drop(channel.take());
        drop(webrtcbin);
        drop(pipeline);
    }

    /// Runs `f` with this call's webrtcbin on a blocking thread, and waits for it: webrtcbin
    /// takes its own lock to give a pad, in `get-transceiver` and in `create-data-channel`,
    /// and a webrtcbin wedged while holding it would hold a tokio worker with it — with as
    /// many wedged calls as workers, every other call and the API too (tests/responsive.rs).
    /// Still the task's call: it waits, so its webrtcbin calls stay one at a time, in order.
    async fn in_webrtcbin<T: Send + 'static>(
        &self,
        f: impl FnOnce(&gst::Element) -> T + Send + 'static,
    ) -> Result<T, CallEnd> {
        let webrtcbin = self.webrtcbin.clone();
        blocking(move || f(&webrtcbin)).await
    }
}

/// Runs `f` on a blocking thread (`media::work`): GStreamer state changes wait on streaming
/// threads and devices, and must never hold up a tokio worker.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, CallEnd> {
    media::work::run(f)
        .await
        .map_err(|e| CallEnd::from_error(EndReason::InternalError, e))
}
