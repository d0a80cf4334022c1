//! The serial console: line commands a technician types (picocom, minicom) or
//! a script sends, and vigil's replies. Parsing happens on the serial thread;
//! commands run on the decide thread, between two frames, so a threshold
//! change takes effect on the next frame decided. See `docs/serial-protocol.md`.

use std::io::Write as _;
use std::path::Path;

use crate::decide::{Decider, LabelRule};
use crate::protocol::{LineFormat, checksum_into};

/// Longest command line accepted; longer lines are discarded whole.
pub const MAX_LINE: usize = 200;
/// `scores` and `watch` list every label up to this many, else the best this many.
pub const MAX_SCORES_SHOWN: usize = 16;
/// `get thresholds` lists at most this many labels (a 9600-baud line carries ~1 kB/s).
pub const MAX_THRESHOLDS_SHOWN: usize = 64;

/// A parsed console command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// List the commands.
    Help,
    /// One status line now.
    Status,
    /// The latest scores.
    Scores,
    /// Stream scores on every frame (true) or stop (false).
    Watch(bool),
    /// Every label's rule.
    GetThresholds,
    /// Change one label's `on` and/or `off` threshold in memory.
    SetThreshold {
        /// Label name.
        label: String,
        /// New `on`, if given.
        on: Option<f32>,
        /// New `off`, if given.
        off: Option<f32>,
    },
    /// Write the thresholds changed at run time to the thresholds file.
    Save,
    /// The program version.
    Version,
}

impl Command {
    /// The word replies are tagged with.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Help => "help",
            Command::Status => "status",
            Command::Scores => "scores",
            Command::Watch(_) => "watch",
            Command::GetThresholds => "get",
            Command::SetThreshold { .. } => "set",
            Command::Save => "save",
            Command::Version => "version",
        }
    }
}

/// What `help` prints.
pub const HELP: &str = "help;status;scores;watch on|off;get thresholds;set threshold LABEL on=X off=Y;save;version";

/// Parse one line (without its line ending). Label names may contain spaces:
/// everything between `set threshold` and the first `on=`/`off=` is the label.
pub fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let lw: Vec<&str> = lower.iter().map(String::as_str).collect();
    match lw.as_slice() {
        ["help"] | ["?"] => Ok(Command::Help),
        ["status"] => Ok(Command::Status),
        ["scores"] => Ok(Command::Scores),
        ["watch", "on"] => Ok(Command::Watch(true)),
        ["watch", "off"] => Ok(Command::Watch(false)),
        ["get", "thresholds"] => Ok(Command::GetThresholds),
        ["save"] => Ok(Command::Save),
        ["version"] => Ok(Command::Version),
        ["set", "threshold", ..] => {
            let rest = &words[2..];
            let first_value = rest.iter().position(|w| w.contains('=')).unwrap_or(rest.len());
            let label = rest[..first_value].join(" ");
            if label.is_empty() {
                return Err("usage: set threshold LABEL on=X off=Y".into());
            }
            let (mut on, mut off) = (None, None);
            for kv in &rest[first_value..] {
                let (k, v) = kv.split_once('=').ok_or_else(|| format!("`{kv}`: expected on=X or off=Y"))?;
                let v: f32 = v.parse().map_err(|_| format!("`{kv}`: expected a number between 0 and 1"))?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("`{kv}`: expected a number between 0 and 1"));
                }
                match k.to_ascii_lowercase().as_str() {
                    "on" => on = Some(v),
                    "off" => off = Some(v),
                    _ => return Err(format!("`{kv}`: expected on=X or off=Y")),
                }
            }
            if on.is_none() && off.is_none() {
                return Err("usage: set threshold LABEL on=X off=Y".into());
            }
            Ok(Command::SetThreshold { label, on, off })
        }
        [] => Err("empty command".into()),
        _ => Err(format!("unknown command `{}`: try help", line.trim())),
    }
}

/// Apply `set threshold` to `decider`; returns the label's index and new rule.
pub fn set_threshold(
    decider: &mut Decider,
    label: &str,
    on: Option<f32>,
    off: Option<f32>,
) -> Result<(usize, LabelRule), String> {
    let index = decider
        .labels()
        .iter()
        .position(|l| l.eq_ignore_ascii_case(label))
        .ok_or_else(|| format!("unknown label `{label}`"))?;
    let mut rule = decider.rules()[index];
    rule.on = on.unwrap_or(rule.on);
    rule.off = off.unwrap_or(rule.off);
    if rule.off > rule.on {
        return Err(format!("off {} above on {}: expected off <= on", rule.off, rule.on));
    }
    decider.set_rule(index, rule);
    Ok((index, rule))
}

