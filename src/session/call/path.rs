//! The media path under a connected call: noticing it died ([`PathWatch`]), restarting ICE
//! (the caller, while it lasts) and answering the peer's restarts.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gst_webrtc::{WebRTCPeerConnectionState, WebRTCSDPType};

use super::promises::parse_sdp;
use super::{Call, CallEnd, Step};
use crate::protocol::{EndReason, Route, Signal};
use crate::session::{CallInfo, CallState, Role, ice, sdp};

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

/// Where ICE restarts stand.
#[derive(Default)]
pub(super) struct IceRecovery {
    /// Caller: an ICE restart's offer is out and its answer not yet in.
    pub awaiting_restart_answer: bool,
    /// When this side last restarted ICE.
    last_restart: Option<Instant>,
    /// The connection was up once: a later `failed` is a path to recover, not a call that
    /// never connected.
    connected_once: bool,
}

impl IceRecovery {
    /// A restart of ours is due (none yet, or the last one long enough ago).
    fn restart_due(&self, now: Instant) -> bool {
        self.last_restart
            .is_none_or(|at| now.duration_since(at) >= ICE_RESTART_INTERVAL)
    }

    /// The peer's restart comes too soon after the last one.
    fn too_soon(&self, now: Instant) -> bool {
        self.last_restart
            .is_some_and(|at| now.duration_since(at) < MIN_RESTART_GAP)
    }
}

/// Notices a media path that died under a connected call. libnice (without consent
/// freshness, which webrtcbin 1.22 does not turn on) keeps a dead pair "connected" forever;
/// the peer's RTP, RTCP and DataChannel traffic say whether anything still arrives. A short
/// cut heals by itself; a path silent for `recovery` ends the call with `network`.
pub(super) struct PathWatch {
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

/// What the peer was last seen doing, as [`PathWatch::check_at`] reads it.
#[derive(Debug, Clone, Copy)]
struct Heard {
    connected: bool,
    /// Grows with every packet and message from the peer.
    activity: u64,
    pongs: u64,
}

impl PathWatch {
    pub fn new(recovery: Duration) -> PathWatch {
        PathWatch::starting_at(recovery, Instant::now())
    }

    fn starting_at(recovery: Duration, now: Instant) -> PathWatch {
        PathWatch {
            recovery,
            last_activity: 0,
            heard_at: now,
            resumed: false,
            pongs: 0,
            pong_at: now,
        }
    }

    /// How long a connected call has had no pong to its pings.
    fn round_trip_silence(&self, now: Instant) -> Duration {
        now.duration_since(self.pong_at)
    }

    /// How long a connected call has heard nothing from its peer.
    fn silence(&self, now: Instant) -> Duration {
        now.duration_since(self.heard_at)
    }

    fn take_resumed(&mut self) -> bool {
        std::mem::take(&mut self.resumed)
    }

    pub fn check(&mut self, info: &CallInfo) -> Step {
        let heard = Heard {
            connected: info.state() == CallState::Connected,
            activity: info.peer_activity(),
            pongs: info.pongs_received.load(Ordering::Relaxed),
        };
        self.check_at(heard, Instant::now()).map_err(|silent| {
            crate::metrics::get().ice_failures.inc();
            CallEnd::local(
                EndReason::Network,
                format!(
                    "nothing arrived from the peer for {} s: the network path is gone",
                    silent.as_secs()
                ),
            )
        })
    }

