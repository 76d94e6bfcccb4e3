//! Where a subscriber's encoded frames go.
//!
//! A call's send branch is fed directly: the shared stream's own streaming thread pushes each
//! frame through the call's payloader, RTP session and SRTP to its socket, with no thread or
//! queue of the call's own (each one cost a thread hand-off per frame per viewer, the largest
//! per-viewer cost a profile showed). That thread must never wait on one call, so a call is
//! fed only once its connection is up: before DTLS has its keys, webrtcbin holds the send
//! path (a pad block in its transport bin) and a push would wait there — for good, if the
//! handshake never completes. Once up, nothing downstream waits: UDP sends do not block, and
//! the rest is computation. A call's frames from before would go nowhere anyway; it starts at
//! a fresh keyframe.
//!
//! That keyframe is asked for as the call starts connecting (its descriptions are set), not
//! once it is up: the encoder needs up to a frame interval and an encode to make one, time
//! that ICE and DTLS spend anyway. Until the connection is up the feed keeps that keyframe and
//! what follows it (a bounded number of frames, stamped when they came), then pushes them
//! first, in order, before anything newer. A keyframe that came just before (see
//! [`super::recent`]) is where the feed starts keeping, with what followed it.
//!
//! The RTSP server's media pipelines bring their own `appsrc` (and its thread): those are fed
//! through it, from the start, and one whose queue fills counts as stalled.
//!
//! A tap (the recorder) gets each frame, deep-copied and with the moment it came, through a
//! function of its own that must not block either (a bounded queue it may refuse to grow).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use gst::prelude::*;

use crate::media::MediaError;
use crate::sync::lock;

pub(super) enum Feed {
    AppSrc(gst_app::AppSrc),
    Direct(DirectFeed),
    Tap(Tap),
}

/// What a tap is handed, in order: caps before the frames they describe.
pub enum Tapped {
    Caps(gst::Caps),
    Frame {
        /// Its own copy (a hardware encoder's memory is not held), timestamps unset.
        buffer: gst::Buffer,
        keyframe: bool,
        /// When the encoder handed it out.
        came: Instant,
    },
}

/// The function a tap is handed frames with: false when it did not take one (its queue is
/// full), which makes the stream start it over at a keyframe, caps first.
pub(super) struct Tap(pub(super) Box<dyn Fn(Tapped) -> bool + Send + Sync>);

impl Feed {
    /// The pad whose upstream events (a viewer's keyframe requests) reach the shared stream.
    pub(super) fn request_pad(&self) -> Option<gst::Pad> {
        match self {
            Feed::AppSrc(appsrc) => appsrc.static_pad("src"),
            Feed::Direct(direct) => Some(direct.pad.clone()),
            Feed::Tap(_) => None,
        }
    }

    /// Readies the feed once its branch runs in its pipeline.
    pub(super) fn attach(&self) -> Result<(), MediaError> {
        match self {
            Feed::AppSrc(_) | Feed::Tap(_) => Ok(()),
            Feed::Direct(direct) => direct.attach(),
        }
    }

    /// Whether this frame may be pushed now. A closed direct feed that was
    /// [armed](DirectFeed::arm) keeps it instead, from a keyframe on.
    pub(super) fn admit(&self, frame: &Frame) -> bool {
        match self {
            Feed::AppSrc(_) | Feed::Tap(_) => true,
            Feed::Direct(direct) => direct.admit(frame),
        }
    }

    /// Frames waiting to be taken (only an appsrc queues).
    pub(super) fn backlog(&self) -> u64 {
        match self {
            Feed::AppSrc(appsrc) => appsrc.current_level_buffers(),
            Feed::Direct(_) | Feed::Tap(_) => 0,
        }
    }

    /// Whether they were taken (a tap's full queue refuses them: they are sent again).
    pub(super) fn set_caps(&self, caps: Option<&gst::Caps>) -> bool {
        match self {
            Feed::AppSrc(appsrc) => appsrc.set_caps(caps),
            Feed::Direct(direct) => direct.set_caps(caps),
            Feed::Tap(tap) => {
                return caps.is_none_or(|caps| (tap.0)(Tapped::Caps(caps.clone())));
            }
        }
        true
    }

