//! `[mqtt]`: events, label states and status to an MQTT broker, for a fleet (docs/mqtt.md).
//!
//! The sink, on the decide thread, only formats each event or status and hands it to the
//! client thread (`client.rs`) over a bounded channel: a dead broker never slows inference.
//! The client keeps every event in an on-disk outbox (`outbox.rs`) until the broker has
//! acknowledged it (QoS 1), so outages and restarts lose nothing; label states and the
//! status are retained topics, republished whenever the connection comes back.
//!
//! Why vigil speaks MQTT itself (`packet.rs`, `link.rs`: MQTT 3.1.1, about 400 lines) instead of
//! using a client crate: the outbox must be the one queue. `rumqttc` keeps its own in-memory
//! queue and assigns packet ids inside its event loop (on a tokio runtime), so acknowledgements
//! would have to be mapped back onto the outbox through it, and a restart would resend from two
//! places; `paho-mqtt` brings the Paho C library (cross-built for every board) and its own file
//! persistence with different semantics. What vigil needs of MQTT is small — CONNECT with a Last
//! Will, PUBLISH QoS 0/1, PUBACK, SUBSCRIBE QoS 0, PINGREQ — and is tested against Mosquitto
//! (`tests/integration/mqtt.rs`) and fuzzed on its decoding side.

pub mod client;
pub mod config;
pub mod link;
pub mod outbox;
pub mod packet;

pub use config::{Broker, MqttSection, MqttSettings};

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use super::Sink;
use crate::console::{ReplyTo, Request};
use crate::protocol::{self, EventLine, Fleet, LineFormat, OutboxFigures, StatusLine};
use crate::util::LogLimiter;
use client::Client;
use outbox::Outbox;

/// Messages from the sink to the client thread, at most (events wait in the outbox, not here:
/// this only has to cover the moments the thread is busy connecting).
const QUEUE: usize = 4096;

/// What the sink hands the client thread.
pub enum ToClient {
    /// An event's payload, and the label state it sets.
    Event { payload: Vec<u8>, label: usize, on: bool },
    /// The newest status payload.
    Status(Vec<u8>),
    /// A console reply line for `<prefix>/reply`.
    Reply(Vec<u8>),
    /// Labels on at the start (carried over a reload).
    LabelsOn(Vec<usize>),
    /// A label's newest snapshot (JPEG), for its retained snapshot topic.
    Snapshot { label: usize, jpeg: Vec<u8> },
    /// Deliver what can be delivered before the deadline, then disconnect.
    Stop { deadline: Instant },
}

/// What the client thread tells the decide thread (for the status it publishes).
#[derive(Debug, Default)]
pub struct Shared {
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    pub connected: AtomicBool,
}

/// Every topic vigil publishes on or listens to, built once.
#[derive(Debug, Clone)]
pub struct Topics {
    pub availability: String,
    pub events: String,
    pub status: String,
    /// Per label, in the model's order: `<prefix>/label/<name>/state`.
    pub states: Vec<String>,
    /// Per label: `<prefix>/label/<name>/snapshot`.
    pub snapshots: Vec<String>,
    pub commands: String,
    pub replies: String,
    /// `homeassistant/status`, when discovery is on.
    pub home_assistant_status: Option<String>,
}

impl Topics {
    /// The topics under `prefix` for these labels.
    pub fn new(prefix: &str, labels: &[String], discovery_prefix: Option<&str>) -> Topics {
        Topics {
            availability: format!("{prefix}/availability"),
            events: format!("{prefix}/events"),
            status: format!("{prefix}/status"),
            states: label_levels(labels).iter().map(|l| format!("{prefix}/label/{l}/state")).collect(),
            snapshots: label_levels(labels).iter().map(|l| format!("{prefix}/label/{l}/snapshot")).collect(),
            commands: format!("{prefix}/cmd"),
            replies: format!("{prefix}/reply"),
            home_assistant_status: discovery_prefix.map(|d| format!("{d}/status")),
        }
    }
}

