//! The decide → GPIO mapping against recording `OutputPin`s: level and pulse
//! modes, active-low, heartbeat, fault, start and stop levels, and a line that
//! fails and recovers. (The real character device is exercised on the
//! emulated board.)

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_hal::digital::{ErrorType, OutputPin};
use vigil::protocol::EventLine;
use vigil::sink::gpio::OutputLine;
use vigil::sink::{GpioLines, GpioSink, LabelOutput, OutputMode, Sink};
use vigil::stats::Health;

/// Physical levels written to a pin, with when.
type Log = Arc<Mutex<Vec<(Instant, bool)>>>;

/// An embedded-hal output pin that records every level it is driven to.
struct Recording(Log);

impl ErrorType for Recording {
    type Error = Infallible;
}

impl OutputPin for Recording {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.0.lock().unwrap().push((Instant::now(), false));
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        self.0.lock().unwrap().push((Instant::now(), true));
        Ok(())
    }
}

fn pin() -> (Box<dyn vigil::sink::Pin>, Log) {
    let log: Log = Arc::default();
    (Box::new(Recording(Arc::clone(&log))), log)
}

fn levels(log: &Log) -> Vec<bool> {
    log.lock().unwrap().iter().map(|(_, l)| *l).collect()
}

fn last(log: &Log) -> Option<bool> {
    log.lock().unwrap().last().map(|(_, l)| *l)
}

fn event(label_index: usize, on: bool) -> EventLine<'static> {
    EventLine { seq: 0, t_ms: 0, label: "x", label_index, on, score: 0.9, snapshot: None }
}

/// Wait until `cond` holds. The deadline is generous (5 s) because it only bounds a hang:
/// the sink's thread acts within milliseconds, but under qemu-user on a busy 2-core CI machine a
/// thread can wait its turn much longer.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(5), "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn level_pulse_active_low_and_stop_levels() {
    let (p0, level) = pin();
    let (p1, level_low) = pin();
    let (p2, pulse) = pin();
    let outputs = vec![
        LabelOutput { label: 0, mode: OutputMode::Level, line: OutputLine::new("level", p0, false, None) },
        LabelOutput { label: 1, mode: OutputMode::Level, line: OutputLine::new("level-low", p1, true, None) },
        LabelOutput {
            label: 2,
            mode: OutputMode::Pulse(Duration::from_millis(60)),
            line: OutputLine::new("pulse", p2, false, None),
        },
    ];
    let mut sink = GpioSink::start(GpioLines { outputs, heartbeat: None, fault: None }, Arc::default());
    // Start: every line inactive (active-low inactive = high).
    eventually("start levels", || {
        last(&level) == Some(false) && last(&level_low) == Some(true) && last(&pulse) == Some(false)
    });

    sink.event(&event(0, true));
    sink.event(&event(1, true));
    eventually("label 0 on -> high", || last(&level) == Some(true));
    eventually("label 1 on -> low (active low)", || last(&level_low) == Some(false));
    sink.event(&event(0, false));
    eventually("label 0 off -> low", || last(&level) == Some(false));

    // Pulse: high on switch-on, low again after its length; switching off does nothing.
    sink.event(&event(2, true));
    eventually("pulse starts", || last(&pulse) == Some(true));
    let started = pulse.lock().unwrap().last().unwrap().0;
    sink.event(&event(2, false));
    eventually("pulse ends", || last(&pulse) == Some(false));
    let ended = pulse.lock().unwrap().last().unwrap().0;
    let width = ended - started;
    assert!(width >= Duration::from_millis(60), "pulse lasted {width:?}");
    assert_eq!(levels(&pulse), vec![false, true, false], "switch-off did not touch a pulse line");

    // An event for a label without a line touches no line.
    let before = (levels(&level).len(), levels(&level_low).len());
    sink.event(&event(7, true));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(before, (levels(&level).len(), levels(&level_low).len()));

    // Stop: label 1 is still on; every line goes inactive.
    sink.flush(Duration::from_millis(100));
    assert_eq!(last(&level), Some(false));
    assert_eq!(last(&level_low), Some(true), "active-low line back to inactive (high)");
    assert_eq!(last(&pulse), Some(false));
}

#[test]
fn heartbeat_toggles_while_frames_flow_and_fault_follows_health() {
    let (hb, beats) = pin();
    let (f, fault) = pin();
    let health = Arc::new(Health::default());
    let lines = GpioLines {
        outputs: vec![],
        heartbeat: Some(OutputLine::new("heartbeat", hb, false, None)),
        fault: Some(OutputLine::new("fault", f, false, None)),
    };
    let mut sink = GpioSink::start(lines, Arc::clone(&health));
    // Frames flow for 1.3 s: the heartbeat toggles every 0.5 s.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1300) {
        health.frames.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
    }
    let toggles = levels(&beats).windows(2).filter(|w| w[0] != w[1]).count();
    assert!(toggles >= 2, "heartbeat toggled {toggles} times: {:?}", levels(&beats));
    // Engine failing -> fault active; recovered -> inactive.
    health.engine_failing.store(true, Ordering::Relaxed);
    eventually("fault asserted", || last(&fault) == Some(true));
    health.engine_failing.store(false, Ordering::Relaxed);
    eventually("fault cleared", || last(&fault) == Some(false));
    health.source_lost.store(true, Ordering::Relaxed);
    eventually("fault asserted for a lost camera", || last(&fault) == Some(true));
    // Frames stop: within the stale time the heartbeat rests at inactive.
    std::thread::sleep(vigil::sink::gpio::HEARTBEAT_STALE + Duration::from_millis(600));
    let n = levels(&beats).len();
    assert_eq!(last(&beats), Some(false), "heartbeat rests inactive when frames stop");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(levels(&beats).len(), n, "no toggling without frames");
    sink.flush(Duration::from_millis(100));
    assert_eq!(last(&fault), Some(false), "fault line inactive after a clean stop");
}

/// A pin that fails its first `failures` writes.
struct Flaky {
    failures: usize,
    log: Log,
}

impl vigil::sink::Pin for Flaky {
    fn set(&mut self, high: bool) -> Result<(), String> {
        if self.failures > 0 {
            self.failures -= 1;
            return Err("I/O error".into());
        }
        self.log.lock().unwrap().push((Instant::now(), high));
        Ok(())
    }
}

#[test]
fn a_failing_line_is_retried_until_it_works() {
    let log: Log = Arc::default();
    let flaky = Box::new(Flaky { failures: 2, log: Arc::clone(&log) });
    let outputs =
        vec![LabelOutput { label: 0, mode: OutputMode::Level, line: OutputLine::new("flaky", flaky, false, None) }];
    let mut sink = GpioSink::start(GpioLines { outputs, heartbeat: None, fault: None }, Arc::default());
    sink.event(&event(0, true));
    // The start level and the first write fail; the retry (1 s later) drives the wanted level.
    let t0 = Instant::now();
    while last(&log) != Some(true) {
        assert!(t0.elapsed() < Duration::from_secs(3), "line never recovered: {:?}", levels(&log));
        std::thread::sleep(Duration::from_millis(10));
    }
    sink.flush(Duration::from_millis(100));
    assert_eq!(last(&log), Some(false));
}
