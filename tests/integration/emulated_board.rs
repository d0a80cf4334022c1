//! The emulated ARM board: vigil cross-built for aarch64, running on Debian's arm64 kernel in
//! `qemu-system-aarch64 -M virt -cpu cortex-a72` with `boards/qemu-virt.toml`, on the kernel's
//! real interfaces:
//! - camera: vivid, the kernel's virtual V4L2 capture driver (`/dev/video0`, real ioctls, mmap
//!   streaming); it shows 75 % colour bars, which the grey solar-cell model scores as a
//!   defective cell (about 0.99) and as monocrystalline with some steady, lower score;
//! - GPIO: the board's PL061 controller (`/dev/gpiochip0`) through the GPIO v2 character device;
//!   every level the guest drives shows on the host as a `pl061_set_output` trace line;
//! - serial: the second PL011 UART (`/dev/ttyAMA1`), wired to a unix socket on the host.
//!
//! The host reads the UART (events, status lines, checksums), asks for scores, moves a label's
//! threshold over the console to switch it on and off, unplugs the camera (unbinds vivid from its
//! device, as pulling a USB cable does) and plugs it back, and checks that the GPIO lines
//! followed: label lines as the events said, the heartbeat toggling while frames flow, the fault
//! line up exactly while the camera was gone.
//!
//! It needs the boot files `tests/board/make-initramfs.sh` makes from the aarch64 build, in the
//! directory named by `VIGIL_BOARD_IMAGE`, and qemu-system-aarch64 (`.ci/setup-host --arm`); `.ci/run`
//! does both and runs it with `--ignored`. `cargo test` alone reports it as ignored, not passed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use vigil::protocol::parse_text_line;

/// How long any one expected thing may take under emulation before the test fails.
const STEP: Duration = Duration::from_secs(90);

/// A line as it arrived on the host, with when.
struct Line {
    at: Instant,
    text: String,
}

/// Everything received from one stream, and the channel that delivers it.
struct Stream {
    name: &'static str,
    rx: Receiver<Line>,
    seen: Vec<String>,
}

impl Stream {
    fn new(name: &'static str, reader: impl std::io::Read + Send + 'static) -> Stream {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(text) = line else { break };
                if tx.send(Line { at: Instant::now(), text }).is_err() {
                    break;
                }
            }
        });
        Stream { name, rx, seen: Vec::new() }
    }

    /// Wait for the first line (from now on) that `want` accepts.
    fn wait(&mut self, what: &str, want: impl Fn(&str) -> bool) -> Line {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.text.clone());
                    if want(&line.text) {
                        return line;
                    }
                }
                Err(_) => {
                    let tail: Vec<_> = self.seen.iter().rev().take(40).rev().collect();
                    panic!("{}: no {what} within {STEP:?}; last lines:\n{tail:#?}", self.name)
                }
            }
        }
    }

    /// Collect what is left until the sender closes.
    fn drain(&mut self) {
        while let Ok(line) = self.rx.recv_timeout(STEP) {
            self.seen.push(line.text);
        }
    }
}

/// The running emulated board.
struct Board {
    qemu: Child,
    console_in: ChildStdin,
    console: Stream,
    uart: Stream,
    uart_out: UnixStream,
    trace: PathBuf,
    started: Instant,
    _dir: tempfile::TempDir,
}

