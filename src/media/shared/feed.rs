//! Where a subscriber's encoded frames go.
//!
//! A call's send branch is fed directly: the shared stream's own streaming thread pushes each
//! frame through the call's payloader, RTP session and SRTP to its socket, with no thread or
//! queue of the call's own (each one cost a thread hand-off per frame per viewer, the largest
//! per-viewer cost a profile showed). That thread must never wait on one call, so a call is
//! fed only once its connection is up: before DTLS has its keys, webrtcbin holds the send
//! path (a pad block in its transport bin) and a push would wait there — for good, if the
//! handshake never completes. Once up, nothing downstream waits: UDP sends do not block, and
//! the rest is computation. A call's frames from before went nowhere anyway; it starts at a
//! fresh keyframe, asked for when its connection comes up.
//!
//! The RTSP server's media pipelines bring their own `appsrc` (and its thread): those are fed
//! through it, from the start, and one whose queue fills counts as stalled.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gst::prelude::*;

use crate::media::MediaError;

pub(super) enum Feed {
    AppSrc(gst_app::AppSrc),
    Direct(DirectFeed),
}

impl Feed {
    /// The pad whose upstream events (a viewer's keyframe requests) reach the shared stream.
    pub(super) fn request_pad(&self) -> Option<gst::Pad> {
        match self {
            Feed::AppSrc(appsrc) => appsrc.static_pad("src"),
            Feed::Direct(direct) => Some(direct.pad.clone()),
        }
    }

    /// Readies the feed once its branch runs in its pipeline.
    pub(super) fn attach(&self) -> Result<(), MediaError> {
        match self {
            Feed::AppSrc(_) => Ok(()),
            Feed::Direct(direct) => direct.attach(),
        }
    }

    /// Whether frames may be pushed now.
    pub(super) fn is_open(&self) -> bool {
        match self {
            Feed::AppSrc(_) => true,
            Feed::Direct(direct) => direct.open.load(Ordering::Relaxed),
        }
    }

    /// Frames waiting to be taken (only an appsrc queues).
    pub(super) fn backlog(&self) -> u64 {
        match self {
            Feed::AppSrc(appsrc) => appsrc.current_level_buffers(),
            Feed::Direct(_) => 0,
        }
    }

    pub(super) fn set_caps(&self, caps: Option<&gst::Caps>) {
        match self {
            Feed::AppSrc(appsrc) => appsrc.set_caps(caps),
            Feed::Direct(direct) => direct.set_caps(caps),
        }
    }

    /// Pushes one frame (its timestamps unset: each pipeline stamps it with its own clock).
    /// False when the frame did not go through (not running, or stopping): the caller starts
    /// over at a keyframe, with caps.
    pub(super) fn push(&self, buffer: gst::Buffer) -> bool {
        match self {
            Feed::AppSrc(appsrc) => appsrc.push_buffer(buffer).is_ok(),
            Feed::Direct(direct) => direct.push(buffer),
        }
    }
}

/// A pad of our own, in no element, linked to a send branch's sink once the branch is in its
/// pipeline (adding the branch to a pipeline unlinks pads outside it).
pub(super) struct DirectFeed {
    pad: gst::Pad,
    /// The send branch: its sink, and its clock and base time to stamp each frame.
    branch: gst::Bin,
    /// Set once the call's connection is up (see the module's comment).
    pub(super) open: Arc<AtomicBool>,
    /// The time segment goes after the first caps (GStreamer's order for sticky events).
    segment_sent: Mutex<bool>,
}

impl DirectFeed {
    pub(super) fn new(branch: &gst::Bin) -> Result<DirectFeed, MediaError> {
        if branch.static_pad("sink").is_none() {
            return Err(MediaError::Build("send branch has no sink pad".into()));
        }
        let pad = gst::Pad::builder(gst::PadDirection::Src)
            .name("feed")
            .query_function(|_, _, query| match query.view_mut() {
                // A live source that adds no latency, as the appsrc it replaces said.
                gst::QueryViewMut::Latency(q) => {
                    q.set(true, gst::ClockTime::ZERO, gst::ClockTime::NONE);
                    true
                }
                _ => false,
            })
            // Upstream events other than keyframe requests (caught by a probe) end here.
            .event_function(|_, _, _| true)
            .build();
        Ok(DirectFeed {
            pad,
            branch: branch.clone(),
            open: Arc::new(AtomicBool::new(false)),
            segment_sent: Mutex::new(false),
        })
    }

    /// Links the feed to the branch, which is in its pipeline by now.
    fn attach(&self) -> Result<(), MediaError> {
        let sink = self
            .branch
            .static_pad("sink")
            .ok_or_else(|| MediaError::Build("send branch has no sink pad".into()))?;
        self.pad
            .link(&sink)
            .map_err(|e| MediaError::Build(format!("feed pad: {e:?}")))?;
        self.pad
            .set_active(true)
            .map_err(|e| MediaError::Build(format!("feed pad: {e}")))?;
        static FEEDS: AtomicU64 = AtomicU64::new(0);
        let stream_id = format!("webrtcd-feed-{}", FEEDS.fetch_add(1, Ordering::Relaxed));
        self.pad
            .push_event(gst::event::StreamStart::new(&stream_id));
        Ok(())
    }

    fn set_caps(&self, caps: Option<&gst::Caps>) {
        let Some(caps) = caps else {
            return;
        };
        // Two rungs' threads may push to one call while it moves between them: one at a time,
        // as an element's streaming thread holds its own pad's stream lock.
        let _streaming = self.pad.stream_lock();
        self.pad.push_event(gst::event::Caps::new(caps));
        let mut sent = self.segment_sent.lock().unwrap_or_else(|p| p.into_inner());
        if !*sent {
            let segment = gst::FormattedSegment::<gst::ClockTime>::new();
            self.pad.push_event(gst::event::Segment::new(&segment));
            *sent = true;
        }
    }

    fn push(&self, mut buffer: gst::Buffer) -> bool {
        // The branch's running time now, as an appsrc's `do-timestamp` would stamp it.
        let (Some(clock), Some(base)) = (self.branch.clock(), self.branch.base_time()) else {
            return false;
        };
        let _streaming = self.pad.stream_lock();
        let now = clock.time().checked_sub(base);
        {
            let buffer = buffer.make_mut();
            buffer.set_pts(now);
            buffer.set_dts(now);
        }
        self.pad.push(buffer).is_ok()
    }
}

impl Drop for DirectFeed {
    fn drop(&mut self) {
        if let Some(peer) = self.pad.peer() {
            let _ = self.pad.unlink(&peer);
        }
        let _ = self.pad.set_active(false);
    }
}