    /// Pushes one frame (its timestamps unset: each pipeline stamps it with its own clock).
    /// False when the frame did not go through (not running, or stopping): the caller starts
    /// over at a keyframe, with caps.
    pub(super) fn push(&self, buffer: gst::Buffer) -> bool {
        match self {
            Feed::AppSrc(appsrc) => appsrc.push_buffer(buffer).is_ok(),
            Feed::Direct(direct) => direct.push(buffer),
            Feed::Tap(tap) => {
                let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                let buffer = buffer.copy_deep().unwrap_or(buffer);
                (tap.0)(Tapped::Frame {
                    buffer,
                    keyframe,
                    came: Instant::now(),
                })
            }
        }
    }
}

/// At most this many frames are kept for a call that is still connecting (half a second at
/// 30 fps). A connection slower than that starts at a keyframe asked for once it is up.
pub(super) const MAX_HELD: usize = 15;

/// One encoded frame of a rung, as the shared stream hands it out.
pub(super) struct Frame<'a> {
    pub(super) buffer: &'a gst::BufferRef,
    pub(super) caps: Option<&'a gst::CapsRef>,
    pub(super) keyframe: bool,
    /// Its number in the stream (unique: counts up by one per frame of any rung).
    pub(super) seq: u64,
}

/// A frame kept until its call's connection is up.
#[derive(Clone)]
pub(super) struct Held {
    pub(super) buffer: gst::Buffer,
    pub(super) caps: Option<gst::Caps>,
    /// When it came from the encoder.
    pub(super) came: Instant,
    pub(super) seq: u64,
}

impl Held {
    pub(super) fn of(frame: &Frame) -> Held {
        Held {
            // Its own copy of the data: a hardware encoder's output memory belongs to a small
            // pool, which must not wait on (or reuse under) frames kept here for up to half a
            // second. A few hundred kB per keyframe interval at most.
            buffer: frame
                .buffer
                .copy_deep()
                .unwrap_or_else(|_| frame.buffer.copy()),
            caps: frame.caps.map(|c| c.to_owned()),
            came: Instant::now(),
            seq: frame.seq,
        }
    }
}

/// Frames kept since the feed was armed (empty until a keyframe comes).
struct Hold {
    armed_at: Instant,
    frames: Vec<Held>,
}

impl Hold {
    /// Whether `seq` was kept already (it came with the frames the hold started from).
    fn has(&self, seq: u64) -> bool {
        self.frames.iter().any(|kept| kept.seq == seq)
    }
}

/// How opening a feed went.
pub(super) struct Opened {
    /// Kept frames were pushed (the first of them a keyframe).
    pub(super) pushed_held: bool,
    /// How many frames were kept.
    pub(super) held: usize,
    /// When it was armed, if it still was (its keyframe may be on its way).
    pub(super) armed_at: Option<Instant>,
}

/// A pad of our own, in no element, linked to a send branch's sink once the branch is in its
/// pipeline (adding the branch to a pipeline unlinks pads outside it).
pub(super) struct DirectFeed {
    pad: gst::Pad,
    /// The send branch: its sink, and its clock and base time to stamp each frame.
    branch: gst::Bin,
    /// Set once the call's connection is up (see the module's comment), and never unset.
    open: AtomicBool,
    /// Frames kept while connecting; changed together with `open` under this lock, so a frame
    /// is either kept (and pushed by [`DirectFeed::open`]) or pushed after those.
    hold: Mutex<Option<Hold>>,
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
            open: AtomicBool::new(false),
            hold: Mutex::new(None),
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

    /// The call is about to connect: keep its frames until [`DirectFeed::open`], starting
    /// with `recent` (a keyframe and what followed it) if there are any, else from the next
    /// keyframe (asked for by the caller). False if it was armed already, or is open.
    pub(super) fn arm(&self, recent: Vec<Held>) -> bool {
        let mut hold = lock(&self.hold);
        if hold.is_some() || self.is_open() {
            return false;
        }
        *hold = Some(Hold {
            armed_at: Instant::now(),
            frames: recent,
        });
        true
    }

