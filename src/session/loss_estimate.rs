//! A bandwidth estimate for peers that send no transport-wide feedback (no transport-cc):
//! from the loss their RTCP feedback shows on our video, once a second. It is GCC's
//! loss-based controller (draft-ietf-rmcat-gcc-02 §6), which `rtpgccbwe` does not offer on
//! its own: above 10 % loss the rate falls by half the loss, below 2 % it grows by 5 %, and in
//! between it holds. Coarser than transport-cc, but it moves a viewer off a rung its link
//! cannot carry.
//!
//! The round trip the reports give (RTCP's LSR/DLSR, worked out by rtpbin) stands in for
//! transport-cc's delay signal, coarsely: a round trip well above the lowest of the last half
//! minute means a queue is building on the path, which happens before that queue drops
//! anything. Then the estimate stops growing (100 ms over), or falls by 15 % a second (250 ms
//! over), whatever the loss says.
//!
//! The loss is the larger of two: the receiver reports' fraction lost, and the share of sent
//! packets the peer asked for again (NACK). With retransmission on, the receiver counts a
//! retransmitted packet as received, and its reports show almost no loss on a link losing
//! most packets (measured: a 1 Mbit/s stream policed to 300 kbit/s reported 0 % in every
//! report). NACKs over-count a little (a receiver asks for a lost packet more than once), which
//! errs on the side of a lower rung.
//!
//! Like GCC's own, the estimate never runs far ahead of what is sent (at most 1.5× of it): a
//! clean link says only that the rate sent fits, not how much more would. A call on a low
//! rung climbs by probing the next one (see `adapt`).

use std::collections::VecDeque;
use std::time::Duration;

/// Loss above this share lowers the estimate...
const LOSSY: f64 = 0.10;
/// ...loss below it raises the estimate.
const CLEAN: f64 = 0.02;
/// Growth per clean report.
const GROWTH: f64 = 1.05;
/// The estimate stays within this multiple of the rate sent.
const AHEAD_OF_SENT: f64 = 1.5;
/// A round trip this much above the path's lowest: a queue is building; stop growing...
const QUEUING: Duration = Duration::from_millis(100);
/// ...this much above: the queue is long; come down.
const QUEUED: Duration = Duration::from_millis(250);
/// What a long queue takes off per update.
const QUEUED_DECREASE: f64 = 0.85;
/// The path's lowest round trip is the lowest of this many updates (a second apart).
const ROUND_TRIPS_KEPT: usize = 30;

#[derive(Debug)]
pub struct LossEstimate {
    kbps: f64,
    min_kbps: f64,
    max_kbps: f64,
    round_trips: VecDeque<Duration>,
}

/// What a receiver report of the peer says about one of our streams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReceiverReport {
    /// Lost since the previous report, out of 256.
    pub fraction_lost: u32,
    /// Extended highest sequence number received (tells one report from the next).
    pub highest_seq: u32,
}

impl ReceiverReport {
    pub fn loss(&self) -> f64 {
        f64::from(self.fraction_lost.min(255)) / 256.0
    }
}

impl LossEstimate {
    /// Starts at `start_kbps` (what is sent now), bounded by `min_kbps` and `max_kbps`.
    pub fn new(start_kbps: u32, min_kbps: u32, max_kbps: u32) -> LossEstimate {
        let max = f64::from(max_kbps.max(min_kbps));
        LossEstimate {
            kbps: f64::from(start_kbps).clamp(f64::from(min_kbps), max),
            min_kbps: f64::from(min_kbps),
            max_kbps: max,
            round_trips: VecDeque::with_capacity(ROUND_TRIPS_KEPT),
        }
    }

    pub fn kbps(&self) -> u32 {
        self.kbps as u32
    }

    /// How far `rtt` is above the path's lowest recent round trip (this one included).
    fn queueing(&mut self, rtt: Duration) -> Duration {
        if self.round_trips.len() == ROUND_TRIPS_KEPT {
            self.round_trips.pop_front();
        }
        self.round_trips.push_back(rtt);
        let lowest = self.round_trips.iter().min().copied().unwrap_or(rtt);
        rtt.saturating_sub(lowest)
    }

