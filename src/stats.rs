//! Run statistics: counters, per-stage times and latency percentiles for the
//! status line and the benchmark.

use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live health of a run, shared (`Arc`) between the pipeline, which updates
/// it, and outputs that signal it (heartbeat and fault GPIO lines).
#[derive(Debug, Default)]
pub struct Health {
    /// Frames decided so far; outputs watch it move to tell that frames flow.
    pub frames: AtomicU64,
    /// The camera (source) is lost.
    pub source_lost: AtomicBool,
    /// Times the source was lost since the start.
    pub source_outages: AtomicU64,
    /// When the source was last declared lost, on the clock of the frames' `t_ms`: a frame
    /// captured by then that is decided after the labels were forgotten is late, not news.
    pub source_lost_at_ms: AtomicU64,
    /// The last inference failed.
    pub engine_failing: AtomicBool,
}

impl Health {
    /// Declare the source lost at `t_ms` (the frames' clock): one outage more.
    pub fn lose_source(&self, t_ms: u64) {
        self.source_lost_at_ms.store(t_ms, Ordering::Relaxed);
        self.source_outages.fetch_add(1, Ordering::Relaxed);
        // Release: whoever sees the loss sees when it happened.
        self.source_lost.store(true, Ordering::Release);
    }

    /// Whether something is wrong that a fault output should show.
    pub fn fault(&self) -> bool {
        self.source_lost.load(Ordering::Relaxed) || self.engine_failing.load(Ordering::Relaxed)
    }
}

/// How many recent inference times the percentiles are taken over.
pub const LATENCY_WINDOW: usize = 512;

/// Per-stage times of one frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// Decoding JPEG/PNG.
    pub decode: Duration,
    /// Channel conversion, resize, normalisation.
    pub prepare: Duration,
    /// Running the model.
    pub infer: Duration,
    /// The decide stage.
    pub decide: Duration,
    /// Writing events to sinks.
    pub emit: Duration,
}

impl StageTimes {
    /// Add another frame's times.
    pub fn add(&mut self, o: &StageTimes) {
        self.decode += o.decode;
        self.prepare += o.prepare;
        self.infer += o.infer;
        self.decide += o.decide;
        self.emit += o.emit;
    }
}

/// A fixed-size ring of recent latencies (no allocation after creation).
#[derive(Debug, Clone)]
pub struct LatencyRing {
    values: Vec<f32>,
    next: usize,
    filled: usize,
    scratch: Vec<f32>,
}

impl Default for LatencyRing {
    fn default() -> Self {
        LatencyRing {
            values: vec![0.0; LATENCY_WINDOW],
            next: 0,
            filled: 0,
            scratch: Vec::with_capacity(LATENCY_WINDOW),
        }
    }
}

impl LatencyRing {
    /// Record one latency in milliseconds.
    pub fn push(&mut self, ms: f32) {
        self.values[self.next] = ms;
        self.next = (self.next + 1) % self.values.len();
        self.filled = (self.filled + 1).min(self.values.len());
    }

    /// The `q`-quantile (0..=1, nearest rank) of the recorded values; 0 when empty.
    pub fn quantile(&mut self, q: f64) -> f64 {
        if self.filled == 0 {
            return 0.0;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.values[..self.filled]);
        self.scratch.sort_unstable_by(f32::total_cmp);
        let rank = ((q * self.filled as f64).ceil() as usize).clamp(1, self.filled);
        f64::from(self.scratch[rank - 1])
    }
}

/// Frame counters of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames that reached the decide stage.
    pub decided: u64,
    /// Frames the source could not deliver (unreadable file, device hiccup).
    pub dropped_source: u64,
    /// Frames that could not be decoded or had the wrong size.
    pub dropped_corrupt: u64,
    /// Frames on which inference failed.
    pub dropped_engine: u64,
    /// Frames captured before the source was lost that reached the decide stage after
    /// their labels had been switched off for the loss.
    pub dropped_late: u64,
    /// State changes emitted.
    pub events: u64,
}

impl Counters {
    /// All dropped frames.
    pub fn dropped(&self) -> u64 {
        self.dropped_source + self.dropped_corrupt + self.dropped_engine + self.dropped_late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let mut r = LatencyRing::default();
        for v in 1..=100 {
            r.push(v as f32);
        }
        assert_eq!(r.quantile(0.5), 50.0);
        assert_eq!(r.quantile(0.99), 99.0);
        assert_eq!(r.quantile(1.0), 100.0);
    }

    #[test]
    fn ring_keeps_only_the_recent_window() {
        let mut r = LatencyRing::default();
        for _ in 0..LATENCY_WINDOW {
            r.push(1000.0);
        }
        for _ in 0..LATENCY_WINDOW {
            r.push(1.0);
        }
        assert_eq!(r.quantile(0.99), 1.0);
    }
}
