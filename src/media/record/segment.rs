//! One segment being written: `appsrc ! h264parse ! mp4mux fragment-duration=1000 ! filesink
//! buffer-mode=unbuffered` (and the camera's Opus, `appsrc ! opusparse ! mux.audio_0`), a
//! pipeline of its own for each segment, fed by its recorder's thread with frames stamped
//! from the segment's first one (0) on.
//!
//! Why these elements (measured, docs/recording-notes.md): a fragment a second, each written
//! as it is made — filesink's own 64 kB buffer would die with the process, leaving a torn
//! file — so a `kill -9` loses about a second; splitmuxsink holds a whole GOP first (~3 s
//! lost). The recorder cuts segments itself, at keyframes, and the file of a segment cut
//! short is repaired when the daemon starts again ([`super::mp4`]).

use std::path::Path;
use std::time::Duration;

use gst::prelude::*;

use crate::media::MediaError;

/// How long a finished segment may take to write its end (the last fragment, the index).
const FINISH_WITHIN: Duration = Duration::from_secs(5);
/// Frames waiting in the segment's appsrc at most (a disk that stalls): beyond, frames are
/// dropped, newest first, rather than memory growing.
const MAX_QUEUED_BYTES: u64 = 16 << 20;

pub struct SegmentWriter {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    /// The audio's, when the segment has audio.
    audio: Option<gst_app::AppSrc>,
}

impl SegmentWriter {
    /// Starts writing `path` (blocking: a state change and a file opened).
    /// `audio`: the Opus stream's caps, if the segment has audio.
    pub fn open(
        path: &Path,
        caps: &gst::Caps,
        audio: Option<&gst::Caps>,
    ) -> Result<SegmentWriter, MediaError> {
        let mut launch = "appsrc name=src format=time is-live=false block=false \
             leaky-type=downstream ! h264parse ! mp4mux name=mux fragment-duration=1000 \
             ! filesink name=file buffer-mode=unbuffered async=false"
            .to_string();
        if audio.is_some() {
            launch.push_str(
                " appsrc name=audio format=time is-live=false block=false \
                 leaky-type=downstream ! opusparse ! mux.audio_0",
            );
        }
        let pipeline = gst::parse::launch(&launch)
            .map_err(|e| MediaError::Build(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| MediaError::Build("not a pipeline".into()))?;
        let element = |name: &str| {
            pipeline
                .by_name(name)
                .ok_or_else(|| MediaError::Build(format!("no {name}")))
        };
        let appsrc = element("src")?
            .downcast::<gst_app::AppSrc>()
            .map_err(|_| MediaError::Build("not an appsrc".into()))?;
        appsrc.set_caps(Some(caps));
        appsrc.set_max_bytes(MAX_QUEUED_BYTES);
        let audio = match audio {
            Some(audio_caps) => {
                let src = element("audio")?
                    .downcast::<gst_app::AppSrc>()
                    .map_err(|_| MediaError::Build("not an appsrc".into()))?;
                src.set_caps(Some(audio_caps));
                src.set_max_bytes(MAX_QUEUED_BYTES / 8);
                Some(src)
            }
            None => None,
        };
        element("file")?.set_property("location", path.to_string_lossy().as_ref());
        if pipeline.set_state(gst::State::Playing).is_err() {
            let why = first_error(&pipeline).unwrap_or_else(|| "cannot start".into());
            let _ = pipeline.set_state(gst::State::Null);
            return Err(MediaError::WouldNotStart(format!(
                "recording {}: {why}",
                path.display()
            )));
        }
        Ok(SegmentWriter {
            pipeline,
            appsrc,
            audio,
        })
    }

    /// Writes one frame at `pts` (from the segment's start) lasting `duration`. An error: the
    /// segment cannot go on (the disk is full, gone or read-only).
    pub fn push(
        &self,
        buffer: gst::Buffer,
        pts: Duration,
        duration: Duration,
    ) -> Result<(), String> {
        push(&self.pipeline, &self.appsrc, buffer, pts, duration)
    }

    /// Whether the segment has audio.
    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// Writes one Opus packet at `pts` (a segment without audio takes none).
    pub fn push_audio(
        &self,
        buffer: gst::Buffer,
        pts: Duration,
        duration: Duration,
    ) -> Result<(), String> {
        match &self.audio {
            Some(audio) => push(&self.pipeline, audio, buffer, pts, duration),
            None => Ok(()),
        }
    }

    /// Ends the segment: its last fragment and index written, the file closed (blocking, up to
    /// [`FINISH_WITHIN`]).
    pub fn finish(self) -> Result<(), String> {
        let _ = self.appsrc.end_of_stream();
        if let Some(audio) = &self.audio {
            let _ = audio.end_of_stream();
        }
        let bus = self.pipeline.bus();
        let outcome = match bus.as_ref().and_then(|bus| {
            bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(FINISH_WITHIN.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
        }) {
            Some(msg) => match msg.view() {
                gst::MessageView::Error(err) => Err(err.error().to_string()),
                _ => Ok(()),
            },
            None => Err("its end was not written in time".to_string()),
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        outcome
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Pushes `buffer` stamped `pts` lasting `duration` into `appsrc`, unless the pipeline failed.
fn push(
    pipeline: &gst::Pipeline,
    appsrc: &gst_app::AppSrc,
    mut buffer: gst::Buffer,
    pts: Duration,
    duration: Duration,
) -> Result<(), String> {
    if let Some(why) = first_error(pipeline) {
        return Err(why);
    }
    {
        let buffer = buffer.make_mut();
        let pts = gst::ClockTime::from_nseconds(pts.as_nanos() as u64);
        buffer.set_pts(pts);
        buffer.set_dts(pts);
        buffer.set_duration(gst::ClockTime::from_nseconds(duration.as_nanos() as u64));
    }
    appsrc
        .push_buffer(buffer)
        .map(|_| ())
        .map_err(|flow| format!("the segment's pipeline stopped ({flow:?})"))
}

/// The first error on the pipeline's bus, if any (not waiting).
fn first_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(err) => {
            tracing::debug!(debug = ?err.debug(), "recording pipeline error");
            Some(err.error().to_string())
        }
        _ => None,
    }
}