    /// Err(how long it has been silent) once the path is gone.
    fn check_at(&mut self, heard: Heard, now: Instant) -> Result<(), Duration> {
        if !heard.connected || heard.pongs != self.pongs {
            self.pongs = heard.pongs;
            self.pong_at = now;
        }
        // Until connected, the connect timeout is the bound.
        if !heard.connected || heard.activity != self.last_activity {
            if heard.connected && now.duration_since(self.heard_at) >= RESUMED_AFTER {
                self.resumed = true;
            }
            self.last_activity = heard.activity;
            self.heard_at = now;
            return Ok(());
        }
        let silent = now.duration_since(self.heard_at);
        if silent >= self.recovery {
            return Err(silent);
        }
        Ok(())
    }
}

impl Call {
    pub(super) async fn on_connection_state(&mut self, state: WebRTCPeerConnectionState) -> Step {
        tracing::debug!(session = %self.info.session, ?state, "connection state");
        match state {
            WebRTCPeerConnectionState::Connected => {
                if self.talk.on_hold() {
                    // Answered early while it rings: live once someone accepts (hold.rs).
                    tracing::debug!(session = %self.info.session, "connected while ringing");
                    self.talk.up_on_hold = true;
                } else {
                    self.go_live();
                }
                self.record_remote_certificate().await
            }
            // A path lost under a call that was up: the offerer restarts ICE, and the path
            // watch ends the call if nothing comes back within `ice_recovery_secs`.
            WebRTCPeerConnectionState::Failed if self.ice.connected_once => {
                tracing::info!(session = %self.info.session, "connection failed; recovering");
                Ok(())
            }
            // Up while it rang, and lost: not live when accepted (the connect deadline, then
            // the usual recovery, apply once it is); the call rings on.
            WebRTCPeerConnectionState::Failed | WebRTCPeerConnectionState::Disconnected
                if self.talk.up_on_hold =>
            {
                tracing::info!(session = %self.info.session, ?state, "connection lost while ringing");
                self.talk.up_on_hold = false;
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

    /// The connection is up (and, if it rang, accepted): the media flows, from a keyframe.
    pub(super) fn go_live(&mut self) {
        if !self.ice.connected_once {
            self.notifier.event("connected", &self.info, None);
        }
        self.ice.connected_once = true;
        self.info.set_state(CallState::Connected);
        for subscription in &self.media.subscriptions {
            subscription.start_at_keyframe();
        }
    }

    /// Once a heartbeat: a peer heard from again after a silence gets a keyframe at once, and
    /// the caller restarts ICE on a connected call whose path has not worked for a while
    /// (with a DataChannel: no pong to its pings; without: nothing heard).
    pub(super) async fn look_after_path(&mut self, path: &mut PathWatch) -> Step {
        if path.take_resumed() {
            tracing::info!(session = %self.info.session, "the peer is heard again");
            for subscription in &self.media.subscriptions {
                subscription.start_at_keyframe();
            }
        }
        let now = Instant::now();
        // Pongs count only from a peer known to answer pings (ours do; another
        // implementation need not, and its healthy call must not be restarted every 5 s).
        let answers_pings = self.info.pongs_received.load(Ordering::Relaxed) > 0;
        let silence = if self.channel.is_open() && answers_pings {
            path.round_trip_silence(now)
        } else {
            path.silence(now)
        };
        if self.info.role == Role::Caller
            && self.info.state() == CallState::Connected
            && silence >= ICE_RESTART_AFTER
            && self.ice.restart_due(now)
        {
            return self.restart_ice().await;
        }
        Ok(())
    }

    /// Caller: restarts ICE on this call (webrtcbin keeps its DTLS and SRTP; libnice checks
    /// again), offers the new credentials, and sends its candidates again.
    async fn restart_ice(&mut self) -> Step {
        self.ice.last_restart = Some(Instant::now());
        let credentials = match self.in_webrtcbin(ice::restart).await? {
            Ok(credentials) => credentials,
            Err(err) => {
                tracing::info!(session = %self.info.session, "no ICE restart: {err}");
                return Ok(());
            }
        };
        tracing::info!(session = %self.info.session, "restarting ICE");
        let offer = self.create_description("create-offer", "offer").await?;
        let text = self.set_ours(offer, Some(&credentials)).await?;
        self.ice.awaiting_restart_answer = true;
        self.count_restart();
        let route = Route::new(&self.info.peer, &self.info.session);
        self.signal(Signal::Offer { route, sdp: text }).await?;
        self.send_candidates_again().await
    }

    /// Caller: the answer to an ICE restart.
    pub(super) async fn on_restart_answer(&mut self, text: &str) -> Step {
        let answer = parse_sdp(text, self.settings.profile.max_mlines)?;
        self.set_remote_description(WebRTCSDPType::Answer, &answer)
            .await?;
        self.ice.awaiting_restart_answer = false;
        self.take_remote_credentials(&answer).await?;
        self.talk.set_remote(answer);
        self.apply_held_candidates();
        Ok(())
    }

    async fn take_remote_credentials(&self, description: &gst_sdp::SDPMessage) -> Step {
        let Some(remote) = sdp::ice_credentials(description) else {
            return Ok(());
        };
        let set = self
            .in_webrtcbin(move |webrtcbin| ice::set_remote_credentials(webrtcbin, &remote))
            .await?;
        if let Err(err) = set {
            tracing::info!(session = %self.info.session, "ICE restart: {err}");
        }
        Ok(())
    }

    /// Callee: the peer restarted ICE (new credentials in an offer on this call: a browser's
    /// `restartIce()`, another webrtcd whose path went away). Restart ours, answer with our
    /// new credentials and send our candidates again; media goes on over the new path.
    pub(super) async fn answer_ice_restart(&mut self, offer: gst_sdp::SDPMessage) -> Step {
        // A peer restarting over and over costs a restart and a negotiation each time: one at
        // a time, at most (a real peer retries: webrtcd and the page every 5 s).
        if self.ice.too_soon(Instant::now()) {
            tracing::info!(session = %self.info.session, "ICE restart too soon after the last: ignored");
            return Ok(());
        }
        let credentials = match self.in_webrtcbin(ice::restart).await? {
            Ok(credentials) => credentials,
            Err(err) => {
                tracing::info!(session = %self.info.session, "ICE restart refused: {err}");
                return Ok(());
            }
        };
        tracing::info!(session = %self.info.session, "the peer restarted ICE");
        self.ice.last_restart = Some(Instant::now());
        self.set_remote_description(WebRTCSDPType::Offer, &offer)
            .await?;
        self.take_remote_credentials(&offer).await?;
        self.talk.set_remote(offer);
        let answer = self.create_description("create-answer", "answer").await?;
        let text = self.set_ours(answer, Some(&credentials)).await?;
        self.count_restart();
        let route = Route::new(&self.info.peer, &self.info.session);
        // While it rings (answered early) an `answer` would mean "accepted": the restart's
        // answer goes in `ringing`, and is the one the accept sends again.
        let reply = if self.talk.answered_early.is_some() {
            self.talk.answered_early = Some(text.clone());
            Signal::Ringing {
                route,
                sdp: Some(text),
            }
        } else {
            Signal::Answer { route, sdp: text }
        };
        self.signal(reply).await?;
        self.send_candidates_again().await
    }

    fn count_restart(&self) {
        self.info.ice_restarts.fetch_add(1, Ordering::Relaxed);
        crate::metrics::get().ice_restarts.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECOVERY: Duration = Duration::from_secs(20);

    fn heard(connected: bool, activity: u64, pongs: u64) -> Heard {
        Heard {
            connected,
            activity,
            pongs,
        }
    }

    #[test]
    fn a_connected_call_silent_for_the_recovery_time_has_lost_its_path() {
        let t0 = Instant::now();
        let mut path = PathWatch::starting_at(RECOVERY, t0);
        assert!(path.check_at(heard(true, 5, 0), t0).is_ok());
        let nearly = t0 + RECOVERY - Duration::from_millis(1);
        assert!(path.check_at(heard(true, 5, 0), nearly).is_ok());
        assert_eq!(
            path.check_at(heard(true, 5, 0), t0 + RECOVERY),
            Err(RECOVERY)
        );
    }

    #[test]
    fn anything_heard_or_not_being_connected_restarts_the_clock() {
        let t0 = Instant::now();
        let mut path = PathWatch::starting_at(RECOVERY, t0);
        let later = t0 + RECOVERY + Duration::from_secs(1);
        // Not connected yet: the connect timeout is the bound, not this one.
        assert!(path.check_at(heard(false, 0, 0), later).is_ok());
        // Something arrived just before the bound.
        let t1 = later + RECOVERY - Duration::from_secs(1);
        assert!(path.check_at(heard(true, 1, 0), t1).is_ok());
        assert!(path.check_at(heard(true, 1, 0), t1 + RECOVERY / 2).is_ok());
        assert_eq!(path.silence(t1 + RECOVERY / 2), RECOVERY / 2);
    }

    #[test]
    fn heard_again_after_a_silence_is_a_resumption_taken_once() {
        let t0 = Instant::now();
        let mut path = PathWatch::starting_at(RECOVERY, t0);
        assert!(path.check_at(heard(true, 1, 0), t0).is_ok());
        assert!(!path.take_resumed());
        // A short gap is no resumption...
        assert!(
            path.check_at(heard(true, 2, 0), t0 + Duration::from_secs(1))
                .is_ok()
        );
        assert!(!path.take_resumed());
        // ...a long one is.
        let t1 = t0 + Duration::from_secs(1) + RESUMED_AFTER;
        assert!(path.check_at(heard(true, 3, 0), t1).is_ok());
        assert!(path.take_resumed());
        assert!(!path.take_resumed());
    }

    #[test]
    fn pongs_time_the_round_trip_silence() {
        let t0 = Instant::now();
        let mut path = PathWatch::starting_at(RECOVERY, t0);
        let t1 = t0 + Duration::from_secs(3);
        assert!(path.check_at(heard(true, 1, 1), t1).is_ok());
        // Media still arrives, no pong: the path may work one way only.
        let t2 = t1 + Duration::from_secs(6);
        assert!(path.check_at(heard(true, 2, 1), t2).is_ok());
        assert_eq!(path.round_trip_silence(t2), Duration::from_secs(6));
        assert_eq!(path.silence(t2), Duration::ZERO);
    }

    #[test]
    fn restarts_are_spaced() {
        let t0 = Instant::now();
        let mut recovery = IceRecovery::default();
        assert!(recovery.restart_due(t0));
        assert!(!recovery.too_soon(t0));
        recovery.last_restart = Some(t0);
        assert!(recovery.too_soon(t0 + MIN_RESTART_GAP - Duration::from_millis(1)));
        assert!(!recovery.too_soon(t0 + MIN_RESTART_GAP));
        assert!(!recovery.restart_due(t0 + ICE_RESTART_INTERVAL - Duration::from_millis(1)));
        assert!(recovery.restart_due(t0 + ICE_RESTART_INTERVAL));
    }
}
