//! What a call holds: a [`Subscription`] (its branch is fed while it lives) or a [`Warm`]
//! (the stream runs, nothing fed). Dropping the last holder lets the stream linger, then stop.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use super::feed::Feed;
use super::stream::{SharedStream, Subscriber};
use super::{Encoders, recent};
use crate::media::codecs::{Codec, MediaKind};
use crate::media::profile::Rung;
use crate::sync::lock;

/// A call's hold on a shared stream; dropping it unsubscribes. It receives frames only once
/// [`Subscription::activate`]d.
pub struct Subscription {
    pub(super) stream: Arc<SharedStream>,
    pub(super) id: u64,
    pub(super) owner: Weak<Encoders>,
    pub(super) pending: Mutex<Option<Arc<Subscriber>>>,
    /// The same subscriber, pending or not: its feed opens once the call's connection is up.
    pub(super) subscriber: Arc<Subscriber>,
}

impl Subscription {
    /// Its source failed (or went quiet) and has not delivered since: the device is lost
    /// (unplugged), and retried.
    pub fn source_lost(&self) -> bool {
        self.stream.lost.load(Ordering::Relaxed)
    }

    /// Starts feeding the call's branch (a direct feed: once its connection is up, too).
    /// Only once it runs in its pipeline: a feed stamps each frame with its pipeline's clock
    /// and base time, and before it runs that base time is 0 — a frame stamped then lies
    /// hours in the future, and webrtcbin's clocksync holds the track (it sent one packet,
    /// then nothing: the calls without audio).
    pub fn activate(&self) {
        if let Some(subscriber) = lock(&self.pending).take() {
            if let Err(err) = subscriber.feed.attach() {
                tracing::warn!(%err, "cannot feed a send branch");
            }
            self.stream.subscribe(subscriber);
        }
    }

    /// The call starts connecting (its descriptions are set, or about to be): a video feed
    /// keeps its frames until the connection is up, from the keyframe its rung made just
    /// before if there is one (see [`recent`]), else from one asked for now — unless one is
    /// on its way already — which the encoder makes while ICE and DTLS run (see [`feed`]).
    /// Once per connection.
    pub fn connecting(&self) {
        let Feed::Direct(direct) = &self.subscriber.feed else {
            return;
        };
        if self.stream.codec.kind() != MediaKind::Video || self.is_pending() {
            return;
        }
        let rung = self.subscriber.rung.load(Ordering::Relaxed);
        let Some(recent) = self.stream.recent.get(rung) else {
            return;
        };
        let (armed, from_recent) = recent.start_from(|frames| {
            let from_recent = !frames.is_empty();
            (direct.arm(frames), from_recent)
        });
        if armed && !from_recent && !self.stream.keyframe_on_its_way(rung) {
            self.stream.request_keyframe(rung, true);
        }
    }

    /// The call's connection just came up (or its peer is heard again): a direct feed opens
    /// now, pushing the keyframe it kept since [`Subscription::connecting`] (and what
    /// followed) first. Without one, the viewer starts over at a fresh keyframe, asked for
    /// now rather than left to the viewer's PLI a round trip later — unless the one asked for
    /// while connecting is still on its way.
    pub fn start_at_keyframe(&self) {
        let sub = &self.subscriber;
        let pending = self.is_pending();
        // A frame after the opening must be a keyframe, unless kept frames (from a keyframe
        // on) go first.
        sub.waiting_for_keyframe.store(true, Ordering::Relaxed);
        let Feed::Direct(direct) = &sub.feed else {
            self.stream
                .request_keyframe(sub.rung.load(Ordering::Relaxed), true);
            return;
        };
        if let Some(opened) = direct.open_unless_kept() {
            self.stream.opened(sub, &opened, pending);
            return;
        }
        // Pushing the kept frames runs the call's send path: on a blocking thread, not the
        // call's task.
        let (sub, stream) = (Arc::clone(sub), Arc::clone(&self.stream));
        let open = move || {
            let Feed::Direct(direct) = &sub.feed else {
                return;
            };
            let mut last = None;
            let opened = direct.open(|held| {
                sub.send_caps(held.caps.as_deref());
                last = direct.push_held(held, last);
                if last.is_some() {
                    sub.waiting_for_keyframe.store(false, Ordering::Relaxed);
                }
                last.is_some()
            });
            stream.opened(&sub, &opened, pending);
        };
        crate::media::work::off_worker(open);
    }

