//! What a recorder in `mode = "motion"` holds while nothing moves: the frames since the last
//! keyframe at least `pre` old, so that a recording that motion starts begins `pre` before it
//! (at that keyframe: a recording can begin nowhere else). Bounded in frames and bytes
//! whatever the encoder does (a camera that makes no keyframe for a minute keeps the newest
//! frames from a keyframe, or none).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// At most this many frames (a minute at 30 fps) …
const MAX_FRAMES: usize = 1800;
/// … and this many bytes (a minute at 4 Mbit/s).
const MAX_BYTES: usize = 32 << 20;

pub struct Held {
    pub buffer: gst::Buffer,
    pub keyframe: bool,
    pub came: Instant,
}

#[derive(Default)]
pub struct Preroll {
    frames: VecDeque<Held>,
    bytes: usize,
    caps: Option<gst::Caps>,
}

impl Preroll {
    /// Keeps a frame (of `caps`: frames of other caps are let go), then lets go of what is
    /// older than needed for `pre`.
    pub fn push(&mut self, caps: &gst::Caps, frame: Held, pre: Duration) {
        if self.caps.as_ref() != Some(caps) {
            self.clear();
            self.caps = Some(caps.clone());
        }
        if self.frames.is_empty() && !frame.keyframe {
            return;
        }
        self.bytes += frame.buffer.size();
        let now = frame.came;
        self.frames.push_back(frame);
        // The newest keyframe that is at least `pre` old: everything before it can go.
        let oldest_needed = now.checked_sub(pre).unwrap_or(now);
        if let Some(start) = self
            .frames
            .iter()
            .rposition(|f| f.keyframe && f.came <= oldest_needed)
        {
            self.drop_front(start);
        }
        // Over its bounds: start again at the next keyframe kept, or hold nothing.
        while self.frames.len() > MAX_FRAMES || self.bytes > MAX_BYTES {
            let next_key = self.frames.iter().skip(1).position(|f| f.keyframe);
            match next_key {
                Some(i) => self.drop_front(i + 1),
                None => {
                    self.clear();
                    break;
                }
            }
        }
    }

    fn drop_front(&mut self, count: usize) {
        for frame in self.frames.drain(..count) {
            self.bytes -= frame.buffer.size();
        }
    }

    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }

    /// Everything held, from a keyframe on, and the caps they have.
    pub fn take(&mut self) -> Option<(gst::Caps, Vec<Held>)> {
        let caps = self.caps.clone()?;
        self.bytes = 0;
        let frames: Vec<Held> = self.frames.drain(..).collect();
        (!frames.is_empty()).then_some((caps, frames))
    }

    #[cfg(test)]
    pub fn kept(&self) -> Vec<(bool, Instant)> {
        self.frames.iter().map(|f| (f.keyframe, f.came)).collect()
    }
}
