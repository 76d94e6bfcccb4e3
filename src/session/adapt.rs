//! Which rung of a video ladder a call's link carries, from its bandwidth estimate.
//!
//! The estimate comes from `rtpgccbwe` (Google Congestion Control over transport-wide
//! feedback) or, for a peer without transport-cc, from the loss its receiver reports. Going
//! down is quick: a rung the estimate no longer carries is left at the next look. Going up
//! needs care: an estimator never estimates far above what is sent (GCC caps it at 1.5× the
//! received rate), so a call on a low rung cannot see that a higher one would fit. When the
//! estimate has sat at that cap for a while, the call tries the next rung up (a probe); if
//! the estimate then falls back, it returns, and waits twice as long before the next try.

use std::time::{Duration, Instant};

/// Leave a rung when the estimate is below this share of its rate.
const DOWN_BELOW: f64 = 0.85;
/// A rung fits (when choosing where to go down to) within this share of the estimate.
const FITS_WITHIN: f64 = 0.85;
/// The estimate has headroom over the current rung: at this multiple of its rate.
const HEADROOM: f64 = 1.3;
/// Headroom held this long before the first probe; each failed probe doubles it.
const PROBE_AFTER: Duration = Duration::from_secs(8);
const PROBE_AFTER_MAX: Duration = Duration::from_secs(64);
/// How long a probe has to bring the estimate up to the new rung.
const PROBE_GRACE: Duration = Duration::from_secs(12);

/// One call's place on the ladder.
#[derive(Debug)]
pub struct Adapter {
    /// Rates of the rungs, best first (kbit/s).
    rates: Vec<u32>,
    current: usize,
    /// Since when the estimate has had headroom over the current rung.
    headroom_since: Option<Instant>,
    probe_after: Duration,
    /// A probe in progress: the rung it came from and when it started.
    probing: Option<(usize, Instant)>,
    /// Moves made (for the metrics).
    pub switches: u64,
}

impl Adapter {
    /// Starts on `start`.
    pub fn new(rates: Vec<u32>, start: usize) -> Adapter {
        let current = start.min(rates.len().saturating_sub(1));
        Adapter {
            rates,
            current,
            headroom_since: None,
            probe_after: PROBE_AFTER,
            probing: None,
            switches: 0,
        }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// The rung to be on given the estimate now (kbit/s).
    pub fn update(&mut self, estimate_kbps: u64, now: Instant) -> usize {
        if self.rates.len() < 2 {
            return self.current;
        }
        let estimate = estimate_kbps as f64;
        let rate = |i: usize| f64::from(self.rates[i]);
        if let Some((from, started)) = self.probing {
            if estimate >= rate(self.current) * DOWN_BELOW {
                // It carries the new rung: the probe worked.
                self.probing = None;
                self.probe_after = PROBE_AFTER;
            } else if estimate < rate(from) * HEADROOM * DOWN_BELOW
                || now.duration_since(started) > PROBE_GRACE
            {
                // The link pushed back: return, and try again later.
                self.probing = None;
                self.probe_after = (self.probe_after * 2).min(PROBE_AFTER_MAX);
                self.headroom_since = None;
                return self.go(from);
            } else {
                return self.current;
            }
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
            if now.duration_since(since) >= self.probe_after {
                self.headroom_since = None;
                self.probing = Some((self.current, now));
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
        assert_eq!(a.update(2048, t), 0);
        assert_eq!(a.update(1800, t), 0, "within the margin: stays");
        assert_eq!(a.update(500, t), 2, "600 does not fit in 500 either");
        let mut a = ladder();
        assert_eq!(a.update(900, t), 1);
    }

    #[test]
    fn it_probes_up_after_holding_headroom_and_backs_off_when_the_probe_fails() {
        let mut a = Adapter::new(vec![2000, 600, 150], 2);
        let t = Instant::now();
        let at = |s: u64| t + Duration::from_secs(s);
        // 1.5× of 150: the most GCC estimates over what it receives.
        assert_eq!(a.update(225, at(0)), 2);
        assert_eq!(a.update(225, at(7)), 2, "not yet");
        assert_eq!(a.update(225, at(8)), 1, "probe");
        assert_eq!(a.update(230, at(9)), 1, "within the grace");
        assert_eq!(a.update(120, at(10)), 2, "the link pushed back");
        assert_eq!(a.update(225, at(11)), 2);
        assert_eq!(a.update(225, at(26)), 2, "backed off to 16 s");
        assert_eq!(a.update(225, at(27)), 1, "second probe");
        assert_eq!(a.update(700, at(30)), 1, "it fits: stays");
        assert_eq!(a.switches, 3);
    }

    #[test]
    fn one_rung_never_moves() {
        let mut a = Adapter::new(vec![1500], 0);
        assert_eq!(a.update(10, Instant::now()), 0);
    }
}
