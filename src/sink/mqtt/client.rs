//! The MQTT client thread: takes what the sink hands it, keeps events in the outbox until the
//! broker has them, keeps the retained topics current, and reconnects with capped backoff.
//! Nothing here can slow the decide thread: it only ever waits on its own channel, its own
//! socket and its own outbox file.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use super::config::MqttSettings;
use super::link::{Link, Lost, Received};
use super::outbox::Outbox;
use super::packet;
use super::{Shared, ToClient, Topics};
use crate::console::{self, MAX_LINE, ReplyTo, Request};
use crate::util::{Backoff, LogLimiter};

/// QoS 1 events sent and not yet acknowledged, at most (the broker acknowledges in order).
const WINDOW: usize = 32;
/// A connection that lasted this long was good: the reconnect waits start short again.
const STABLE: Duration = Duration::from_secs(10);
/// Replies waiting to be published, at most; more are dropped (a console reply is not an event).
const MAX_REPLIES: usize = 256;

/// The thread's state.
pub struct Client {
    pub settings: MqttSettings,
    pub topics: Topics,
    pub outbox: Outbox,
    /// Per label: on or off now (what the retained state topic says once published).
    pub states: Vec<bool>,
    /// Per label: changed since last published (all of them after a connect).
    pub states_dirty: Vec<bool>,
    /// Per label: a snapshot not published yet.
    pub snapshots: Vec<Option<Vec<u8>>>,
    pub status: Option<Vec<u8>>,
    pub status_dirty: bool,
    pub replies: VecDeque<Vec<u8>>,
    pub console: Option<Sender<Request>>,
    pub reply_to: Arc<dyn ReplyTo>,
    pub shared: Arc<Shared>,
    pub discovery: Vec<(String, Vec<u8>)>,
}

/// A connection and what was sent on it.
struct Session {
    link: Link,
    /// Events sent on this connection and not yet acknowledged, oldest first: (packet id,
    /// outbox id). By outbox id, not position: a full outbox may drop one while it is in flight.
    in_flight: VecDeque<(u16, u64)>,
    next_id: u16,
    last_sent: Instant,
    /// When the broker last sent anything (a PUBACK, a PINGRESP, a message).
    last_heard: Instant,
    ping_sent: Option<Instant>,
    connected_at: Instant,
    discovery_dirty: bool,
}

impl Session {
    fn next_id(&mut self) -> u16 {
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.next_id
    }
}

