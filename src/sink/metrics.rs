//! `[metrics] textfile`: the status as Prometheus metrics in a file that node_exporter's
//! textfile collector reads (`--collector.textfile.directory`), so a fleet is scraped without
//! vigil opening a port.
//!
//! The file is rewritten at every status line, on the sink's own thread (a slow SD card never
//! holds up the decide stage): written beside the target and renamed over it, so the collector
//! never reads half a file. No fsync: a metrics file lost at a power cut is rewritten a period
//! later, and syncing every period would wear the card. A failed write is logged (once a minute)
//! and counted; it never stops the run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Deserialize;
use toml::Spanned;

use super::Sink;
use crate::board::{THROTTLED_NOW, THROTTLED_SINCE_BOOT_SHIFT};
use crate::protocol::{EventLine, StatusLine};
use crate::tomlfile::{SettingsError, TomlFile};
use crate::util::LogLimiter;

/// `[metrics]`: where the metrics file goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// The file node_exporter reads: in its textfile directory, named `*.prom`.
    pub textfile: Spanned<String>,
}

impl MetricsSection {
    /// The metrics file's path (relative paths are relative to the config), checked: named
    /// `*.prom` (the collector reads nothing else) in a directory that exists.
    pub fn path(&self, file: &TomlFile) -> Result<PathBuf, SettingsError> {
        let path = file.resolve(self.textfile.get_ref());
        let refuse = |why: String| file.error_at(self.textfile.span(), "metrics.textfile", why);
        if path.extension().is_none_or(|e| e != "prom") {
            return Err(refuse(format!(
                "`{}`: expected a file name ending in `.prom` (node_exporter's textfile collector reads only those)",
                path.display()
            )));
        }
        match path.parent() {
            Some(dir) if dir.is_dir() => Ok(path),
            _ => Err(refuse(format!(
                "the folder of `{}` does not exist: expected node_exporter's textfile directory (paths are relative to this config)",
                path.display()
            ))),
        }
    }
}

/// The numbers of one status line, as the sink's thread needs them.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    uptime_s: f64,
    frames: u64,
    fps: f64,
    infer_ms_p50: f64,
    infer_ms_p99: f64,
    dropped: u64,
    source_ok: bool,
    outages: u64,
    /// Per label, in the model's order: on or not.
    on: Vec<bool>,
    soc_temp_c: Option<f64>,
    throttled: Option<u32>,
}

/// The metrics sink: hands each status to its writer thread.
pub struct MetricsSink {
    labels: Arc<[String]>,
    /// Reused for every status (a full channel means the writer is behind: this one is skipped).
    spare: Snapshot,
    tx: Option<Sender<Snapshot>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsSink {
    /// Write metrics for a model with `labels` into `path` at every status line.
    pub fn start(path: PathBuf, labels: Arc<[String]>) -> MetricsSink {
        // One status waiting at most: the writer always writes the newest it can.
        let (tx, rx) = crossbeam_channel::bounded::<Snapshot>(1);
        let writer_labels = Arc::clone(&labels);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || write_loop(&path, &writer_labels, &rx))
            .expect("spawn metrics thread");
        MetricsSink { labels, spare: Snapshot::default(), tx: Some(tx), thread: Some(thread) }
    }
}

impl Sink for MetricsSink {
    fn event(&mut self, _event: &EventLine<'_>) {}

    fn status(&mut self, s: &StatusLine<'_>) {
        let snap = &mut self.spare;
        (snap.uptime_s, snap.frames, snap.fps) = (s.uptime_s, s.frames, s.fps);
        (snap.infer_ms_p50, snap.infer_ms_p99) = (s.infer_ms_p50, s.infer_ms_p99);
        (snap.dropped, snap.source_ok, snap.outages) = (s.dropped, s.source == "ok", s.outages);
        (snap.soc_temp_c, snap.throttled) = (s.soc_temp_c, s.throttled);
        snap.on.clear();
        snap.on.extend(self.labels.iter().map(|l| s.labels_on.contains(&l.as_str())));
        let Some(tx) = &self.tx else { return };
        match tx.try_send(std::mem::take(&mut self.spare)) {
            Ok(()) => {}
            // The writer is still on the last one: keep this buffer for the next status.
            Err(TrySendError::Full(back)) | Err(TrySendError::Disconnected(back)) => self.spare = back,
        }
    }

    fn flush(&mut self, budget: Duration) {
        // Closing the channel ends the writer after its last file; wait for it within the budget.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            crate::util::join_within(t, budget);
        }
    }
}

impl Drop for MetricsSink {
    fn drop(&mut self) {
        self.flush(Duration::from_millis(500));
    }
}

fn write_loop(path: &Path, labels: &[String], rx: &Receiver<Snapshot>) {
    let temporary = temporary_beside(path);
    let mut text = String::with_capacity(1024);
    let mut failures: u64 = 0;
    let mut warn = LogLimiter::new(Duration::from_secs(60));
    while let Ok(snap) = rx.recv() {
        text.clear();
        render(&mut text, &snap, labels, failures);
        let written = std::fs::write(&temporary, text.as_bytes()).and_then(|()| std::fs::rename(&temporary, path));
        if let Err(e) = written {
            failures += 1;
            let _ = std::fs::remove_file(&temporary);
            warn.warn(format_args!(
                "metrics: cannot write {} ({e}); {failures} write(s) failed so far",
                path.display()
            ));
        }
    }
    if failures > 0 {
        log::warn!("metrics: {failures} write(s) of {} failed in this run", path.display());
    }
}

