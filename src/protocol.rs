//! The line protocol vigil speaks on stdout and serial lines (see
//! `docs/serial-protocol.md`): JSON lines, or compact NMEA-style text lines
//! `$VGxxx,field,...*CS` whose checksum `CS` is the XOR of every byte between
//! `$` and `*`, as two upper-case hex digits.

use std::io::Write as _;

use serde::{Deserialize, Serialize};

/// Which of the two line forms a sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// `$VG...*CS` text lines with a checksum, for low baud rates.
    Text,
}

/// A label's state change, ready to be written.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EventLine<'a> {
    /// Frame sequence number.
    pub seq: u64,
    /// Capture time, ms since the run started.
    pub t_ms: u64,
    /// Label name.
    pub label: &'a str,
    /// Position of the label in the model's labels (not written; for GPIO mapping).
    #[serde(skip)]
    pub label_index: usize,
    /// New state.
    pub on: bool,
    /// Score that caused the change.
    pub score: f32,
    /// The snapshot's file name (`[snapshots]`, switch-on events), written in JSON lines.
    pub snapshot: Option<&'a str>,
}

/// The periodic health line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusLine<'a> {
    /// Seconds since the run started.
    pub uptime_s: f64,
    /// Frames decided since the start.
    pub frames: u64,
    /// Frames decided per second over the last status period.
    pub fps: f64,
    /// Median inference time over recent frames, ms.
    pub infer_ms_p50: f64,
    /// 99th percentile inference time over recent frames, ms.
    pub infer_ms_p99: f64,
    /// Frames dropped since the start (unreadable, corrupt, stale, failed).
    pub dropped: u64,
    /// `ok` while the source delivers frames, `lost` while the camera or stream is gone.
    pub source: &'static str,
    /// Times the source was lost since the start.
    pub outages: u64,
    /// Labels currently on.
    pub labels_on: &'a [&'a str],
    /// SoC temperature, °C; `None` on a board without a thermal zone (JSON `null`).
    pub soc_temp_c: Option<f64>,
    /// The Raspberry Pi firmware's throttling flags (`vcgencmd get_throttled`), written in
    /// hex (`0x50005`); `None` on boards that do not report them.
    #[serde(serialize_with = "hex_flags")]
    pub throttled: Option<u32>,
}

/// `0x50005` (formatted straight into the output: no allocation), or `null`.
fn hex_flags<S: serde::Serializer>(flags: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match flags {
        Some(f) => s.collect_str(&format_args!("0x{f:x}")),
        None => s.serialize_none(),
    }
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    t_ms: u64,
    label: &'a str,
    state: &'static str,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<&'a str>,
}

impl<'a> JsonEvent<'a> {
    /// The JSON form of `e`, as every JSON sink writes it.
    fn of(e: &EventLine<'a>) -> JsonEvent<'a> {
        JsonEvent {
            kind: "event",
            seq: e.seq,
            t_ms: e.t_ms,
            label: e.label,
            state: state_word(e.on),
            score: round4(e.score),
            snapshot: e.snapshot,
        }
    }
}

#[derive(Serialize)]
struct JsonStatus<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    status: &'a StatusLine<'a>,
}

fn state_word(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// XOR of all bytes: the NMEA checksum of the text between `$` and `*`.
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0, |acc, b| acc ^ b)
}

/// Replace the characters the text form reserves (`$ * , ;` and controls) in a label.
fn push_field(out: &mut Vec<u8>, s: &str) {
    let mut utf8 = [0u8; 4];
    for c in s.chars() {
        let c = if matches!(c, '$' | '*' | ',' | ';') || c.is_control() { '_' } else { c };
        out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
    }
}

/// Close a text line begun at `out[start]` (`$`): append `*CS` and CRLF.
pub fn checksum_into(out: &mut Vec<u8>, start: usize) {
    let cs = checksum(&out[start + 1..]);
    let _ = write!(out, "*{cs:02X}\r\n");
}

// Lines are built in a caller-owned byte buffer (writing to a Vec cannot fail),
// so formatting allocates nothing once the buffer has grown to a line's size.

