//! The call's media: send branches (fed by a shared encoder, or one of the call's own) linked
//! into webrtcbin, receive branches linked to the pads webrtcbin adds, and the encoders a
//! ringing or waiting callee keeps warm. State changes run off the tokio workers.

use std::sync::Arc;
use std::time::Instant;

use gst::prelude::*;

use super::end::Cause;
use super::{Call, CallEnd, Step, blocking, elapsed_ms};
use crate::media::codecs::{self, MediaKind};
use crate::media::profile::SinkKind;
use crate::media::speaker::Speaker;
use crate::media::{receive, shared};
use crate::protocol::EndReason;
use crate::session::events::Event;
use crate::session::{sdp, webrtc};

/// What the call sends and receives.
#[derive(Default)]
pub(super) struct Media {
    /// Callee: the shared encoders kept running while the call rings or waits for its offer.
    pub warm: Vec<shared::Warm>,
    /// Holds the shared encoders feeding this call.
    pub subscriptions: Vec<shared::Subscription>,
    /// With echo cancellation: the speaker-side probe, made before the microphone starts.
    pub echo_probe: Option<gst::Element>,
    /// Send branches linked (each is a transceiver, in order): whether each carries video.
    pub send_video: Vec<bool>,
    /// The SSRC of the video this call sends.
    pub video_ssrc: Option<u32>,
    /// The peer's loss on the audio this call sends (audio_loss.rs).
    pub audio_loss: super::audio_loss::AudioLoss,
    /// Pads that pass nothing while the call is on hold (hold.rs).
    pub held: Vec<super::hold::HeldPad>,
    /// The send branches' pads on webrtcbin (a caller holds them once the callee rings).
    pub send_pads: Vec<gst::Pad>,
    /// The ALSA speaker the peer's audio plays on (`[receive] audio = "alsa"`), in a
    /// pipeline of its own: missing or failing, it ends nothing (media::speaker).
    pub speaker: Option<crate::media::speaker::Speaker>,
    /// Which of the peer's payload types carry Opus in RED, split before the jitterbuffer.
    pub red: Arc<crate::session::red::RedPayloads>,
}

impl Call {
    /// PLAYING, on a blocking thread: a state change waits on streaming threads and devices.
    pub(super) async fn set_playing(&self) -> Step {
        let pipeline = self.pipeline.clone();
        let asked = Instant::now();
        let started = blocking(move || pipeline.set_state(gst::State::Playing).is_ok()).await?;
        tracing::debug!(session = %self.info.session, ms = elapsed_ms(asked), "pipeline playing");
        started
            .then_some(())
            .ok_or_else(|| CallEnd::media("the pipeline would not start"))
    }

    /// Starts the shared encoders the answer will use (those the held offer's plan picks;
    /// without an offer yet, the profile's first video and audio codecs), so that accepting
    /// does not wait for the camera and the encoder. Best effort: a source that fails here
    /// fails again, clearly, when the call answers.
    pub(super) async fn warm_media(&mut self) {
        if self.settings.profile.per_viewer_encoder {
            return;
        }
        let encoders = Arc::clone(&self.settings.encoders);
        let planned = self.talk.held_offer.as_deref().and_then(|offer| {
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
                Ok(Ok(warm)) => self.media.warm.push(warm),
                Ok(Err(err)) => {
                    tracing::info!(session = %self.info.session, ?codec, "not warmed: {err}");
                }
                Err(_) => {}
            }
        }
    }

