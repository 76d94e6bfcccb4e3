//! A rung's frames since its last keyframe, while they are few and fresh.
//!
//! A call that starts connecting just after a keyframe starts from that keyframe instead of
//! asking for another and waiting an encode for it. That is the callee's usual case: its
//! encoder starts (or is asked for a keyframe) on `call`, and the offer comes tens of
//! milliseconds later, when the keyframe is made or nearly so.

use std::sync::Mutex;
use std::time::Duration;

use super::feed::{Frame, Held, MAX_HELD};

/// A keyframe older than this is not worth starting from: the first picture would lag.
pub(super) const MAX_AGE: Duration = Duration::from_millis(400);

#[derive(Default)]
pub(super) struct Recent {
    /// From a keyframe on; empty once more than [`MAX_HELD`] frames followed it.
    frames: Mutex<Vec<Held>>,
}

impl Recent {
    /// Keeps `frame` (a keyframe starts over) while there is room.
    pub(super) fn record(&self, frame: &Frame) {
        let mut frames = crate::sync::lock(&self.frames);
        if frame.keyframe {
            frames.clear();
        } else if frames.is_empty() {
            return;
        }
        if frames.len() >= MAX_HELD {
            // Too far from its keyframe to start a call from: let the memory go.
            *frames = Vec::new();
            return;
        }
        frames.push(Held::of(frame));
    }

    /// Whether it keeps a keyframe that came within `age`.
    pub(super) fn has_keyframe_within(&self, age: Duration) -> bool {
        crate::sync::lock(&self.frames)
            .first()
            .is_some_and(|f| f.came.elapsed() <= age)
    }

    /// Calls `start` with the frames from the last keyframe on (sharing their memory) if it
    /// came within [`MAX_AGE`], else with none. No frame is kept meanwhile: a frame kept after
    /// `start` returns is handed out after it too (the stream keeps a frame here before it
    /// hands it to its viewers), so a feed that `start` arms misses none and gets none twice.
    pub(super) fn start_from<R>(&self, start: impl FnOnce(Vec<Held>) -> R) -> R {
        let frames = crate::sync::lock(&self.frames);
        let fresh = frames.first().is_some_and(|f| f.came.elapsed() <= MAX_AGE);
        start(if fresh { frames.clone() } else { Vec::new() })
    }
}
