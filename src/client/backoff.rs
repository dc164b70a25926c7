//! Delays between reconnection attempts.

use std::time::Duration;

/// Exponential backoff with jitter: the n-th consecutive failure waits
/// `min(initial * 2^n, max)`, plus up to a quarter of that at random so that many clients
/// cut off together do not reconnect together.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// Starts again from the initial delay, after a connection that worked.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.next_delay_with(rand::random::<f64>())
    }

    /// The delay before the next attempt, `jitter` in `[0, 1)` choosing the random part.
    fn next_delay_with(&mut self, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.failures);
        self.failures = self.failures.saturating_add(1);
        let delay = self.initial.saturating_mul(factor).min(self.max);
        delay + delay.mul_f64(jitter.clamp(0.0, 1.0) / 4.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_the_initial_delay_up_to_the_cap() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS);
        let delays: Vec<_> = (0..6).map(|_| backoff.next_delay_with(0.0)).collect();
        assert_eq!(
            delays,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS);
        assert_eq!(
            backoff.next_delay_with(0.999_999),
            100 * MS + Duration::from_nanos(24_999_975)
        );
        let mut backoff = Backoff::new(100 * MS, 1000 * MS);
        let delay = backoff.next_delay();
        assert!(delay >= 100 * MS && delay < 125 * MS, "{delay:?}");
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS);
        backoff.next_delay_with(0.0);
        backoff.next_delay_with(0.0);
        backoff.reset();
        assert_eq!(backoff.next_delay_with(0.0), 100 * MS);
    }

    #[test]
    fn never_overflows() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..100 {
            assert!(backoff.next_delay_with(0.5) <= Duration::from_millis(37_500));
        }
    }
}
