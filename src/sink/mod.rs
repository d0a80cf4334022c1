//! Sinks: where decisions go (stdout, a serial line, GPIO lines, a metrics file, an MQTT
//! broker). Each is built from its own config section (`[stdout]`, `[serial]`, `[gpio]`,
//! `[metrics]`, `[mqtt]`),
//! defined beside it.

pub mod gpio;
pub mod metrics;
pub mod mqtt;
pub mod serial;
pub mod stdout;

pub use gpio::{GpioLineSpec, GpioLines, GpioSection, GpioSink, LabelOutput, LineRef, OutputMode, Pin};
pub use metrics::{MetricsSection, MetricsSink};
pub use mqtt::{MqttSection, MqttSettings, MqttSink, SnapshotPublisher};
pub use serial::{SerialSection, SerialSink, SerialStats};
pub use stdout::{LineSink, StdoutSection, StdoutSink};

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
    /// The labels already on when this run starts (a reload carried their state over, so no
    /// event announces them again). A sink that holds state (GPIO lines) sets it; a stream
    /// of events has nothing to do.
    fn labels_already_on(&mut self, _labels: &[usize]) {}
}
