//! The MQTT 3.1.1 packets vigil sends and receives (OASIS MQTT 3.1.1, section 3): encoding into
//! a reused buffer, and decoding from the bytes a broker sent. vigil publishes (QoS 0 and 1),
//! subscribes (QoS 0) and pings; it never receives QoS 1 or 2 publishes, because it subscribes
//! at QoS 0.
//!
//! Decoding takes whatever bytes have arrived and says whether a whole packet is there: a
//! broker (or anything pretending to be one) can send any bytes, and none may panic the
//! client or make it hold more than [`MAX_INCOMING`] bytes.

use std::fmt;

/// The largest packet accepted from the broker: commands and Home Assistant's status are a
/// line each. Anything bigger ends the connection.
pub const MAX_INCOMING: usize = 64 * 1024;

/// What the broker said in CONNACK, when it refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// 1: the broker does not speak MQTT 3.1.1.
    Protocol,
    /// 2: the client id is not allowed.
    ClientId,
    /// 3: the broker is up but the MQTT service is not.
    Unavailable,
    /// 4: wrong user name or password.
    BadCredentials,
    /// 5: this client may not connect.
    NotAuthorized,
    /// Any other code.
    Other(u8),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Protocol => f.write_str("the broker does not accept MQTT 3.1.1 (code 1)"),
            Refused::ClientId => f.write_str("the broker rejected the client id (code 2)"),
            Refused::Unavailable => f.write_str("the broker's MQTT service is unavailable (code 3)"),
            Refused::BadCredentials => f.write_str("wrong user name or password (code 4)"),
            Refused::NotAuthorized => f.write_str("not authorised to connect (code 5)"),
            Refused::Other(c) => write!(f, "refused with code {c}"),
        }
    }
}

/// A packet from the broker.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// CONNACK: `Ok` = accepted.
    ConnAck(Result<(), Refused>),
    /// PUBACK for the QoS 1 publish with this packet id.
    PubAck(u16),
    /// SUBACK: the packet id, and whether every filter was granted.
    SubAck { id: u16, granted: bool },
    /// PINGRESP.
    PingResp,
    /// A message on a subscribed topic (QoS 0: nothing to acknowledge).
    Publish { topic: &'a str, payload: &'a [u8] },
}

/// Why the broker's bytes are not MQTT 3.1.1 as vigil expects it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The remaining-length field runs over four bytes.
    #[error("a packet length of more than four bytes")]
    Length,
    /// Bigger than [`MAX_INCOMING`].
    #[error("a packet of {0} bytes (at most {MAX_INCOMING} accepted)")]
    TooBig(usize),
    /// A packet type a client never receives, or one whose contents do not fit its type.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Whether `buf` starts with a whole packet: `Ok(Some((packet, length)))` when it does,
/// `Ok(None)` when more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Incoming<'_>, usize)>, Malformed> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let mut remaining: usize = 0;
    let mut header = 1;
    loop {
        let Some(&b) = buf.get(header) else { return Ok(None) };
        remaining |= usize::from(b & 0x7f) << (7 * (header - 1));
        header += 1;
        if b & 0x80 == 0 {
            break;
        }
        if header == 5 {
            return Err(Malformed::Length);
        }
    }
    let total = header + remaining;
    if total > MAX_INCOMING {
        return Err(Malformed::TooBig(total));
    }
    let Some(body) = buf.get(header..total) else { return Ok(None) };
    let packet = match first >> 4 {
        2 => match body {
            [_flags, 0] => Incoming::ConnAck(Ok(())),
            [_flags, code] => Incoming::ConnAck(Err(match code {
                1 => Refused::Protocol,
                2 => Refused::ClientId,
                3 => Refused::Unavailable,
                4 => Refused::BadCredentials,
                5 => Refused::NotAuthorized,
                c => Refused::Other(*c),
            })),
            _ => return Err(Malformed::Invalid("a CONNACK that is not 2 bytes long")),
        },
        3 => {
            let qos = (first >> 1) & 3;
            let [hi, lo, rest @ ..] = body else {
                return Err(Malformed::Invalid("a PUBLISH shorter than its topic length"));
            };
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            let Some(topic) = rest.get(..len) else {
                return Err(Malformed::Invalid("a PUBLISH whose topic runs past its end"));
            };
            let topic = std::str::from_utf8(topic).map_err(|_| Malformed::Invalid("a topic that is not UTF-8"))?;
            if qos != 0 {
                // Subscriptions are QoS 0, so the broker must downgrade; anything else is a
                // broker vigil does not understand.
                return Err(Malformed::Invalid("a QoS 1/2 PUBLISH on a QoS 0 subscription"));
            }
            Incoming::Publish { topic, payload: &rest[len..] }
        }
        4 => match body {
            [hi, lo] => Incoming::PubAck(u16::from_be_bytes([*hi, *lo])),
            _ => return Err(Malformed::Invalid("a PUBACK that is not 2 bytes long")),
        },
        9 => match body {
            [hi, lo, codes @ ..] if !codes.is_empty() => {
                Incoming::SubAck { id: u16::from_be_bytes([*hi, *lo]), granted: codes.iter().all(|&c| c < 0x80) }
            }
            _ => return Err(Malformed::Invalid("a SUBACK without return codes")),
        },
        13 => Incoming::PingResp,
        _ => return Err(Malformed::Invalid("a packet type a client does not receive")),
    };
    Ok(Some((packet, total)))
}

/// The Last Will: what the broker publishes for vigil when the connection dies uncleanly.
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// Retained, QoS 1.
    pub retain: bool,
}

/// What CONNECT carries.
pub struct Connect<'a> {
    pub client_id: &'a str,
    pub keep_alive_s: u16,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub will: Option<Will<'a>>,
}

