//! How often a call may send RTCP, hence how soon it can ask for a lost packet again.
//!
//! RTCP gets 5 % of a session's bandwidth (RFC 3550), and under AVPF (RFC 4585) a receiver
//! may send one early feedback packet (a NACK) per regular RTCP interval; the next must
//! wait. GStreamer 1.22's `rtpsession` works out the session's bandwidth from the bit rate of
//! what *it sends*: a side that mostly receives video (a viewer) gets ~3–7 kbit/s of RTCP,
//! an interval of 0.5–0.8 s, and its second NACK within that interval waits up to that long
//! (measured: 120–290 ms late, a quarter of them) — past a 300 ms jitterbuffer, so the frame
//! is lost although the sender retransmits at once. Telling the session its real bandwidth,
//! sent plus received, gives the interval the RFC means for it (~150 ms for 500 kbit/s).

use gst::prelude::*;
use std::time::Instant;

/// Above this the budget stops growing: a peer that floods us cannot make us answer with
/// RTCP without bound (at 4 Mbit/s, 200 kbit/s of RTCP: ~25 ms between packets).
const MAX_SESSION_BPS: f64 = 4_000_000.0;

/// Below this GStreamer uses its own default (64 kbit/s) anyway.
const MIN_SESSION_BPS: f64 = 64_000.0;

/// A shorter span than this between two readings says nothing reliable about a rate.
const MIN_SPAN_SECS: f64 = 0.5;

/// The octets a session carried so far, and when that was read.
#[derive(Debug, Default)]
pub struct SessionBandwidth {
    last: Option<(u64, Instant)>,
}

impl SessionBandwidth {
    /// Reads what the call's RTP session sent and received since the last call, and sets the
    /// session's bandwidth to that rate (bit/s; bounded). Returns the rate set. Call once a
    /// second on the session task, for a call that receives video.
    pub fn update(&mut self, webrtcbin: &gst::Element, now: Instant) -> Option<f64> {
        let session = super::webrtc::rtp_session(webrtcbin)?;
        let octets = octets_carried(&session);
        let (before, then) = self.last.replace((octets, now))?;
        let rate = rate_bps(before, then, octets, now)?;
        session.set_property("bandwidth", rate);
        Some(rate)
    }
}

/// Bit/s between two readings of a byte counter, within the bounds above; `None` when the
/// span is too short or the counter went back (a session replaced).
fn rate_bps(before: u64, then: Instant, octets: u64, now: Instant) -> Option<f64> {
    let span = now.checked_duration_since(then)?.as_secs_f64();
    if span < MIN_SPAN_SECS || octets < before {
        return None;
    }
    let bps = (octets - before) as f64 * 8.0 / span;
    Some(bps.clamp(MIN_SESSION_BPS, MAX_SESSION_BPS))
}

/// Octets sent by our sources plus octets received from the peer's, over the session's life.
fn octets_carried(session: &glib::Object) -> u64 {
    super::webrtc::source_stats(session)
        .iter()
        .map(|source| {
            let field = |name| source.get::<u64>(name).unwrap_or(0);
            field("octets-sent").saturating_add(field("octets-received"))
        })
        .fold(0u64, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_rate_is_bits_per_second_within_bounds() {
        let then = Instant::now();
        let now = then + Duration::from_secs(2);
        // 125 000 octets in 2 s: 500 kbit/s.
        assert_eq!(rate_bps(0, then, 125_000, now), Some(500_000.0));
        // Nearly idle: GStreamer's floor.
        assert_eq!(rate_bps(0, then, 10, now), Some(MIN_SESSION_BPS));
        // A flood: capped.
        assert_eq!(rate_bps(0, then, u64::MAX, now), Some(MAX_SESSION_BPS));
    }

    #[test]
    fn no_rate_from_a_short_span_or_a_counter_that_went_back() {
        let then = Instant::now();
        assert_eq!(
            rate_bps(0, then, 1000, then + Duration::from_millis(100)),
            None
        );
        assert_eq!(
            rate_bps(5000, then, 1000, then + Duration::from_secs(1)),
            None
        );
        assert_eq!(rate_bps(0, then + Duration::from_secs(1), 1000, then), None);
    }
}
