//! Codecs whose encoder probe ran out of time are probed again, not dropped for the
//! daemon's life: a 5 s probe that times out says the machine was busy at start-up (seen: a
//! VP8 probe took 5.2 s on a loaded machine), not that the encoder is broken. Each is tried
//! again after a wait that doubles (30 s up to 10 min, at most [`MAX_TRIES`] times), and
//! sooner (on a blocking thread, at most once per 30 s) when a call asks for the codecs of its
//! kind; the call itself goes on with what works now.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Encoders;
use crate::backoff::Backoff;
use crate::media::codecs::{Codec, MediaKind};
use crate::media::encoder::{self, ProbeResult};
use crate::sync::lock;

const FIRST_WAIT: Duration = Duration::from_secs(30);
const LONGEST_WAIT: Duration = Duration::from_secs(600);
/// Probes again this many times at most; then the codec stays off, with a warning.
const MAX_TRIES: u32 = 8;

/// A codec waiting to be probed again.
#[derive(Debug)]
pub(super) struct Pending {
    next: Instant,
    /// The waits between probes: [`FIRST_WAIT`] doubling up to [`LONGEST_WAIT`].
    backoff: Backoff,
    tries: u32,
    /// A probe of it is running (on a blocking thread).
    running: bool,
    /// When it was last probed: a call starts another at most [`FIRST_WAIT`] after it (calls
    /// and snapshots polled in a burst must not spend every try, nor load a busy machine).
    last: Instant,
}

impl Pending {
    pub(super) fn new() -> Pending {
        let mut backoff = Backoff::new(FIRST_WAIT, LONGEST_WAIT);
        Pending {
            next: Instant::now() + backoff.next_pause(),
            backoff,
            tries: 0,
            running: false,
            last: Instant::now(),
        }
    }

    fn may_probe_now(&self) -> bool {
        !self.running && self.last.elapsed() >= FIRST_WAIT
    }
}

/// Whether probing found no encoder for a codec only because some probe ran out of time.
pub(super) fn timed_out(probes: &[encoder::Probe], codec: Codec) -> bool {
    probes
        .iter()
        .any(|p| p.codec == codec && p.result == ProbeResult::TimedOut)
}

impl Encoders {
    /// The encoder element each usable codec has, by codec.
    pub fn chosen(&self) -> Vec<(Codec, String)> {
        let mut chosen: Vec<(Codec, String)> = lock(&self.chosen)
            .iter()
            .map(|(codec, encoder)| (*codec, encoder.clone()))
            .collect();
        chosen.sort_by_key(|(codec, _)| codec.name());
        chosen
    }

    /// Codecs of `kind` waiting to be probed again.
    pub fn pending(&self, kind: MediaKind) -> Vec<Codec> {
        lock(&self.pending)
            .keys()
            .copied()
            .filter(|c| c.kind() == kind)
            .collect()
    }

    /// A call wants `kind`: probe its waiting codecs now, off this thread (the call does
    /// not wait for it).
    pub(super) fn reprobe_now(&self, kind: MediaKind) {
        let due: Vec<Codec> = {
            let mut pending = lock(&self.pending);
            pending
                .iter_mut()
                .filter(|(codec, p)| codec.kind() == kind && p.may_probe_now())
                .map(|(codec, p)| {
                    p.running = true;
                    *codec
                })
                .collect()
        };
        if due.is_empty() {
            return;
        }
        let (Some(runtime), Some(me)) = (self.runtime.as_ref(), self.me.upgrade()) else {
            for codec in due {
                if let Some(p) = lock(&self.pending).get_mut(&codec) {
                    p.running = false;
                }
            }
            return;
        };
        // Not tracked, on purpose: shutdown does not wait for a probe (seconds of encoding)
        // it would throw away; one per waiting codec at most (`running`).
        runtime.spawn_blocking(move || {
            for codec in due {
                me.reprobe(codec);
            }
        });
    }

    /// Probes the waiting codecs whose time has come; blocks (a few seconds per probe).
    pub fn reprobe_due(&self) {
        let now = Instant::now();
        let due: Vec<Codec> = {
            let mut pending = lock(&self.pending);
            pending
                .iter_mut()
                .filter(|(_, p)| !p.running && p.next <= now)
                .map(|(codec, p)| {
                    p.running = true;
                    *codec
                })
                .collect()
        };
        for codec in due {
            self.reprobe(codec);
        }
    }

    /// When the next waiting codec is due (none: nothing waits).
    pub fn next_reprobe(&self) -> Option<Instant> {
        lock(&self.pending).values().map(|p| p.next).min()
    }

