//! Fitting what a call sends to its link: the estimate (transport-cc through `rtpgccbwe`, or
//! the loss in the peer's receiver reports), then a rung of the ladder or its own encoder's
//! rate; and the RTCP budget and retransmission counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use super::Call;
use crate::media::{self, send, shared};
use crate::session::adapt::Adapter;
use crate::session::loss_estimate::LossEstimate;
use crate::session::{CallSettings, CallState, Estimator, Sending, rtcp_budget, webrtc};

/// The id an offer gives the transport-wide congestion control header extension.
pub(super) const TRANSPORT_CC_ID: u32 = 3;
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

/// What the last second's loss was measured against.
#[derive(Default, Clone, Copy)]
struct LossSeen {
    /// The receiver report used last (its highest sequence number).
    report: Option<u32>,
    nacks: u64,
    /// Video packets sent.
    sent: u64,
    keyframe_requests: u64,
}

pub(super) struct Bandwidth {
    /// What this call sends can follow its link (a ladder, or an encoder of its own): only
    /// then is the link estimated (transport-cc feedback, rtpgccbwe).
    pub adapts: bool,
    /// The RTP header extension id of transport-wide congestion control, when negotiated.
    pub transport_cc: Option<u32>,
    /// The rung of the video ladder this call's link carries (shared encoder with a ladder).
    adapter: Option<Adapter>,
    /// Which of the call's subscriptions is the video.
    video_subscription: Option<usize>,
    /// The call's own video encoder (`per_viewer_encoder`), and the rate it is set to.
    own_encoder: Option<gst::Element>,
    own_encoder_kbps: u32,
    /// The best video rate the profile sends (kbit/s).
    max_video_kbps: u32,
    /// Whether the peer sends transport-wide feedback (`webrtc::FEEDBACK_*`), shared with the
    /// estimator's handlers.
    feedback: Arc<AtomicU8>,
    /// Without transport-cc: the estimate from the peer's receiver reports, the latest report
    /// on our video, and whether the reports are watched yet.
    loss_estimate: Option<LossEstimate>,
    latest_report: Arc<webrtc::LatestReport>,
    reports_watched: bool,
    loss_seen: LossSeen,
    /// What the call carries, for its RTCP budget (how soon a lost packet is asked for).
    session_bandwidth: rtcp_budget::SessionBandwidth,
}

impl Bandwidth {
    /// Sets up estimation on `webrtcbin` where it can act (a ladder, or an encoder of its
    /// own): rtpgccbwe also paces everything the call sends at its estimate, with a thread and
    /// a queue of its own, a cost not worth paying for a number nothing would use.
    pub fn new(
        webrtcbin: &gst::Element,
        info: &Arc<crate::session::CallInfo>,
        settings: &CallSettings,
    ) -> Bandwidth {
        let rungs = video_rungs(settings);
        let adapts = rungs.len() > 1 || settings.profile.per_viewer_encoder;
        let feedback = Arc::new(AtomicU8::new(webrtc::FEEDBACK_UNKNOWN));
        if let Some(top) = rungs.first().filter(|_| adapts) {
            webrtc::estimate_bandwidth(webrtcbin, info, top.bitrate_kbps, Arc::clone(&feedback));
        }
        Bandwidth {
            adapts,
            transport_cc: None,
            adapter: None,
            video_subscription: None,
            own_encoder: None,
            own_encoder_kbps: 0,
            max_video_kbps: rungs.first().map_or(0, |r| r.bitrate_kbps),
            feedback,
            loss_estimate: None,
            latest_report: Arc::default(),
            reports_watched: false,
            loss_seen: LossSeen::default(),
            session_bandwidth: rtcp_budget::SessionBandwidth::default(),
        }
    }
}

fn video_rungs(settings: &CallSettings) -> Vec<media::profile::Rung> {
    settings
        .profile
        .video
        .as_ref()
        .map(|v| v.rungs())
        .unwrap_or_default()
}

/// The rate for a call's own encoder under an estimate of `estimate_kbps`: just under it,
/// never above the profile's best rate, never below [`OWN_ENCODER_MIN_KBPS`].
fn own_encoder_target(estimate_kbps: u64, max_kbps: u32) -> u32 {
    ((estimate_kbps as f64 * OWN_ENCODER_SHARE) as u32)
        .clamp(OWN_ENCODER_MIN_KBPS, max_kbps.max(OWN_ENCODER_MIN_KBPS))
}