/// `dir/.name.tmp`: in the same directory (so the rename is atomic), hidden, and not `*.prom`
/// (so the collector never reads it).
fn temporary_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// The Prometheus text exposition format of one status.
fn render(out: &mut String, s: &Snapshot, labels: &[String], write_failures: u64) {
    let mut metric = |name: &str, kind: &str, help: &str, value: &dyn std::fmt::Display| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
    };
    metric("vigil_uptime_seconds", "gauge", "Seconds since the run started.", &s.uptime_s);
    metric("vigil_frames_decided_total", "counter", "Frames decided since the run started.", &s.frames);
    metric(
        "vigil_frames_dropped_total",
        "counter",
        "Frames dropped since the run started (unreadable, corrupt, stale, failed).",
        &s.dropped,
    );
    metric("vigil_frames_per_second", "gauge", "Frames decided per second over the last status period.", &s.fps);
    metric(
        "vigil_source_up",
        "gauge",
        "1 while the camera or stream delivers frames, 0 while it is lost.",
        &u8::from(s.source_ok),
    );
    metric("vigil_source_outages_total", "counter", "Times the source was lost since the run started.", &s.outages);
    metric(
        "vigil_metrics_write_failures_total",
        "counter",
        "Writes of this file that failed in this run.",
        &write_failures,
    );
    let _ = write!(
        out,
        "# HELP vigil_inference_milliseconds Inference time over recent frames.\n# TYPE vigil_inference_milliseconds summary\n\
         vigil_inference_milliseconds{{quantile=\"0.5\"}} {}\nvigil_inference_milliseconds{{quantile=\"0.99\"}} {}\n",
        s.infer_ms_p50, s.infer_ms_p99
    );
    // Only what the board reports: an absent metric, not a made-up 0.
    if let Some(t) = s.soc_temp_c {
        let _ = write!(
            out,
            "# HELP vigil_soc_temperature_celsius SoC temperature.\n# TYPE vigil_soc_temperature_celsius gauge\nvigil_soc_temperature_celsius {t}\n"
        );
    }
    if let Some(flags) = s.throttled {
        out.push_str(
            "# HELP vigil_throttled 1 while the firmware reports the condition (Raspberry Pi get_throttled).\n# TYPE vigil_throttled gauge\n",
        );
        for (bit, name) in THROTTLED_NOW {
            let _ = writeln!(out, "vigil_throttled{{condition=\"{name}\"}} {}", u8::from(flags & bit != 0));
        }
        out.push_str(
            "# HELP vigil_throttled_since_boot 1 if the condition occurred since boot.\n# TYPE vigil_throttled_since_boot gauge\n",
        );
        for (bit, name) in THROTTLED_NOW {
            let since = flags & (bit << THROTTLED_SINCE_BOOT_SHIFT) != 0;
            let _ = writeln!(out, "vigil_throttled_since_boot{{condition=\"{name}\"}} {}", u8::from(since));
        }
    }
    out.push_str("# HELP vigil_label_on 1 while the label is on.\n# TYPE vigil_label_on gauge\n");
    for (label, on) in labels.iter().zip(&s.on) {
        out.push_str("vigil_label_on{label=\"");
        escape_label_value(out, label);
        let _ = writeln!(out, "\"}} {}", u8::from(*on));
    }
}

/// A label value as the exposition format needs it: `\`, `"` and newlines escaped.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_writes_every_metric_and_escapes_label_values() {
        let s = Snapshot {
            uptime_s: 12.5,
            frames: 40,
            fps: 3.9,
            infer_ms_p50: 6.5,
            infer_ms_p99: 9.25,
            dropped: 2,
            source_ok: true,
            outages: 1,
            on: vec![true, false],
            soc_temp_c: Some(81.2),
            throttled: Some(0x50005),
        };
        let mut out = String::new();
        render(&mut out, &s, &["person".into(), "say \"hi\"\\now".into()], 0);
        for line in [
            "vigil_frames_decided_total 40",
            "vigil_frames_dropped_total 2",
            "vigil_frames_per_second 3.9",
            "vigil_source_up 1",
            "vigil_source_outages_total 1",
            "vigil_inference_milliseconds{quantile=\"0.99\"} 9.25",
            "vigil_label_on{label=\"person\"} 1",
            "vigil_soc_temperature_celsius 81.2",
            "vigil_throttled{condition=\"under_voltage\"} 1",
            "vigil_throttled{condition=\"frequency_capped\"} 0",
            "vigil_throttled_since_boot{condition=\"throttled\"} 1",
            "vigil_throttled_since_boot{condition=\"soft_temperature_limit\"} 0",
            "vigil_label_on{label=\"say \\\"hi\\\"\\\\now\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "missing `{line}` in:\n{out}");
        }
        // Every sample line belongs to a metric declared with # TYPE before it.
        let mut declared = Vec::new();
        for l in out.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert_eq!(declared.last().map(String::as_str), Some(name), "{l}");
            }
        }
    }
}
