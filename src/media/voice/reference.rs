//! The reference: what a call's speaker is about to play, copied to the running canceller.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;

use gst::prelude::*;

use super::{FRAME, SPEAKERS};
use crate::media::MediaError;
use crate::sync::lock;

/// Where speakers' frames go: the canceller that started last, and the speaker it listens to.
struct Route {
    canceller: u64,
    frames: SyncSender<Vec<f32>>,
    speaker: Option<u64>,
}

static ROUTE: Mutex<Option<Route>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A canceller starts listening for reference frames; returns its id.
pub(super) fn register(frames: SyncSender<Vec<f32>>) -> u64 {
    let canceller = next_id();
    *lock(&ROUTE) = Some(Route {
        canceller,
        frames,
        speaker: None,
    });
    canceller
}

/// The canceller `canceller` has stopped.
pub(super) fn unregister(canceller: u64) {
    let mut route = lock(&ROUTE);
    if route.as_ref().is_some_and(|r| r.canceller == canceller) {
        *route = None;
    }
}

/// Hands one 10 ms frame of speaker `speaker` to the canceller, if that speaker is (or may
/// become) its reference. Never waits: a canceller that is behind loses frames.
pub(super) fn deliver(speaker: u64, frame: Vec<f32>) {
    let mut route = lock(&ROUTE);
    if let Some(route) = route.as_mut()
        && *route.speaker.get_or_insert(speaker) == speaker
    {
        let _ = route.frames.try_send(frame);
    }
}

/// A speaker that goes away lets another one be the reference.
struct Speaker {
    id: u64,
    /// Samples waiting for a whole frame.
    pending: Mutex<Vec<f32>>,
}

impl Drop for Speaker {
    fn drop(&mut self) {
        if let Some(route) = lock(&ROUTE).as_mut()
            && route.speaker == Some(self.id)
        {
            route.speaker = None;
        }
        SPEAKERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An element for a call's speaker branch, just before the output, on 48 kHz stereo S16LE:
/// passes the audio on and copies it (mixed to mono) to the canceller.
pub fn speaker_tap() -> Result<gst::Element, MediaError> {
    let tap = gst::ElementFactory::make("identity")
        .name("webrtcd-speaker")
        .property("silent", true)
        .build()
        .map_err(|e| MediaError::Build(format!("identity: {e}")))?;
    let pad = tap
        .static_pad("src")
        .ok_or_else(|| MediaError::Build("identity has no src pad".into()))?;
    SPEAKERS.fetch_add(1, Ordering::Relaxed);
    let speaker = Speaker {
        id: next_id(),
        pending: Mutex::new(Vec::with_capacity(2 * FRAME)),
    };
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer()
            && let Ok(map) = buffer.map_readable()
        {
            let mut pending = lock(&speaker.pending);
            pending.extend(map.chunks_exact(4).map(|lr| {
                let left = i16::from_le_bytes([lr[0], lr[1]]);
                let right = i16::from_le_bytes([lr[2], lr[3]]);
                (f32::from(left) + f32::from(right)) / 65536.0
            }));
            while pending.len() >= FRAME {
                deliver(speaker.id, pending.drain(..FRAME).collect());
            }
        }
        gst::PadProbeReturn::Ok
    });
    Ok(tap)
}
