//! Fan-out: each encoded frame handed to every subscriber from the encoder's thread without
//! ever waiting on one; joining, leaving and moving between rungs; keyframes asked for
//! (rate-limited) for viewers that need one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::feed::{Feed, Frame, Opened};
use super::stream::{Life, SharedStream, Subscriber};
use crate::media::codecs::MediaKind;
use crate::sync::lock;

/// Frames that may wait in one subscriber's appsrc before it counts as stalled.
const MAX_QUEUED: u64 = 30;
/// Keyframes asked for by viewers (PLI/FIR, stalls) are at least this far apart.
pub(super) const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// A keyframe asked for this recently (as the call started connecting) is taken to be on its
/// way: the encoder makes one within a frame interval and an encode.
pub(super) const KEYFRAME_ON_ITS_WAY: Duration = Duration::from_millis(150);

impl SharedStream {
    /// Adds a viewer; a stream that has stopped for good calls its `on_failure` instead.
    pub(super) fn subscribe(&self, subscriber: Arc<Subscriber>) {
        let rung = subscriber.rung.load(Ordering::Relaxed);
        {
            // Under the life lock: `give_up` either sees this subscriber or we see Stopped.
            let life = lock(&self.life);
            if matches!(*life, Life::Stopped) {
                drop(life);
                (subscriber.on_failure)();
                return;
            }
            lock(&self.subscribers).push(Arc::clone(&subscriber));
        }
        self.update_valves();
        // A joining viewer must not wait for the next scheduled keyframe. A direct feed that
        // is still closed asks once its call starts connecting: a keyframe now would go
        // nowhere.
        let takes_frames = match &subscriber.feed {
            Feed::AppSrc(_) | Feed::Tap(_) => true,
            Feed::Direct(direct) => direct.is_open(),
        };
        if takes_frames {
            self.request_keyframe(rung, true);
        }
    }

    pub(super) fn unsubscribe(&self, id: u64) {
        lock(&self.subscribers).retain(|s| s.id != id);
        self.update_valves();
        self.protect_against_loss();
    }

    /// Moves a viewer to `rung` at that rung's next keyframe (asked for now).
    pub(super) fn move_to(&self, id: u64, rung: usize) {
        let rung = rung.min(self.rung_frames.len() - 1);
        let moved = lock(&self.subscribers)
            .iter()
            .find(|s| s.id == id)
            .is_some_and(|s| s.target.swap(rung, Ordering::Relaxed) != rung);
        if moved {
            self.update_valves();
            self.request_keyframe(rung, true);
        }
    }