    /// Takes the loss (0 to 1) seen since the last update, the latest round trip (if the
    /// peer's reports gave one) and the rate sent; returns the estimate.
    pub fn update(&mut self, loss: f64, round_trip: Option<Duration>, sent_kbps: u32) -> u32 {
        let queue = round_trip.map_or(Duration::ZERO, |rtt| self.queueing(rtt));
        if loss > LOSSY {
            self.kbps *= 1.0 - 0.5 * loss.min(1.0);
        } else if queue > QUEUED {
            self.kbps *= QUEUED_DECREASE;
        } else if loss < CLEAN && queue <= QUEUING {
            self.kbps *= GROWTH;
        }
        self.kbps = self
            .kbps
            .min(f64::from(sent_kbps) * AHEAD_OF_SENT)
            .clamp(self.min_kbps, self.max_kbps);
        self.kbps()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_loss_brings_the_estimate_down_fast() {
        let mut e = LossEstimate::new(1000, 50, 1000);
        // 70 % loss (a 1 Mbit/s stream on a 300 kbit/s link): -35 % a second.
        assert_eq!(e.update(0.7, None, 1000), 650);
        assert_eq!(e.update(0.7, None, 1000), 422);
        assert_eq!(e.update(0.7, None, 300), 274);
    }

    #[test]
    fn moderate_loss_holds_and_clean_seconds_grow_to_the_cap() {
        let mut e = LossEstimate::new(300, 50, 400);
        assert_eq!(e.update(0.05, None, 300), 300, "5 %: hold");
        assert_eq!(e.update(0.0, None, 300), 315);
        for _ in 0..40 {
            e.update(0.0, None, 300);
        }
        assert_eq!(e.kbps(), 400);
    }

    #[test]
    fn a_clean_link_raises_it_only_a_little_above_what_is_sent() {
        let mut e = LossEstimate::new(100, 50, 1000);
        for _ in 0..40 {
            e.update(0.0, None, 100);
        }
        assert_eq!(e.kbps(), 150);
    }

    #[test]
    fn never_below_the_floor() {
        let mut e = LossEstimate::new(100, 50, 1000);
        for _ in 0..20 {
            e.update(1.0, None, 1000);
        }
        assert_eq!(e.kbps(), 50);
    }

    #[test]
    fn a_growing_round_trip_stops_growth_then_brings_the_estimate_down() {
        let ms = |n| Some(Duration::from_millis(n));
        let mut e = LossEstimate::new(300, 50, 1000);
        // A clean path at 40 ms: grows.
        assert_eq!(e.update(0.0, ms(40), 300), 315);
        assert_eq!(e.update(0.0, ms(45), 315), 330);
        // A queue builds (no loss yet): holds at +100..250 ms, falls beyond.
        assert_eq!(e.update(0.0, ms(180), 330), 330);
        assert_eq!(e.update(0.0, ms(400), 330), 281);
        assert_eq!(e.update(0.0, ms(400), 281), 238);
        // The queue drains: grows again.
        assert_eq!(e.update(0.0, ms(50), 238), 250);
    }

    #[test]
    fn a_path_that_got_longer_is_its_new_normal_after_half_a_minute() {
        let ms = |n| Some(Duration::from_millis(n));
        let mut e = LossEstimate::new(300, 50, 1000);
        e.update(0.0, ms(20), 300);
        // Moved to a path 400 ms long (an ICE restart onto mobile data, say).
        for _ in 0..ROUND_TRIPS_KEPT {
            e.update(0.0, ms(420), 1000);
        }
        let before = e.kbps();
        assert!(e.update(0.0, ms(420), 1000) > before, "still held back");
    }

    #[test]
    fn a_report_gives_its_loss() {
        let r = ReceiverReport {
            fraction_lost: 64,
            highest_seq: 1,
        };
        assert_eq!(r.loss(), 0.25);
    }
}
