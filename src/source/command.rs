//! Frames from a camera program that vigil runs itself (`kind = "command"`):
//! `rpicam-vid`, `gst-launch-1.0`, `ffmpeg` or any program writing a stream to
//! its stdout, read as a [pipe](super::pipe) stream (same formats and keys).
//!
//! Why vigil starts it rather than a shell pipe (`rpicam-vid ... | vigil run`):
//! under systemd, stdin is /dev/null, so a piped profile cannot run as a
//! service; and when the camera program dies, a pipe just ends. Here the child
//! is supervised like a camera: its stderr is logged line by line, and when it
//! exits or its frames stall (the watchdog), it is ended and started again
//! with capped exponential backoff ([`super::live`]); on stop and reload it is
//! ended (SIGTERM, then SIGKILL after [`END_GRACE`]). It gets SIGTERM too if
//! vigil itself dies (`PR_SET_PDEATHSIG`), so no orphan keeps the camera busy.

use std::io::BufRead;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::config::SourceSection;
use super::live::{Capture, OpenError, Read};
use super::pipe::{PipeCapture, PipeSpec, StreamKeys};
use crate::frame::Frame;
use crate::tomlfile::{SettingsError, TomlFile};

/// How long a camera program gets to end after SIGTERM before it is killed.
pub const END_GRACE: Duration = Duration::from_secs(2);

/// Longest stderr line logged whole (a program printing binary garbage is cut short).
const MAX_LOG_LINE: usize = 400;

/// A camera command as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// The program and its arguments, e.g. `["rpicam-vid", "-t", "0", "-o", "-"]`.
    pub argv: Vec<String>,
    /// What it writes to stdout.
    pub stream: StreamKeys,
}

impl CommandSpec {
    /// The command keys of `[source]` (`argv` and the stream keys of a pipe), checked.
    pub fn from_section(s: &SourceSection, file: &TomlFile) -> Result<CommandSpec, SettingsError> {
        let Some(argv) = &s.argv else {
            return Err(file.error(
                Some("source.argv".into()),
                "missing: a command source needs `argv`, the camera program and its arguments, \
                 e.g. [\"rpicam-vid\", \"-t\", \"0\", \"-n\", \"-o\", \"-\"]",
            ));
        };
        if argv.get_ref().first().is_none_or(|p| p.is_empty()) || argv.get_ref().iter().any(|a| a.contains('\0')) {
            return Err(file.error_at(
                argv.span(),
                "source.argv",
                "expected the program (first) and its arguments, none empty or holding a NUL byte",
            ));
        }
        Ok(CommandSpec { argv: argv.get_ref().clone(), stream: StreamKeys::from_section(s, file, "command")? })
    }
}

/// The running camera program and the stream on its stdout.
pub struct CommandCapture {
    spec: CommandSpec,
    stream: PipeCapture,
    child: Option<Child>,
    /// Times the program was started, for log lines.
    starts: u64,
}

impl CommandCapture {
    /// A capture for `spec`; nothing is started yet.
    pub fn new(spec: CommandSpec) -> CommandCapture {
        let stream = PipeCapture::new(PipeSpec::for_stream(spec.stream, spec.argv[0].clone()));
        CommandCapture { spec, stream, child: None, starts: 0 }
    }

    /// End the child: SIGTERM, then SIGKILL after [`END_GRACE`]; reaped either way.
    fn end_child(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // SAFETY: a plain kill(2) on our own child's pid, which is not reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + END_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        log::warn!("source command `{}`: still running {END_GRACE:?} after SIGTERM; killed", self.spec.argv[0]);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Why the child's stream ended: its exit status, if it has one within a moment.
    fn exit_reason(&mut self) -> String {
        let Some(child) = self.child.as_mut() else { return "not running".into() };
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return format!("the camera command exited ({status})"),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => return "the camera command closed its stdout".into(),
                Err(e) => return format!("the camera command: {e}"),
            }
        }
    }
}

impl Capture for CommandCapture {
    fn open(&mut self) -> Result<(), OpenError> {
        self.end_child();
        let program = &self.spec.argv[0];
        let mut command = Command::new(program);
        command.args(&self.spec.argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; the closure runs in the child between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // If vigil dies without ending it, the camera program gets SIGTERM too. (The
                // signal follows the *thread* that started it; both starters, the main thread
                // and the capture thread, outlive the child: close() ends it first.)
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| match e.kind() {
            // A program that is not there or not runnable will not become so by retrying soon,
            // but may once it is installed: refused at start, retried after.
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                OpenError::Unsupported(format!("cannot run `{program}`: {e} (is it installed and on PATH?)"))
            }
            _ => OpenError::Unavailable(format!("cannot start `{program}`: {e}")),
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        if let Some(stderr) = child.stderr.take() {
            let name = program.clone();
            let pid = child.id();
            // Ends when the child closes its stderr (it exited, or was ended).
            let _ = std::thread::Builder::new().name("command-stderr".into()).spawn(move || {
                let mut reader = std::io::BufReader::new(stderr);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    let text = String::from_utf8_lossy(&line[..line.len().min(MAX_LOG_LINE)]);
                    log::info!("source command `{name}` [{pid}]: {}", text.trim_end());
                    line.clear();
                }
            });
        }
        self.starts += 1;
        log::info!(
            "source command `{program}`: started (pid {}, start {}), reading {} from its stdout",
            child.id(),
            self.starts,
            self.stream.stream_description()
        );
        self.stream.attach(OwnedFd::from(stdout));
        self.child = Some(child);
        Ok(())
    }

    fn read(&mut self, frame: &mut Frame, timeout: Duration) -> Read {
        match self.stream.read(frame, timeout) {
            // The child closed its stdout: it exited (or is about to). Lost: the watchdog
            // ends it and starts it again with backoff.
            Read::End => Read::Failed(self.exit_reason()),
            other => other,
        }
    }

    fn close(&mut self) {
        // Close our end first: a child blocked writing a frame gets EPIPE and can exit.
        self.stream.close();
        self.end_child();
    }

    fn reopen_on_stall(&self) -> bool {
        // A stalled camera program is ended and started again.
        true
    }

    fn describe(&self) -> String {
        format!("command `{}` ({})", self.spec.argv.join(" "), self.stream.stream_description())
    }
}

impl Drop for CommandCapture {
    fn drop(&mut self) {
        self.close();
    }
}
