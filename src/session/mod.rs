//! One call: a task that owns a webrtcbin pipeline and bridges it to signaling messages.
//!
//! The session task is the only code that calls webrtcbin. webrtcbin's signals, the data
//! channel's signals and the bus post [`events::Event`]s to that task and return at once.

mod adapt;
mod call;
mod events;
pub mod ice;
pub mod identity;
mod loss_estimate;
pub mod manager;
pub mod notify;
mod red;
mod rtcp_budget;
pub mod sdp;
mod supervise;
pub mod turn;
pub mod warm_up;
mod webrtc;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::media::profile::Profile;
use crate::media::receive::ReceiveCounters;
use crate::sync::lock;

pub use manager::{CallManager, PlaceCallError};

/// What every call of this daemon is built with.
#[derive(Debug, Clone)]
pub struct CallSettings {
    pub profile: Arc<Profile>,
    /// Restrict ICE host candidates to these local addresses (none: libnice's own choice).
    pub ice_addresses: Vec<IpAddr>,
    /// `stun://host:port`.
    pub stun_server: Option<String>,
    /// `turn(s)://user:password@host:port` (shown redacted).
    pub turn_servers: Vec<crate::redact::SecretUrl>,
    /// TURN servers with short-lived credentials made per call (`turn_secret`).
    pub turn_rest: Option<turn::TurnRest>,
    /// Gather and use relayed candidates only (`ice_transport_policy = "relay"`).
    pub relay_only: bool,
    /// A connected call from whose peer nothing (RTP, RTCP, DataChannel) arrives for this
    /// long ends with reason `network`: its path is gone.
    pub ice_recovery: std::time::Duration,
    /// A WHEP session whose player has not connected within this ends (`timeout`): a player
    /// that posts offers and never connects holds no slot, and no encoder, for long.
    pub whep_connect_timeout: std::time::Duration,
    /// The certificate every call uses for DTLS.
    pub identity: Arc<identity::DtlsIdentity>,
    /// Where send branches come from (shared encoders by default).
    pub encoders: Arc<crate::media::shared::Encoders>,
}

impl CallSettings {
    /// These settings for a call on `camera`: its view of the profile, its encoders.
    pub fn for_camera(&self, camera: &crate::media::cameras::Camera) -> CallSettings {
        CallSettings {
            profile: Arc::clone(&camera.profile),
            encoders: Arc::clone(&camera.encoders),
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Caller,
    Callee,
    /// A WHEP player's session: a callee whose offer came in an HTTP request.
    Whep,
    /// Publishing to a WHIP endpoint: a caller whose offer goes out in an HTTP request, with
    /// no DataChannel, which does not restart ICE (its publisher publishes again).
    Whip,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Callee => "callee",
            Role::Whep => "whep",
            Role::Whip => "whip",
        }
    }

