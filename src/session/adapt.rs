//! Which rung of a video ladder a call's link carries, from its bandwidth estimate.
//!
//! The estimate comes from `rtpgccbwe` (Google Congestion Control over transport-wide
//! feedback) or, for a peer without transport-cc, from the loss its receiver reports. Going
//! down is quick: a rung the estimate no longer carries is left at the next look. Going up
//! needs care: an estimator never estimates far above what is sent (GCC caps it at 1.5× the
//! received rate), so a call on a low rung cannot see that a higher one would fit. When the
//! estimate has sat at that cap for a while, the call tries the next rung up (a probe); if
//! the estimate then falls back, it returns, and waits twice as long before it tries that
//! rung again. The wait is kept per rung: a probe that works on a lower rung does not make a
//! rung that failed worth another glitch sooner (every failed probe is one for the viewer).
//!
//! A probe is judged over a trial of a few seconds, not at the first look: `rtpgccbwe` (1.22)
//! keeps a high estimate through a policer that drops a few per cent of a rung that does not
//! fit, and the first sign is the viewer asking for keyframe after keyframe (frames lost for
//! good). A probe during which it asks more than once has failed, whatever the estimate.

use std::time::{Duration, Instant};

/// Leave a rung when the estimate is below this share of its rate.
const DOWN_BELOW: f64 = 0.85;
/// A rung fits (when choosing where to go down to) within this share of the estimate.
const FITS_WITHIN: f64 = 0.85;
/// The estimate has headroom over the current rung: at this multiple of its rate.
const HEADROOM: f64 = 1.3;
/// Headroom held this long before the first probe of a rung; each failed probe doubles it.
const PROBE_AFTER: Duration = Duration::from_secs(8);
const PROBE_AFTER_MAX: Duration = Duration::from_secs(64);
/// How long a probe has to bring the estimate up to the new rung.
const PROBE_GRACE: Duration = Duration::from_secs(12);
/// A probe works once the new rung has been carried this long.
const PROBE_TRIAL: Duration = Duration::from_secs(4);
/// Keyframe requests a probe tolerates (a viewer may ask once as the rung changes).
const PROBE_KEYFRAME_REQUESTS: u64 = 1;

/// One call's place on the ladder.
#[derive(Debug)]
pub struct Adapter {
    /// Rates of the rungs, best first (kbit/s).
    rates: Vec<u32>,
    current: usize,
    /// Since when the estimate has had headroom over the current rung.
    headroom_since: Option<Instant>,
    /// Per rung: how long headroom must hold before a probe of it.
    probe_after: Vec<Duration>,
    /// A probe in progress.
    probing: Option<Probe>,
    /// The peer's keyframe requests so far (a running count).
    keyframe_requests: u64,
    /// Moves made (for the metrics).
    pub switches: u64,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    /// The rung it came from.
    from: usize,
    started: Instant,
    /// The peer's keyframe requests when it started.
    keyframe_requests: u64,
}

