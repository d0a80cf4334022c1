//! Warnings that may repeat every frame (a corrupt stream, a failing model)
//! logged at most once per period, with a count of what was held back.

use std::time::{Duration, Instant};

/// Logs at most one line per period and says how many it held back.
#[derive(Debug)]
pub struct LogLimiter {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter allowing one line per `period`.
    pub fn new(period: Duration) -> LogLimiter {
        LogLimiter { period, last: None, suppressed: 0 }
    }

    /// Log `msg` at warn level unless one was logged within the period.
    pub fn warn(&mut self, msg: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < self.period) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            log::warn!("{msg} ({} similar message(s) suppressed)", self.suppressed);
        } else {
            log::warn!("{msg}");
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}