    /// This side makes the offers (and the DataChannel); the others answer.
    pub fn offers(self) -> bool {
        matches!(self, Role::Caller | Role::Whip)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallState {
    /// Building media.
    Starting,
    /// Callee (`answer = "ring"`): ringing until someone accepts or rejects it (its media
    /// warms meanwhile). Caller: the callee said it rings.
    Ringing,
    /// Caller: offer sent, waiting for the answer.
    Offered,
    /// Callee: media ready, waiting for the offer.
    AwaitingOffer,
    /// Descriptions exchanged; ICE/DTLS under way.
    Connecting,
    Connected,
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelState {
    None,
    Connecting,
    Open,
    Closed,
}

/// What the outside world may read about a running call. Written by the session task.
#[derive(Debug)]
pub struct CallInfo {
    pub session: String,
    pub peer: String,
    pub role: Role,
    /// The camera this call sends (or, a callee that sends nothing, would).
    pub camera: String,
    pub started: Instant,
    state: Mutex<CallState>,
    /// A ringing call was accepted or rejected: the first decision is the only one.
    decided: std::sync::atomic::AtomicBool,
    channel: Mutex<ChannelState>,
    /// Fingerprint of the certificate the peer presented in the DTLS handshake.
    remote_fingerprint: Mutex<Option<String>>,
    /// When the peer connection reached `connected`.
    connected_at: Mutex<Option<Instant>>,
    pub received: Arc<ReceiveCounters>,
    pub channels_created: AtomicU32,
    pub channels_received: AtomicU32,
    pub pings_answered: AtomicU64,
    pub pongs_received: AtomicU64,
    /// Last DataChannel ping round trip, microseconds (0: none yet).
    pub rtt_us: AtomicU64,
    /// Milliseconds after `started` when the session task last went round its loop: a task
    /// that stops doing so is stuck (the health check and the watchdog look at this).
    pub heartbeat_ms: AtomicU64,
    /// RTP packets handed to / received from webrtcbin, per track.
    pub rtp: Arc<RtpCounts>,
    /// RTCP reports received from the peer (rtpbin's `on-ssrc-active`): a receive-only peer
    /// without a DataChannel still sends these.
    pub rtcp_received: AtomicU64,
    /// Retransmission requests received and retransmissions sent (sampled by the session task
    /// from webrtcbin's `rtprtxsend` elements).
    pub nacks_received: AtomicU64,
    pub packets_retransmitted: AtomicU64,
    /// The bandwidth estimate for what this side sends, bit/s (0: none yet).
    pub estimate_bps: AtomicU64,
    /// Lost packets this side rebuilt from FEC (sampled by the session task).
    pub fec_recovered: AtomicU64,
    /// Lost audio packets rebuilt from the copy in the next one (RED; sampled likewise).
    pub audio_recovered: AtomicU64,
    /// ICE restarts on this call, made or answered.
    pub ice_restarts: AtomicU64,
    /// Where `estimate_bps` comes from (see [`Estimator`]).
    pub estimator: std::sync::atomic::AtomicU8,
    /// The video this side sends: its rendition and target rate (set by the session task).
    sending: Mutex<Sending>,
    first_frame_recorded: std::sync::atomic::AtomicBool,
    /// The microphone this call sends and the speaker it plays on (set by the session
    /// task): see [`DeviceState`].
    pub microphone: std::sync::atomic::AtomicU8,
    pub speaker: std::sync::atomic::AtomicU8,
}

/// How a device a call uses is doing, as `GET /api/calls` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// It delivers.
    Ok,
    /// Unplugged or silent: retried, and the call goes on without it meanwhile.
    Lost,
}

impl DeviceState {
    /// Kept in an `AtomicU8`: 0 is "the call has none".
    pub fn code(state: Option<DeviceState>) -> u8 {
        match state {
            None => 0,
            Some(DeviceState::Ok) => 1,
            Some(DeviceState::Lost) => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<DeviceState> {
        match code {
            1 => Some(DeviceState::Ok),
            2 => Some(DeviceState::Lost),
            _ => None,
        }
    }
}

/// The devices a call uses (`None`: it uses none of that kind).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CallDevices {
    pub microphone: Option<DeviceState>,
    pub speaker: Option<DeviceState>,
}

/// A point-in-time view of a call, as `GET /api/calls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CallSnapshot {
    pub session: String,
    pub peer: String,
    pub role: Role,
    /// The camera the call watches (a daemon's own call: the camera it sends).
    pub camera: String,
    pub state: CallState,
    pub video_frames: u64,
    pub audio_buffers: u64,
    /// Video frames that came more than 100 ms after the previous one.
    pub video_late: u64,
    /// Capture → decoded-frame latency (with `receive.measure_latency` and a stamping sender).
    pub latency: Option<crate::media::receive::LatencySummary>,
    pub datachannel: ChannelState,
    pub datachannels_created: u32,
    pub datachannels_received: u32,
    pub pings_answered: u64,
    pub pongs_received: u64,
    pub rtt_ms: Option<f64>,
    pub first_frame_ms: Option<f64>,
    /// From the call's start to its connection being up.
    pub connected_ms: Option<f64>,
    /// `sha-256 …` of the certificate the peer really used (compare with its SDP to pin it).
    pub remote_fingerprint: Option<String>,
    pub age_ms: u64,
    /// ICE restarts on this call, made or answered (a peer's path changed under it).
    pub ice_restarts: u64,
    /// RTP packets per track, sent and received (where a call got stuck shows here).
    pub rtp_packets: RtpSnapshot,
    /// Loss recovery on what this side sends: NACKed packets the peer asked for again, and
    /// retransmissions sent (RTX).
    pub send: SendRecovery,
    /// The video this side decodes.
    pub receive: ReceivedVideo,
    pub devices: CallDevices,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ReceivedVideo {
    /// `None` until the first decoded frame (or with a sink that does not decode).
    pub video_width: Option<u32>,
    pub video_height: Option<u32>,
    /// Frames decoded in the last second.
    pub fps: u32,
    /// Times no new frame came for more than 200 ms.
    pub freezes: u64,
    /// Lost packets rebuilt from forward error correction (`fec = true` on the sender).
    pub fec_recovered: u64,
    /// Audio packets not received, taken from the copy the next packet carried (RED,
    /// `[receive] audio_red`, a peer such as Chromium sending it).
    pub audio_recovered: u64,
}

/// What this side sends the peer, and how it adapts to the link.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SendRecovery {
    /// The video rendition this call gets now (`1280x720`).
    pub rendition: Option<String>,
    /// The rate of that rendition, or what its own encoder was set to (kbit/s).
    pub target_kbps: Option<u32>,
    /// The bandwidth estimate of the link (kbit/s): transport-wide congestion control, or
    /// the loss the peer reports.
    pub estimate_kbps: Option<u64>,
    /// Which: `transport-cc` (delay and loss, per packet) or `loss` (the peer's receiver
    /// reports, for peers without transport-cc); none when the video cannot follow the link.
    pub estimator: Option<&'static str>,
    pub nacks_received: u64,
    pub packets_retransmitted: u64,
}

/// What a call's bandwidth estimate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Estimator {
    None = 0,
    TransportCc = 1,
    Loss = 2,
}

impl Estimator {
    fn from_u8(value: u8) -> Estimator {
        match value {
            1 => Estimator::TransportCc,
            2 => Estimator::Loss,
            _ => Estimator::None,
        }
    }

