//! The segment a recorder is writing: its pipeline, where it got to, and the frame held until
//! the next one says how long it lasts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::segment::SegmentWriter;
use super::store::{Segment, Store};

/// The index (listing) learns a segment's progress this often.
const PROGRESS: Duration = Duration::from_secs(1);

/// The segment being written.
pub(super) struct Writing {
    /// Taken when the segment ends.
    pub(super) writer: Option<SegmentWriter>,
    pub(super) segment: Segment,
    pub(super) path: PathBuf,
    pub(super) caps: gst::Caps,
    pub(super) started: Instant,
    /// The last frame, written once the next one comes.
    pub(super) last: Option<(gst::Buffer, Instant)>,
    /// A frame's usual length (for the very last one).
    pub(super) frame_interval: Duration,
    pub(super) asked_at: Option<Instant>,
    pub(super) progress_at: Instant,
    pub(super) bytes_counted: u64,
    /// In `mode = "motion"`: since when nothing has moved.
    pub(super) still_since: Option<Instant>,
    /// Where the next audio packet goes (they follow one another; arrival jitter ignored).
    pub(super) audio_next: Option<Duration>,
}

/// Audio arriving this far from where the last packet ended starts afresh there (a gap).
const AUDIO_RESYNC: Duration = Duration::from_millis(100);
/// An Opus packet without a duration lasts this long (the encoders' frame size).
const OPUS_FRAME: Duration = Duration::from_millis(20);

impl Writing {
    /// Writes the frame before this one (now that its length is known) and keeps this one.
    pub(super) fn write_previous(
        &mut self,
        came: Instant,
        buffer: gst::Buffer,
    ) -> Result<(), String> {
        if let Some((previous, previous_came)) = self.last.take() {
            let length = came.saturating_duration_since(previous_came);
            if !length.is_zero() {
                self.frame_interval = length;
            }
            let pts = previous_came.saturating_duration_since(self.started);
            self.writer()?.push(previous, pts, length)?;
        }
        self.last = Some((buffer, came));
        Ok(())
    }

    pub(super) fn write_last(&mut self, end: Instant) -> Result<(), String> {
        if let Some((previous, previous_came)) = self.last.take() {
            let pts = previous_came.saturating_duration_since(self.started);
            self.writer()?
                .push(previous, pts, end.saturating_duration_since(previous_came))?;
        }
        Ok(())
    }

    /// Writes one audio packet that came at `came` (before the segment's start: not this
    /// segment's).
    pub(super) fn write_audio(&mut self, came: Instant, buffer: gst::Buffer) -> Result<(), String> {
        if came < self.started || !self.writer()?.has_audio() {
            return Ok(());
        }
        let arrived = came.saturating_duration_since(self.started);
        let pts = match self.audio_next {
            Some(next) if next.abs_diff(arrived) < AUDIO_RESYNC => next,
            _ => arrived,
        };
        let length = buffer
            .duration()
            .map_or(OPUS_FRAME, |d| Duration::from_nanos(d.nseconds()));
        self.writer()?.push_audio(buffer, pts, length)?;
        self.audio_next = Some(pts + length);
        Ok(())
    }

    pub(super) fn has_audio(&self) -> bool {
        self.writer.as_ref().is_some_and(SegmentWriter::has_audio)
    }

    fn writer(&self) -> Result<&SegmentWriter, String> {
        self.writer
            .as_ref()
            .ok_or_else(|| "the segment was closed".to_string())
    }

    /// Tells the index (and the metrics) how far the segment got, once a [`PROGRESS`].
    pub(super) fn progress(&mut self, store: &Store, camera: &str) {
        if self.progress_at.elapsed() < PROGRESS {
            return;
        }
        self.progress_at = Instant::now();
        if let Some((_, came)) = &self.last {
            self.segment.duration = came.saturating_duration_since(self.started);
        }
        self.segment.bytes = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        self.count_bytes(camera);
        store.writing(self.segment.clone());
    }

    pub(super) fn count_bytes(&mut self, camera: &str) {
        let new = self.segment.bytes.saturating_sub(self.bytes_counted);
        self.bytes_counted = self.segment.bytes;
        crate::metrics::get()
            .recording_bytes
            .get_or_create(&crate::metrics::CameraLabel {
                camera: camera.to_string(),
            })
            .inc_by(new);
    }
}
