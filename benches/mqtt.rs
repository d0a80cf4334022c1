//! `cargo bench --bench mqtt`: what the MQTT sink costs and delivers, against a real Mosquitto
//! on a free loopback port (plain TCP, no auth), figures for docs/performance.md:
//!
//! - events per second through the whole path (sink → channel → outbox (synced per batch) →
//!   QoS 1 publish → broker → a subscriber), in bursts of 2,000;
//! - event → subscriber latency at a field-like pace (50 events/s), p50 / p99;
//! - the outbox's cost per event: the append alone, a whole cycle on the client thread (append,
//!   sync request, delivered), and the fdatasync the outbox's own thread runs, on the bench's
//!   temporary directory (`VIGIL_BENCH_DIR` names another disk);
//! - memory: RSS growth with 10,000 undelivered events in the outbox (the broker down);
//! - beside it, what a user would do without the sink: `mosquitto_pub` once per event.
//!
//! The subscriber is a minimal MQTT client built from vigil's own packet code, in this process,
//! so the latency is one clock's difference: the time `Sink::event` was called to the time the
//! broker's copy of the message was read.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil::protocol::EventLine;
use vigil::sink::Sink;
use vigil::sink::mqtt::outbox::Outbox;
use vigil::sink::mqtt::{Broker, MqttSettings, MqttSink, packet};