    /// Runs on a streaming thread of the shared pipeline (the one of `rung`): never blocks
    /// on a subscriber.
    pub(super) fn fan_out(&self, rung: usize, sample: &gst::Sample) {
        let Some(buffer) = sample.buffer() else {
            return;
        };
        self.stats.frames.fetch_add(1, Ordering::Relaxed);
        if let Some(frames) = self.rung_frames.get(rung) {
            frames.fetch_add(1, Ordering::Relaxed);
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.frames_metric.inc();
        *lock(&self.last_progress) = Instant::now();
        if self.lost.load(Ordering::Relaxed) && self.mark_back() {
            tracing::info!(codec = ?self.codec, device = self.device(), "the source delivers again");
        }
        let caps = sample.caps();
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        if keyframe && self.codec.kind() == MediaKind::Video {
            // How long a keyframe took from its request (first frames wait for it).
            let asked = self
                .last_keyframe_request
                .get(rung)
                .and_then(|last| *lock(last));
            tracing::debug!(
                codec = ?self.codec,
                rung,
                since_request_ms = asked.map(|at| at.elapsed().as_millis() as u64),
                bytes = buffer.size(),
                "keyframe"
            );
        }
        let frame = Frame {
            buffer,
            caps,
            keyframe,
            seq,
        };
        if let Some(recent) = self.recent.get(rung)
            && self.codec.kind() == MediaKind::Video
        {
            recent.record(&frame);
        }
        let mut stalled = false;
        let mut moved = false;
        // Pushing runs each call's send path: not under the lock that calls joining and
        // leaving take.
        let subscribers = lock(&self.subscribers).clone();
        for sub in &subscribers {
            let on = sub.rung.load(Ordering::Relaxed);
            if rung != on {
                // Not its rung, unless it is moving here and this keyframe is where it may.
                if sub.target.load(Ordering::Relaxed) != rung || !keyframe {
                    continue;
                }
                sub.rung.store(rung, Ordering::Relaxed);
                moved = true;
            }
            if !sub.feed.admit(&frame)
                || sub.waiting_for_keyframe.load(Ordering::Relaxed) && !keyframe
            {
                continue;
            }
            if sub.feed.backlog() >= MAX_QUEUED {
                // This viewer stopped taking frames: skip it, resume at a keyframe.
                sub.waiting_for_keyframe.store(true, Ordering::Relaxed);
                self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                stalled = true;
                continue;
            }
            sub.send_caps(caps);
            // Each call's feed stamps the frame with its own pipeline's clock.
            let mut out = buffer.copy();
            {
                let out = out.make_mut();
                out.set_pts(gst::ClockTime::NONE);
                out.set_dts(gst::ClockTime::NONE);
            }
            if sub.feed.push(out) {
                sub.waiting_for_keyframe.store(false, Ordering::Relaxed);
            } else {
                // Not running (yet): what it was given is gone, caps included. Start over
                // at a keyframe, with caps, once it takes buffers.
                *lock(&sub.caps) = None;
                sub.waiting_for_keyframe.store(true, Ordering::Relaxed);
            }
        }
        if stalled {
            self.request_keyframe(rung, false);
        }
        if moved {
            // The rung it left may have no viewer now.
            self.update_valves();
        }
    }

    /// Whether `rung`'s next frame is likely a keyframe anyway: it made no frame yet (an
    /// encoder starts with one), or one was asked for so recently that it may not have come.
    pub(super) fn keyframe_on_its_way(&self, rung: usize) -> bool {
        let none_yet = self
            .rung_frames
            .get(rung)
            .is_some_and(|frames| frames.load(Ordering::Relaxed) == 0);
        let asked = self
            .last_keyframe_request
            .get(rung)
            .is_some_and(|last| lock(last).is_some_and(|at| at.elapsed() < KEYFRAME_ON_ITS_WAY));
        none_yet || asked
    }

    /// `sub`'s direct feed just opened (see [`Subscription::start_at_keyframe`]): asks for
    /// its keyframe unless it got one or one is on its way. `pending`: not subscribed yet,
    /// so nothing to ask for.
    pub(super) fn opened(&self, sub: &Subscriber, opened: &Opened, pending: bool) {
        let on_its_way = opened
            .armed_at
            .is_some_and(|at| at.elapsed() < KEYFRAME_ON_ITS_WAY);
        tracing::debug!(
            codec = ?self.codec,
            held = opened.held,
            armed_ms = opened.armed_at.map(|at| at.elapsed().as_millis() as u64),
            "feed opened"
        );
        if !opened.pushed_held && !on_its_way && !pending {
            self.request_keyframe(sub.rung.load(Ordering::Relaxed), true);
        }
    }

    /// Asks the encoder for a keyframe now. Requests from viewers are rate-limited;
    /// `joining` ones are not (a new viewer must see a picture at once).
    pub(super) fn request_keyframe(&self, rung: usize, joining: bool) {
        let Some(last) = self.last_keyframe_request.get(rung) else {
            return;
        };
        {
            let mut last = lock(last);
            let recent = last.is_some_and(|t| t.elapsed() < KEYFRAME_MIN_INTERVAL);
            if recent && !joining {
                return;
            }
            *last = Some(Instant::now());
        }
        if self.codec.kind() != MediaKind::Video {
            return;
        }
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        let sink = match &*lock(&self.life) {
            Life::Running(running) => running.sinks.get(rung).cloned(),
            _ => None,
        };
        if sink.is_some_and(|sink| sink.send_event(event)) {
            self.stats.keyframes_forced.fetch_add(1, Ordering::Relaxed);
            self.keyframes_metric.inc();
        }
    }
}

/// A viewer's PLI/FIR reaches its feed as an upstream force-key-unit event: pass it on to
/// the shared encoder (rate-limited there) instead of to a feed that cannot act on it.
pub(super) fn forward_keyframe_requests(
    pad: &Option<gst::Pad>,
    stream: Weak<SharedStream>,
    rung: Arc<AtomicUsize>,
) {
    let Some(pad) = pad else {
        return;
    };
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        let is_key_request = info
            .event()
            .is_some_and(|e| gst_video::ForceKeyUnitEvent::is(e));
        if !is_key_request {
            return gst::PadProbeReturn::Ok;
        }
        if let Some(stream) = stream.upgrade() {
            stream.request_keyframe(rung.load(Ordering::Relaxed), false);
        }
        // Taken and `Handled`, not `Drop`: gstreamer-rs takes the event out of the probe's
        // info (leaving NULL) and unrefs it on `Drop`, and GStreamer 1.22 then unrefs the
        // NULL it reads back: a GStreamer-CRITICAL per keyframe request (each PLI or FIR
        // from the peer). `Handled` tells GStreamer the probe kept the event.
        drop(info.take_event());
        gst::PadProbeReturn::Handled
    });
}
