//! JPEG snapshots of the shared video capture (what Home Assistant's generic camera polls).
//!
//! A snapshot is taken from the raw pictures of the running shared video stream, before any
//! encoding (no keyframe is forced on the viewers, no decoder is needed): a one-shot pad probe
//! takes the next picture that passes, and GStreamer converts it to a JPEG of the size asked
//! for. An idle device starts its capture for the snapshot; it then lingers as it would
//! after a viewer left.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use gst::prelude::*;

use super::Encoders;
use super::stream::Life;
use crate::media::MediaError;
use crate::media::codecs::MediaKind;
use crate::sync::lock;

/// The widest snapshot (a request for more gets the capture's own size, at most this).
const MAX_WIDTH: u32 = 3840;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the profile has no video")]
    NoVideo,
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("no picture within {0:?}")]
    Timeout(Duration),
    #[error("the video source is restarting")]
    NotRunning,
    #[error("the picture could not be converted: {0}")]
    Convert(String),
}

impl Encoders {
    /// A JPEG of the next picture the shared video capture makes, `width` wide (the
    /// capture's own width when `None`; the height keeps the aspect ratio), within
    /// `timeout` once the capture runs. Blocks: call from a blocking thread.
    pub fn snapshot(
        self: &Arc<Self>,
        width: Option<u32>,
        timeout: Duration,
    ) -> Result<Vec<u8>, SnapshotError> {
        let codec = *self
            .codecs(MediaKind::Video)
            .first()
            .ok_or(SnapshotError::NoVideo)?;
        // Held like a viewer's subscription while the picture is taken.
        let stream = self.stream(codec)?;
        let picture = next_picture(&stream, timeout);
        if self.release(&stream) {
            Arc::clone(self).schedule_stop(Arc::clone(&stream));
        }
        to_jpeg(&picture?, width, timeout)
    }
}

impl Encoders {
    /// The pad where `codec`'s running stream passes its raw pictures (before any encoding),
    /// if it runs now: a new one after each restart.
    pub fn raw_pictures(&self, codec: crate::media::codecs::Codec) -> Option<gst::Pad> {
        let stream = lock(&self.streams).get(&codec).cloned()?;
        match &*lock(&stream.life) {
            Life::Running(running) => running.raw_tap.clone(),
            _ => None,
        }
    }
}

/// The next raw picture at the stream's tap (waiting, within `timeout`, for a stream that
/// another caller is starting or restarting).
fn next_picture(
    stream: &super::stream::SharedStream,
    timeout: Duration,
) -> Result<gst::Sample, SnapshotError> {
    let deadline = std::time::Instant::now() + timeout;
    let tap = loop {
        if let Life::Running(running) = &*lock(&stream.life) {
            break running.raw_tap.clone().ok_or(SnapshotError::NoVideo)?;
        }
        if std::time::Instant::now() >= deadline {
            return Err(SnapshotError::NotRunning);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (tx, rx) = mpsc::sync_channel::<gst::Sample>(1);
    // The probe runs on the streaming thread: it only takes a reference to the buffer, and
    // removes itself.
    let probe = tap.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(buffer) = info.buffer() {
            let sample = gst::Sample::builder()
                .buffer(buffer)
                .caps_if_some(pad.current_caps().as_ref())
                .build();
            let _ = tx.try_send(sample);
        }
        gst::PadProbeReturn::Remove
    });
    let picture = rx.recv_timeout(timeout);
    if let (Err(_), Some(probe)) = (&picture, probe) {
        tap.remove_probe(probe);
    }
    picture.map_err(|_| SnapshotError::Timeout(timeout))
}

fn to_jpeg(
    picture: &gst::Sample,
    width: Option<u32>,
    timeout: Duration,
) -> Result<Vec<u8>, SnapshotError> {
    let info = picture
        .caps()
        .and_then(|caps| gst_video::VideoInfo::from_caps(caps).ok())
        .ok_or_else(|| SnapshotError::Convert("the picture has no video caps".into()))?;
    let (w, h) = fitted(info.width(), info.height(), width);
    let caps = gst::Caps::builder("image/jpeg")
        .field("width", w as i32)
        .field("height", h as i32)
        .build();
    let clock_timeout = gst::ClockTime::from_nseconds(timeout.as_nanos() as u64);
    let jpeg = gst_video::convert_sample(picture, &caps, Some(clock_timeout))
        .map_err(|e| SnapshotError::Convert(e.to_string()))?;
    let buffer = jpeg
        .buffer()
        .ok_or_else(|| SnapshotError::Convert("no JPEG".into()))?;
    let map = buffer
        .map_readable()
        .map_err(|e| SnapshotError::Convert(e.to_string()))?;
    Ok(map.as_slice().to_vec())
}

/// The snapshot's size: `width` (at most the capture's, at least 16), the height keeping
/// the capture's aspect ratio, both even (what encoders of 4:2:0 pictures need).
fn fitted(capture_w: u32, capture_h: u32, width: Option<u32>) -> (u32, u32) {
    let w = width
        .unwrap_or(capture_w)
        .clamp(16, capture_w.clamp(16, MAX_WIDTH));
    let h = (u64::from(w) * u64::from(capture_h) / u64::from(capture_w.max(1))) as u32;
    (w & !1, (h & !1).max(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_keeps_the_aspect_and_never_grows() {
        assert_eq!(fitted(1280, 720, None), (1280, 720));
        assert_eq!(fitted(1280, 720, Some(640)), (640, 360));
        assert_eq!(fitted(1280, 720, Some(5000)), (1280, 720));
        assert_eq!(fitted(1280, 720, Some(1)), (16, 8));
        assert_eq!(fitted(320, 240, Some(101)), (100, 74));
    }
}
