//! `[snapshots]`: the frame that switched a label on, saved as a JPEG by the real daemon and
//! named in the event line; retention by count; a directory the daemon may not write to is
//! logged and counted while the run and its events go on; bad keys refused.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{
    grey_difference as difference, light_model_sample_files as samples, light_model_samples, light_model_section,
    stderr, vigil, write,
};

fn config(dir: &Path, snapshots: &str, repeat: bool) -> PathBuf {
    let text = format!(
        "{}\n[source]\nkind = \"files\"\npath = \"{}\"\nfps = 0\nloop = {repeat}\n\n\
         [thresholds]\ndefault = {{ on = 0.5, off = 0.35, min_frames = 1, hold_ms = 0 }}\n\n\
         [stdout]\nformat = \"json\"\n\n[status]\ninterval_s = 0\n\n[snapshots]\n{snapshots}\n",
        light_model_section(),
        light_model_samples().display()
    );
    write(dir, "c.toml", &text)
}

fn events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "event")
        .collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn each_switch_on_saves_the_frame_that_decided_it_named_in_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let shots = dir.path().join("shots");
    std::fs::create_dir(&shots).unwrap();
    let out = vigil().args(["run", "--config"]).arg(config(dir.path(), "dir = \"shots\"", false)).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = events(&out.stdout);
    let on: Vec<&Value> = events.iter().filter(|e| e["state"] == "on").collect();
    assert!(!on.is_empty(), "the samples switch labels on");
    let samples = samples();
    for e in &on {
        let name = e["snapshot"].as_str().unwrap_or_else(|| panic!("a switch-on names its snapshot: {e}"));
        let label = e["label"].as_str().unwrap();
        assert!(name.ends_with(&format!("_{label}_{}.jpg", e["seq"])), "{name}");
        let saved = image::open(shots.join(name)).unwrap_or_else(|err| panic!("{name}: {err}")).to_luma8();
        // The very frame: the sample replayed at that seq, not its neighbour.
        let seq = e["seq"].as_u64().unwrap() as usize;
        let frame = image::open(&samples[seq]).unwrap().to_luma8();
        let own = difference(&saved, &frame);
        assert!(own < 4.0, "{name}: {own} levels from its frame");
        for (i, other) in samples.iter().enumerate().filter(|(i, _)| *i != seq) {
            let d = difference(&saved, &image::open(other).unwrap().to_luma8());
            assert!(d > own * 2.0, "{name} is closer to sample {i} ({d}) than to its own frame ({own})");
        }
    }
    assert!(events.iter().filter(|e| e["state"] == "off").all(|e| e.get("snapshot").is_none()));
    assert_eq!(files(&shots).len(), on.len(), "one JPEG per switch-on, no temporary files left");
}

#[test]
fn retention_keeps_the_newest_snapshots_only() {
    let dir = tempfile::tempdir().unwrap();
    let shots = dir.path().join("shots");
    std::fs::create_dir(&shots).unwrap();
    std::fs::write(shots.join("operator-notes.jpg"), b"not vigil's").unwrap();
    // Looping until stopped: switch-ons until eight were named (however slow the machine), three kept.
    let mut child = vigil()
        .args(["run", "--config"])
        .arg(config(dir.path(), "dir = \"shots\"\nmax_files = 3", true))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
        lines.push(line);
        if lines.iter().filter(|l| l.contains("\"snapshot\"")).count() == 8 {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let named: Vec<String> =
        events(lines.join("\n").as_bytes()).iter().filter_map(|e| e["snapshot"].as_str().map(String::from)).collect();
    assert!(named.len() > 6, "enough switch-ons to rotate: {}", named.len());
    let mut newest = named[named.len() - 3..].to_vec();
    newest.push("operator-notes.jpg".into());
    newest.sort();
    assert_eq!(files(&shots), newest, "the three newest, and the file vigil did not make");
}

#[test]
fn a_directory_it_may_not_write_is_logged_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let shots = dir.path().join("shots");
    std::fs::create_dir(&shots).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shots, std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut cmd = vigil();
    cmd.args(["run", "--config"]).arg(config(dir.path(), "dir = \"shots\"", false));
    // CI runs as root, whom permission bits do not stop: drop the capabilities that bypass
    // them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER) before exec, as the packaged
    // service's `vigil` user would be.
    // SAFETY: only async-signal-safe calls (prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::geteuid() == 0 {
                for cap in [1, 2, 3] {
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    std::fs::set_permissions(&shots, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    let on = events(&out.stdout).iter().filter(|e| e["state"] == "on").count();
    assert!(on > 0, "events still go out");
    assert!(log.contains("cannot write") && log.contains("Permission denied"), "{log}");
    assert!(log.contains(&format!("0 written, {on} failed")), "every snapshot counted as failed: {log}");
    assert!(files(&shots).is_empty());
}

#[test]
fn bad_snapshot_keys_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("shots")).unwrap();
    for (section, needle) in [
        ("dir = \"no-such-folder\"", "snapshots.dir"),
        ("dir = \"shots\"\nmax_files = 0", "snapshots.max_files"),
        ("dir = \"shots\"\nquality = 101", "snapshots.quality"),
        ("dir = \"shots\"\nmqtt = true", "no [mqtt] section"),
        ("dir = \"shots\"\nformat = \"png\"", "format"),
    ] {
        let out = vigil().args(["run", "--config"]).arg(config(dir.path(), section, false)).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{section}: {err}");
        assert!(err.contains(needle) && err.contains("c.toml"), "{section}: `{needle}` in {err}");
    }
}
