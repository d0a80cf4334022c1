//! `[mqtt]` against a real broker: each test starts its own Mosquitto on free loopback ports,
//! with a password file and a TLS listener whose CA the test makes with openssl, and watches it
//! with Mosquitto's own `mosquitto_sub` (an independent client). The daemon is the real binary;
//! its stdout events are the reference every MQTT event is checked against.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{light_model_samples, light_model_section, vigil, write};

const USER: &str = "vigil";
const PASSWORD: &str = "s3cret-pole";

/// A free TCP port on the loopback interface (bound, then released for the broker).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

const EC_KEY: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/// A CA and, signed by it, a server certificate for `localhost` / 127.0.0.1 and a client
/// certificate (`client.pem`, `client.key`), in `dir`.
fn make_certificates(dir: &Path, ca_name: &str) {
    let (key, pem, subject) = (format!("{ca_name}.key"), format!("{ca_name}.pem"), format!("/CN={ca_name}"));
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509"])
        .args(EC_KEY)
        .args(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject]));
    if ca_name == "ca" {
        signed_by_ca(dir, "server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1");
        signed_by_ca(dir, "client", "/CN=pole-with-certificate", "extendedKeyUsage=clientAuth");
    }
}

/// `name.key` and `name.pem`, for `subject` with the X.509 `extension`, signed by `ca.pem`.
fn signed_by_ca(dir: &Path, name: &str, subject: &str, extension: &str) {
    let (key, csr, pem, ext) =
        (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req"])
        .args(EC_KEY)
        .args(["-keyout", &key, "-out", &csr, "-subj", subject]));
    std::fs::write(dir.join(&ext), format!("{extension}\n")).unwrap();
    run(Command::new("openssl").current_dir(dir).args([
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        &pem,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]));
}