fn main() {
    // The outbox's disk: the system's temporary directory, or `VIGIL_BENCH_DIR` (an SD card's
    // mount, a tmpfs) to compare.
    let dir = match std::env::var_os("VIGIL_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        dir.path().join("m.conf"),
        format!(
            "user root\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nlistener {port} 127.0.0.1\n"
        ),
    )
    .unwrap();
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.path().join("m.conf"))
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (.ci/setup-host installs it)");
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let settings = MqttSettings {
        broker: Broker { host: "127.0.0.1".into(), port, tls: false },
        client_id: "bench".into(),
        username: None,
        password: None,
        tls: None,
        keep_alive_s: 30,
        prefix: "bench".into(),
        outbox: dir.path().join("outbox"),
        outbox_max_bytes: 64 << 20,
        discovery_prefix: None,
        commands: false,
    };
    let labels: Arc<[String]> = vec!["person".to_string(), "car".to_string()].into();
    let sub = Subscriber::connect(port, "bench/events");
    let mut sink = MqttSink::start(&settings, Arc::clone(&labels), "bench", Instant::now(), None);
    std::thread::sleep(Duration::from_millis(300)); // connected
    let mut sent = Vec::new();
    let event = |sink: &mut MqttSink, sent: &mut Vec<Instant>| {
        let seq = sent.len() as u64;
        sent.push(Instant::now());
        sink.event(&EventLine {
            seq,
            t_ms: seq,
            label: "person",
            label_index: 0,
            snapshot: None,
            on: seq.is_multiple_of(2),
            score: 0.9,
        });
    };

    // Throughput: bursts of 2,000, each waited for.
    let bursts = 10;
    let start = Instant::now();
    for _ in 0..bursts {
        for _ in 0..2000 {
            event(&mut sink, &mut sent);
        }
        sub.wait_for(sent.len());
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!("throughput: {} events in {elapsed:.2} s = {:.0} events/s", sent.len(), sent.len() as f64 / elapsed);

    // Latency at 50 events/s.
    let first = sent.len();
    for _ in 0..1000 {
        event(&mut sink, &mut sent);
        std::thread::sleep(Duration::from_millis(20));
    }
    sub.wait_for(sent.len());
    let l = sub.latencies_ms(&sent, first);
    let pct = |p: f64| l[((l.len() - 1) as f64 * p).round() as usize];
    println!(
        "latency (event -> subscriber, 50 events/s, {} events): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        sent.len() - first,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    sink.flush(Duration::from_millis(500));
    drop(sink);

    // What a user would do without the sink: pipe stdout's events into `mosquitto_pub`, one
    // QoS 1 publish (a process, a connection) per event.
    let n_pub = 200;
    let t = Instant::now();
    for i in 0..n_pub {
        let ok = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", "bench/pub", "-m"])
            .arg(format!("{{\"seq\":{i}}}"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mosquitto_pub (mosquitto-clients)");
    }
    let per = t.elapsed().as_secs_f64() / f64::from(n_pub);
    println!("mosquitto_pub per event (the shell alternative): {:.2} ms = {:.0} events/s", per * 1e3, 1.0 / per);
    stop(&mut broker);

    // The outbox alone.
    let payload = br#"{"type":"event","seq":123456,"t_ms":987654,"label":"person","state":"on","score":0.8599,"boot_id":"a9f5553e-4208-4913-9cee-fccc6b834993","time_ms":1796276601771}"#;
    let mut outbox = Outbox::open(&dir.path().join("outbox-bench"), 64 << 20);
    let n = 10_000;
    let t = Instant::now();
    for _ in 0..n {
        outbox.push(payload.to_vec());
    }
    let append_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    outbox.delivered(outbox.len());
    let rss_before = rss_kib();
    let mut full = Outbox::open(&dir.path().join("outbox-10k"), 64 << 20);
    for _ in 0..n {
        full.push(payload.to_vec());
    }
    full.sync();
    let rss_after = rss_kib();
    let file = std::fs::metadata(dir.path().join("outbox-10k")).unwrap().len();
    // One event at a time, as at a field pace: append, sync, delivered (the file cut back).
    let m = 500;
    let mut cycle_us = Vec::with_capacity(m);
    for _ in 0..m {
        let t = Instant::now();
        outbox.push(payload.to_vec());
        outbox.sync();
        outbox.delivered(1);
        cycle_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    cycle_us.sort_by(f64::total_cmp);
    println!(
        "outbox cycle on the client thread (append + sync request + delivered): p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        cycle_us[m / 2],
        cycle_us[m * 99 / 100],
        cycle_us[m - 1]
    );
    // What the outbox's own thread spends: an append and its fdatasync, one event at a time.
    let mut probe = std::fs::File::create(dir.path().join("fsync-probe")).unwrap();
    let mut fsync_us: Vec<f64> = (0..m)
        .map(|_| {
            let t = Instant::now();
            probe.write_all(payload).unwrap();
            probe.sync_data().unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    fsync_us.sort_by(f64::total_cmp);
    println!(
        "append + fdatasync on this disk (the outbox thread's work): p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        fsync_us[m / 2],
        fsync_us[m * 99 / 100],
        fsync_us[m - 1]
    );
    println!("outbox: append {append_us:.1} us/event ({} byte payload)", payload.len());
    println!(
        "outbox with {n} undelivered events: file {} KiB, RSS +{} KiB ({} KiB -> {} KiB)",
        file / 1024,
        rss_after.saturating_sub(rss_before),
        rss_before,
        rss_after
    );
}

fn stop(p: &mut Child) {
    let _ = p.kill();
    let _ = p.wait();
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4
}

/// A QoS 0 subscriber on its own thread, noting when each event (by `seq`) arrived.
struct Subscriber {
    arrivals: Arc<std::sync::Mutex<Vec<(usize, Instant)>>>,
}

impl Subscriber {
    fn connect(port: u16, topic: &str) -> Subscriber {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut out = Vec::new();
        packet::connect(
            &mut out,
            &packet::Connect { client_id: "bench-sub", keep_alive_s: 60, username: None, password: None, will: None },
        );
        packet::subscribe(&mut out, 1, &[topic]);
        tcp.write_all(&out).unwrap();
        let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&arrivals);
        std::thread::spawn(move || {
            let mut input = Vec::new();
            let mut chunk = [0u8; 65536];
            while let Ok(n) = tcp.read(&mut chunk) {
                if n == 0 {
                    return;
                }
                let now = Instant::now();
                input.extend_from_slice(&chunk[..n]);
                let mut at = 0;
                while let Ok(Some((p, used))) = packet::decode(&input[at..]) {
                    if let packet::Incoming::Publish { payload, .. } = p {
                        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
                        log.lock().unwrap().push((v["seq"].as_u64().unwrap() as usize, now));
                    }
                    at += used;
                }
                input.drain(..at);
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        Subscriber { arrivals }
    }

    fn received(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.received() < n {
            assert!(Instant::now() < deadline, "only {} of {n} events arrived", self.received());
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Milliseconds from send to arrival of the events `from..` (sorted).
    fn latencies_ms(&self, sent: &[Instant], from: usize) -> Vec<f64> {
        let mut l: Vec<f64> = self
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(seq, _)| *seq >= from)
            .map(|(seq, at)| (*at - sent[*seq]).as_secs_f64() * 1e3)
            .collect();
        l.sort_by(f64::total_cmp);
        l
    }
}