/// Append one event line (with its line ending) to `out`.
pub fn write_event(out: &mut Vec<u8>, format: LineFormat, e: &EventLine<'_>) {
    match format {
        LineFormat::Json => {
            let j = JsonEvent::of(e);
            let _ = serde_json::to_writer(&mut *out, &j);
            out.push(b'\n');
        }
        LineFormat::Text => {
            let start = out.len();
            let _ = write!(out, "$VGEVT,{},{},", e.seq, e.t_ms);
            push_field(out, e.label);
            let _ = write!(out, ",{},{:.4}", if e.on { "ON" } else { "OFF" }, e.score);
            checksum_into(out, start);
        }
    }
}

/// What a fleet message adds to a line: which daemon start it comes from and the wall-clock
/// time, so that a consumer of many boards tells restarts apart and drops a duplicate by
/// (`boot_id`, `seq`, `label`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Fleet<'a> {
    /// Random, new at every start of the process (kept across reloads, like `seq`).
    pub boot_id: &'a str,
    /// Milliseconds since 1970 (UTC) of the frame's capture (events) or of the status.
    pub time_ms: u64,
}

#[derive(Serialize)]
struct FleetEvent<'a> {
    #[serde(flatten)]
    event: JsonEvent<'a>,
    #[serde(flatten)]
    fleet: Fleet<'a>,
}

/// One event as the JSON object the stdout sink writes, plus the [`Fleet`] fields; no line
/// ending (an MQTT payload).
pub fn write_fleet_event(out: &mut Vec<u8>, e: &EventLine<'_>, fleet: Fleet<'_>) {
    let _ = serde_json::to_writer(&mut *out, &FleetEvent { event: JsonEvent::of(e), fleet });
}

/// The outbox's figures a fleet status carries.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OutboxFigures {
    /// Events waiting for the broker.
    pub outbox_queued: u64,
    /// Events dropped because the outbox was full, since the start.
    pub outbox_dropped: u64,
}

#[derive(Serialize)]
struct FleetStatus<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    status: &'a StatusLine<'a>,
    #[serde(flatten)]
    fleet: Fleet<'a>,
    #[serde(flatten)]
    outbox: OutboxFigures,
}

/// The status as the JSON object the stdout sink writes, plus the [`Fleet`] fields and the
/// outbox's figures; no line ending.
pub fn write_fleet_status(out: &mut Vec<u8>, s: &StatusLine<'_>, fleet: Fleet<'_>, outbox: OutboxFigures) {
    let _ = serde_json::to_writer(&mut *out, &FleetStatus { kind: "status", status: s, fleet, outbox });
}

/// Append one status line (with its line ending) to `out`.
pub fn write_status(out: &mut Vec<u8>, format: LineFormat, s: &StatusLine<'_>) {
    match format {
        LineFormat::Json => {
            let _ = serde_json::to_writer(&mut *out, &JsonStatus { kind: "status", status: s });
            out.push(b'\n');
        }
        LineFormat::Text => {
            let start = out.len();
            let _ = write!(
                out,
                "$VGSTA,{:.0},{},{:.1},{:.1},{:.1},{},{},{},",
                s.uptime_s,
                s.frames,
                s.fps,
                s.infer_ms_p50,
                s.infer_ms_p99,
                s.dropped,
                if s.source == "ok" { "OK" } else { "LOST" },
                s.outages
            );
            for (i, l) in s.labels_on.iter().enumerate() {
                if i > 0 {
                    out.push(b';');
                }
                push_field(out, l);
            }
            // After the labels, so that readers of the fields before them are unaffected;
            // empty when the board does not say.
            out.push(b',');
            if let Some(t) = s.soc_temp_c {
                let _ = write!(out, "{t:.1}");
            }
            out.push(b',');
            if let Some(f) = s.throttled {
                let _ = write!(out, "0x{f:x}");
            }
            checksum_into(out, start);
        }
    }
}

fn round4(x: f32) -> f32 {
    (x * 10_000.0).round() / 10_000.0
}

