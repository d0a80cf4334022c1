//! Decisions on a serial line (a UART, a USB adapter, a pseudo-terminal), and
//! the console a technician talks to on the same line.
//!
//! The pipeline never waits for the wire: lines go into a bounded queue that
//! one I/O thread drains at the port's pace, and that same thread reads
//! command lines. When the queue is full the oldest *droppable* line (status,
//! streamed scores) is dropped first; an event or a reply is dropped only when
//! the queue holds nothing else, and every drop is counted and logged. Each
//! line is written whole (partial writes are continued, never abandoned), so a
//! stop never leaves half a line on the wire. A port that fails or vanishes is
//! reopened with capped exponential backoff; queued lines wait for it.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde::Deserialize;
use toml::Spanned;

use super::Sink;
use crate::console::{self, LineReader, MAX_LINE, ReplyTo, Request};
use crate::protocol::{EventLine, LineFormat, StatusLine, write_event, write_status};
use crate::tomlfile::{SettingsError, TomlFile};
use crate::util::Backoff;
use crate::util::backoff::BACKOFF_MAX;

/// Lines held for a slow or absent port.
pub const QUEUE_LINES: usize = 64;
/// How long a read waits for input before the thread looks at its queue again.
const READ_POLL: Duration = Duration::from_millis(20);

/// `[serial]`: decisions on a serial line, and the console on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSection {
    /// Device path, e.g. `/dev/ttyAMA0`, `/dev/serial0`, `/dev/ttyUSB0`.
    pub device: Spanned<String>,
    /// Baud rate (default 115200).
    #[serde(default = "default_baud")]
    pub baud: Spanned<u32>,
    /// `text` (default: checksummed, compact) or `json`.
    #[serde(default = "text_format")]
    pub format: LineFormat,
}

/// Whether the configured serial device is there now. `vigil check` and `vigil run` decide the
/// same way from it: an absent device (an adapter not plugged in yet) is reported and retried at
/// run time; one that is there but is not a terminal is refused before anything runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePresence {
    /// The device node exists and is (or may be) a terminal.
    Present,
    /// No such device node now.
    Absent,
}

impl SerialSection {
    /// Check `device` without opening it (opening a USB adapter toggles DTR, which resets
    /// many boards on the other end): a character device the kernel files under another
    /// class than `tty` (`/dev/null` is `mem`), a regular file or a directory is refused,
    /// naming `serial.device` in `file`. Pseudo-terminals have no sysfs entry and pass.
    pub fn check_device(&self, file: &TomlFile) -> Result<DevicePresence, SettingsError> {
        use std::os::unix::fs::FileTypeExt;
        let device = self.device.get_ref();
        let refuse = |what: String| {
            file.error_at(
                self.device.span(),
                "serial.device",
                format!(
                    "`{device}` {what}: expected a serial device (a terminal: /dev/ttyAMA0, /dev/serial0, /dev/ttyUSB0)"
                ),
            )
        };
        let meta = match std::fs::metadata(device) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(DevicePresence::Absent),
            Err(e) => return Err(refuse(format!("cannot be read ({e})"))),
        };
        if !meta.file_type().is_char_device() {
            return Err(refuse(format!("is {}", crate::util::file::kind_name(meta.file_type()))));
        }
        let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        let class = std::fs::read_link(format!("/sys/dev/char/{major}:{minor}/subsystem"));
        match class.as_ref().ok().and_then(|c| c.file_name()).map(|c| c.to_string_lossy()) {
            Some(class) if class != "tty" => Err(refuse(format!("is a `{class}` device, not a terminal"))),
            _ => Ok(DevicePresence::Present),
        }
    }
}

fn default_baud() -> Spanned<u32> {
    Spanned::new(0..0, 115_200)
}

fn text_format() -> LineFormat {
    LineFormat::Text
}

impl SerialSection {
    /// Check the values (the device itself is opened, and retried, by the sink).
    pub fn check(&self, file: &TomlFile) -> Result<(), SettingsError> {
        if self.device.get_ref().is_empty() {
            return Err(file.error_at(
                self.device.span(),
                "serial.device",
                "empty: expected a device path such as /dev/ttyUSB0",
            ));
        }
        if *self.baud.get_ref() == 0 {
            return Err(file.error_at(
                self.baud.span(),
                "serial.baud",
                "0: expected a baud rate such as 9600 or 115200",
            ));
        }
        Ok(())
    }
}