/// Write `labels`' `on`/`off` into the `[thresholds.labels]` table of the TOML
/// file at `path` (created if missing), keeping everything else in it. Written
/// to a temporary file in the same folder and renamed over, so a crash never
/// leaves half a file.
pub fn save_thresholds(path: &Path, labels: &[(&str, LabelRule)]) -> Result<(), String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| format!("{}: {e}", path.display()))?;
    let thresholds = doc.entry("thresholds").or_insert(toml_edit::table());
    let table = thresholds.as_table_mut().ok_or_else(|| format!("{}: `thresholds` is not a table", path.display()))?;
    let per_label = table.entry("labels").or_insert(toml_edit::table());
    let per_label =
        per_label.as_table_mut().ok_or_else(|| format!("{}: `thresholds.labels` is not a table", path.display()))?;
    for (label, rule) in labels {
        let entry = per_label.entry(label).or_insert(toml_edit::table());
        let entry = entry
            .as_table_like_mut()
            .ok_or_else(|| format!("{}: `thresholds.labels.{label}` is not a table", path.display()))?;
        entry.insert("on", toml_edit::value(decimal(rule.on)));
        entry.insert("off", toml_edit::value(decimal(rule.off)));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("thresholds")));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(doc.to_string().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

/// The f64 that prints like the f32 (`0.9999`, not `0.9998999834060669`), to 4 decimals.
fn decimal(x: f32) -> f64 {
    let rounded = (x * 10_000.0).round() / 10_000.0;
    rounded.to_string().parse().unwrap_or(f64::from(rounded))
}

/// A reply or a streamed scores line, built in a byte buffer.
pub struct Reply<'a> {
    out: &'a mut Vec<u8>,
    format: LineFormat,
    start: usize,
    fields: usize,
}

impl<'a> Reply<'a> {
    /// Start a reply to `command`, successful or not.
    pub fn new(out: &'a mut Vec<u8>, format: LineFormat, command: &str, ok: bool) -> Reply<'a> {
        let start = out.len();
        match format {
            LineFormat::Text => {
                let _ = write!(out, "$VGRPL,{command},{}", if ok { "OK" } else { "ERR" });
            }
            LineFormat::Json => {
                let _ = write!(out, "{{\"type\":\"reply\",\"cmd\":\"{command}\",\"ok\":{ok},\"fields\":[");
            }
        }
        Reply { out, format, start, fields: 0 }
    }

    /// Start a streamed scores line (`watch on`).
    pub fn scores(out: &'a mut Vec<u8>, format: LineFormat, seq: u64) -> Reply<'a> {
        let start = out.len();
        match format {
            LineFormat::Text => {
                let _ = write!(out, "$VGSCR,{seq}");
            }
            LineFormat::Json => {
                let _ = write!(out, "{{\"type\":\"scores\",\"seq\":{seq},\"fields\":[");
            }
        }
        Reply { out, format, start, fields: 0 }
    }

    /// Add one field (reserved characters replaced in the text form, escaped in JSON).
    pub fn field(&mut self, value: std::fmt::Arguments<'_>) -> &mut Self {
        match self.format {
            LineFormat::Text => {
                self.out.push(b',');
                let from = self.out.len();
                let _ = self.out.write_fmt(value);
                for b in &mut self.out[from..] {
                    if matches!(*b, b'$' | b'*' | b',') || b.is_ascii_control() {
                        *b = b'_';
                    }
                }
            }
            LineFormat::Json => {
                if self.fields > 0 {
                    self.out.push(b',');
                }
                let text = value.to_string();
                let _ = serde_json::to_writer(&mut *self.out, &text);
            }
        }
        self.fields += 1;
        self
    }

    /// Close the line (checksum and line ending in the text form).
    pub fn finish(self) {
        match self.format {
            LineFormat::Text => checksum_into(self.out, self.start),
            LineFormat::Json => self.out.extend_from_slice(b"]}\n"),
        }
    }
}

/// Indices of the labels `scores`/`watch` show: all when few, else the best [`MAX_SCORES_SHOWN`].
pub fn shown_labels(scores: impl Iterator<Item = f32>, into: &mut Vec<(usize, f32)>) {
    into.clear();
    into.extend(scores.enumerate());
    if into.len() > MAX_SCORES_SHOWN {
        into.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        into.truncate(MAX_SCORES_SHOWN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse("  STATUS "), Ok(Command::Status));
        assert_eq!(parse("watch on"), Ok(Command::Watch(true)));
        assert_eq!(parse("get thresholds"), Ok(Command::GetThresholds));
        assert_eq!(
            parse("set threshold traffic light on=0.7 off=0.5"),
            Ok(Command::SetThreshold { label: "traffic light".into(), on: Some(0.7), off: Some(0.5) })
        );
        assert_eq!(
            parse("set threshold car off=0.2"),
            Ok(Command::SetThreshold { label: "car".into(), on: None, off: Some(0.2) })
        );
    }

    #[test]
    fn refuses_bad_commands_with_a_reason() {
        assert!(parse("launch missiles").unwrap_err().contains("unknown command"));
        assert!(parse("set threshold car on=1.5").unwrap_err().contains("between 0 and 1"));
        assert!(parse("set threshold car on=x").unwrap_err().contains("number"));
        assert!(parse("set threshold on=0.5").unwrap_err().contains("usage"));
        assert!(parse("set threshold car").unwrap_err().contains("usage"));
        assert!(parse("").is_err());
    }

    #[test]
    fn text_replies_are_checksummed() {
        let mut out = Vec::new();
        let mut r = Reply::new(&mut out, LineFormat::Text, "set", true);
        r.field(format_args!("a,b")).field(format_args!("{:.2}", 0.5));
        r.finish();
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with("$VGRPL,set,OK,a_b,0.50*"), "{line}");
        assert!(crate::protocol::parse_text_line(&line).is_ok());
    }
}
