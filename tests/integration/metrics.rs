//! `[metrics] textfile`: the status as Prometheus metrics in a file for node_exporter's
//! textfile collector, written by the real binary; refused keys name the key; a directory
//! that disappears under a running daemon is logged and the run goes on.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{light_model_samples, light_model_section, stderr, vigil, vigil_output, write};

fn config(dir: &Path, textfile: &str, source_extra: &str, interval: &str) -> std::path::PathBuf {
    let text = format!(
        "{}\n[source]\nkind = \"files\"\npath = \"{}\"\nfps = 10\n{source_extra}\n\n[status]\ninterval_s = {interval}\n\n\
         [metrics]\ntextfile = \"{textfile}\"\n",
        light_model_section(),
        light_model_samples().display()
    );
    write(dir, "c.toml", &text)
}

/// The value of the sample line `name` (with its labels, e.g. `vigil_label_on{label="x"}`).
fn value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_run_leaves_the_final_status_as_metrics_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let textdir = dir.path().join("textfile");
    std::fs::create_dir(&textdir).unwrap();
    // Relative to the config, as every path in it.
    let cfg = config(dir.path(), "textfile/vigil.prom", "", "0.2");
    let out = vigil_output(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let metrics = std::fs::read_to_string(textdir.join("vigil.prom")).expect("the metrics file");
    // The six samples of the factory bundle: cell0004, 0002 and 0516 are monocrystalline, and
    // the last one replayed (cell0516, in name order) leaves `monocrystalline` on.
    assert_eq!(value(&metrics, "vigil_frames_decided_total"), Some(6.0), "{metrics}");
    assert_eq!(value(&metrics, "vigil_frames_dropped_total"), Some(0.0), "{metrics}");
    assert_eq!(value(&metrics, "vigil_source_up"), Some(1.0), "{metrics}");
    assert_eq!(value(&metrics, "vigil_metrics_write_failures_total"), Some(0.0), "{metrics}");
    assert_eq!(value(&metrics, "vigil_label_on{label=\"monocrystalline\"}"), Some(1.0), "{metrics}");
    for label in ["defective", "uncertain"] {
        assert!(value(&metrics, &format!("vigil_label_on{{label=\"{label}\"}}")).is_some(), "{label}: {metrics}");
    }
    assert!(value(&metrics, "vigil_inference_milliseconds{quantile=\"0.5\"}").is_some_and(|ms| ms > 0.0), "{metrics}");
    // Only the metrics file: the temporary one was renamed over it, never left for the collector.
    let names: Vec<String> =
        std::fs::read_dir(&textdir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["vigil.prom"]);
}

#[test]
fn bad_metrics_keys_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (textfile, interval, needle) in [
        ("metrics.txt", "1", "ending in `.prom`"),
        ("no-such-folder/vigil.prom", "1", "does not exist"),
        ("vigil.prom", "0", "interval_s` is 0"),
    ] {
        let cfg = config(dir.path(), textfile, "", interval);
        let out = vigil_output(&["check", "--config", cfg.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{textfile}: {err}");
        assert!(
            err.contains("c.toml:") && err.contains("metrics.textfile") && err.contains(needle),
            "{textfile}: {err}"
        );
    }
}

#[test]
fn a_metrics_folder_that_vanishes_is_logged_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let textdir = dir.path().join("textfile");
    std::fs::create_dir(&textdir).unwrap();
    let cfg = config(dir.path(), "textfile/vigil.prom", "loop = true", "0.1");
    let child = vigil()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let file = textdir.join("vigil.prom");
    let t0 = Instant::now();
    while !file.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no metrics file written");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir_all(&textdir).unwrap();
    // A few status periods without the folder, then the folder back: written again.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::create_dir(&textdir).unwrap();
    let t0 = Instant::now();
    while !file.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the metrics file did not come back");
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = std::fs::read_to_string(&file).unwrap();
    assert!(value(&metrics, "vigil_metrics_write_failures_total").is_some_and(|n| n >= 1.0), "{metrics}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "the run went on and stopped cleanly: {err}");
    assert!(err.contains("metrics: cannot write") && err.contains("vigil.prom"), "{err}");
}
