//! Decisions as lines on standard output (or any other writer).

use std::io::Write;

use serde::Deserialize;

use super::Sink;
use crate::protocol::{EventLine, LineFormat, StatusLine, write_event, write_status};

/// `[stdout]`: decisions on standard output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSection {
    /// Write to stdout at all (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `json` (default) or `text`.
    #[serde(default)]
    pub format: LineFormat,
}

impl Default for StdoutSection {
    fn default() -> Self {
        StdoutSection { enabled: true, format: LineFormat::Json }
    }
}

fn yes() -> bool {
    true
}

/// Writes each line to a writer and flushes it, so a pipe reader sees it at once.
pub struct LineSink<W: Write + Send> {
    format: LineFormat,
    out: W,
    line: Vec<u8>,
    failed: bool,
}

/// The stdout sink.
pub type StdoutSink = LineSink<std::io::Stdout>;

impl StdoutSink {
    /// A stdout sink writing `format` lines.
    pub fn stdout(format: LineFormat) -> StdoutSink {
        LineSink::new(std::io::stdout(), format)
    }
}

impl<W: Write + Send> LineSink<W> {
    /// A sink writing `format` lines to `out`.
    pub fn new(out: W, format: LineFormat) -> LineSink<W> {
        LineSink { format, out, line: Vec::with_capacity(256), failed: false }
    }

    fn emit(&mut self) {
        if let Err(e) = self.out.write_all(&self.line).and_then(|_| self.out.flush())
            && !self.failed
        {
            // A closed pipe must not stop the daemon's other outputs; say it once.
            log::warn!("line sink: write failed ({e}); further errors on it are not logged");
            self.failed = true;
        }
        self.line.clear();
    }
}

impl<W: Write + Send> Sink for LineSink<W> {
    fn event(&mut self, event: &EventLine<'_>) {
        write_event(&mut self.line, self.format, event);
        self.emit();
    }

    fn status(&mut self, status: &StatusLine<'_>) {
        write_status(&mut self.line, self.format, status);
        self.emit();
    }

    fn flush(&mut self, _budget: std::time::Duration) {
        let _ = self.out.flush();
    }
}
