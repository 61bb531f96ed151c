//! Restart and re-init backoff: 1 s doubling to 64 s, reset after a healthy
//! period. A plain value type so the policy is unit-tested without time.

use std::time::Duration;

/// Backoff state for one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    healthy_after: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(
            Duration::from_secs(1),
            Duration::from_secs(64),
            Duration::from_secs(300),
        )
    }
}

impl Backoff {
    /// A policy starting at `initial`, doubling up to `max`, and forgetting
    /// past failures after `healthy_after` of good running.
    pub fn new(initial: Duration, max: Duration, healthy_after: Duration) -> Self {
        Self {
            initial,
            max,
            healthy_after,
            next: initial,
        }
    }

    /// Records a failure after the worker ran (or the source lived) for
    /// `ran_for`; returns how long to wait before the next attempt.
    pub fn failure(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.healthy_after {
            self.next = self.initial;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Forgets past failures (after a success that proves health).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The wait the next failure would get.
    pub fn peek(&self) -> Duration {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn doubles_to_the_cap() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.failure(S(0)).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
    }

    #[test]
    fn a_healthy_run_resets() {
        let mut b = Backoff::default();
        b.failure(S(0));
        b.failure(S(0));
        b.failure(S(0));
        assert_eq!(b.peek(), S(8));
        assert_eq!(b.failure(S(299)), S(8));
        assert_eq!(b.failure(S(300)), S(1));
        assert_eq!(b.peek(), S(2));
        b.reset();
        assert_eq!(b.peek(), S(1));
    }
}