/// Each label as one topic level: the name, with the characters a topic level cannot hold
/// (`/`, `+`, `#`, controls) as `_`, and made unique if that makes two labels the same.
pub fn label_levels(labels: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let level: String =
                l.chars().map(|c| if matches!(c, '/' | '+' | '#') || c.is_control() { '_' } else { c }).collect();
            let level = if level.is_empty() { format!("label_{i}") } else { level };
            if seen.insert(level.clone()) { level } else { format!("{level}_{i}") }
        })
        .collect()
}

/// A name as Home Assistant ids want it: lower-case ASCII letters, digits and `_`.
fn id_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

/// Home Assistant discovery: a retained `binary_sensor` config per label.
fn discovery_messages(s: &MqttSettings, topics: &Topics, labels: &[String], model: &str) -> Vec<(String, Vec<u8>)> {
    let Some(prefix) = &s.discovery_prefix else { return Vec::new() };
    let node = id_part(&s.client_id);
    labels
        .iter()
        .zip(&topics.states)
        .enumerate()
        .map(|(i, (label, state_topic))| {
            let object = format!("{}_{i}", id_part(label));
            let config = serde_json::json!({
                "name": label,
                "unique_id": format!("vigil_{node}_{object}"),
                "state_topic": state_topic,
                "payload_on": "ON",
                "payload_off": "OFF",
                "availability_topic": topics.availability,
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": {
                    "identifiers": [format!("vigil_{node}")],
                    "name": format!("vigil {}", s.client_id),
                    "manufacturer": "vigil",
                    "model": model,
                    "sw_version": env!("CARGO_PKG_VERSION"),
                },
            });
            (format!("{prefix}/binary_sensor/vigil_{node}/{object}/config"), config.to_string().into_bytes())
        })
        .collect()
}

/// This process's boot id: random, new at every start, the same across reloads.
pub fn boot_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        // The kernel's random UUID; if /proc is not there, the time and pid (unique enough).
        std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .map(|u| u.trim().to_string())
            .unwrap_or_else(|_| format!("{:x}-{:x}", crate::util::unix_ms_now(), std::process::id()))
    })
}

/// Console replies for commands that came on `<prefix>/cmd`: handed to the client thread.
struct MqttReplies {
    tx: Sender<ToClient>,
}

impl ReplyTo for MqttReplies {
    fn format(&self) -> LineFormat {
        LineFormat::Json
    }
    fn send(&self, line: Vec<u8>, _droppable: bool) {
        // Never blocks the decide thread: a full queue drops the reply (not an event).
        let _ = self.tx.try_send(ToClient::Reply(line));
    }
}

/// Hands `[snapshots]` JPEGs to the client thread, for `<prefix>/label/<name>/snapshot`.
#[derive(Clone)]
pub struct SnapshotPublisher {
    tx: Sender<ToClient>,
}

impl SnapshotPublisher {
    /// Publish `jpeg` as `label`'s snapshot (retained; the newest replaces one not sent yet).
    /// Never blocks: a full queue drops it.
    pub fn publish(&self, label: usize, jpeg: Vec<u8>) {
        let _ = self.tx.try_send(ToClient::Snapshot { label, jpeg });
    }
}

/// The MQTT sink: formats events and status on the decide thread, hands them on.
pub struct MqttSink {
    tx: Sender<ToClient>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The Unix time of the process start, in ms (event times are ms after it).
    epoch_ms: u64,
    /// Messages that did not fit the queue, since the start (never expected).
    lost: u64,
    warn: LogLimiter,
}

