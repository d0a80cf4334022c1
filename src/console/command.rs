//! The console's command set and how a line of text becomes a [`Command`].
//! Parsing happens on the transport's thread (serial I/O, MQTT), so a bad line
//! is answered there without reaching the decide thread.

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
}