    fn name(self) -> Option<&'static str> {
        match self {
            Estimator::None => None,
            Estimator::TransportCc => Some("transport-cc"),
            Estimator::Loss => Some("loss"),
        }
    }
}

/// The video a call sends, as its session task last set it.
#[derive(Debug, Clone, Default)]
pub struct Sending {
    pub rendition: Option<String>,
    pub target_kbps: Option<u32>,
}

/// RTP packets of one call, counted at webrtcbin's pads.
#[derive(Debug, Default)]
pub struct RtpCounts {
    pub video_sent: AtomicU64,
    pub audio_sent: AtomicU64,
    pub video_received: AtomicU64,
    pub audio_received: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RtpSnapshot {
    pub video_sent: u64,
    pub audio_sent: u64,
    pub video_received: u64,
    pub audio_received: u64,
}

impl CallInfo {
    fn new(session: &str, peer: &str, role: Role, camera: &str) -> CallInfo {
        CallInfo {
            session: session.to_string(),
            peer: peer.to_string(),
            camera: camera.to_string(),
            role,
            started: Instant::now(),
            state: Mutex::new(CallState::Starting),
            decided: std::sync::atomic::AtomicBool::new(false),
            channel: Mutex::new(ChannelState::None),
            remote_fingerprint: Mutex::new(None),
            connected_at: Mutex::new(None),
            received: Arc::default(),
            channels_created: AtomicU32::new(0),
            channels_received: AtomicU32::new(0),
            pings_answered: AtomicU64::new(0),
            pongs_received: AtomicU64::new(0),
            rtt_us: AtomicU64::new(0),
            heartbeat_ms: AtomicU64::new(0),
            rtcp_received: AtomicU64::new(0),
            nacks_received: AtomicU64::new(0),
            packets_retransmitted: AtomicU64::new(0),
            estimate_bps: AtomicU64::new(0),
            fec_recovered: AtomicU64::new(0),
            audio_recovered: AtomicU64::new(0),
            ice_restarts: AtomicU64::new(0),
            estimator: std::sync::atomic::AtomicU8::new(Estimator::None as u8),
            sending: Mutex::default(),
            rtp: Arc::default(),
            first_frame_recorded: std::sync::atomic::AtomicBool::new(false),
            microphone: std::sync::atomic::AtomicU8::new(0),
            speaker: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// Takes the decision on a ringing call: true for the first caller only (a second
    /// accept or reject, however close behind, is told the call was decided already).
    pub fn decide_once(&self) -> bool {
        !self.decided.swap(true, Ordering::AcqRel)
    }

    /// The session task is alive; also records the first frame's time once it is known.
    fn beat(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.heartbeat_ms.store(now, Ordering::Relaxed);
        if let Some(first) = self.received.first_video.get()
            && !self.first_frame_recorded.swap(true, Ordering::Relaxed)
        {
            crate::metrics::get()
                .first_frame_seconds
                .observe(first.duration_since(self.started).as_secs_f64());
        }
    }

    /// Grows whenever anything arrives from the peer over the media path: RTP, RTCP, a
    /// DataChannel ping or pong. A value that stops growing means the path is dead.
    pub fn peer_activity(&self) -> u64 {
        self.rtp.video_received.load(Ordering::Relaxed)
            + self.rtp.audio_received.load(Ordering::Relaxed)
            + self.rtcp_received.load(Ordering::Relaxed)
            + self.pongs_received.load(Ordering::Relaxed)
            + self.pings_answered.load(Ordering::Relaxed)
    }

    /// How long since the session task last went round its loop.
    pub fn since_heartbeat(&self) -> std::time::Duration {
        let beat = std::time::Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(beat)
    }

    pub fn state(&self) -> CallState {
        *lock(&self.state)
    }

    fn set_state(&self, state: CallState) {
        if state == CallState::Connected {
            let mut connected = lock(&self.connected_at);
            if connected.is_none() {
                let now = Instant::now();
                *connected = Some(now);
                crate::metrics::get()
                    .negotiation_seconds
                    .observe(now.duration_since(self.started).as_secs_f64());
            }
        }
        let mut current = lock(&self.state);
        if *current != state {
            tracing::debug!(session = %self.session, from = ?*current, to = ?state, "call state");
            *current = state;
        }
    }

    fn set_remote_fingerprint(&self, fingerprint: String) {
        *lock(&self.remote_fingerprint) = Some(fingerprint);
    }

    fn set_sending(&self, sending: Sending) {
        *lock(&self.sending) = sending;
    }

    fn sending(&self) -> Sending {
        lock(&self.sending).clone()
    }

    fn set_channel(&self, state: ChannelState) {
        *lock(&self.channel) = state;
    }

    pub fn snapshot(&self) -> CallSnapshot {
        // Read once: a lock taken inside the literal below is held to its end.
        let sending = self.sending();
        let micros_to_ms = |us: u64| (us > 0).then(|| us as f64 / 1000.0);
        CallSnapshot {
            session: self.session.clone(),
            peer: self.peer.clone(),
            role: self.role,
            camera: self.camera.clone(),
            state: self.state(),
            video_frames: self.received.video_frames.load(Ordering::Relaxed),
            audio_buffers: self.received.audio_buffers.load(Ordering::Relaxed),
            video_late: self.received.video_late.load(Ordering::Relaxed),
            latency: self.received.latency_summary(),
            datachannel: *lock(&self.channel),
            datachannels_created: self.channels_created.load(Ordering::Relaxed),
            datachannels_received: self.channels_received.load(Ordering::Relaxed),
            pings_answered: self.pings_answered.load(Ordering::Relaxed),
            pongs_received: self.pongs_received.load(Ordering::Relaxed),
            rtt_ms: micros_to_ms(self.rtt_us.load(Ordering::Relaxed)),
            first_frame_ms: self
                .received
                .first_video
                .get()
                .map(|t| t.duration_since(self.started).as_secs_f64() * 1000.0),
            connected_ms: lock(&self.connected_at)
                .map(|t| t.duration_since(self.started).as_secs_f64() * 1000.0),
            remote_fingerprint: lock(&self.remote_fingerprint).clone(),
            age_ms: self.started.elapsed().as_millis() as u64,
            ice_restarts: self.ice_restarts.load(Ordering::Relaxed),
            rtp_packets: RtpSnapshot {
                video_sent: self.rtp.video_sent.load(Ordering::Relaxed),
                audio_sent: self.rtp.audio_sent.load(Ordering::Relaxed),
                video_received: self.rtp.video_received.load(Ordering::Relaxed),
                audio_received: self.rtp.audio_received.load(Ordering::Relaxed),
            },
            receive: {
                let w = self.received.video_width.load(Ordering::Relaxed);
                let h = self.received.video_height.load(Ordering::Relaxed);
                ReceivedVideo {
                    video_width: (w > 0).then_some(w),
                    video_height: (h > 0).then_some(h),
                    fps: self.received.fps(),
                    freezes: self.received.freezes.load(Ordering::Relaxed),
                    fec_recovered: self.fec_recovered.load(Ordering::Relaxed),
                    audio_recovered: self.audio_recovered.load(Ordering::Relaxed),
                }
            },
            devices: CallDevices {
                microphone: DeviceState::from_code(self.microphone.load(Ordering::Relaxed)),
                speaker: DeviceState::from_code(self.speaker.load(Ordering::Relaxed)),
            },
            send: SendRecovery {
                rendition: sending.rendition,
                target_kbps: sending.target_kbps,
                estimate_kbps: match self.estimate_bps.load(Ordering::Relaxed) {
                    0 => None,
                    bps => Some(bps / 1000),
                },
                estimator: Estimator::from_u8(self.estimator.load(Ordering::Relaxed)).name(),
                nacks_received: self.nacks_received.load(Ordering::Relaxed),
                packets_retransmitted: self.packets_retransmitted.load(Ordering::Relaxed),
            },
        }
    }
}