    /// A send branch for `codec`, built on a blocking thread: it may start a shared capture
    /// and encoder (a camera can take seconds to open).
    pub(super) async fn build_send_branch(
        &self,
        codec: codecs::Codec,
        pt: u32,
    ) -> Result<shared::FedBranch, CallEnd> {
        let encoders = Arc::clone(&self.settings.encoders);
        let notice = self.source_failure_notice();
        let built = blocking(move || encoders.branch(codec, pt, notice)).await?;
        let branch = built.map_err(|e| {
            tracing::warn!(session = %self.info.session, "{e}");
            CallEnd::media_error(e)
        })?;
        if let Some(id) = self.bandwidth.transport_cc
            && self.bandwidth.adapts
            && codec.kind() == MediaKind::Video
        {
            branch.branch.use_transport_cc(id);
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

    pub(super) async fn link_send_branch(&mut self, fed: shared::FedBranch) -> Step {
        let shared::FedBranch {
            mut branch,
            subscription,
        } = fed;
        let fail = |what: &str| CallEnd::media(what.to_string());
        let (pipeline, bin) = ((*self.pipeline).clone(), branch.bin.clone());
        let sink = self
            .in_webrtcbin(move |webrtcbin| {
                pipeline.add(&bin).map_err(|_| "add send branch")?;
                let src = bin.static_pad("src").ok_or("send branch has no src pad")?;
                let sink = webrtcbin
                    .request_pad_simple("sink_%u")
                    .ok_or("webrtcbin gave no sink pad")?;
                src.link(&sink).map_err(|_| "link send branch")?;
                Ok::<_, &str>(sink)
            })
            .await?
            .map_err(fail)?;
        self.hold_sent(&sink);
        self.media.send_pads.push(sink.clone());
        let video = branch.codec.kind() == MediaKind::Video;
        self.media.send_video.push(video);
        if video {
            self.media.video_ssrc.get_or_insert(branch.ssrc);
        } else {
            self.media.audio_loss.ssrc.get_or_insert(branch.ssrc);
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
        if video {
            self.start_adapting(&mut branch, subscription.as_ref());
        }
        if let Some(subscription) = subscription {
            subscription.activate();
            self.media.subscriptions.push(subscription);
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

    /// A stream from the peer: a receive branch (decoder and sink) for it, linked and started
    /// before the probe that holds the pad is removed.
    pub(super) async fn on_pad_added(
        &mut self,
        pad: &gst::Pad,
        probe: Option<gst::PadProbeId>,
    ) -> Step {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let is_audio = caps
            .structure(0)
            .and_then(|s| s.get::<&str>("media").ok())
            .is_some_and(|m| m == "audio");
        let echo_probe = if is_audio {
            self.media.echo_probe.take()
        } else {
            None
        };
        let mut receive = self.settings.profile.receive.clone();
        // The ALSA speaker plays the first stream of a codec we decode; another audio stream
        // (a peer that sends two) plays nowhere rather than fight it for the device.
        let decodable = caps
            .structure(0)
            .and_then(|s| s.get::<&str>("encoding-name").ok())
            .and_then(codecs::Codec::from_encoding_name)
            .is_some_and(|c| !c.is_video());
        let speaker = if !(is_audio && receive.audio == SinkKind::Alsa) {
            None
        } else if decodable && self.media.speaker.is_none() {
            let device = receive.audio_device.as_deref().unwrap_or("default");
            let speaker = Speaker::open(device).map_err(CallEnd::media_error)?;
            let sink = speaker.sink().clone();
            self.media.speaker = Some(speaker);
            Some(sink)
        } else {
            receive.audio = SinkKind::Count;
            None
        };
        let built = receive::branch(&caps, &receive, &self.info.received, echo_probe, speaker);
        let linked = built.map_err(ReceiveFailed::new).and_then(|(bin, codec)| {
            self.pipeline.add(&bin).map_err(ReceiveFailed::new)?;
            let sink_pad = bin
                .static_pad("sink")
                .ok_or_else(|| ReceiveFailed::new("receive branch has no sink"))?;
            pad.link(&sink_pad).map_err(ReceiveFailed::new)?;
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
                .map_err(ReceiveFailed::new),
            Err(err) => Err(err),
        };
        if result.is_ok() {
            self.hold_received(pad, !is_audio);
        }
        if let Some(probe) = probe {
            pad.remove_probe(probe);
        }
        match result {
            Ok(codec) => {
                tracing::debug!(session = %self.info.session, ?codec, "receiving");
                Ok(())
            }
            Err(err) => {
                tracing::warn!(session = %self.info.session, "{err}");
                Err(CallEnd::media_error(err))
            }
        }
    }
}

/// Why a stream from the peer could not be received (the error behind it kept for the log).
#[derive(Debug, thiserror::Error)]
#[error("receive branch: {source}")]
struct ReceiveFailed {
    #[source]
    source: Cause,
}

impl ReceiveFailed {
    fn new(err: impl Into<Cause>) -> ReceiveFailed {
        ReceiveFailed { source: err.into() }
    }
}