impl Adapter {
    /// Starts on `start`.
    pub fn new(rates: Vec<u32>, start: usize) -> Adapter {
        let current = start.min(rates.len().saturating_sub(1));
        let probe_after = vec![PROBE_AFTER; rates.len()];
        Adapter {
            rates,
            current,
            headroom_since: None,
            probe_after,
            probing: None,
            keyframe_requests: 0,
            switches: 0,
        }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// The rung to be on given the estimate now (kbit/s) and the peer's keyframe requests so
    /// far (a running count: PLI and FIR on our video).
    pub fn update(&mut self, estimate_kbps: u64, keyframe_requests: u64, now: Instant) -> usize {
        self.keyframe_requests = keyframe_requests;
        if self.rates.len() < 2 {
            return self.current;
        }
        let estimate = estimate_kbps as f64;
        let rate = |i: usize| f64::from(self.rates[i]);
        if let Some(probe) = self.probing {
            let asked = keyframe_requests.saturating_sub(probe.keyframe_requests);
            let trial = now.duration_since(probe.started);
            let carried = estimate >= rate(self.current) * DOWN_BELOW;
            if asked > PROBE_KEYFRAME_REQUESTS
                || estimate < rate(probe.from) * HEADROOM * DOWN_BELOW
                || (trial > PROBE_GRACE && !carried)
            {
                // The link pushed back (or the viewer keeps losing frames): return (lower
                // still if the estimate says so: one move, one keyframe), and try this rung
                // again later.
                self.probing = None;
                let wait = &mut self.probe_after[self.current];
                *wait = (*wait * 2).min(PROBE_AFTER_MAX);
                self.headroom_since = None;
                let fits = (probe.from..self.rates.len())
                    .find(|&i| rate(i) * DOWN_BELOW <= estimate)
                    .unwrap_or(self.rates.len() - 1);
                return self.go(fits);
            }
            if !(carried && trial >= PROBE_TRIAL) {
                return self.current;
            }
            // It carried the new rung through the trial: the probe worked.
            self.probing = None;
            self.probe_after[self.current] = PROBE_AFTER;
        }
        if estimate < rate(self.current) * DOWN_BELOW {
            let fits = (self.current + 1..self.rates.len())
                .find(|&i| rate(i) <= estimate * FITS_WITHIN / DOWN_BELOW)
                .unwrap_or(self.rates.len() - 1);
            self.headroom_since = None;
            return self.go(fits);
        }
        if self.current > 0 && estimate >= rate(self.current) * HEADROOM {
            let since = *self.headroom_since.get_or_insert(now);
            if now.duration_since(since) >= self.probe_after[self.current - 1] {
                self.headroom_since = None;
                self.probing = Some(Probe {
                    from: self.current,
                    started: now,
                    keyframe_requests: self.keyframe_requests,
                });
                return self.go(self.current - 1);
            }
        } else {
            self.headroom_since = None;
        }
        self.current
    }

    fn go(&mut self, rung: usize) -> usize {
        if rung != self.current {
            self.switches += 1;
            self.current = rung;
        }
        rung
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> Adapter {
        Adapter::new(vec![2000, 600, 150], 0)
    }

    #[test]
    fn a_falling_estimate_moves_down_at_once_to_a_rung_that_fits() {
        let mut a = ladder();
        let t = Instant::now();
        assert_eq!(a.update(2048, 0, t), 0);
        assert_eq!(a.update(1800, 0, t), 0, "within the margin: stays");
        assert_eq!(a.update(500, 0, t), 2, "600 does not fit in 500 either");
        let mut a = ladder();
        assert_eq!(a.update(900, 0, t), 1);
    }

    #[test]
    fn it_probes_up_after_holding_headroom_and_backs_off_when_the_probe_fails() {
        let mut a = Adapter::new(vec![2000, 600, 150], 2);
        let t = Instant::now();
        let at = |s: u64| t + Duration::from_secs(s);
        // 1.5× of 150: the most GCC estimates over what it receives.
        assert_eq!(a.update(225, 0, at(0)), 2);
        assert_eq!(a.update(225, 0, at(7)), 2, "not yet");
        assert_eq!(a.update(225, 0, at(8)), 1, "probe");
        assert_eq!(a.update(230, 0, at(9)), 1, "within the grace");
        assert_eq!(a.update(120, 0, at(10)), 2, "the link pushed back");
        assert_eq!(a.update(225, 0, at(11)), 2);
        assert_eq!(a.update(225, 0, at(26)), 2, "backed off to 16 s");
        assert_eq!(a.update(225, 0, at(27)), 1, "second probe");
        assert_eq!(a.update(700, 0, at(30)), 1, "it fits: stays");
        assert_eq!(a.update(700, 0, at(31)), 1, "through the trial: it worked");
        assert_eq!(a.update(600, 0, at(40)), 1, "and stays");
        assert_eq!(a.switches, 3);
    }

    #[test]
    fn a_probe_fails_when_the_viewer_keeps_asking_for_keyframes_whatever_the_estimate() {
        // rtpgccbwe through a policer: the estimate stays high while a few per cent of the
        // new rung is dropped, and the viewer asks for keyframe after keyframe.
        let mut a = Adapter::new(vec![1000, 300, 100], 2);
        let t = Instant::now();
        let at = |s: u64| t + Duration::from_secs(s);
        assert_eq!(a.update(1000, 5, at(0)), 2);
        assert_eq!(a.update(1000, 5, at(8)), 1, "probe");
        assert_eq!(
            a.update(900, 6, at(9)),
            1,
            "one request as the rung changed: tolerated"
        );
        assert_eq!(
            a.update(900, 7, at(10)),
            2,
            "a second: the rung does not fit"
        );
        assert_eq!(a.update(1000, 9, at(11)), 2);
        assert_eq!(a.update(1000, 9, at(26)), 2, "backed off to 16 s");
        assert_eq!(a.update(1000, 9, at(27)), 1, "second probe");
        assert_eq!(a.update(1000, 9, at(31)), 1, "a clean trial");
        assert_eq!(
            a.update(1000, 12, at(32)),
            1,
            "requests after it worked move nothing"
        );
        assert_eq!(a.switches, 3);
    }

    #[test]
    fn a_rung_that_failed_waits_longer_though_a_lower_probe_worked() {
        // 100 → 300 works, 300 → 1000 fails: the next try of 1000 waits 16 s, not 8.
        let mut a = Adapter::new(vec![1000, 300, 100], 2);
        let t = Instant::now();
        let at = |s: u64| t + Duration::from_secs(s);
        assert_eq!(a.update(1000, 0, at(0)), 2);
        assert_eq!(a.update(1000, 0, at(8)), 1, "probe of 300");
        assert_eq!(a.update(1000, 0, at(12)), 1, "it worked");
        assert_eq!(a.update(1000, 0, at(20)), 0, "probe of 1000");
        assert_eq!(
            a.update(200, 0, at(21)),
            2,
            "it failed, and 200 does not carry 300 either: straight down"
        );
        assert_eq!(a.update(1000, 0, at(22)), 2);
        assert_eq!(a.update(1000, 0, at(30)), 1, "300 again after 8 s");
        assert_eq!(a.update(1000, 0, at(34)), 1, "it worked");
        assert_eq!(a.update(1000, 0, at(49)), 1, "1000 waits 16 s");
        assert_eq!(a.update(1000, 0, at(50)), 0, "probe of 1000");
        assert_eq!(a.switches, 5);
    }

    #[test]
    fn one_rung_never_moves() {
        let mut a = Adapter::new(vec![1500], 0);
        assert_eq!(a.update(10, 0, Instant::now()), 0);
        let mut none = Adapter::new(vec![], 3);
        assert_eq!(none.update(10, 99, Instant::now()), 0);
    }
}