/// Append CONNECT (clean session: the outbox, not the broker, keeps what is undelivered).
pub fn connect(out: &mut Vec<u8>, c: &Connect<'_>) {
    let mut flags = 0x02u8;
    let mut len = 10 + 2 + c.client_id.len();
    if let Some(w) = &c.will {
        flags |= 0x04 | (1 << 3) | if w.retain { 0x20 } else { 0 };
        len += 2 + w.topic.len() + 2 + w.payload.len();
    }
    if let Some(u) = c.username {
        flags |= 0x80;
        len += 2 + u.len();
    }
    if let Some(p) = c.password {
        flags |= 0x40;
        len += 2 + p.len();
    }
    out.push(0x10);
    remaining_length(out, len);
    string(out, b"MQTT");
    out.extend_from_slice(&[4, flags]);
    out.extend_from_slice(&c.keep_alive_s.to_be_bytes());
    string(out, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        string(out, w.topic.as_bytes());
        string(out, w.payload);
    }
    if let Some(u) = c.username {
        string(out, u.as_bytes());
    }
    if let Some(p) = c.password {
        string(out, p);
    }
}

/// Append PUBLISH: QoS 1 when `id` is given, else QoS 0. (Never DUP: every connection is a
/// clean session, so an event sent again after a reconnect is a new publish to the broker; the
/// consumer tells it from the first by its boot id, seq and label.)
pub fn publish(out: &mut Vec<u8>, topic: &str, payload: &[u8], retain: bool, id: Option<u16>) {
    let first = 0x30 | u8::from(retain) | if id.is_some() { 1 << 1 } else { 0 };
    out.push(first);
    remaining_length(out, 2 + topic.len() + if id.is_some() { 2 } else { 0 } + payload.len());
    string(out, topic.as_bytes());
    if let Some(id) = id {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Append SUBSCRIBE for `filters`, each at QoS 0.
pub fn subscribe(out: &mut Vec<u8>, id: u16, filters: &[&str]) {
    out.push(0x82);
    remaining_length(out, 2 + filters.iter().map(|f| 2 + f.len() + 1).sum::<usize>());
    out.extend_from_slice(&id.to_be_bytes());
    for f in filters {
        string(out, f.as_bytes());
        out.push(0);
    }
}

/// Append PINGREQ.
pub fn ping(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xc0, 0]);
}

/// Append DISCONNECT (a clean end: the broker does not publish the Will).
pub fn disconnect(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xe0, 0]);
}

fn remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

/// A length-prefixed string. Topics, ids and payloads here are checked at start to fit
/// 65,535 bytes (`config.rs`); a longer one would be cut, never overrun.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    let s = &s[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_encodes_as_the_specification_example() {
        // MQTT 3.1.1 section 3.1: flags, keep-alive, then client id, will, user, password.
        let mut out = Vec::new();
        connect(
            &mut out,
            &Connect {
                client_id: "pole-7",
                keep_alive_s: 30,
                username: Some("u"),
                password: Some(b"pw"),
                will: Some(Will { topic: "a/b", payload: b"offline", retain: true }),
            },
        );
        let expected: Vec<u8> = [
            &[0x10, 39][..], // 10 + 8 + 5 + 9 + 3 + 4
            &[0, 4, b'M', b'Q', b'T', b'T', 4, 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02, 0, 30],
            &[0, 6],
            b"pole-7",
            &[0, 3],
            b"a/b",
            &[0, 7],
            b"offline",
            &[0, 1],
            b"u",
            &[0, 2],
            b"pw",
        ]
        .concat();
        assert_eq!(out, expected);
    }

    #[test]
    fn lengths_over_127_take_more_bytes_and_decode_back() {
        let payload = vec![b'x'; 300];
        let mut out = Vec::new();
        publish(&mut out, "t", &payload, false, None);
        // 2 + 1 + 300 = 303 = 0b10_0101111 -> 0xAF 0x02
        assert_eq!(&out[..3], &[0x30, 0xaf, 0x02]);
        let (packet, used) = decode(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!(packet, Incoming::Publish { topic: "t", payload: &payload });
    }

    #[test]
    fn a_packet_is_decoded_only_once_all_of_it_has_arrived() {
        let mut out = Vec::new();
        publish(&mut out, "vigil/cmd", b"status", false, None);
        out.extend_from_slice(&[0x40, 2, 0x12, 0x34]);
        for cut in 0..out.len() - 4 {
            assert_eq!(decode(&out[..cut]), Ok(None), "cut at {cut}");
        }
        let (first, used) = decode(&out).unwrap().unwrap();
        assert_eq!(first, Incoming::Publish { topic: "vigil/cmd", payload: b"status" });
        assert_eq!(decode(&out[used..]).unwrap().unwrap(), (Incoming::PubAck(0x1234), 4));
    }

    #[test]
    fn hostile_bytes_are_refused_not_followed() {
        assert_eq!(decode(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), Err(Malformed::Length));
        assert_eq!(decode(&[0x30, 0xff, 0xff, 0xff, 0x7f]), Err(Malformed::TooBig(268_435_460)));
        assert!(decode(&[0x30, 3, 0, 9, b'a']).is_err(), "topic past the end");
        assert!(decode(&[0x32, 5, 0, 1, b'a', 0, 1]).is_err(), "QoS 1 publish");
        assert!(decode(&[0x10, 0]).is_err(), "CONNECT from the broker");
        assert_eq!(decode(&[0x20, 2, 0, 4]).unwrap().unwrap().0, Incoming::ConnAck(Err(Refused::BadCredentials)));
        assert_eq!(decode(&[0x90, 3, 0, 1, 0x80]).unwrap().unwrap().0, Incoming::SubAck { id: 1, granted: false });
    }
}
