//! Capped exponential backoff for reopening a device that failed (a camera, a
//! serial port): try at once, then wait 250 ms, 500 ms, … up to a cap, and start
//! over once it works again.

use std::time::{Duration, Instant};

/// First wait after a failure.
pub const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest wait between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// When to try again, and how long to wait after the next failure.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    next_wait: Duration,
    next_try: Instant,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BACKOFF_START, BACKOFF_MAX)
    }
}

impl Backoff {
    /// Waits start at `start` and double up to `max`; the first attempt is due now.
    pub fn new(start: Duration, max: Duration) -> Backoff {
        Backoff { start, next_wait: start, next_try: Instant::now(), max }
    }

    /// Whether an attempt is due.
    pub fn due(&self) -> bool {
        Instant::now() >= self.next_try
    }

    /// How long until the next attempt is due (zero if it is due).
    pub fn wait(&self) -> Duration {
        self.next_try.saturating_duration_since(Instant::now())
    }

    /// An attempt failed: the next one is due after the current wait, which then doubles.
    pub fn failed(&mut self) {
        self.next_try = Instant::now() + self.next_wait;
        self.next_wait = (self.next_wait * 2).min(self.max);
    }

    /// An attempt worked: after the next failure, waits start short again.
    pub fn succeeded(&mut self) {
        self.next_wait = self.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_reset_after_success() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        assert!(b.due());
        let mut waits = Vec::new();
        for _ in 0..4 {
            b.failed();
            waits.push(b.wait());
        }
        // 100, 200, 350 (capped), 350; each measured just after scheduling, so a little under.
        let near = |d: Duration, ms: u64| {
            d <= Duration::from_millis(ms) && d + Duration::from_millis(50) > Duration::from_millis(ms)
        };
        assert!(near(waits[0], 100) && near(waits[1], 200) && near(waits[2], 350) && near(waits[3], 350), "{waits:?}");
        assert!(!b.due());
        b.succeeded();
        b.failed();
        assert!(near(b.wait(), 100), "{:?}", b.wait());
    }
}