/// Counters a serial sink keeps (shared with its I/O thread).
#[derive(Debug, Default)]
pub struct SerialStats {
    /// Lines fully written.
    pub written: AtomicU64,
    /// Status and scores lines dropped because the queue was full.
    pub dropped_status: AtomicU64,
    /// Event and reply lines dropped (queue full of them, or the port down at stop).
    pub dropped_events: AtomicU64,
    /// Times the port was (re)opened successfully.
    pub opens: AtomicU64,
}

#[derive(Debug)]
struct Line {
    text: Vec<u8>,
    droppable: bool,
}

#[derive(Default)]
struct Queue {
    lines: VecDeque<Line>,
    closing: bool,
}

/// The queue and counters shared by the sink, its I/O thread and console replies.
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    stats: SerialStats,
    format: LineFormat,
    device: String,
}

impl Shared {
    /// Queue a line; `droppable` lines go first when the queue is full.
    fn push(&self, text: Vec<u8>, droppable: bool) {
        let mut q = self.queue.lock().expect("serial queue lock");
        if q.lines.len() >= QUEUE_LINES {
            if let Some(i) = q.lines.iter().position(|l| l.droppable) {
                q.lines.remove(i);
                self.stats.dropped_status.fetch_add(1, Ordering::Relaxed);
            } else {
                q.lines.pop_front();
                let n = self.stats.dropped_events.fetch_add(1, Ordering::Relaxed) + 1;
                log::warn!("serial {}: queue full of events, oldest event dropped ({n} so far)", self.device);
            }
        }
        q.lines.push_back(Line { text, droppable });
        drop(q);
        self.ready.notify_all();
    }

    fn is_closing(&self) -> bool {
        self.queue.lock().map(|q| q.closing).unwrap_or(true)
    }
}

/// Console replies go back on the port the command came from, in its line format.
impl ReplyTo for Shared {
    fn format(&self) -> LineFormat {
        self.format
    }

    fn send(&self, line: Vec<u8>, droppable: bool) {
        self.push(line, droppable);
    }
}

/// A serial sink: formats lines and hands them to its I/O thread.
pub struct SerialSink {
    shared: Arc<Shared>,
    io: Option<JoinHandle<()>>,
}

impl SerialSink {
    /// Start a sink as `[serial]` says. The port is opened by the I/O thread,
    /// and reopened whenever it fails, so a device that is absent now is used as
    /// soon as it appears. Commands read from the port go to `console`; without
    /// one, each is answered with an error.
    pub fn start(section: &SerialSection, console: Option<Sender<Request>>) -> SerialSink {
        let (device, baud, format) = (section.device.get_ref().as_str(), *section.baud.get_ref(), section.format);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { lines: VecDeque::with_capacity(QUEUE_LINES), closing: false }),
            ready: Condvar::new(),
            stats: SerialStats::default(),
            format,
            device: device.to_string(),
        });
        let io = {
            let shared = Arc::clone(&shared);
            let device = device.to_string();
            std::thread::Builder::new()
                .name("serial-io".into())
                .spawn(move || io_loop(&device, baud, &shared, console))
                .expect("spawn serial I/O thread")
        };
        SerialSink { shared, io: Some(io) }
    }

    /// The sink's counters.
    pub fn stats(&self) -> &SerialStats {
        &self.shared.stats
    }
}

impl Sink for SerialSink {
    fn event(&mut self, event: &EventLine<'_>) {
        let mut text = Vec::with_capacity(64);
        write_event(&mut text, self.shared.format, event);
        self.shared.push(text, false);
    }

    fn status(&mut self, status: &StatusLine<'_>) {
        let mut text = Vec::with_capacity(96);
        write_status(&mut text, self.shared.format, status);
        self.shared.push(text, true);
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
                let events = q.lines.iter().filter(|l| !l.droppable).count() as u64;
                log::warn!(
                    "serial {}: stopping with {} unwritten line(s) ({events} event(s)) after {budget:?}",
                    self.shared.device,
                    q.lines.len()
                );
                self.shared.stats.dropped_events.fetch_add(events, Ordering::Relaxed);
                q.lines.clear();
            }
        }
        self.shared.ready.notify_all();
        if let Some(io) = self.io.take() {
            let _ = io.join();
            let st = &self.shared.stats;
            log::info!(
                "serial {}: {} line(s) written; dropped {} status/score line(s) and {} event/reply line(s); opened {} time(s)",
                self.shared.device,
                st.written.load(Ordering::Relaxed),
                st.dropped_status.load(Ordering::Relaxed),
                st.dropped_events.load(Ordering::Relaxed),
                st.opens.load(Ordering::Relaxed),
            );
        }
    }
}

impl Drop for SerialSink {
    fn drop(&mut self) {
        if self.io.is_some() {
            self.flush(Duration::from_millis(500));
        }
    }
}

