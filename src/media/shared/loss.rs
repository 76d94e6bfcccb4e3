//! Speech that survives loss: an Opus encoder's in-band FEC is as strong as the loss it
//! expects (`packet-loss-percentage`: 0 sends none). One encoder serves every call, so it
//! protects against the worst loss any call's peer reports; a call that leaves (or whose
//! link heals) lowers it again.

use std::sync::atomic::Ordering;

use gst::prelude::*;

use super::stream::{Life, SharedStream};
use crate::media::encoder::FEC_FLOOR_PERCENT;
use crate::sync::lock;

impl SharedStream {
    /// Sets the encoder's expected loss to the worst its subscribers report (never below
    /// the floor it starts with), if it changed.
    pub(super) fn protect_against_loss(&self) {
        if !self.profile().audio.as_ref().is_some_and(|a| a.fec) {
            return;
        }
        // Held from reading the reports to setting the encoder: two calls reporting at once
        // must not leave the encoder at the older value. (The encoder never takes this lock.)
        let mut protection = lock(&self.loss_protection);
        let worst = lock(&self.subscribers)
            .iter()
            .map(|s| s.loss_percent.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
            .max(FEC_FLOOR_PERCENT);
        if *protection == worst {
            return;
        }
        *protection = worst;
        let encoder = match &*lock(&self.life) {
            Life::Running(running) => running
                .pipeline
                .iterate_recurse()
                .into_iter()
                .flatten()
                .find(|e| e.factory().is_some_and(|f| f.name() == "opusenc")),
            _ => None,
        };
        // (Set outside the life lock: the encoder takes its own, briefly, per frame.)
        if let Some(encoder) = encoder {
            encoder.set_property("packet-loss-percentage", i32::from(worst.min(100)));
            tracing::debug!(codec = ?self.codec, percent = worst, "speech protected against loss");
        }
    }
}