/// Why a received text line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No `$` at the start or no `*CS` at the end.
    #[error("not a `$...*CS` line")]
    Framing,
    /// The checksum does not match the body.
    #[error("checksum mismatch: line says {stated:02X}, body gives {computed:02X}")]
    Checksum {
        /// Checksum written on the line.
        stated: u8,
        /// Checksum of the received body.
        computed: u8,
    },
}

/// Check a text line's framing and checksum; return its comma-separated fields
/// (the first is the sentence name, e.g. `VGEVT`).
pub fn parse_text_line(line: &str) -> Result<Vec<&str>, ParseError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let body = line.strip_prefix('$').ok_or(ParseError::Framing)?;
    let (body, cs) = body.rsplit_once('*').ok_or(ParseError::Framing)?;
    let stated = u8::from_str_radix(cs, 16).map_err(|_| ParseError::Framing)?;
    if cs.len() != 2 {
        return Err(ParseError::Framing);
    }
    let computed = checksum(body.as_bytes());
    if stated != computed {
        return Err(ParseError::Checksum { stated, computed });
    }
    Ok(body.split(',').collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_event_round_trips_with_checksum() {
        let mut s = Vec::new();
        let e = EventLine {
            seq: 7,
            t_ms: 1400,
            label: "traffic light",
            label_index: 0,
            snapshot: None,
            on: true,
            score: 0.91234,
        };
        write_event(&mut s, LineFormat::Text, &e);
        let s = String::from_utf8(s).unwrap();
        assert!(s.starts_with("$VGEVT,7,1400,traffic light,ON,0.9123*"));
        assert!(s.ends_with("\r\n"));
        let fields = parse_text_line(&s).unwrap();
        assert_eq!(fields, ["VGEVT", "7", "1400", "traffic light", "ON", "0.9123"]);
        // Flip one character: the checksum catches it.
        let bad = s.replace("ON", "OF");
        assert!(matches!(parse_text_line(&bad), Err(ParseError::Checksum { .. })));
    }

    #[test]
    fn reserved_characters_in_labels_are_replaced() {
        let mut s = Vec::new();
        let e =
            EventLine { seq: 1, t_ms: 0, label: "a,b*c$d;é", label_index: 0, snapshot: None, on: false, score: 0.0 };
        write_event(&mut s, LineFormat::Text, &e);
        assert_eq!(parse_text_line(std::str::from_utf8(&s).unwrap()).unwrap()[3], "a_b_c_d_é");
    }

    #[test]
    fn known_nmea_checksum() {
        // A textbook NMEA sentence and its published checksum.
        assert_eq!(checksum(b"GPGLL,5300.97914,N,00259.98174,E,125926,A"), 0x28);
    }

    #[test]
    fn json_status_has_type_and_fields() {
        let mut s = Vec::new();
        let labels = ["cat"];
        let st = StatusLine {
            uptime_s: 1.5,
            frames: 3,
            fps: 2.0,
            infer_ms_p50: 10.0,
            infer_ms_p99: 12.0,
            dropped: 1,
            source: "lost",
            outages: 2,
            labels_on: &labels,
            soc_temp_c: Some(61.3),
            throttled: Some(0x50005),
        };
        write_status(&mut s, LineFormat::Json, &st);
        let v: serde_json::Value = serde_json::from_slice(&s).unwrap();
        assert_eq!(v["type"], "status");
        assert_eq!(v["labels_on"][0], "cat");
        assert_eq!(v["dropped"], 1);
        assert_eq!((v["source"].as_str(), v["outages"].as_u64()), (Some("lost"), Some(2)));
        assert_eq!((v["soc_temp_c"].as_f64(), v["throttled"].as_str()), (Some(61.3), Some("0x50005")));
        s.clear();
        write_status(&mut s, LineFormat::Text, &st);
        let fields = parse_text_line(std::str::from_utf8(&s).unwrap()).unwrap();
        assert_eq!(fields[7..], ["LOST", "2", "cat", "61.3", "0x50005"]);
    }
}
