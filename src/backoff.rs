//! The one backoff every retry loop uses: the pause doubles from `min` to `max` after each
//! failure, goes back to `min` after a success, and a wait on it ends at once on shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The pause before the next try; the one after will be twice as long (at most `max`).
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        pause
    }

    /// A try worked: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The pause after `failures` failures in a row (1 or more): `min`, twice that, … at
    /// most `max`. For a count kept elsewhere (a shared source's failures in the last minute).
    pub fn after_failures(&self, failures: usize) -> Duration {
        let doublings = u32::try_from(failures.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(16);
        self.min.saturating_mul(1 << doublings).min(self.max)
    }

    /// Sleeps `pause`; false (at once) if `cancel` fires first.
    pub async fn sleep(pause: Duration, cancel: &CancellationToken) -> bool {
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }

    /// Sleeps the next pause (see [`Backoff::next_pause`]); false (at once) on `cancel`.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let pause = self.next_pause();
        Backoff::sleep(pause, cancel).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(2);

    #[test]
    fn the_pause_doubles_up_to_the_most_and_a_success_starts_over() {
        let mut backoff = Backoff::new(MIN, MAX);
        let pauses: Vec<u128> = (0..6).map(|_| backoff.next_pause().as_millis()).collect();
        assert_eq!(pauses, [200, 400, 800, 1600, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.next_pause(), MIN);
    }

    #[test]
    fn a_count_of_failures_gives_the_same_pauses() {
        let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(4));
        let pauses: Vec<u128> = (1..=7)
            .map(|n| backoff.after_failures(n).as_millis())
            .collect();
        assert_eq!(pauses, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(backoff.after_failures(usize::MAX), Duration::from_secs(4));
    }

    #[tokio::test]
    async fn a_wait_ends_at_once_on_shutdown() {
        let cancel = CancellationToken::new();
        let mut backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let waiting = backoff.wait(&cancel);
        cancel.cancel();
        let started = tokio::time::Instant::now();
        assert!(!waiting.await);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(Backoff::sleep(Duration::from_millis(5), &CancellationToken::new()).await);
    }
}
