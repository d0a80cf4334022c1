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
            Some("status") => {
                format!(
                    "STATUS up {} s  frames {}  {} fps  infer p50 {} ms p99 {} ms  dropped {}  source {} ({} outages)  on: {}",
                    v["uptime_s"],
                    v["frames"],
                    v["fps"],
                    v["infer_ms_p50"],
                    v["infer_ms_p99"],
                    v["dropped"],
                    v["source"].as_str().unwrap_or("?"),
                    v["outages"],
                    v["labels_on"],
                ) + &board(v["soc_temp_c"].as_f64().map(|t| t.to_string()).as_deref(), v["throttled"].as_str())
            }
            _ => format!("{v}"),
        });
    }
    let fields = parse_text_line(line).map_err(|e| format!("{e}: {line}"))?;
    Ok(match fields.as_slice() {
        ["VGEVT", seq, t, label, state, score] => {
            format!("EVENT  frame {seq:>6}  t={t:>8} ms  {label:<24} {state:<3} score {score}")
        }
        // With the board's temperature and throttling after the labels, or without (older vigil).
        ["VGSTA", up, frames, fps, p50, p99, dropped, source, outages, on, board_fields @ ..]
            if board_fields.len() <= 2 =>
        {
            let (temp, throttled) =
                (board_fields.first().filter(|t| !t.is_empty()), board_fields.get(1).filter(|t| !t.is_empty()));
            format!(
                "STATUS up {up} s  frames {frames}  {fps} fps  infer p50 {p50} ms p99 {p99} ms  dropped {dropped}  source {source} ({outages} outages)  on: {}",
                if on.is_empty() { "-" } else { on }
            ) + &board(temp.copied(), throttled.copied())
        }
        ["VGRPL", rest @ ..] => format!("REPLY  {}", rest.join("  ")),
        ["VGSCR", rest @ ..] => format!("SCORES {}", rest.join("  ")),
        other => other.join(","),
    })
}

/// `  SoC 61.3 °C  throttled 0x50005`, the parts the board reports.
fn board(temp: Option<&str>, throttled: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(t) = temp {
        s.push_str(&format!("  SoC {t} °C"));
    }
    if let Some(f) = throttled {
        s.push_str(&format!("  throttled {f}"));
    }
    s
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
        let s = describe(
            r#"{"type":"status","uptime_s":1.0,"frames":3,"fps":2.0,"infer_ms_p50":1.0,"infer_ms_p99":2.0,"dropped":0,"source":"ok","outages":0,"labels_on":[],"soc_temp_c":81.2,"throttled":"0x50005"}"#,
        )
        .unwrap();
        assert!(s.ends_with("  SoC 81.2 °C  throttled 0x50005"), "{s}");
    }

    #[test]
    fn text_status_with_and_without_the_board_fields() {
        let line = |body: &str| format!("${body}*{:02X}", vigil::protocol::checksum(body.as_bytes()));
        let new = describe(&line("VGSTA,10,50,5.0,24.1,30.2,1,OK,0,tabby,61.3,0x50005")).unwrap();
        assert!(new.contains("on: tabby") && new.ends_with("  SoC 61.3 °C  throttled 0x50005"), "{new}");
        let no_sensor = describe(&line("VGSTA,10,50,5.0,24.1,30.2,1,OK,0,,,")).unwrap();
        assert!(no_sensor.ends_with("on: -"), "{no_sensor}");
        let older = describe(&line("VGSTA,10,50,5.0,24.1,30.2,1,OK,0,tabby")).unwrap();
        assert!(older.ends_with("on: tabby"), "{older}");
    }
}