    /// Whether it was opened (see [`DirectFeed::open`]).
    pub(super) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    fn admit(&self, frame: &Frame) -> bool {
        if self.is_open() {
            return true;
        }
        let mut hold = lock(&self.hold);
        // Opened while we waited for the lock: the kept frames went first.
        if self.is_open() {
            return true;
        }
        let Some(kept) = hold.as_mut() else {
            return false;
        };
        if kept.frames.is_empty() && !frame.keyframe || kept.has(frame.seq) {
            return false;
        }
        if kept.frames.len() >= MAX_HELD {
            // Connecting for longer than the hold lasts: it starts at a later keyframe.
            *hold = None;
            return false;
        }
        kept.frames.push(Held::of(frame));
        false
    }

    /// Opens the feed for good, giving each kept frame to `push` first (in order, under the
    /// hold's lock: no newer frame can pass them). Pushing runs the call's send path: call
    /// from a blocking thread, not an async task.
    pub(super) fn open(&self, mut push: impl FnMut(Held) -> bool) -> Opened {
        let mut hold = lock(&self.hold);
        let kept = hold.take();
        let armed_at = kept.as_ref().map(|k| k.armed_at);
        let frames = kept.map(|k| k.frames).unwrap_or_default();
        let held = frames.len();
        let mut pushed_held = false;
        for frame in frames {
            pushed_held |= push(frame);
        }
        self.open.store(true, Ordering::Release);
        Opened {
            pushed_held,
            held,
            armed_at,
        }
    }

    /// Opens the feed for good if it kept no frame (nothing to push: any thread may);
    /// `None` if it did, for [`DirectFeed::open`].
    pub(super) fn open_unless_kept(&self) -> Option<Opened> {
        let mut hold = lock(&self.hold);
        if hold.as_ref().is_some_and(|kept| !kept.frames.is_empty()) {
            return None;
        }
        let armed_at = hold.take().map(|kept| kept.armed_at);
        self.open.store(true, Ordering::Release);
        Some(Opened {
            pushed_held: false,
            held: 0,
            armed_at,
        })
    }

    /// The branch's running time now, as an appsrc's `do-timestamp` would stamp a frame.
    fn running_time(&self) -> Option<gst::ClockTime> {
        let (clock, base) = (self.branch.clock()?, self.branch.base_time()?);
        clock.time().checked_sub(base)
    }

    pub(super) fn set_caps(&self, caps: Option<&gst::Caps>) {
        let Some(caps) = caps else {
            return;
        };
        // Two rungs' threads may push to one call while it moves between them: one at a time,
        // as an element's streaming thread holds its own pad's stream lock.
        let _streaming = self.pad.stream_lock();
        self.pad.push_event(gst::event::Caps::new(caps));
        let mut sent = lock(&self.segment_sent);
        if !*sent {
            let segment = gst::FormattedSegment::<gst::ClockTime>::new();
            self.pad.push_event(gst::event::Segment::new(&segment));
            *sent = true;
        }
    }

    fn push(&self, buffer: gst::Buffer) -> bool {
        let _streaming = self.pad.stream_lock();
        let Some(now) = self.running_time() else {
            return false;
        };
        self.push_at(buffer, Some(now))
    }

    /// Pushes a kept frame, stamped with the branch's running time when it came (or just
    /// after `after`, the stamp of the one before: a frame kept from before the branch ran
    /// has no such time, and frames must not share one). Returns the stamp.
    pub(super) fn push_held(
        &self,
        held: Held,
        after: Option<gst::ClockTime>,
    ) -> Option<gst::ClockTime> {
        let now = self.running_time()?;
        let age = gst::ClockTime::from_nseconds(held.came.elapsed().as_nanos() as u64);
        let mut at = now.saturating_sub(age);
        if let Some(after) = after {
            at = at.max(after + gst::ClockTime::MSECOND);
        }
        self.push_at(held.buffer, Some(at)).then_some(at)
    }

    /// Pushes one frame stamped `at` (the branch's running time it stands for).
    fn push_at(&self, mut buffer: gst::Buffer, at: Option<gst::ClockTime>) -> bool {
        if at.is_none() {
            return false;
        }
        let _streaming = self.pad.stream_lock();
        {
            let buffer = buffer.make_mut();
            buffer.set_pts(at);
            buffer.set_dts(at);
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
