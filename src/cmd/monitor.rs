//! `vigil monitor`: read a vigil serial line, check every checksum, and print
//! events and status for people.

use std::io::Read;
use std::time::{Duration, Instant};

use super::{EXIT_OK, Error};
use vigil::protocol::parse_text_line;
use vigil::stop::StopFlag;

/// Longest line kept while waiting for its end; vigil's longest lines (a `scores` reply) are
/// a few hundred bytes.
const MAX_LINE: usize = 4096;

/// Print what the vigil serial line on `port` says until interrupted; the port is
/// reopened when it goes away. Ends with a count of good and corrupt lines.
pub fn run(port: &str, baud: u32) -> Result<i32, Error> {
    let stop = StopFlag::new();
    stop.register_signals().map_err(|e| Error::Runtime(format!("cannot install signal handlers: {e}")))?;
    let (mut good, mut bad) = (0u64, 0u64);
    let mut pending = Vec::new();
    let mut buf = [0u8; 512];
    while !stop.is_stopped() {
        let mut p = match serialport::new(port, baud).timeout(Duration::from_millis(200)).open() {
            Ok(p) => p,
            Err(e) => {
                log::warn!("{port}: {e}; retrying");
                stop.sleep_until(Instant::now() + Duration::from_secs(1));
                continue;
            }
        };
        while !stop.is_stopped() {
            match p.read(&mut buf) {
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                // Ctrl-C interrupts the read: the loop sees the stop, not a port failure.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("{port}: {e}; reopening");
                    break;
                }
            }
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                match describe(&String::from_utf8_lossy(&line)) {
                    Ok(text) => {
                        good += 1;
                        outln!("{text}");
                    }
                    Err(why) => {
                        bad += 1;
                        outln!("BAD    {why}");
                    }
                }
            }
            // A line that never ends (noise, a wrong baud rate) must not grow memory.
            if pending.len() > MAX_LINE {
                bad += 1;
                outln!("BAD    {} bytes without a line end", pending.len());
                pending.clear();
            }
        }
    }
    eprintln!("{good} good line(s), {bad} corrupt");
    Ok(EXIT_OK)
}

/// One received line, checked and made readable; `Err` for a corrupt line.
pub fn describe(line: &str) -> Result<String, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("bad JSON ({e}): {line}"))?;
        return Ok(match v["type"].as_str() {
            Some("event") => format!(
                "EVENT  frame {:>6}  t={:>8} ms  {:<24} {:<3} score {}",
                v["seq"],
                v["t_ms"],
                v["label"].as_str().unwrap_or("?"),
                v["state"].as_str().unwrap_or("?").to_uppercase(),
                v["score"]
            ),
            Some("status") => format!(
                "STATUS up {} s  frames {}  {} fps  infer p50 {} ms p99 {} ms  dropped {}  source {} ({} outages)  on: {}",
                v["uptime_s"],
                v["frames"],
                v["fps"],
                v["infer_ms_p50"],
                v["infer_ms_p99"],
                v["dropped"],
                v["source"].as_str().unwrap_or("?"),
                v["outages"],
                v["labels_on"]
            ),
            _ => format!("{v}"),
        });
    }
    let fields = parse_text_line(line).map_err(|e| format!("{e}: {line}"))?;
    Ok(match fields.as_slice() {
        ["VGEVT", seq, t, label, state, score] => {
            format!("EVENT  frame {seq:>6}  t={t:>8} ms  {label:<24} {state:<3} score {score}")
        }
        ["VGSTA", up, frames, fps, p50, p99, dropped, source, outages, on] => format!(
            "STATUS up {up} s  frames {frames}  {fps} fps  infer p50 {p50} ms p99 {p99} ms  dropped {dropped}  source {source} ({outages} outages)  on: {}",
            if on.is_empty() { "-" } else { on }
        ),
        ["VGRPL", rest @ ..] => format!("REPLY  {}", rest.join("  ")),
        ["VGSCR", rest @ ..] => format!("SCORES {}", rest.join("  ")),
        other => other.join(","),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_and_formats_text_lines() {
        let ok = describe("$VGEVT,42,8400,tabby,ON,0.8123*0B\r\n").unwrap();
        assert!(ok.contains("frame     42") && ok.contains("tabby") && ok.contains("ON"), "{ok}");
        assert!(describe("$VGEVT,42,8400,tabby,ON,0.8123*0C").unwrap_err().contains("checksum"));
        assert!(describe("garbage").is_err());
    }

    #[test]
    fn formats_json_lines() {
        let s = describe(
            r#"{"type":"status","uptime_s":1.0,"frames":3,"fps":2.0,"infer_ms_p50":1.0,"infer_ms_p99":2.0,"dropped":0,"source":"ok","outages":0,"labels_on":[]}"#,
        );
        assert!(s.unwrap().starts_with("STATUS"));
    }
}