impl Board {
    fn boot(image: &std::path::Path) -> Board {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("uart1.sock");
        let trace = dir.path().join("gpio.trace");
        let started = Instant::now();
        let mut qemu = Command::new("qemu-system-aarch64")
            .args(["-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024"])
            .arg("-kernel")
            .arg(image.join("vmlinuz"))
            .arg("-initrd")
            .arg(image.join("initrd.gz"))
            .args(["-append", "console=ttyAMA0 quiet", "-display", "none", "-monitor", "none", "-nic", "none"])
            .args(["-no-reboot", "-serial", "stdio"])
            .arg("-chardev")
            .arg(format!("socket,id=uart1,path={},server=on,wait=off", socket.display()))
            .args(["-serial", "chardev:uart1"])
            .arg("-trace")
            .arg(format!("pl061_set_output,file={}", trace.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-aarch64 (.ci/setup-host --arm installs it)");
        let console_in = qemu.stdin.take().unwrap();
        let console = Stream::new("console", qemu.stdout.take().unwrap());
        let uart_out = loop {
            match UnixStream::connect(&socket) {
                Ok(s) => break s,
                Err(_) if started.elapsed() < Duration::from_secs(20) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("qemu's UART socket {}: {e}", socket.display()),
            }
        };
        let uart = Stream::new("uart", uart_out.try_clone().unwrap());
        Board { qemu, console_in, console, uart, uart_out, trace, started, _dir: dir }
    }

    /// Type a command on the guest's console (tests/board/init obeys it).
    fn console_command(&mut self, cmd: &str) {
        writeln!(self.console_in, "{cmd}").unwrap();
        self.console_in.flush().unwrap();
    }

    /// Send a console command to vigil over the UART and wait for its reply's fields.
    fn serial_command(&mut self, cmd: &str) -> Vec<String> {
        self.uart_out.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let verb = cmd.split(' ').next().unwrap().to_string();
        let line = self.uart.wait(&format!("reply to `{cmd}`"), |l| {
            parse_text_line(l).is_ok_and(|f| f[0] == "VGRPL" && f[1].eq_ignore_ascii_case(&verb))
        });
        let fields: Vec<String> = parse_text_line(&line.text).unwrap().iter().map(|s| s.to_string()).collect();
        assert_eq!(fields[2], "OK", "`{cmd}` refused: {}", line.text);
        fields[3..].to_vec()
    }

    /// Wait for a status line on the UART that `want` accepts (fields after `VGSTA`).
    fn status(&mut self, what: &str, want: impl Fn(&Status) -> bool) -> Status {
        let line =
            self.uart.wait(what, |l| parse_text_line(l).ok().and_then(|f| Status::parse(&f)).is_some_and(|s| want(&s)));
        Status::parse(&parse_text_line(&line.text).unwrap()).unwrap()
    }

    /// Wait for an event on the UART for `label` switching to `on`; return its frame number.
    fn event(&mut self, label: &str, on: bool) -> u64 {
        let state = if on { "ON" } else { "OFF" };
        let line = self.uart.wait(&format!("{label} {state} event"), |l| {
            parse_text_line(l).is_ok_and(|f| f[0] == "VGEVT" && f[3] == label && f[4] == state)
        });
        parse_text_line(&line.text).unwrap()[1].parse().unwrap()
    }

    /// Levels driven on PL061 output `line`, in order, repeats collapsed.
    fn gpio_levels(&self, line: u32) -> Vec<u8> {
        let text = std::fs::read_to_string(&self.trace).unwrap_or_default();
        let needle = format!("setting output {line} to ");
        let mut levels: Vec<u8> = Vec::new();
        for l in text.lines() {
            if let Some(v) = l.split_once(&needle).and_then(|(_, v)| v.trim().parse().ok())
                && levels.last() != Some(&v)
            {
                levels.push(v);
            }
        }
        levels
    }

    /// Number of level changes driven on `line` (repeats not collapsed away first).
    fn gpio_toggles(&self, line: u32) -> usize {
        self.gpio_levels(line).len().saturating_sub(1)
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

/// A `$VGSTA` status line's fields.
#[derive(Debug)]
struct Status {
    frames: u64,
    source_ok: bool,
    outages: u64,
    labels_on: Vec<String>,
}

impl Status {
    fn parse(f: &[&str]) -> Option<Status> {
        // ..., labels on, SoC temperature, throttling flags (the virt board has neither sensor).
        if f[0] != "VGSTA" || f.len() != 12 {
            return None;
        }
        Some(Status {
            frames: f[2].parse().ok()?,
            source_ok: f[7] == "OK",
            outages: f[8].parse().ok()?,
            labels_on: f[9].split(';').filter(|s| !s.is_empty()).map(String::from).collect(),
        })
    }
}

/// `label=score` out of a `scores` reply.
fn score_of(fields: &[String], label: &str) -> f32 {
    let prefix = format!("{label}=");
    fields
        .iter()
        .find_map(|f| f.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{label} in {fields:?}"))
        .parse()
        .unwrap()
}

#[test]
#[ignore = "boots the emulated ARM board: needs VIGIL_BOARD_IMAGE and qemu-system-aarch64 (run by .ci/run)"]
fn emulated_board_camera_gpio_and_serial() {
    let image = PathBuf::from(
        std::env::var("VIGIL_BOARD_IMAGE")
            .expect("VIGIL_BOARD_IMAGE: the directory tests/board/make-initramfs.sh wrote vmlinuz and initrd.gz to"),
    );
    let mut board = Board::boot(&image);

    // Boot: model loaded and camera open (the point where vigil tells systemd READY=1), then the
    // first decision: the model calls the colour bars defective on the first frame.
    // Matched without the log target (the module path), which moves when the code does.
    let ready = board.console.wait("vigil's `source:` line (READY)", |l| l.contains("] source: V4L2 /dev/video0"));
    let first = board.console.wait("the first event on stdout", |l| l.starts_with("{\"type\":\"event\""));
    let boot_to_ready = ready.at - board.started;
    let boot_to_first = first.at - board.started;
    eprintln!(
        "emulated board: boot to READY {:.1} s, to the first decision {:.1} s (software emulation, indicative only)",
        boot_to_ready.as_secs_f64(),
        boot_to_first.as_secs_f64()
    );
    assert!(first.text.contains("\"label\":\"defective\",\"state\":\"on\""), "{}", first.text);
    assert_eq!(board.event("defective", true), 0, "defective from the first frame");
    let running = board.status("a status line with frames and the camera OK", |s| s.frames > 0 && s.source_ok);
    assert_eq!(running.labels_on, ["defective"]);
    assert_eq!(running.outages, 0);

    // A threshold moved over the serial console switches monocrystalline on, then off again.
    let scores = board.serial_command("scores");
    let mono = score_of(&scores, "monocrystalline");
    eprintln!("emulated board: scores of vivid's colour bars: {scores:?}");
    assert!((0.0..0.98).contains(&mono), "monocrystalline starts below its threshold (0.99): {scores:?}");
    let on = (mono * 0.5).max(0.0001);
    let reply = board.serial_command(&format!("set threshold monocrystalline on={on:.4} off={:.4}", on * 0.5));
    let from: u64 = reply.iter().find_map(|f| f.strip_prefix("from_seq=")).unwrap().parse().unwrap();
    let seq_on = board.event("monocrystalline", true);
    assert!(seq_on >= from, "switched on at frame {seq_on}, the threshold applies from {from}");
    board.serial_command("set threshold monocrystalline on=0.99 off=0.98");
    let seq_off = board.event("monocrystalline", false);
    assert!(seq_off > seq_on);
    let status = board.status("a status line after the threshold changes", |s| s.frames > seq_off);
    assert_eq!(status.labels_on, ["defective"]);

    // The camera unplugged under the running daemon: LOST with one outage, then back and deciding.
    let frames_before = board.status("a status line before the unplug", |s| s.source_ok).frames;
    board.console_command("unplug");
    board.console.wait("the guest's unplug", |l| l.contains("board: camera unplugged"));
    let lost = board.status("LOST in a status line", |s| !s.source_ok);
    assert_eq!(lost.outages, 1, "{lost:?}");
    let forgotten = board.status("no label on while the camera is gone", |s| !s.source_ok && s.labels_on.is_empty());
    assert_eq!(forgotten.outages, 1, "{forgotten:?}");
    std::thread::sleep(Duration::from_secs(3));
    let still_lost = board.status("a status line while unplugged", |_| true);
    assert!(!still_lost.source_ok && still_lost.outages == 1, "{still_lost:?}");
    let frames_lost = still_lost.frames;
    board.console_command("replug");
    board.console.wait("the guest's replug", |l| l.contains("board: camera replugged"));
    let back = board.status("frames decided again after the replug", |s| s.source_ok && s.frames > frames_lost + 3);
    assert_eq!(back.outages, 1, "one outage for one unplug: {back:?}");
    assert!(frames_lost >= frames_before, "{frames_lost} < {frames_before}");
    // Detections resume: monocrystalline switched on again by a threshold, on a new frame.
    board.serial_command(&format!("set threshold monocrystalline on={on:.4} off={:.4}", on * 0.5));
    let seq_on_again = board.event("monocrystalline", true);
    assert!(seq_on_again > frames_lost, "an event from a frame captured after the replug");

    // Stop: vigil exits 0 and writes a final status line.
    board.console_command("stop");
    board.console.wait("vigil's exit", |l| l.contains("board: vigil exited with 0"));
    let _ = board.qemu.wait();
    board.console.drain();
    board.uart.drain();

    // Every UART line is a checksummed sentence; the events on it are those on stdout.
    let uart_lines: Vec<&String> = board.uart.seen.iter().filter(|l| !l.trim().is_empty()).collect();
    for l in &uart_lines {
        parse_text_line(l).unwrap_or_else(|e| panic!("UART line `{l}`: {e}"));
    }
    let uart_events: Vec<String> = uart_lines
        .iter()
        .map(|l| parse_text_line(l).unwrap())
        .filter(|f| f[0] == "VGEVT")
        .map(|f| format!("{} {} {}", f[1], f[3], f[4].to_lowercase()))
        .collect();
    let stdout_events: Vec<String> = board
        .console
        .seen
        .iter()
        .filter(|l| l.starts_with("{\"type\":\"event\""))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {} {}", v["seq"], v["label"].as_str().unwrap(), v["state"].as_str().unwrap())
        })
        .collect();
    assert_eq!(uart_events, stdout_events);
    assert!(uart_events.len() >= 4, "{uart_events:?}");

    // GPIO, as the PL061 saw it. Label lines: low at start, then each event, low again at stop.
    let expected_levels = |label: &str| {
        let mut levels = vec![0u8];
        for e in uart_events.iter().filter(|e| e.contains(&format!(" {label} "))) {
            levels.push(u8::from(e.ends_with(" on")));
        }
        if levels.last() == Some(&1) {
            levels.push(0);
        }
        levels
    };
    assert_eq!(board.gpio_levels(1), expected_levels("monocrystalline"), "monocrystalline line (1): {uart_events:?}");
    // Defective: on from the first frame, off while the camera was unplugged (unknown, not
    // unchanged), on again from the first frames after the replug, off at stop.
    assert_eq!(board.gpio_levels(0), [0, 1, 0, 1, 0], "defective line (0): {uart_events:?}");
    assert_eq!(expected_levels("defective"), [0, 1, 0, 1, 0], "defective events: {uart_events:?}");
    // Fault: up exactly once, for the one outage.
    assert_eq!(board.gpio_levels(5), [0, 1, 0], "fault line (5)");
    // Heartbeat: a toggle every 0.5 s while frames flow (held low during the outage).
    let beats = board.gpio_toggles(4);
    assert!(beats >= 10, "heartbeat line (4) toggled {beats} times");
    eprintln!(
        "emulated board: {} UART lines, {} events, heartbeat toggles {beats}, frames before/after unplug {frames_before}/{}",
        uart_lines.len(),
        uart_events.len(),
        back.frames
    );
}
