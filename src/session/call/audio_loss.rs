//! The loss the peer reports on the call's audio, handed to the shared audio encoder: its
//! in-band FEC is as strong as the worst loss among the calls it serves (`media::shared`).

use std::sync::Arc;

use super::Call;
use crate::media::codecs::MediaKind;
use crate::session::{CallState, webrtc};

/// What the call has read of the peer's reports on its audio.
#[derive(Debug, Default)]
pub(super) struct AudioLoss {
    /// The SSRC of the audio this call sends.
    pub ssrc: Option<u32>,
    latest: Arc<webrtc::LatestReport>,
    watched: bool,
    /// The last report used (its highest sequence number): each is used once.
    last: Option<u32>,
}

impl Call {
    /// Once a second: a new receiver report on our audio sets the encoder's protection.
    pub(super) fn report_audio_loss(&mut self) {
        let loss = &mut self.media.audio_loss;
        let Some(ssrc) = loss.ssrc else {
            return;
        };
        if self.info.state() != CallState::Connected {
            return;
        }
        if !loss.watched {
            loss.watched =
                webrtc::watch_receiver_reports(&self.webrtcbin, ssrc, Arc::clone(&loss.latest));
        }
        let Some(report) = loss
            .latest
            .get()
            .filter(|r| Some(r.highest_seq) != loss.last)
        else {
            return;
        };
        loss.last = Some(report.highest_seq);
        let percent = (report.loss() * 100.0).round().clamp(0.0, 100.0) as u8;
        tracing::debug!(session = %self.info.session, percent, "audio loss reported");
        for subscription in &self.media.subscriptions {
            if subscription.codec().kind() == MediaKind::Audio {
                subscription.report_loss(percent);
            }
        }
    }
}