impl Client {
    /// Run until told to stop (then deliver what it can within the stop's deadline).
    pub fn run(mut self, rx: &Receiver<ToClient>) {
        let mut backoff = Backoff::default();
        let mut warn = LogLimiter::new(Duration::from_secs(60));
        let mut session: Option<Session> = None;
        let mut out = Vec::with_capacity(4096);
        let mut received = Vec::new();
        loop {
            let wait = if session.is_some() { Duration::ZERO } else { backoff.wait().min(Duration::from_millis(50)) };
            let mut stop = None;
            match rx.recv_timeout(wait) {
                Ok(m) => stop = stop.or(self.take(m)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = Some(Instant::now()),
            }
            while stop.is_none()
                && let Ok(m) = rx.try_recv()
            {
                stop = self.take(m);
            }
            self.outbox.sync();
            self.publish_counts(session.is_some());
            if let Some(deadline) = stop {
                self.finish(session, deadline, &mut out, &mut received);
                return;
            }
            if session.is_none() && backoff.due() {
                match self.connect() {
                    Ok(s) => {
                        log::info!(
                            "mqtt: connected to {} as `{}`, publishing under `{}`; {} event(s) in the outbox",
                            self.settings.broker,
                            self.settings.client_id,
                            self.settings.prefix,
                            self.outbox.len()
                        );
                        session = Some(s);
                    }
                    Err(why) => {
                        backoff.failed();
                        warn.warn(format_args!(
                            "mqtt: {}: {why}; {} event(s) wait in the outbox; retrying with backoff (next in {:.1} s)",
                            self.settings.broker,
                            self.outbox.len(),
                            backoff.wait().as_secs_f64()
                        ));
                    }
                }
            }
            if let Some(s) = &mut session
                && let Err(why) = self.serve(s, &mut out, &mut received)
            {
                log::warn!(
                    "mqtt: connection to {} lost: {why}; {} event(s) wait in the outbox",
                    self.settings.broker,
                    self.outbox.len()
                );
                // The waits start short again only after a connection that lasted: a broker
                // that accepts and drops at once is retried with growing waits, not 4 times a second.
                if session.as_ref().is_some_and(|s| s.connected_at.elapsed() >= STABLE) {
                    backoff.succeeded();
                }
                session = None;
                backoff.failed();
            }
        }
    }

    /// Take one message from the sink; `Some(deadline)` when it says stop.
    fn take(&mut self, m: ToClient) -> Option<Instant> {
        match m {
            ToClient::Event { payload, label, on } => {
                self.outbox.push(payload);
                if let (Some(s), Some(d)) = (self.states.get_mut(label), self.states_dirty.get_mut(label)) {
                    (*s, *d) = (on, true);
                }
            }
            ToClient::Status(payload) => {
                self.status = Some(payload);
                self.status_dirty = true;
            }
            ToClient::Reply(line) => {
                if self.replies.len() < MAX_REPLIES {
                    self.replies.push_back(line);
                }
            }
            ToClient::LabelsOn(on) => {
                for i in on {
                    if let (Some(s), Some(d)) = (self.states.get_mut(i), self.states_dirty.get_mut(i)) {
                        (*s, *d) = (true, true);
                    }
                }
            }
            ToClient::Snapshot { label, jpeg } => {
                if let Some(slot) = self.snapshots.get_mut(label) {
                    *slot = Some(jpeg);
                }
            }
            ToClient::Stop { deadline } => return Some(deadline),
        }
        None
    }

    fn publish_counts(&self, connected: bool) {
        self.shared.queued.store(self.outbox.len() as u64, Ordering::Relaxed);
        self.shared.dropped.store(self.outbox.dropped(), Ordering::Relaxed);
        self.shared.connected.store(connected, Ordering::Relaxed);
    }

    fn connect(&mut self) -> Result<Session, Lost> {
        let link = Link::open(&self.settings, &self.topics.availability)?;
        let mut s = Session {
            link,
            in_flight: VecDeque::new(),
            next_id: 0,
            last_sent: Instant::now(),
            last_heard: Instant::now(),
            ping_sent: None,
            connected_at: Instant::now(),
            discovery_dirty: !self.discovery.is_empty(),
        };
        let mut out = Vec::with_capacity(256);
        let mut filters: Vec<&str> = Vec::new();
        if self.settings.commands {
            filters.push(&self.topics.commands);
        }
        if let Some(t) = &self.topics.home_assistant_status {
            filters.push(t);
        }
        if !filters.is_empty() {
            let id = s.next_id();
            packet::subscribe(&mut out, id, &filters);
        }
        packet::publish(&mut out, &self.topics.availability, b"online", true, None);
        s.link.send(&out)?;
        self.states_dirty.fill(true);
        self.status_dirty = self.status.is_some();
        Ok(s)
    }

    /// One round on a live connection: send what is due, then read what came.
    fn serve(&mut self, s: &mut Session, out: &mut Vec<u8>, received: &mut Vec<Received>) -> Result<(), Lost> {
        out.clear();
        if std::mem::take(&mut s.discovery_dirty) {
            for (topic, payload) in &self.discovery {
                packet::publish(out, topic, payload, true, None);
            }
            self.states_dirty.fill(true);
        }
        let mut next = s.in_flight.back().map_or(0, |&(_, id)| id + 1).max(self.outbox.front_id());
        while s.in_flight.len() < WINDOW
            && let Some(payload) = self.outbox.by_id(next)
        {
            let id = s.next_id();
            packet::publish(out, &self.topics.events, payload, false, Some(id));
            s.in_flight.push_back((id, next));
            next += 1;
        }
        for ((topic, on), dirty) in self.topics.states.iter().zip(&self.states).zip(&mut self.states_dirty) {
            if std::mem::take(dirty) {
                packet::publish(out, topic, if *on { b"ON" } else { b"OFF" }, true, None);
            }
        }
        if std::mem::take(&mut self.status_dirty)
            && let Some(status) = &self.status
        {
            packet::publish(out, &self.topics.status, status, true, None);
        }
        for (topic, jpeg) in self.topics.snapshots.iter().zip(&mut self.snapshots) {
            if let Some(jpeg) = jpeg.take() {
                packet::publish(out, topic, &jpeg, true, None);
            }
        }
        while let Some(reply) = self.replies.pop_front() {
            let line = reply.strip_suffix(b"\n").unwrap_or(&reply);
            packet::publish(out, &self.topics.replies, line, false, None);
        }
        let now = Instant::now();
        let keep_alive = Duration::from_secs(u64::from(self.settings.keep_alive_s));
        // Ping when nothing was sent for half the keep-alive (MQTT's rule) or nothing heard for
        // as long (publishing QoS 0 status keeps the first quiet, but a half-open connection
        // must still be found: no PINGRESP within the keep-alive ends it).
        let quiet = now - s.last_sent >= keep_alive / 2 || now - s.last_heard >= keep_alive / 2;
        if s.ping_sent.is_none() && quiet {
            packet::ping(out);
            s.ping_sent = Some(now);
        }
        if !out.is_empty() {
            s.link.send(out)?;
            s.last_sent = now;
        }
        if let Some(sent) = s.ping_sent
            && now - sent > keep_alive
        {
            return Err(format!("no answer to a ping within {} s", keep_alive.as_secs()));
        }
        s.link.receive(received)?;
        if !received.is_empty() {
            s.last_heard = now;
        }
        for r in received.drain(..) {
            match r {
                Received::PubAck(id) => {
                    let Some((packet, event)) = s.in_flight.pop_front().filter(|&(p, _)| p == id) else {
                        return Err(format!("an acknowledgement for packet {id} out of order"));
                    };
                    debug_assert_eq!(packet, id);
                    // Not there any more if the full outbox dropped it meanwhile.
                    if event == self.outbox.front_id() {
                        self.outbox.delivered(1);
                    }
                }
                Received::PingResp => s.ping_sent = None,
                Received::SubAck { granted } => {
                    if !granted {
                        log::warn!(
                            "mqtt: the broker refused a subscription (commands or Home Assistant status): check its ACL"
                        );
                    }
                }
                Received::Publish { topic, payload } => self.on_message(s, &topic, &payload),
            }
        }
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session, topic: &str, payload: &[u8]) {
        if self.topics.home_assistant_status.as_deref() == Some(topic) {
            if payload == b"online" {
                // Home Assistant restarted: it forgot the discovered sensors.
                s.discovery_dirty = true;
            }
            return;
        }
        if topic != self.topics.commands || !self.settings.commands {
            return;
        }
        let reply_to = &*self.reply_to;
        let Ok(text) = std::str::from_utf8(payload) else {
            return console::send_error(reply_to, "line", "not UTF-8: discarded");
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if line.len() > MAX_LINE {
                console::send_error(
                    reply_to,
                    "line",
                    &format!("line too long ({} bytes, max {MAX_LINE}): discarded", line.len()),
                );
                continue;
            }
            match (console::parse(line), &self.console) {
                (Ok(command), Some(tx)) => {
                    let name = command.name();
                    match tx.try_send(Request { command, reply_to: Arc::clone(&self.reply_to) }) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            console::send_error(reply_to, name, "busy: too many commands queued")
                        }
                        Err(TrySendError::Disconnected(_)) => {
                            console::send_error(reply_to, name, "console not available")
                        }
                    }
                }
                (Ok(command), None) => console::send_error(reply_to, command.name(), "console not available"),
                (Err(why), _) => console::send_error(reply_to, "error", &why),
            }
        }
    }

    /// Stop: deliver what the broker will take before `deadline`, say `offline`, disconnect.
    /// What is left stays in the outbox for the next start.
    fn finish(&mut self, session: Option<Session>, deadline: Instant, out: &mut Vec<u8>, received: &mut Vec<Received>) {
        let Some(mut s) = session else {
            self.outbox.sync();
            return;
        };
        while (!self.outbox.is_empty()
            || self.states_dirty.contains(&true)
            || self.status_dirty
            || self.snapshots.iter().any(Option::is_some))
            && Instant::now() < deadline
        {
            if let Err(why) = self.serve(&mut s, out, received) {
                log::warn!(
                    "mqtt: connection lost while stopping: {why}; {} event(s) stay in the outbox",
                    self.outbox.len()
                );
                return;
            }
        }
        out.clear();
        packet::publish(out, &self.topics.availability, b"offline", true, None);
        let _ = s.link.send(out);
        s.link.close();
        self.outbox.sync();
        if !self.outbox.is_empty() {
            log::info!("mqtt: {} event(s) stay in the outbox for the next start", self.outbox.len());
        }
        self.publish_counts(false);
    }
}