    /// Asks for a keyframe on this subscriber's rung (rate-limited as a viewer's request is).
    pub fn request_keyframe(&self) {
        self.stream
            .request_keyframe(self.subscriber.rung.load(Ordering::Relaxed), false);
    }

    pub(super) fn is_pending(&self) -> bool {
        lock(&self.pending).is_some()
    }

    pub fn codec(&self) -> Codec {
        self.stream.codec
    }

    /// The loss (per cent) the call's peer reports on this stream: an audio encoder protects
    /// every call against the worst (see `loss.rs`).
    pub fn report_loss(&self, percent: u8) {
        let before = self
            .subscriber
            .loss_percent
            .swap(percent, Ordering::Relaxed);
        if before != percent {
            self.stream.protect_against_loss();
        }
    }

    /// The renditions this call can move between, best first, at their current rates
    /// (empty: one, no choice).
    pub fn rungs(&self) -> Vec<Rung> {
        self.stream.current_rungs()
    }

    /// The rung this call gets now.
    pub fn rung(&self) -> usize {
        if let Some(pending) = lock(&self.pending).as_ref() {
            return pending.rung.load(Ordering::Relaxed);
        }
        lock(&self.stream.subscribers)
            .iter()
            .find(|s| s.id == self.id)
            .map_or(0, |s| s.rung.load(Ordering::Relaxed))
    }

    /// Moves this call to `rung` (an index into [`Subscription::rungs`]) at that rung's next
    /// keyframe; before activation it simply starts there.
    pub fn set_rung(&self, rung: usize) {
        if self.stream.rungs.is_empty() {
            return;
        }
        let rung = rung.min(self.stream.rungs.len() - 1);
        if let Some(pending) = lock(&self.pending).as_ref() {
            pending.rung.store(rung, Ordering::Relaxed);
            pending.target.store(rung, Ordering::Relaxed);
            return;
        }
        self.stream.move_to(self.id, rung);
    }
}

/// Keeps a shared stream running (see [`Encoders::warm`]); it lingers and stops, as after a
/// call, once the last holder lets go.
pub struct Warm {
    pub(super) stream: Arc<SharedStream>,
    pub(super) owner: Weak<Encoders>,
}

impl Warm {
    pub fn codec(&self) -> Codec {
        self.stream.codec
    }

    /// A call will start connecting on this stream within moments (its offer is on its
    /// way): asks for the keyframe it will start from now, so that the encoder makes it
    /// while the offer and answer travel (see [`recent`]). Not for a stream that made no
    /// frame yet (its first is a keyframe), nor one that has just made a keyframe the call
    /// can start from.
    pub fn expect_call(&self) {
        let stream = &self.stream;
        let just_made = stream
            .recent
            .first()
            .is_some_and(|r| r.has_keyframe_within(recent::MAX_AGE / 2));
        if stream.codec.kind() == MediaKind::Video && !stream.keyframe_on_its_way(0) && !just_made {
            // Calls start on the first rung. Rate-limited, as a viewer's request is: `call`
            // costs a peer nothing, and each keyframe costs every viewer bandwidth (a call that
            // misses out asks, unlimited, as it connects).
            stream.request_keyframe(0, false);
        }
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.upgrade()
            && owner.release(&self.stream)
        {
            owner.schedule_stop(Arc::clone(&self.stream));
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stream.unsubscribe(self.id);
        if let Some(owner) = self.owner.upgrade()
            && owner.release(&self.stream)
        {
            owner.schedule_stop(Arc::clone(&self.stream));
        }
    }
}