/// A Mosquitto of this test's own: a plain listener and a TLS one, a password file, and
/// persistence (so that a subscriber's session and its queued messages survive a restart).
struct Broker {
    dir: PathBuf,
    port: u16,
    tls_port: u16,
    /// A TLS listener that requires a client certificate signed by the test CA.
    cert_port: u16,
    process: Option<Child>,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let dir = dir.join("broker");
        std::fs::create_dir_all(&dir).unwrap();
        make_certificates(&dir, "ca");
        make_certificates(&dir, "other-ca");
        std::fs::write(dir.join("passwd"), "").unwrap();
        std::fs::write(dir.join("password"), format!("{PASSWORD}\n")).unwrap();
        run(Command::new("mosquitto_passwd").args(["-b"]).arg(dir.join("passwd")).args([USER, PASSWORD]));
        let (port, tls_port, cert_port) = (free_port(), free_port(), free_port());
        let d = dir.display();
        let tls = format!("cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n");
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!(
                "user root\nallow_anonymous false\npassword_file {d}/passwd\npersistence true\npersistence_location {d}/\n\
                 log_dest stderr\nlistener {port} 127.0.0.1\nlistener {tls_port} 127.0.0.1\n{tls}\
                 listener {cert_port} 127.0.0.1\n{tls}require_certificate true\n"
            ),
        )
        .unwrap();
        let mut b = Broker { dir, port, tls_port, cert_port, process: None };
        b.resume();
        b
    }

    /// Start it (again, on the same ports and persistence file).
    fn resume(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("broker.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto (Debian package `mosquitto`, installed by .ci/setup-host)");
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while [self.port, self.tls_port, self.cert_port].iter().any(|&p| TcpStream::connect(("127.0.0.1", p)).is_err())
        {
            assert!(Instant::now() < deadline, "mosquitto did not listen: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop it the way `systemctl stop` does (SIGTERM: it saves its persistence file).
    fn pause(&mut self) {
        if let Some(mut p) = self.process.take() {
            terminate(&mut p);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    /// `[mqtt]` for this broker over TLS with the password (the usual field setup).
    fn section(&self, client_id: &str, outbox: &Path, extra: &str) -> String {
        format!(
            "[mqtt]\nbroker = \"mqtts://localhost:{}\"\nclient_id = \"{client_id}\"\nusername = \"{USER}\"\n\
             password_file = \"{}\"\nca_file = \"{}\"\noutbox = \"{}\"\n{extra}\n",
            self.tls_port,
            self.password_file().display(),
            self.dir.join("ca.pem").display(),
            outbox.display()
        )
    }

    /// The client side's password file (written once at start: daemons starting side by
    /// side read it while another test step might otherwise be rewriting it).
    fn password_file(&self) -> PathBuf {
        self.dir.join("password")
    }

    /// `mosquitto_sub` on `filter`, its `topic payload` lines collected as they come.
    /// `session`: a persistent session (QoS 1, not cleaned) under that client id, which the
    /// broker keeps, with its queued messages, across its own restart.
    fn subscribe(&self, filter: &str, session: Option<&str>) -> Subscriber {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-u", USER, "-P", PASSWORD, "-t", filter, "-v"]);
        if let Some(id) = session {
            cmd.args(["-q", "1", "-c", "-i", id]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (Debian package `mosquitto-clients`)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            // Bytes, not `lines()`: a snapshot's JPEG payload is not UTF-8 (and may hold newlines).
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                sink.lock().unwrap().push(String::from_utf8_lossy(&line).into_owned());
            }
        });
        // mosquitto_sub prints nothing when subscribed: wait until the broker has the session.
        std::thread::sleep(Duration::from_millis(300));
        Subscriber { child, lines }
    }

    /// The retained message on `topic`, if any (a subscriber that joins now).
    fn retained(&self, topic: &str) -> Option<String> {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-u", USER, "-P", PASSWORD, "-t", topic])
            .args(["--retained-only", "-C", "1", "-W", "2"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!text.is_empty()).then_some(text)
    }

    /// The retained message on `topic` as bytes (`mosquitto_sub -N`: no newline added).
    fn retained_bytes(&self, topic: &str) -> Option<Vec<u8>> {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-u", USER, "-P", PASSWORD, "-t", topic])
            .args(["--retained-only", "-C", "1", "-W", "2", "-N"])
            .output()
            .unwrap();
        (!out.stdout.is_empty()).then_some(out.stdout)
    }

    fn publish(&self, topic: &str, message: &str) {
        run(Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-u",
            USER,
            "-P",
            PASSWORD,
            "-t",
            topic,
            "-m",
            message,
        ]));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.pause();
    }
}

fn terminate(p: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
    let _ = p.wait();
}

struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Subscriber {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Wait until a line satisfies `pred` (or fail after `within`).
    fn wait_for(&self, within: Duration, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + within;
        while !self.lines().iter().any(|l| pred(l)) {
            assert!(Instant::now() < deadline, "no {what} within {within:?}; got:\n{}", self.lines().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The JSON payloads on `topic`.
    fn payloads(&self, topic: &str) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix(topic)?.strip_prefix(' '))
            .map(|p| serde_json::from_str(p).unwrap_or_else(|e| panic!("{p}: {e}")))
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config replaying the factory bundle's samples (`fps`, looping or not) with events on
/// stdout as JSON, and `mqtt`.
fn config(dir: &Path, name: &str, fps: u32, repeat: bool, mqtt: &str) -> PathBuf {
    let text = format!(
        "{}\n[source]\nkind = \"files\"\npath = \"{}\"\nfps = {fps}\nloop = {repeat}\n\n\
         [thresholds]\ndefault = {{ on = 0.5, off = 0.35, min_frames = 1, hold_ms = 0 }}\n\n\
         [stdout]\nformat = \"json\"\n\n[status]\ninterval_s = 0.5\n\n{mqtt}",
        light_model_section(),
        light_model_samples().display()
    );
    write(dir, name, &text)
}

/// A running daemon, its stdout lines and its log collected as they come.
struct Daemon {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let mut child = vigil()
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |r: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Daemon { child, stdout, stderr }
    }

    /// Wait for the daemon to end by itself; its exit code.
    fn wait(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // the readers' last lines
                return status.code();
            }
            assert!(Instant::now() < deadline, "the daemon did not end within {within:?}: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait(Duration::from_secs(20))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// `(seq, label, state)` of every event on stdout, in order.
    fn events(&self) -> Vec<EventKey> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "event")
            .map(|v| key(&v))
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An event as a consumer identifies it within one boot: frame seq, label, new state.
type EventKey = (u64, String, String);

fn key(v: &Value) -> EventKey {
    (v["seq"].as_u64().unwrap(), v["label"].as_str().unwrap().to_string(), v["state"].as_str().unwrap().to_string())
}

/// The MQTT events, first arrivals only (a consumer drops repeats by boot id, seq and label),
/// and how many repeats there were.
fn unique_events(events: &[Value]) -> (Vec<(String, EventKey)>, usize) {
    let mut seen = HashSet::new();
    let mut unique = Vec::new();
    for e in events {
        let k = (e["boot_id"].as_str().unwrap().to_string(), key(e));
        if seen.insert(k.clone()) {
            unique.push(k);
        }
    }
    let repeats = events.len() - unique.len();
    (unique, repeats)
}

#[test]
fn events_states_and_status_reach_the_broker_over_tls_and_a_late_subscriber_sees_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = broker.subscribe("vigil/#", None);
    let shots = dir.path().join("shots");
    std::fs::create_dir(&shots).unwrap();
    let mqtt = broker.section("pole-1", &dir.path().join("outbox"), "home_assistant = true")
        + &format!("\n[snapshots]\ndir = \"{}\"\nmqtt = true\n", shots.display());
    let mut d = Daemon::start(&config(dir.path(), "c.toml", 20, false, &mqtt));
    assert_eq!(d.wait(Duration::from_secs(60)), Some(0), "{}", d.log());
    sub.wait_for(Duration::from_secs(5), "offline", |l| l == "vigil/pole-1/availability offline");

    let stdout_events = d.events();
    assert!(stdout_events.len() >= 2, "the samples switch labels on: {stdout_events:?}");
    let mqtt_events = sub.payloads("vigil/pole-1/events");
    let (unique, repeats) = unique_events(&mqtt_events);
    assert_eq!(repeats, 0);
    assert_eq!(unique.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>(), stdout_events);
    let boot = mqtt_events[0]["boot_id"].as_str().unwrap();
    assert!(mqtt_events.iter().all(|e| e["boot_id"] == boot), "one boot id per process");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for e in &mqtt_events {
        let t = e["time_ms"].as_u64().unwrap();
        assert!(t <= now_ms && now_ms - t < 120_000, "time_ms is the wall clock of the frame: {e}");
    }
    // The status is the stdout status plus the fleet fields.
    let statuses = sub.payloads("vigil/pole-1/status");
    let last = statuses.last().expect("a status");
    assert_eq!(last["frames"], 6, "{last}");
    // The outbox's figures as of that status (events may still be in flight then).
    assert!(last["outbox_queued"].as_u64().is_some_and(|q| q <= stdout_events.len() as u64), "{last}");
    assert_eq!((last["outbox_dropped"].as_u64(), last["boot_id"].as_str()), (Some(0), Some(boot)), "{last}");

    // A subscriber that joins after the run sees each label's last state, and `offline`.
    let levels: Vec<String> = ["defective", "uncertain", "monocrystalline"].map(String::from).into();
    let mut on = std::collections::HashMap::new();
    for (_, label, state) in &stdout_events {
        on.insert(label.clone(), state == "on");
    }
    for label in &levels {
        let expected = if on.get(label).copied().unwrap_or(false) { "ON" } else { "OFF" };
        assert_eq!(broker.retained(&format!("vigil/pole-1/label/{label}/state")).as_deref(), Some(expected), "{label}");
    }
    assert_eq!(broker.retained("vigil/pole-1/availability").as_deref(), Some("offline"));
    // The snapshot of the last switch-on, retained: the JPEG saved in the snapshot folder.
    let jpeg = broker.retained_bytes("vigil/pole-1/label/monocrystalline/snapshot").expect("a snapshot");
    let last_on = mqtt_events.iter().rev().find(|e| e["label"] == "monocrystalline" && e["state"] == "on").unwrap();
    let file = std::fs::read(shots.join(last_on["snapshot"].as_str().unwrap())).unwrap();
    assert!(jpeg.starts_with(&[0xff, 0xd8, 0xff]) && jpeg == file, "{} bytes vs {}", jpeg.len(), file.len());
    // Home Assistant discovery: a binary_sensor per label pointing at those topics.
    let config =
        broker.retained("homeassistant/binary_sensor/vigil_pole_1/monocrystalline_2/config").expect("discovery");
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["state_topic"], "vigil/pole-1/label/monocrystalline/state");
    assert_eq!(config["availability_topic"], "vigil/pole-1/availability");
}

#[test]
fn sigkill_leaves_offline_by_the_last_will_and_a_restart_says_online_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = broker.subscribe("vigil/pole-2/availability", None);
    let mqtt = broker.section("pole-2", &dir.path().join("outbox"), "home_assistant = true");
    let cfg = config(dir.path(), "c.toml", 10, true, &mqtt);
    let mut d = Daemon::start(&cfg);
    sub.wait_for(Duration::from_secs(30), "online", |l| l.ends_with(" online"));
    d.kill();
    sub.wait_for(Duration::from_secs(10), "the Last Will", |l| l.ends_with(" offline"));
    assert_eq!(broker.retained("vigil/pole-2/availability").as_deref(), Some("offline"));
    let mut again = Daemon::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    while broker.retained("vigil/pole-2/availability").as_deref() != Some("online") {
        assert!(Instant::now() < deadline, "no `online` after the restart: {}", again.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Home Assistant restarting says `online` on its status topic: the discovery configs (and
    // states) are published again, so its sensors come back without a vigil restart.
    let discovery = broker.subscribe("homeassistant/binary_sensor/vigil_pole_2/+/config", None);
    discovery.wait_for(Duration::from_secs(5), "the retained configs", |_| true);
    std::thread::sleep(Duration::from_millis(200));
    let before = discovery.lines().len();
    assert_eq!(before, 3, "one retained config per label: {:?}", discovery.lines());
    broker.publish("homeassistant/status", "online");
    let deadline = Instant::now() + Duration::from_secs(10);
    while discovery.lines().len() < 2 * before {
        assert!(
            Instant::now() < deadline,
            "no discovery again after Home Assistant's `online`: {:?}",
            discovery.lines()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(again.stop(), Some(0), "{}", again.log());
    assert_eq!(broker.retained("vigil/pole-2/availability").as_deref(), Some("offline"), "a clean stop says offline");
}

#[test]
fn a_broker_outage_mid_run_loses_nothing_and_events_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let sub = broker.subscribe("vigil/pole-3/events", Some("outage-watcher"));
    let mqtt = broker.section("pole-3", &dir.path().join("outbox"), "");
    let mut d = Daemon::start(&config(dir.path(), "c.toml", 40, true, &mqtt));
    sub.wait_for(Duration::from_secs(30), "a first event", |_| true);
    broker.pause();
    std::thread::sleep(Duration::from_secs(4));
    let during = d.events().len();
    broker.resume();
    // Events keep coming while the daemon reconnects (backoff up to 8 s) and drains its outbox.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.log().contains("connected to") || d.log().matches("connected to").count() < 2 {
        assert!(Instant::now() < deadline, "no reconnect: {}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    let stdout_events = d.events();
    assert!(
        during >= 4 && stdout_events.len() > during,
        "events during and after the outage: {during} / {}",
        stdout_events.len()
    );
    assert!(d.log().contains("connection to mqtts://localhost"), "the loss is logged: {}", d.log());
    assert_every_event_arrives(&sub, "vigil/pole-3/events", &d);
}

/// Every stdout event of `d` arrives on `topic` (repeats allowed, dropped by key), in order.
/// The subscriber's session held what the broker took; it gets a moment to catch up.
fn assert_every_event_arrives(sub: &Subscriber, topic: &str, d: &Daemon) {
    let stdout_events = d.events();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (unique, repeats) = unique_events(&sub.payloads(topic));
        let got: Vec<_> = unique.into_iter().map(|(_, k)| k).collect();
        if got == stdout_events {
            eprintln!("{} events, {} repeats (resent after the outage, dropped by key)", got.len(), repeats);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "MQTT events differ from stdout's: {} vs {}\nfirst difference at {:?}\n{}",
            got.len(),
            stdout_events.len(),
            got.iter().zip(&stdout_events).position(|(a, b)| a != b),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_frozen_broker_is_found_by_the_keep_alive_and_nothing_is_lost() {
    // SIGSTOP: the broker's sockets stay open and say nothing (a hung broker, a half-open
    // network path). Only the keep-alive can tell; then reconnecting waits for CONNACK in vain
    // until SIGCONT.
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = broker.subscribe("vigil/frozen/events", Some("frozen-watcher"));
    let mqtt = broker.section("frozen", &dir.path().join("outbox"), "keep_alive_s = 5");
    let mut d = Daemon::start(&config(dir.path(), "c.toml", 20, true, &mqtt));
    sub.wait_for(Duration::from_secs(30), "a first event", |_| true);
    let pid = broker.process.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.log().contains("no answer to a ping within 5 s") {
        assert!(Instant::now() < deadline, "the frozen broker went unnoticed: {}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let deadline = Instant::now() + Duration::from_secs(40);
    while d.log().matches("connected to").count() < 2 {
        assert!(Instant::now() < deadline, "no reconnect after SIGCONT: {}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    assert_every_event_arrives(&sub, "vigil/frozen/events", &d);
}

#[test]
fn events_in_the_outbox_of_a_killed_daemon_arrive_after_it_restarts_and_a_full_outbox_says_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    broker.pause();
    let outbox = dir.path().join("outbox");
    // 16 KiB holds about 80 events: the first run makes more, with the broker down.
    let mqtt = broker.section("pole-4", &outbox, "outbox_max_kib = 16");
    let cfg = config(dir.path(), "c.toml", 100, true, &mqtt);
    let mut first = Daemon::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !first.log().contains("outbox full") {
        assert!(Instant::now() < deadline, "the outbox never filled: {} events\n{}", first.events().len(), first.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    first.kill();
    std::thread::sleep(Duration::from_millis(300)); // the reader has what the pipe held
    let first_events = first.events();
    let log = first.log();
    assert!(log.contains("dropped the") && log.contains("dropped since the start"), "{log}");
    assert!(std::fs::metadata(&outbox).unwrap().len() > 16 * 1024 / 2, "the outbox holds the events on disk");

    broker.resume();
    let sub = broker.subscribe("vigil/pole-4/events", None);
    let second = Daemon::start(&config(dir.path(), "c2.toml", 20, false, &mqtt));
    let mut second = second;
    assert_eq!(second.wait(Duration::from_secs(60)), Some(0), "{}", second.log());
    assert!(second.log().contains("left undelivered by an earlier run"), "{}", second.log());
    std::thread::sleep(Duration::from_millis(300));
    let (unique, _) = unique_events(&sub.payloads("vigil/pole-4/events"));
    let boots: Vec<&String> = unique.iter().map(|(b, _)| b).collect();
    let old_boot = boots[0].clone();
    let old: Vec<_> = unique.iter().filter(|(b, _)| *b == old_boot).map(|(_, k)| k.clone()).collect();
    let new: Vec<_> = unique.iter().filter(|(b, _)| *b != old_boot).map(|(_, k)| k.clone()).collect();
    // The old run's newest events, in order, before any of the new run's: the oldest were
    // dropped at the cap; the newest few may not have reached the outbox before SIGKILL.
    assert!(boots.iter().position(|b| **b != old_boot).is_none_or(|p| boots[p..].iter().all(|b| **b != old_boot)));
    assert!(old.len() >= 40, "about 80 kept: {}", old.len());
    let start = first_events.iter().position(|e| *e == old[0]).expect("the oldest kept is a first-run event");
    // stdout is the reference as far as it goes: the daemon was SIGKILLed, and stdout's last
    // lines may have died in its buffer while the outbox already held them.
    let overlap = old.len().min(first_events.len() - start);
    assert!(overlap >= 40, "{overlap} events to compare");
    let differ = first_events[start..start + overlap].iter().zip(&old).position(|(a, b)| a != b);
    assert!(
        differ.is_none(),
        "a contiguous run of the first run's events; differs at {differ:?}: stdout {:?} / mqtt {:?}",
        differ.map(|d| &first_events[start + d.saturating_sub(2)..(start + d + 3).min(first_events.len())]),
        differ.map(|d| &old[d.saturating_sub(2)..(d + 3).min(old.len())])
    );
    assert!(old.windows(2).all(|w| w[0].0 <= w[1].0), "in frame order throughout: {old:?}");
    assert!(start > 0, "the oldest were dropped");
    assert_eq!(new, second.events(), "then the second run's own");
}

#[test]
fn wrong_password_unreachable_broker_and_untrusted_certificate_are_logged_and_stdout_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let wrong = write(dir.path(), "wrong-password", "not-it\n");
    let closed = free_port();
    let cases = [
        (
            "wrong password",
            format!(
                "[mqtt]\nbroker = \"mqtt://127.0.0.1:{}\"\nusername = \"{USER}\"\npassword_file = \"{}\"\nclient_id = \"p\"\noutbox = \"o1\"\n",
                broker.port,
                wrong.display()
            ),
            "refused the connection: not authorised",
        ),
        (
            "nothing listening",
            format!("[mqtt]\nbroker = \"mqtt://127.0.0.1:{closed}\"\nclient_id = \"p\"\noutbox = \"o2\"\n"),
            "Connection refused",
        ),
        (
            "a host name that does not resolve",
            "[mqtt]\nbroker = \"mqtt://broker.invalid\"\nclient_id = \"p\"\noutbox = \"o4\"\n".to_string(),
            "cannot resolve `broker.invalid`",
        ),
        (
            "a certificate from another CA",
            broker.section("p", &dir.path().join("o3"), "").replace("ca.pem", "other-ca.pem"),
            "invalid peer certificate",
        ),
    ];
    for (what, mqtt, needle) in cases {
        let mut d = Daemon::start(&config(dir.path(), "c.toml", 10, false, &mqtt));
        assert_eq!(d.wait(Duration::from_secs(60)), Some(0), "{what}: {}", d.log());
        assert!(d.events().len() >= 2, "{what}: stdout has its events");
        let log = d.log();
        assert!(log.contains(needle) && log.contains("retrying with backoff"), "{what}: `{needle}` in\n{log}");
    }
}

#[test]
fn a_bad_mqtt_key_is_refused_with_exit_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let pw = write(dir.path(), "pw", "x\n");
    // A good section: `check` says what it will do, without connecting.
    let good = config(
        dir.path(),
        "good.toml",
        10,
        false,
        "[mqtt]\nbroker = \"mqtt://broker.invalid\"\nclient_id = \"t\"\noutbox = \"ob\"\n",
    );
    let out = vigil().args(["check", "--config"]).arg(&good).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("mqtt: mqtt://broker.invalid:1883 as `t`, topics under `vigil/t/`"), "{text}");
    for (mqtt, needle) in [
        ("broker = \"mqtt://h\"\nqos = 2\n", "qos"),
        ("broker = \"http://h\"\n", "mqtt.broker"),
        ("broker = \"mqtt://user:pw@h\"\n", "password is never written"),
        ("broker = \"mqtt://h\"\npassword_file = \"missing\"\n", "mqtt.password_file"),
        ("broker = \"mqtt://h\"\nca_file = \"ca.pem\"\n", "mqtt.ca_file"),
        ("broker = \"mqtts://h\"\nca_file = \"pw\"\n", "no usable CA certificate"),
        ("broker = \"mqtt://h\"\ntopic_prefix = \"fleet/#\"\n", "mqtt.topic_prefix"),
        ("broker = \"mqtt://h\"\noutbox = \"no/such/dir/outbox\"\n", "mqtt.outbox"),
        ("broker = \"mqtt://h\"\nkeep_alive_s = 1\n", "mqtt.keep_alive_s"),
    ] {
        let text = format!("[mqtt]\nclient_id = \"t\"\n{mqtt}").replace("\"pw\"", &format!("\"{}\"", pw.display()));
        let text = if text.contains("outbox =") { text } else { format!("{text}outbox = \"outbox\"\n") };
        let cfg = config(dir.path(), "bad.toml", 10, false, &text);
        let out = vigil().args(["run", "--config"]).arg(&cfg).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mqtt}: {err}");
        assert!(err.contains(needle) && err.contains("bad.toml"), "{mqtt}: `{needle}` in {err}");
    }
}

#[test]
fn three_daemons_share_one_broker_each_under_its_own_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = broker.subscribe("vigil/+/events", None);
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|i| {
            let mqtt = broker.section(&format!("fleet-{i}"), &dir.path().join(format!("outbox-{i}")), "");
            Daemon::start(&config(dir.path(), &format!("c{i}.toml"), 20, false, &mqtt))
        })
        .collect();
    for (i, d) in daemons.iter_mut().enumerate() {
        assert_eq!(d.wait(Duration::from_secs(90)), Some(0), "daemon {i}: {}", d.log());
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut boots = HashSet::new();
    for (i, d) in daemons.iter().enumerate() {
        let events = sub.payloads(&format!("vigil/fleet-{i}/events"));
        let (unique, _) = unique_events(&events);
        assert_eq!(unique.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>(), d.events(), "daemon {i}");
        boots.insert(unique[0].0.clone());
    }
    assert_eq!(boots.len(), 3, "each daemon its own boot id");
}

#[test]
fn commands_on_the_cmd_topic_are_ignored_unless_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    for (enabled, client) in [(false, "closed"), (true, "open")] {
        let replies = broker.subscribe(&format!("vigil/{client}/reply"), None);
        let extra = format!("commands = {enabled}");
        let mqtt = broker.section(client, &dir.path().join(format!("outbox-{client}")), &extra);
        let mut d = Daemon::start(&config(dir.path(), "c.toml", 10, true, &mqtt));
        let deadline = Instant::now() + Duration::from_secs(30);
        while broker.retained(&format!("vigil/{client}/availability")).as_deref() != Some("online") {
            assert!(Instant::now() < deadline, "not online: {}", d.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300)); // the SUBSCRIBE is granted
        broker.publish(&format!("vigil/{client}/cmd"), "set threshold defective on=0.9 off=0.8");
        broker.publish(&format!("vigil/{client}/cmd"), "get thresholds");
        if enabled {
            replies.wait_for(Duration::from_secs(10), "a reply to `get thresholds`", |l| {
                l.contains("defective") && l.contains("0.9")
            });
        } else {
            std::thread::sleep(Duration::from_secs(2));
            assert!(replies.lines().is_empty(), "commands off: no reply, nothing changed: {:?}", replies.lines());
        }
        assert_eq!(d.stop(), Some(0), "{}", d.log());
    }
}

#[test]
fn a_broker_that_requires_a_client_certificate_takes_vigils_and_refuses_none() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = broker.subscribe("vigil/cert/events", None);
    let d = &broker.dir;
    let base = broker
        .section("cert", &dir.path().join("outbox"), "")
        .replace(&format!(":{}\"", broker.tls_port), &format!(":{}\"", broker.cert_port));
    let with_cert = format!(
        "{base}client_cert = \"{}\"\nclient_key = \"{}\"\n",
        d.join("client.pem").display(),
        d.join("client.key").display()
    );
    let mut d1 = Daemon::start(&config(dir.path(), "c1.toml", 20, false, &with_cert));
    assert_eq!(d1.wait(Duration::from_secs(60)), Some(0), "{}", d1.log());
    assert!(d1.log().contains("connected to mqtts://localhost"), "{}", d1.log());
    std::thread::sleep(Duration::from_millis(300));
    let (unique, _) = unique_events(&sub.payloads("vigil/cert/events"));
    assert_eq!(unique.into_iter().map(|(_, k)| k).collect::<Vec<_>>(), d1.events());
    // Without one the broker ends the handshake: logged and retried, stdout unaffected.
    let without = base.replace("\"cert\"", "\"no-cert\"").replace("/outbox\"", "/outbox2\"");
    let mut d2 = Daemon::start(&config(dir.path(), "c2.toml", 20, false, &without));
    assert_eq!(d2.wait(Duration::from_secs(60)), Some(0), "{}", d2.log());
    assert!(!d2.events().is_empty());
    let log = d2.log();
    assert!(!log.contains("connected to") && log.contains("retrying with backoff"), "{log}");
}