/// Worth setting: more than 5 % away from the current rate.
fn worth_retargeting(current: u32, target: u32) -> bool {
    current.abs_diff(target) * 20 > current
}

/// The loss a second of feedback shows: a new receiver report's fraction lost, the share of
/// packets asked for again, or a keyframe request, whichever says most.
fn loss_in(report_loss: Option<f64>, nacked: f64, asked_for_keyframe: bool) -> f64 {
    let unrecovered = if asked_for_keyframe {
        KEYFRAME_REQUEST_LOSS
    } else {
        0.0
    };
    report_loss.unwrap_or(0.0).max(nacked).max(unrecovered)
}

impl Call {
    /// The FEC percentage, if the profile sends video with FEC.
    pub(super) fn fec(&self) -> Option<u32> {
        let profile = &self.settings.profile;
        profile.fec.then_some(profile.fec_percentage)
    }

    /// A video branch about to be linked: its rendition, and how it will follow the link
    /// (another rung of a ladder, or its own encoder's rate).
    pub(super) fn start_adapting(
        &mut self,
        branch: &mut send::SendBranch,
        subscription: Option<&shared::Subscription>,
    ) {
        let rungs = video_rungs(&self.settings);
        if let Some(subscription) = subscription
            && subscription.rungs().len() > 1
        {
            let rates = subscription
                .rungs()
                .iter()
                .map(|r| r.bitrate_kbps)
                .collect();
            self.bandwidth.adapter = Some(Adapter::new(rates, subscription.rung()));
            self.bandwidth.video_subscription = Some(self.media.subscriptions.len());
        }
        self.bandwidth.own_encoder = branch.encoder.take();
        self.bandwidth.own_encoder_kbps = self.bandwidth.max_video_kbps;
        if let Some(top) = rungs.first() {
            self.info.set_sending(Sending {
                rendition: Some(top.name()),
                target_kbps: Some(top.bitrate_kbps),
            });
        }
    }