fn open(device: &str, baud: u32) -> serialport::Result<Box<dyn serialport::SerialPort>> {
    serialport::new(device, baud).timeout(READ_POLL).open()
}

/// Write all of `bytes`, continuing after timeouts; give up only on a real
/// error, or on a timeout before the first byte once the sink is closing.
fn write_whole(port: &mut dyn serialport::SerialPort, bytes: &[u8], shared: &Shared) -> std::io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        match port.write(&bytes[done..]) {
            Ok(0) => return Err(std::io::Error::new(ErrorKind::WriteZero, "port accepted no bytes")),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::Interrupted => {
                if done == 0 && shared.is_closing() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    // No `flush()`: it is tcdrain(), which blocks for good on a tty whose other end hung up
    // (an unplugged adapter); the bytes are in the kernel's queue already.
    Ok(())
}

/// The port, and when to try opening it again after a failure.
struct Link<'a> {
    device: &'a str,
    baud: u32,
    port: Option<Box<dyn serialport::SerialPort>>,
    reopen: Backoff,
    down: bool,
}

impl Link<'_> {
    /// The open port, opening it if it is due; `None` while it is down.
    fn port(&mut self, shared: &Shared) -> Option<&mut Box<dyn serialport::SerialPort>> {
        if self.port.is_none() && self.reopen.due() {
            match open(self.device, self.baud) {
                Ok(p) => {
                    shared.stats.opens.fetch_add(1, Ordering::Relaxed);
                    log::info!("serial {}: open at {} baud", self.device, self.baud);
                    self.down = false;
                    self.reopen.succeeded();
                    self.port = Some(p);
                }
                Err(e) => self.failed(format_args!("cannot open ({e})")),
            }
        }
        self.port.as_mut()
    }

    /// Drop the port and schedule the next attempt; log once per outage, not per attempt.
    fn failed(&mut self, why: std::fmt::Arguments<'_>) {
        self.port = None;
        if !self.down {
            log::warn!("serial {}: {why}; reopening with backoff up to {BACKOFF_MAX:?}", self.device);
            self.down = true;
        }
        self.reopen.failed();
    }
}

fn io_loop(device: &str, baud: u32, shared: &Arc<Shared>, console: Option<Sender<Request>>) {
    let mut link = Link { device, baud, port: None, reopen: Backoff::default(), down: false };
    let mut reader = LineReader::new();
    let mut input = [0u8; 256];
    loop {
        // Write everything queued, one whole line at a time.
        loop {
            let line = shared.queue.lock().expect("serial queue lock").lines.pop_front();
            let Some(line) = line else { break };
            let result = match link.port(shared) {
                Some(p) => write_whole(p.as_mut(), &line.text, shared).map_err(Some),
                None => Err(None),
            };
            match result {
                Ok(()) => {
                    shared.stats.written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    if let Some(e) = e {
                        link.failed(format_args!("write failed ({e})"));
                    }
                    if shared.is_closing() {
                        // Stopping with the port down: the line is lost, and counted.
                        let counter =
                            if line.droppable { &shared.stats.dropped_status } else { &shared.stats.dropped_events };
                        counter.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    shared.queue.lock().expect("serial queue lock").lines.push_front(line);
                    break;
                }
            }
        }
        shared.ready.notify_all();
        let closing = shared.is_closing();
        if closing && shared.queue.lock().map(|q| q.lines.is_empty()).unwrap_or(true) {
            return;
        }
        // Read commands (the read's timeout paces this loop while the port is up).
        match link.port(shared) {
            Some(p) => match p.read(&mut input) {
                Ok(0) => link.failed(format_args!("port closed")),
                Ok(n) => {
                    reader.feed(&input[..n], |line| match line {
                        Err(len) => console::send_error(
                            &**shared,
                            "line",
                            &format!("line too long ({len}+ bytes, max {MAX_LINE}): discarded"),
                        ),
                        Ok(text) => match (console::parse(text), &console) {
                            (Ok(command), Some(tx)) => {
                                let _ = tx.send(Request { command, reply_to: Arc::clone(shared) as Arc<dyn ReplyTo> });
                            }
                            (Ok(command), None) => {
                                console::send_error(&**shared, command.name(), "console not available")
                            }
                            (Err(why), _) => console::send_error(&**shared, "error", &why),
                        },
                    });
                }
                Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => link.failed(format_args!("read failed ({e})")),
            },
            None => {
                // Down: wait for the next attempt or for new lines, whichever first.
                let wait = link.reopen.wait().min(Duration::from_millis(50));
                let q = shared.queue.lock().expect("serial queue lock");
                let _ = shared.ready.wait_timeout(q, wait);
            }
        }
    }
}
