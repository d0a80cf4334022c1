//! One connection to the broker: TCP (or TLS over TCP), CONNECT and CONNACK, then packets in
//! both directions. Reads wait at most [`READ_WAIT`], so that the client thread also serves
//! its queue; writes give up after [`WRITE_WAIT`] (a broker that stopped reading is a lost
//! connection, not a stalled thread).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{Broker, MqttSettings};
use super::packet::{self, Incoming, Malformed};

/// How long a read waits for the broker before the client thread does its other work.
pub const READ_WAIT: Duration = Duration::from_millis(10);
/// A write that takes longer than this ends the connection.
pub const WRITE_WAIT: Duration = Duration::from_secs(5);
/// Reaching the broker: TCP connect, TLS handshake, CONNACK, each.
pub const CONNECT_WAIT: Duration = Duration::from_secs(5);

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A packet from the broker, owned (so the connection's buffer can be reused at once).
#[derive(Debug)]
pub enum Received {
    PubAck(u16),
    SubAck { granted: bool },
    PingResp,
    Publish { topic: String, payload: Vec<u8> },
}

/// A live, accepted connection.
pub struct Link {
    stream: Stream,
    /// Bytes received and not yet decoded.
    input: Vec<u8>,
}

/// Why a connection could not be made or ended; its message is what the log says.
pub type Lost = String;

impl Link {
    /// Connect to the broker, and send CONNECT (with the Last Will: `offline` on `will_topic`).
    pub fn open(s: &MqttSettings, will_topic: &str) -> Result<Link, Lost> {
        let tcp = connect_tcp(&s.broker)?;
        let stream = match &s.tls {
            None => Stream::Plain(tcp),
            Some(config) => Stream::Tls(Box::new(handshake(Arc::clone(config), &s.broker, tcp)?)),
        };
        let mut link = Link { stream, input: Vec::with_capacity(4096) };
        let mut out = Vec::with_capacity(256);
        packet::connect(
            &mut out,
            &packet::Connect {
                client_id: &s.client_id,
                keep_alive_s: s.keep_alive_s,
                username: s.username.as_deref(),
                password: s.password.as_deref(),
                will: Some(packet::Will { topic: will_topic, payload: b"offline", retain: true }),
            },
        );
        link.send(&out)?;
        let deadline = Instant::now() + CONNECT_WAIT;
        loop {
            if let Some((first, used)) = packet::decode(&link.input).map_err(|e| protocol_error(&e))? {
                let answer = match first {
                    Incoming::ConnAck(answer) => answer,
                    _ => return Err("the broker answered CONNECT with something else than CONNACK".into()),
                };
                link.input.drain(..used);
                return match answer {
                    Ok(()) => Ok(link),
                    Err(refused) => Err(format!("the broker refused the connection: {refused}")),
                };
            }
            if Instant::now() > deadline {
                return Err(format!("no CONNACK within {CONNECT_WAIT:?}"));
            }
            link.fill()?;
        }
    }

    /// Write `bytes` (whole packets).
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), Lost> {
        self.stream.write_all(bytes).and_then(|()| self.stream.flush()).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                format!("the broker took more than {WRITE_WAIT:?} to take {} bytes", bytes.len())
            }
            _ => format!("write failed ({e})"),
        })
    }

    /// Wait up to [`READ_WAIT`] for bytes and decode every whole packet that arrived into
    /// `received` (cleared first).
    pub fn receive(&mut self, received: &mut Vec<Received>) -> Result<(), Lost> {
        received.clear();
        self.fill()?;
        let mut at = 0;
        while let Some((p, used)) = packet::decode(&self.input[at..]).map_err(|e| protocol_error(&e))? {
            received.push(match p {
                Incoming::PubAck(id) => Received::PubAck(id),
                Incoming::SubAck { granted, .. } => Received::SubAck { granted },
                Incoming::PingResp => Received::PingResp,
                Incoming::Publish { topic, payload } => {
                    Received::Publish { topic: topic.to_string(), payload: payload.to_vec() }
                }
                Incoming::ConnAck(_) => return Err("a second CONNACK".into()),
            });
            at += used;
        }
        self.input.drain(..at);
        Ok(())
    }

    /// Read what is there within [`READ_WAIT`] into `input`.
    fn fill(&mut self) -> Result<(), Lost> {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err("the broker closed the connection".into()),
            Ok(n) => {
                self.input.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                Ok(())
            }
            Err(e) => Err(format!("read failed ({e})")),
        }
    }

    /// Say goodbye cleanly (the broker then does not publish the Will).
    pub fn close(mut self) {
        let mut out = Vec::new();
        packet::disconnect(&mut out);
        let _ = self.send(&out);
        if let Stream::Tls(s) = &mut self.stream {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let _ = self.stream.tcp().shutdown(std::net::Shutdown::Both);
    }
}

fn protocol_error(e: &Malformed) -> Lost {
    format!("the broker sent {e}")
}

fn connect_tcp(broker: &Broker) -> Result<TcpStream, Lost> {
    let addrs = (broker.host.as_str(), broker.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{}` ({e})", broker.host))?;
    let mut last = format!("`{}` resolves to no address", broker.host);
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_WAIT) {
            Ok(tcp) => {
                let setup = tcp
                    .set_nodelay(true)
                    .and_then(|()| tcp.set_read_timeout(Some(READ_WAIT)))
                    .and_then(|()| tcp.set_write_timeout(Some(WRITE_WAIT)));
                return setup.map(|()| tcp).map_err(|e| format!("socket setup failed ({e})"));
            }
            Err(e) => last = format!("cannot connect to {addr} ({e})"),
        }
    }
    Err(last)
}

fn handshake(
    config: Arc<rustls::ClientConfig>,
    broker: &Broker,
    mut tcp: TcpStream,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, Lost> {
    let name = rustls::pki_types::ServerName::try_from(broker.host.clone())
        .map_err(|e| format!("`{}` is not a host name TLS can check ({e})", broker.host))?;
    let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| format!("TLS setup failed ({e})"))?;
    let deadline = Instant::now() + CONNECT_WAIT;
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) && Instant::now() < deadline => {}
            Err(e) => return Err(format!("TLS handshake with {broker} failed ({e})")),
        }
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}