    /// Probes `codec` again (it is marked running); it is chosen, waits longer, or is given up.
    fn reprobe(&self, codec: Codec) {
        let (pinned, excluded) = match codec.kind() {
            MediaKind::Video => self
                .profile()
                .video
                .as_ref()
                .map(|v| (v.encoders.clone(), v.exclude_encoders.clone())),
            MediaKind::Audio => self
                .profile()
                .audio
                .as_ref()
                .map(|a| (a.encoders.clone(), a.exclude_encoders.clone())),
        }
        .unwrap_or_default();
        let (chosen, probes) = encoder::choose(codec, &pinned, &excluded);
        let mut pending = lock(&self.pending);
        match chosen {
            Some(encoder) => {
                tracing::info!(?codec, %encoder, "encoder chosen on a later probe");
                pending.remove(&codec);
                lock(&self.chosen).insert(codec, encoder);
            }
            None => {
                let again = timed_out(&probes, codec);
                let Some(p) = pending.get_mut(&codec) else {
                    return;
                };
                p.tries += 1;
                p.running = false;
                p.last = Instant::now();
                if again && p.tries < MAX_TRIES {
                    let wait = p.backoff.next_pause();
                    p.next = Instant::now() + wait;
                    tracing::info!(
                        ?codec,
                        tries = p.tries,
                        ?wait,
                        "encoder probe ran out of time again; will retry"
                    );
                } else {
                    tracing::warn!(
                        ?codec,
                        tries = p.tries,
                        "no working encoder; codec not offered"
                    );
                    pending.remove(&codec);
                }
            }
        }
    }

    /// Runs [`Encoders::reprobe_due`] whenever a waiting codec is due, until none waits or
    /// `shutdown`; on the blocking pool.
    pub async fn keep_reprobing(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        while let Some(next) = self.next_reprobe() {
            let at = tokio::time::Instant::from_std(next.max(Instant::now()));
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = shutdown.cancelled() => return,
            }
            let me = Arc::clone(&self);
            // Shutdown does not wait for a probe (a few seconds of encoding) to finish.
            tokio::select! {
                probed = tokio::task::spawn_blocking(move || me.reprobe_due()) => {
                    if probed.is_err() {
                        return;
                    }
                }
                _ = shutdown.cancelled() => return,
            }
            // A codec still running (a call's probe) is not due: do not spin on it.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The pending map for the codecs whose probes all ran out of time.
pub(super) fn pending_from(
    codecs: &[Codec],
    chosen: &HashMap<Codec, String>,
    probes: &[encoder::Probe],
) -> Vec<Codec> {
    codecs
        .iter()
        .copied()
        .filter(|c| !chosen.contains_key(c) && timed_out(probes, *c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::profile::Profile;
    use std::path::Path;

    /// A codec whose start-up probe ran out of time is not offered, and is once a later
    /// probe works; a call asking for its kind starts that probe at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_codec_that_timed_out_is_offered_once_a_later_probe_works() {
        gst::init().unwrap();
        let text = "name='t'\n[video]\nsource='test'\ncodecs=['vp8']\n";
        let profile = Profile::parse(text, Path::new("t.toml")).unwrap();
        let encoders = Encoders::new(Arc::new(profile), HashMap::new());
        let mut pending = Pending::new();
        // Its start-up probe was a while ago: a call may start another.
        pending.last = Instant::now() - FIRST_WAIT;
        lock(&encoders.pending).insert(Codec::Vp8, pending);
        assert!(encoders.codecs(MediaKind::Video).is_empty(), "not yet");
        assert_eq!(encoders.pending(MediaKind::Video), [Codec::Vp8]);
        // The ask above started a probe (vp8enc works here): it lands within seconds.
        let deadline = Instant::now() + Duration::from_secs(20);
        while encoders.codecs(MediaKind::Video).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(encoders.codecs(MediaKind::Video), [Codec::Vp8]);
        assert!(encoders.pending(MediaKind::Video).is_empty());
        assert_eq!(encoders.next_reprobe(), None);
    }

    /// Calls in a burst start one probe, not one each: a codec probed less than 30 s ago
    /// waits for its schedule.
    #[test]
    fn a_burst_of_calls_probes_a_waiting_codec_at_most_once() {
        gst::init().unwrap();
        let text = "name='t'\n[video]\nsource='test'\ncodecs=['vp8']\n";
        let profile = Profile::parse(text, Path::new("t.toml")).unwrap();
        let encoders = Encoders::new(Arc::new(profile), HashMap::new());
        lock(&encoders.pending).insert(Codec::Vp8, Pending::new());
        for _ in 0..20 {
            assert!(encoders.codecs(MediaKind::Video).is_empty());
        }
        let pending = lock(&encoders.pending);
        let p = pending.get(&Codec::Vp8).expect("still waiting");
        assert!(!p.running, "a call started a probe within 30 s of the last");
        assert_eq!(p.tries, 0);
    }
}
