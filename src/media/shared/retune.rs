//! A reload that changes only a camera's video rates (`bitrate_kbps`, a ladder's rates) keeps
//! its encoders running and its calls up: the running encoders are set to the new rates
//! (each as its element allows, `encoder::set_bitrate`), and later starts and restarts are
//! built with them.

use std::sync::Arc;

use gst::prelude::*;

use super::Encoders;
use super::stream::{Life, SharedStream};
use crate::media::codecs::{Codec, MediaKind};
use crate::media::encoder;
use crate::media::profile::Profile;
use crate::sync::lock;

/// The target rate of each encoding of `codec`'s stream under `profile` (one without a
/// ladder); none for audio (its rate is not retuned).
pub(super) fn rates_of(profile: &Profile, codec: Codec) -> Vec<u32> {
    match (codec.kind(), &profile.video) {
        (MediaKind::Video, Some(video)) if video.ladder.len() > 1 => {
            video.rungs().iter().map(|r| r.bitrate_kbps).collect()
        }
        (MediaKind::Video, Some(video)) => vec![video.bitrate_kbps],
        _ => Vec::new(),
    }
}

impl Encoders {
    /// Serves `profile` from now on, which differs from the one before only in video rates
    /// (`Profile::rates_differ_only`): running encoders are set to the new rates. How many
    /// were; false where an encoder's rate cannot change while it runs (it gets the new rate
    /// at its next start).
    pub fn retune(&self, profile: Arc<Profile>) -> usize {
        *lock(&self.profile) = Arc::clone(&profile);
        let streams: Vec<Arc<SharedStream>> = lock(&self.streams).values().cloned().collect();
        streams.iter().map(|stream| stream.retune(&profile)).sum()
    }
}

impl SharedStream {
    fn retune(&self, profile: &Arc<Profile>) -> usize {
        // Not while the pipeline is being built: a start describes it with the rates it
        // reads, so it either runs already (and is set below) or reads the new ones.
        let _starting = lock(&self.starting);
        let rates = rates_of(profile, self.codec);
        *lock(&self.profile) = Arc::clone(profile);
        *lock(&self.rates) = rates.clone();
        let sinks = match &*lock(&self.life) {
            Life::Running(running) => running.sinks.clone(),
            _ => Vec::new(),
        };
        // Set outside the stream's other locks: an encoder takes its own while it encodes.
        sinks
            .iter()
            .zip(&rates)
            .filter_map(|(sink, rate)| {
                let encoder = encoder_before(sink.upcast_ref(), &self.factory)?;
                encoder::set_bitrate(&encoder, *rate).then_some(())
            })
            .count()
    }
}

/// The element made by `factory` upstream of `element` (an encoding's appsink), following
/// each element's first sink pad: a few hops (parser, caps filter).
fn encoder_before(element: &gst::Element, factory: &str) -> Option<gst::Element> {
    let mut at = element.clone();
    for _ in 0..8 {
        let pad = at.sink_pads().into_iter().next()?;
        at = pad.peer()?.parent_element()?;
        if at.factory().is_some_and(|f| f.name() == factory) {
            return Some(at);
        }
    }
    None
}