    /// Copies the retransmission counters into the call's info (what `GET /api/calls` shows),
    /// and makes sure lost video is asked for again.
    pub(super) fn sample_retransmissions(&self) {
        if self.info.state() != CallState::Connected {
            return;
        }
        let done = webrtc::loss_recovery(&self.webrtcbin, &self.talk.remote_video_ssrcs);
        let packets = done.retransmitted;
        self.info
            .nacks_received
            .store(done.requests, Ordering::Relaxed);
        self.info
            .fec_recovered
            .store(done.fec_recovered, Ordering::Relaxed);
        self.info
            .audio_recovered
            .store(self.media.red.recovered(), Ordering::Relaxed);
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
    pub(super) fn fit_rtcp_budget(&mut self) {
        if self.info.state() != CallState::Connected || self.talk.remote_video_ssrcs.is_empty() {
            return;
        }
        if let Some(bps) = self
            .bandwidth
            .session_bandwidth
            .update(&self.webrtcbin, Instant::now())
        {
            tracing::trace!(session = %self.info.session, bps, "session bandwidth for RTCP");
        }
    }

    /// Fits what this call sends to its link's estimate: another rung of the ladder, or
    /// (its own encoder) another rate.
    pub(super) fn adapt(&mut self) {
        let bw = &self.bandwidth;
        // The peer's feedback on our video, read once a tick for both uses below.
        let feedback = match (&bw.adapter, &bw.loss_estimate, self.media.video_ssrc) {
            (None, None, _) | (_, _, None) => None,
            (_, _, Some(ssrc)) => webrtc::stream_feedback(&self.webrtcbin, ssrc),
        };
        self.estimate_from_reports(feedback);
        let bps = self.info.estimate_bps.load(Ordering::Relaxed);
        if bps == 0 || self.info.state() != CallState::Connected {
            return;
        }
        let kbps = bps / 1000;
        if let Some(adapter) = &mut self.bandwidth.adapter {
            let before = adapter.current();
            // The peer's keyframe requests tell a probe that loses frames for good.
            let keyframe_requests = feedback.map_or(0, |f| f.keyframe_requests);
            let rung = adapter.update(kbps, keyframe_requests, Instant::now());
            let subscription = self
                .bandwidth
                .video_subscription
                .and_then(|i| self.media.subscriptions.get(i));
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
        } else if let Some(encoder) = &self.bandwidth.own_encoder {
            let target = own_encoder_target(kbps, self.bandwidth.max_video_kbps);
            if worth_retargeting(self.bandwidth.own_encoder_kbps, target)
                && media::encoder::set_bitrate(encoder, target)
            {
                self.bandwidth.own_encoder_kbps = target;
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
    pub(super) fn choose_estimator(&mut self, transport_cc: bool) {
        let bw = &mut self.bandwidth;
        if !bw.adapts {
            return;
        }
        let (feedback, estimator) = if transport_cc {
            (webrtc::FEEDBACK_YES, Estimator::TransportCc)
        } else {
            (webrtc::FEEDBACK_NO, Estimator::Loss)
        };
        bw.feedback.store(feedback, Ordering::Relaxed);
        self.info
            .estimator
            .store(estimator as u8, Ordering::Relaxed);
        if !transport_cc {
            let top = bw.max_video_kbps;
            bw.loss_estimate = Some(LossEstimate::new(top, LOSS_ESTIMATE_MIN_KBPS, top));
        }
    }

    /// Without transport-cc, once a second: the loss the peer's feedback shows on our video
    /// and the round trip its reports give move the estimate.
    fn estimate_from_reports(&mut self, feedback: Option<webrtc::StreamFeedback>) {
        let bw = &mut self.bandwidth;
        let (Some(estimate), Some(ssrc)) = (&mut bw.loss_estimate, self.media.video_ssrc) else {
            return;
        };
        if self.info.state() != CallState::Connected {
            return;
        }
        if !bw.reports_watched {
            bw.reports_watched = webrtc::watch_receiver_reports(
                &self.webrtcbin,
                ssrc,
                Arc::clone(&bw.latest_report),
            );
        }
        let last = bw.loss_seen;
        let report = bw
            .latest_report
            .get()
            .filter(|r| Some(r.highest_seq) != last.report);
        let nacks = self.info.nacks_received.load(Ordering::Relaxed);
        let sent = self.info.rtp.video_sent.load(Ordering::Relaxed);
        let nacked = match sent.saturating_sub(last.sent) {
            0 => 0.0,
            packets => nacks.saturating_sub(last.nacks) as f64 / packets as f64,
        };
        let keyframe_requests = feedback.map_or(last.keyframe_requests, |f| f.keyframe_requests);
        bw.loss_seen = LossSeen {
            report: report.map(|r| r.highest_seq).or(last.report),
            nacks,
            sent,
            keyframe_requests,
        };
        if report.is_none() && last.sent == 0 {
            return; // nothing heard from the peer yet
        }
        // A receiver that asks for a keyframe lost what retransmission could not bring back.
        let loss = loss_in(
            report.map(|r| r.loss()),
            nacked,
            keyframe_requests > last.keyframe_requests,
        );
        let sending = self.info.sending().target_kbps.unwrap_or(bw.max_video_kbps);
        let kbps = estimate.update(loss, feedback.and_then(|f| f.round_trip), sending);
        self.info
            .estimate_bps
            .store(u64::from(kbps) * 1000, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_own_encoder_runs_just_under_the_estimate_within_the_profile() {
        assert_eq!(own_encoder_target(1000, 2000), 900);
        assert_eq!(own_encoder_target(10_000, 2000), 2000);
        assert_eq!(own_encoder_target(50, 2000), OWN_ENCODER_MIN_KBPS);
        // A profile below the floor: the floor.
        assert_eq!(own_encoder_target(10_000, 80), OWN_ENCODER_MIN_KBPS);
    }

    #[test]
    fn an_encoder_is_retargeted_only_for_a_change_of_more_than_five_percent() {
        assert!(!worth_retargeting(1000, 1040));
        assert!(worth_retargeting(1000, 1060));
        assert!(worth_retargeting(1000, 900));
        assert!(worth_retargeting(0, 100));
    }

    #[test]
    fn the_loss_is_the_worst_the_feedback_says() {
        assert_eq!(loss_in(None, 0.0, false), 0.0);
        assert_eq!(loss_in(Some(0.05), 0.1, false), 0.1);
        assert_eq!(loss_in(Some(0.3), 0.1, true), 0.3);
        assert_eq!(loss_in(Some(0.01), 0.0, true), KEYFRAME_REQUEST_LOSS);
    }
}