impl MqttSink {
    /// Start the client thread. `started` is the process start (the origin of event times);
    /// `console`: where commands from `<prefix>/cmd` go (when `commands = true`).
    pub fn start(
        settings: &MqttSettings,
        labels: Arc<[String]>,
        model: &str,
        started: Instant,
        console: Option<Sender<Request>>,
    ) -> MqttSink {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let shared = Arc::new(Shared::default());
        let topics = Topics::new(&settings.prefix, &labels, settings.discovery_prefix.as_deref());
        let discovery = discovery_messages(settings, &topics, &labels, model);
        let mut client = Client {
            outbox: Outbox::in_memory(),
            settings: settings.clone(),
            topics,
            states: vec![false; labels.len()],
            states_dirty: vec![true; labels.len()],
            snapshots: vec![None; labels.len()],
            status: None,
            status_dirty: false,
            replies: VecDeque::new(),
            console: console.filter(|_| settings.commands),
            reply_to: Arc::new(MqttReplies { tx: tx.clone() }),
            shared: Arc::clone(&shared),
            discovery,
        };
        let thread = std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || {
                // One client per process at a time: after a reload the next run's client waits
                // here until the previous one has said `offline` and closed the outbox (events
                // meanwhile wait in the channel), so that two never share the outbox file or
                // race their `online`/`offline`.
                static ONE_CLIENT: Mutex<()> = Mutex::new(());
                let _one = ONE_CLIENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                client.outbox = Outbox::open(&client.settings.outbox, client.settings.outbox_max_bytes);
                client.run(&rx)
            })
            .expect("spawn the mqtt thread");
        let epoch_ms = crate::util::unix_ms_at(started);
        MqttSink { tx, shared, thread: Some(thread), epoch_ms, lost: 0, warn: LogLimiter::new(Duration::from_secs(60)) }
    }

    /// Where `[snapshots]` sends JPEGs to be published.
    pub fn snapshot_publisher(&self) -> SnapshotPublisher {
        SnapshotPublisher { tx: self.tx.clone() }
    }

    fn hand_over(&mut self, m: ToClient) {
        match self.tx.try_send(m) {
            Ok(()) => {}
            Err(TrySendError::Full(ToClient::Status(_))) => {} // the next status replaces it
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.lost += 1;
                self.warn.warn(format_args!(
                    "mqtt: the client thread is not keeping up: {} event(s) lost before the outbox",
                    self.lost
                ));
            }
        }
    }
}

impl Sink for MqttSink {
    fn event(&mut self, e: &EventLine<'_>) {
        let mut payload = Vec::with_capacity(192);
        let fleet = Fleet { boot_id: boot_id(), time_ms: self.epoch_ms + e.t_ms };
        protocol::write_fleet_event(&mut payload, e, fleet);
        self.hand_over(ToClient::Event { payload, label: e.label_index, on: e.on });
    }

    fn status(&mut self, s: &StatusLine<'_>) {
        let mut payload = Vec::with_capacity(512);
        let now = crate::util::unix_ms_now();
        let outbox = OutboxFigures {
            outbox_queued: self.shared.queued.load(Ordering::Relaxed),
            outbox_dropped: self.shared.dropped.load(Ordering::Relaxed),
        };
        protocol::write_fleet_status(&mut payload, s, Fleet { boot_id: boot_id(), time_ms: now }, outbox);
        self.hand_over(ToClient::Status(payload));
    }

    fn flush(&mut self, budget: Duration) {
        let Some(thread) = self.thread.take() else { return };
        let deadline = Instant::now() + budget;
        // The client delivers until shortly before the deadline, then says offline.
        let _ = self.tx.send_timeout(ToClient::Stop { deadline: deadline - budget / 5 }, budget / 5);
        if !crate::util::join_within(thread, budget) {
            log::warn!("mqtt: the client thread did not stop within {budget:?}; undelivered events stay in the outbox");
        }
    }

    fn labels_already_on(&mut self, labels: &[usize]) {
        self.hand_over(ToClient::LabelsOn(labels.to_vec()));
    }
}

impl Drop for MqttSink {
    fn drop(&mut self) {
        self.flush(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_levels_are_valid_topic_levels_and_unique() {
        let labels: Vec<String> = ["person", "traffic light", "a/b", "a_b", "#"].map(String::from).into();
        assert_eq!(label_levels(&labels), ["person", "traffic light", "a_b", "a_b_3", "_"]);
    }

    #[test]
    fn the_boot_id_is_the_same_for_the_whole_process() {
        assert_eq!(boot_id(), boot_id());
        assert!(boot_id().len() >= 16);
    }
}
