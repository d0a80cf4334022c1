//! Decisions on a serial line (a UART, a USB adapter, a pseudo-terminal).
//!
//! The pipeline never waits for the wire: lines go into a bounded queue that a
//! writer thread drains at the port's pace. When the queue is full the oldest
//! *status* line is dropped first; an event is dropped only when the queue
//! holds nothing but events, and every drop is counted and logged. Each line
//! is written whole (partial writes are continued, never abandoned), so a stop
//! never leaves half a line on the wire. A port that fails or vanishes is
//! reopened with capped exponential backoff; queued lines wait for it.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Sink;
use crate::protocol::{EventLine, LineFormat, StatusLine, write_event, write_status};

/// Lines held for a slow or absent port.
pub const QUEUE_LINES: usize = 64;
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// Counters a serial sink keeps (shared with its writer thread).
#[derive(Debug, Default)]
pub struct SerialStats {
    /// Lines fully written.
    pub written: AtomicU64,
    /// Status lines dropped because the queue was full.
    pub dropped_status: AtomicU64,
    /// Event lines dropped because the queue was full of events.
    pub dropped_events: AtomicU64,
    /// Times the port was (re)opened successfully.
    pub opens: AtomicU64,
}

#[derive(Debug)]
struct Line {
    text: Vec<u8>,
    is_event: bool,
}

#[derive(Default)]
struct Queue {
    lines: VecDeque<Line>,
    closing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    stats: SerialStats,
}

/// A serial sink: formats lines and hands them to its writer thread.
pub struct SerialSink {
    format: LineFormat,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    device: String,
}

impl SerialSink {
    /// Start a sink on `device` at `baud`. The port is opened by the writer
    /// thread, and reopened whenever it fails, so a device that is absent now
    /// is used as soon as it appears.
    pub fn start(device: &str, baud: u32, format: LineFormat) -> SerialSink {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { lines: VecDeque::with_capacity(QUEUE_LINES), closing: false }),
            ready: Condvar::new(),
            stats: SerialStats::default(),
        });
        let writer = {
            let shared = Arc::clone(&shared);
            let device = device.to_string();
            std::thread::Builder::new()
                .name("serial-writer".into())
                .spawn(move || writer_loop(&device, baud, &shared))
                .expect("spawn serial writer thread")
        };
        SerialSink { format, shared, writer: Some(writer), device: device.to_string() }
    }

    /// The sink's counters.
    pub fn stats(&self) -> &SerialStats {
        &self.shared.stats
    }

    fn push(&self, text: Vec<u8>, is_event: bool) {
        let mut q = self.shared.queue.lock().expect("serial queue lock");
        if q.lines.len() >= QUEUE_LINES {
            if let Some(i) = q.lines.iter().position(|l| !l.is_event) {
                q.lines.remove(i);
                self.shared.stats.dropped_status.fetch_add(1, Ordering::Relaxed);
            } else {
                q.lines.pop_front();
                let n = self.shared.stats.dropped_events.fetch_add(1, Ordering::Relaxed) + 1;
                log::warn!("serial {}: queue full of events, oldest event dropped ({n} so far)", self.device);
            }
        }
        q.lines.push_back(Line { text, is_event });
        drop(q);
        self.shared.ready.notify_one();
    }
}

impl Sink for SerialSink {
    fn event(&mut self, event: &EventLine<'_>) {
        let mut text = Vec::with_capacity(64);
        write_event(&mut text, self.format, event);
        self.push(text, true);
    }

    fn status(&mut self, status: &StatusLine<'_>) {
        let mut text = Vec::with_capacity(96);
        write_status(&mut text, self.format, status);
        self.push(text, false);
    }

