//! `kind = "command"`: vigil runs a real `ffmpeg` as its camera, reads MJPEG from its stdout,
//! logs its stderr, and when the child is killed mid-run, reports the outage and starts it
//! again; on stop the child is ended with it.

use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{light_model_section, stderr, vigil, write};

/// ffmpeg's test pattern, 10 frames a second in real time, as MJPEG on stdout.
const FFMPEG: &str = r#"["ffmpeg", "-hide_banner", "-loglevel", "warning", "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-f", "mjpeg", "-q:v", "5", "-"]"#;

fn config(dir: &Path, argv: &str) -> std::path::PathBuf {
    let text = format!(
        "{}\n[source]\nkind = \"command\"\nargv = {argv}\nformat = \"mjpeg\"\nwatchdog_s = 1\n\n\
         [stdout]\nformat = \"json\"\n\n[status]\ninterval_s = 0.2\n",
        light_model_section()
    );
    write(dir, "c.toml", &text)
}

/// Lines of `file` (the daemon's stderr) as they are appended.
fn log_lines(file: std::path::PathBuf) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut offset = 0;
        loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for line in text[offset.min(text.len())..].split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                offset += line.len();
                if tx.send(line.trim_end().to_string()).is_err() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    rx
}

fn wait_for<T>(rx: &Receiver<T>, what: &str, want: impl Fn(&T) -> bool) -> T
where
    T: std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) if want(&v) => return v,
            Ok(v) => seen.push(v),
            Err(_) => panic!("no {what} within 90 s; seen (last 20): {:?}", &seen[seen.len().saturating_sub(20)..]),
        }
    }
}

/// The pid in a `started (pid N, start K)` log line.
fn pid_of(line: &str) -> i32 {
    line.split("(pid ").nth(1).and_then(|s| s.split(',').next()).and_then(|p| p.parse().ok()).expect(line)
}

fn alive(pid: i32) -> bool {
    // After vigil reaps it, the pid is gone (ESRCH).
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn a_camera_command_killed_mid_run_is_restarted_and_ended_at_stop() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FFMPEG);
    let log = dir.path().join("stderr.txt");
    let mut child = vigil()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null()) // as under systemd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logs = log_lines(log.clone());
    let (tx, status) = std::sync::mpsc::channel::<Value>();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in stdout.lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"));
            if v["type"] == "status" && tx.send(v).is_err() {
                return;
            }
        }
    });

    let first = wait_for(&logs, "the first start", |l| l.contains("started (pid") && l.contains("start 1)"));
    let first_pid = pid_of(&first);
    let flowing = wait_for(&status, "frames decided", |s| s["frames"].as_u64() > Some(5) && s["source"] == "ok");
    assert_eq!(flowing["outages"], 0);

    // The camera program dies under the daemon.
    unsafe { libc::kill(first_pid, libc::SIGKILL) };
    let second = wait_for(&logs, "a second start", |l| l.contains("started (pid") && l.contains("start 2)"));
    let second_pid = pid_of(&second);
    assert_ne!(first_pid, second_pid);
    let before = flowing["frames"].as_u64().unwrap();
    let again = wait_for(&status, "frames again after the restart", |s| {
        s["outages"] == 1 && s["source"] == "ok" && s["frames"].as_u64() > Some(before + 5)
    });
    assert_eq!(again["outages"], 1, "one outage: {again}");
    assert!(!alive(first_pid), "the killed child was reaped");

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!alive(second_pid), "the camera command ends with vigil");
    assert!(text.contains("lost (the camera command exited"), "the exit is the reason given: {text}");
}

#[test]
fn a_camera_program_that_is_not_installed_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), r#"["no-such-camera-program", "-o", "-"]"#);
    let out = vigil().args(["run", "--config", cfg.to_str().unwrap()]).stdin(Stdio::null()).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot run `no-such-camera-program`"), "{err}");
}

#[test]
fn keys_of_other_source_kinds_are_refused_naming_the_kind() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(config(dir.path(), FFMPEG)).unwrap().replace("watchdog_s = 1", "on_end = \"reopen\"");
    let cfg = write(dir.path(), "c.toml", &text);
    let out = vigil().args(["check", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("source.on_end") && err.contains("does not apply to a command source (pipe only)"), "{err}");
}
