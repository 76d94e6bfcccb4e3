//! How fast one connection may send: a token bucket per connection.

use std::time::Instant;

/// How fast one connection may send: `per_second` on average, `burst` at once. A sender
/// refused more than `burst` times in a row is dropped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// The default fits a daemon peer setting up ten calls at once (each an answer, a dozen
/// candidates, a hangup: at 50/s such a peer lost answers and its calls failed ICE in the
/// soak) and still stops a flood within a fraction of a second.
impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit {
            per_second: 200.0,
            burst: 400,
        }
    }
}

/// A token bucket, refilled continuously.
pub(super) struct Bucket {
    pub(super) limit: RateLimit,
    tokens: f64,
    refilled: Instant,
    /// Messages refused since the last one let through.
    pub(super) refused_in_a_row: u32,
}

pub(super) enum Admit {
    Yes,
    Refuse,
    Drop,
}

impl Bucket {
    pub(super) fn new(limit: RateLimit) -> Bucket {
        Bucket {
            limit,
            tokens: f64::from(limit.burst),
            refilled: Instant::now(),
            refused_in_a_row: 0,
        }
    }

    pub(super) fn admit(&mut self, now: Instant) -> Admit {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens =
            (self.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            return Admit::Yes;
        }
        self.refused_in_a_row += 1;
        if self.refused_in_a_row > self.limit.burst {
            Admit::Drop
        } else {
            Admit::Refuse
        }
    }
}