    fn flush(&mut self, budget: Duration) {
        let deadline = Instant::now() + budget;
        {
            let mut q = self.shared.queue.lock().expect("serial queue lock");
            q.closing = true;
            while !q.lines.is_empty() && Instant::now() < deadline {
                self.shared.ready.notify_all();
                q = self.shared.ready.wait_timeout(q, Duration::from_millis(10)).expect("serial queue lock").0;
            }
            if !q.lines.is_empty() {
                let events = q.lines.iter().filter(|l| l.is_event).count() as u64;
                log::warn!(
                    "serial {}: stopping with {} unwritten line(s) ({events} event(s)) after {budget:?}",
                    self.device,
                    q.lines.len()
                );
                self.shared.stats.dropped_events.fetch_add(events, Ordering::Relaxed);
                q.lines.clear();
            }
        }
        self.shared.ready.notify_all();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for SerialSink {
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.flush(Duration::from_millis(500));
        }
    }
}

fn open(device: &str, baud: u32) -> serialport::Result<Box<dyn serialport::SerialPort>> {
    serialport::new(device, baud).timeout(Duration::from_millis(100)).open()
}

/// Write all of `bytes`, continuing after timeouts; give up only on a real error,
/// or on a timeout once the sink is closing and `deadline` has passed.
fn write_whole(port: &mut dyn serialport::SerialPort, bytes: &[u8], shared: &Shared) -> std::io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        match port.write(&bytes[done..]) {
            Ok(0) => return Err(std::io::Error::new(ErrorKind::WriteZero, "port accepted no bytes")),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::Interrupted => {
                if done == 0 && shared.queue.lock().map(|q| q.closing).unwrap_or(true) {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    port.flush()
}

fn is_closing(shared: &Shared) -> bool {
    shared.queue.lock().map(|q| q.closing).unwrap_or(true)
}

fn next_line(shared: &Shared) -> Option<Line> {
    let mut q = shared.queue.lock().expect("serial queue lock");
    loop {
        if let Some(l) = q.lines.pop_front() {
            return Some(l);
        }
        if q.closing {
            return None;
        }
        q = shared.ready.wait_timeout(q, Duration::from_millis(200)).expect("serial queue lock").0;
    }
}

/// The port, and when to try opening it again after a failure.
struct Link<'a> {
    device: &'a str,
    baud: u32,
    port: Option<Box<dyn serialport::SerialPort>>,
    backoff: Duration,
    next_try: Instant,
    down: bool,
}

impl Link<'_> {
    /// Write one whole line, opening the port first if needed. `Err(())`: the
    /// port is down; try again after [`Link::next_try`].
    fn write(&mut self, text: &[u8], shared: &Shared) -> Result<(), ()> {
        if self.port.is_none() {
            if Instant::now() < self.next_try {
                return Err(());
            }
            match open(self.device, self.baud) {
                Ok(p) => {
                    shared.stats.opens.fetch_add(1, Ordering::Relaxed);
                    log::info!("serial {}: open at {} baud", self.device, self.baud);
                    self.down = false;
                    self.backoff = BACKOFF_START;
                    self.port = Some(p);
                }
                Err(e) => {
                    self.failed(format_args!("cannot open ({e})"));
                    return Err(());
                }
            }
        }
        let port = self.port.as_mut().expect("port is open");
        write_whole(port.as_mut(), text, shared).map_err(|e| {
            self.port = None;
            self.failed(format_args!("write failed ({e})"));
        })
    }

    /// Schedule the next attempt; log once per outage, not per attempt.
    fn failed(&mut self, why: std::fmt::Arguments<'_>) {
        if !self.down {
            log::warn!("serial {}: {why}; reopening with backoff up to {BACKOFF_MAX:?}", self.device);
            self.down = true;
        }
        self.next_try = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

fn writer_loop(device: &str, baud: u32, shared: &Shared) {
    let mut link = Link { device, baud, port: None, backoff: BACKOFF_START, next_try: Instant::now(), down: false };
    while let Some(line) = next_line(shared) {
        loop {
            if link.write(&line.text, shared).is_ok() {
                shared.stats.written.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if is_closing(shared) {
                if line.is_event {
                    shared.stats.dropped_events.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
            let wait = link.next_try.saturating_duration_since(Instant::now());
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
        shared.ready.notify_all();
    }
}
