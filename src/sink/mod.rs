//! Sinks: where decisions go (stdout, a serial line; GPIO joins later).

pub mod gpio;
mod serial;
mod stdout;

pub use gpio::{GpioLineSpec, GpioSink, LabelOutput, LineRef, OutputMode, Pin};
pub use serial::{ConsoleRequest, SerialSink, SerialStats, Shared as SerialShared};
pub use stdout::{LineSink, StdoutSink};

use crate::protocol::{EventLine, StatusLine};

/// Receives every state change and every status line, in order. Sinks must not
/// block the pipeline for long: a slow device gets its own writer thread.
pub trait Sink: Send {
    /// A label changed state.
    fn event(&mut self, event: &EventLine<'_>);
    /// The periodic status line.
    fn status(&mut self, status: &StatusLine<'_>);
    /// Write out everything accepted so far (called at stop); returns within `budget`.
    fn flush(&mut self, budget: std::time::Duration);
}
