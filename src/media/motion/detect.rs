//! Motion in a picture, from a small grid of brightness samples: the share of samples that
//! changed by more than [`PIXEL_DELTA`] since the last look. Motion begins once that share
//! stays over the threshold the sensitivity sets for `min_duration`, and ends once the
//! picture has been still for `end_after`. Plain functions of the samples and the time, so
//! that they are tested without a camera.

use std::time::{Duration, Instant};

use crate::media::profile::MotionSettings;

/// Grid of samples (columns, rows): 3072 bytes a look.
pub const GRID: (usize, usize) = (64, 48);
/// A sample moved when its brightness changed by more than this (of 255): above a camera's
/// noise, below a person walking past a wall.
pub const PIXEL_DELTA: u8 = 24;

/// A change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Start,
    End,
}

#[derive(Debug)]
pub struct Detector {
    /// The share of samples that must change (0..1).
    threshold: f64,
    min_duration: Duration,
    end_after: Duration,
    previous: Option<Vec<u8>>,
    /// Since when every look saw motion (not yet long enough).
    moving_since: Option<Instant>,
    /// Motion is on: since when, and when it was last seen.
    active: Option<Instant>,
    last_seen: Option<Instant>,
    /// The last look's changed share (for logs and tuning).
    pub last_share: f64,
}

/// The changed share that counts as motion: a tenth of the picture at sensitivity 0, 0.5 %
/// at 1 (geometric between).
pub fn threshold(sensitivity: f64) -> f64 {
    0.1 * 0.05f64.powf(sensitivity.clamp(0.0, 1.0))
}

/// The share of samples that changed by more than [`PIXEL_DELTA`].
pub fn changed_share(a: &[u8], b: &[u8]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let changed = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.abs_diff(**y) > PIXEL_DELTA)
        .count();
    changed as f64 / a.len() as f64
}

impl Detector {
    pub fn new(settings: &MotionSettings) -> Detector {
        Detector {
            threshold: threshold(settings.sensitivity),
            min_duration: Duration::from_millis(settings.min_duration_ms),
            end_after: Duration::from_secs(settings.end_after_secs),
            previous: None,
            moving_since: None,
            active: None,
            last_seen: None,
            last_share: 0.0,
        }
    }

    pub fn active(&self) -> bool {
        self.active.is_some()
    }

    /// A new grid of samples taken `at`.
    pub fn look(&mut self, grid: Vec<u8>, at: Instant) -> Option<Change> {
        let share = self
            .previous
            .as_deref()
            .map_or(0.0, |previous| changed_share(previous, &grid));
        self.previous = Some(grid);
        self.last_share = share;
        if share >= self.threshold {
            self.last_seen = Some(at);
            let since = *self.moving_since.get_or_insert(at);
            if self.active.is_none() && at.saturating_duration_since(since) >= self.min_duration {
                self.active = Some(since);
                return Some(Change::Start);
            }
            return None;
        }
        self.moving_since = None;
        self.tick(at)
    }

    /// Time passes (also when no picture comes: a camera that stopped ends its motion).
    pub fn tick(&mut self, now: Instant) -> Option<Change> {
        let still_for = self
            .last_seen
            .map_or(Duration::MAX, |seen| now.saturating_duration_since(seen));
        if self.active.is_some() && still_for >= self.end_after {
            self.active = None;
            self.moving_since = None;
            return Some(Change::End);
        }
        None
    }
}
