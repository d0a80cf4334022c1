//! `vigil monitor`: read a vigil serial line, check every checksum, and print
//! events and status for people.

use crate::protocol::parse_text_line;

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
