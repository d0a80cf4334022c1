//! Replies and streamed scores, built in a byte buffer in the transport's line
//! format: `$VGRPL,command,OK|ERR,field,...*CS` text lines or JSON objects
//! (`docs/serial-protocol.md`).

use std::io::Write as _;

use super::ReplyTo;
use crate::protocol::{LineFormat, checksum_into};

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

/// Send an error reply (`ok = false`) to `command` with one field, `why`.
pub fn send_error(to: &dyn ReplyTo, command: &str, why: &str) {
    let mut out = Vec::with_capacity(96);
    let mut r = Reply::new(&mut out, to.format(), command, false);
    r.field(format_args!("{why}"));
    r.finish();
    to.send(out, false);
}

#[cfg(test)]
mod tests {
    use super::*;

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
