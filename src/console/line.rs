//! Command lines out of a byte stream (a serial port): split on CR or LF, with a
//! fixed-capacity buffer, so a line that never ends cannot grow memory; such a
//! line is discarded whole and reported.

use super::command::MAX_LINE;

/// Assembles command lines from the bytes read; discards overlong lines whole.
#[derive(Debug, Default)]
pub struct LineReader {
    buf: heapless::Vec<u8, MAX_LINE>,
    overlong: bool,
}

impl LineReader {
    /// An empty reader.
    pub fn new() -> LineReader {
        LineReader::default()
    }

    /// Feed bytes; call `line` with each complete line (`Err(len)` for an overlong one,
    /// whose first `len` bytes were kept before it was given up).
    pub fn feed(&mut self, bytes: &[u8], mut line: impl FnMut(Result<&str, usize>)) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if self.overlong {
                    line(Err(self.buf.len()));
                } else if !self.buf.is_empty() {
                    line(Ok(&String::from_utf8_lossy(&self.buf)));
                }
                self.buf.clear();
                self.overlong = false;
            } else if self.buf.push(b).is_err() {
                self.overlong = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_cr_or_lf_and_discards_overlong_lines() {
        let mut r = LineReader::new();
        let mut got = Vec::new();
        let long = vec![b'x'; MAX_LINE + 50];
        let mut input = b"status\r\nscores\n\r".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\rhelp\r");
        r.feed(&input, |l| got.push(l.map(str::to_string).map_err(|n| n >= MAX_LINE)));
        assert_eq!(got, vec![Ok("status".into()), Ok("scores".into()), Err(true), Ok("help".into())]);
    }

    #[test]
    fn a_line_split_across_reads_is_one_line() {
        let mut r = LineReader::new();
        let mut got = Vec::new();
        r.feed(b"get thr", |l| got.push(l.map(str::to_string)));
        r.feed(b"esholds\n", |l| got.push(l.map(str::to_string)));
        assert_eq!(got, vec![Ok("get thresholds".to_string())]);
    }
}
