//! Frames from a pipe: stdin, a FIFO or a file, written by `rpicam-vid`,
//! `gst-launch-1.0 ... ! fdsink`, `ffmpeg` or any program (docs/cameras.md).
//!
//! Stream formats: raw frames of a configured size (I420, NV12, YUYV, RGB24,
//! grey) back to back; MJPEG (JPEG images back to back, split on the JPEG
//! marker structure, not on a byte count); and YUV4MPEG2 (Y4M: a header line
//! giving the size, then `FRAME` lines, each followed by an I420 or grey frame).
//!
//! Reads wait with `poll`, so the capture thread notices a stop or a stall; the
//! read buffer is reused (it grows to hold two frames during warm-up, then
//! stays). A truncated JPEG, a truncated Y4M frame (detected by the next
//! `FRAME` marker inside it), a partial frame at the end, or garbage between
//! JPEGs is reported as a bad frame and the stream re-synchronised.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::config::{SourceFormat, SourceSection};
use super::live::{Capture, OpenError, Read};
use crate::frame::{Frame, PixelFormat, Range, YuvColour};
use crate::tomlfile::{SettingsError, TomlFile};

/// Largest encoded frame accepted before the stream is treated as garbage.
pub const MAX_ENCODED_FRAME: usize = 16 << 20;
/// Largest raw (or Y4M) frame a pipe source takes: 32 MiB holds a 4K RGB24 frame. The read
/// buffer holds two frames, so this also bounds what a stream can make vigil allocate.
pub const MAX_RAW_FRAME: usize = 32 << 20;
const MAX_Y4M_LINE: usize = 512;

/// What the bytes on the pipe are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// Raw frames of the configured size, back to back.
    Raw(PixelFormat),
    /// JPEG images back to back.
    Mjpeg,
    /// YUV4MPEG2.
    Y4m,
}

/// What a pipe source does when its writer closes the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEnd {
    /// End the run cleanly (exit 0).
    #[default]
    Stop,
    /// Reopen the FIFO and wait for the next writer (the source counts as lost meanwhile).
    Reopen,
}

/// A pipe source as configured (`kind = "pipe"`).
#[derive(Debug, Clone, PartialEq)]
pub struct PipeSpec {
    /// A path (FIFO or file), or `-` for standard input.
    pub path: String,
    /// What the stream carries (Y4M's `XCOLORRANGE=FULL` overrides the colour range).
    pub stream: StreamKeys,
    /// At the end of the stream, reopen and wait for the next writer (FIFO) instead of ending the run.
    pub reopen_at_end: bool,
}

/// The stream keys a pipe and a camera command share: `format`, `width`/`height` (raw
/// formats), `range`, `matrix`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamKeys {
    /// The stream format.
    pub format: StreamFormat,
    /// Frame width of raw streams (0 otherwise).
    pub width: u32,
    /// Frame height of raw streams (0 otherwise).
    pub height: u32,
    /// How YUV samples are to be read.
    pub colour: YuvColour,
}

impl StreamKeys {
    /// The stream keys of `[source]`, checked, for a source of kind `kind` (for messages).
    pub fn from_section(s: &SourceSection, file: &TomlFile, kind: &str) -> Result<StreamKeys, SettingsError> {
        let Some(format) = &s.format else {
            return Err(file.error(
                Some("source.format".into()),
                format!("missing: a {kind} source needs `format` (i420, nv12, yuyv, rgb24, grey, mjpeg or y4m)"),
            ));
        };
        let size = s.size(file)?;
        let format = match *format.get_ref() {
            SourceFormat::Auto => {
                return Err(file.error_at(
                    format.span(),
                    "source.format",
                    format!(
                        "`auto` is for v4l2 cameras: a {kind} source needs i420, nv12, yuyv, rgb24, grey, mjpeg or y4m"
                    ),
                ));
            }
            SourceFormat::Mjpeg => StreamFormat::Mjpeg,
            SourceFormat::Y4m => StreamFormat::Y4m,
            raw => StreamFormat::Raw(raw.raw().expect("the other formats are raw")),
        };
        let (width, height) = match (format, size) {
            (StreamFormat::Raw(_), None) => {
                return Err(file.error(
                    Some("source.width".into()),
                    format!(
                        "missing: a raw `{}` {kind} source needs `width` and `height` (the frame size the writer sends)",
                        s.format.as_ref().map_or("", |f| f.get_ref().name())
                    ),
                ));
            }
            (_, size) => size.unwrap_or((0, 0)),
        };
        if let StreamFormat::Raw(raw) = format {
            let len = raw.frame_len(width, height).unwrap_or(0);
            if len > MAX_RAW_FRAME {
                return Err(file.error(
                    Some("source.width".into()),
                    format!(
                        "a raw {width}x{height} `{}` frame is {len} bytes; a pipe takes frames of at most {MAX_RAW_FRAME} bytes",
                        s.format.as_ref().map_or("", |f| f.get_ref().name())
                    ),
                ));
            }
        }
        let colour = YuvColour {
            matrix: s.matrix.as_ref().map(|m| *m.get_ref()).unwrap_or_default(),
            range: s.range.as_ref().map(|r| *r.get_ref()).unwrap_or_default(),
        };
        Ok(StreamKeys { format, width, height, colour })
    }
}

impl PipeSpec {
    /// The pipe keys of `[source]` (`path`, the [`StreamKeys`], `on_end`), checked; a
    /// relative path is resolved against the config.
    pub fn from_section(s: &SourceSection, file: &TomlFile) -> Result<PipeSpec, SettingsError> {
        let Some(p) = &s.path else {
            return Err(file.error(
                Some("source.path".into()),
                "missing: a pipe source needs `path` (a FIFO or file, or \"-\" for standard input)",
            ));
        };
        let stream = StreamKeys::from_section(s, file, "pipe")?;
        let on_end = s.on_end.as_ref().map_or(OnEnd::Stop, |o| *o.get_ref());
        let stdin = p.get_ref() == "-";
        if stdin && on_end == OnEnd::Reopen {
            return Err(file
                .error(Some("source.on_end".into()), "`reopen` needs a FIFO path: standard input cannot be reopened"));
        }
        Ok(PipeSpec {
            path: if stdin { "-".into() } else { file.resolve(p.get_ref()).to_string_lossy().into_owned() },
            stream,
            reopen_at_end: on_end == OnEnd::Reopen,
        })
    }

    /// A spec for `stream` at `path`, ending at the end of the stream (for a stream on an
    /// already open descriptor, such as a child's stdout, `path` only names it in messages).
    pub fn for_stream(stream: StreamKeys, path: String) -> PipeSpec {
        PipeSpec { path, stream, reopen_at_end: false }
    }
}

/// Reads frames from a pipe.
pub struct PipeCapture {
    spec: PipeSpec,
    fd: Option<OwnedFd>,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    /// The current JPEG's parse position, relative to `start` (so a frame arriving in
    /// pieces is scanned once).
    jpeg: JpegScan,
    /// Size and layout from the Y4M stream header, once seen.
    y4m: Option<(PixelFormat, u32, u32, YuvColour)>,
    /// Bytes skipped to resynchronise and not yet reported.
    skipping: Option<Skipping>,
}

/// A run of bytes being skipped to find the next frame start. It is one bad frame however it
/// arrives (in one read or in many): reported when the next frame starts, at the end of the
/// stream, or every [`MAX_ENCODED_FRAME`] bytes of a stream that never resynchronises (so a
/// stream of noise still shows in the counters).
#[derive(Debug, Clone, Copy)]
struct Skipping {
    why: &'static str,
    bytes: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct JpegScan {
    pos: usize,
    in_entropy: bool,
}

enum Parsed {
    Frame,
    Bad(String),
    NeedMore,
}

enum Fill {
    Data,
    Timeout,
    Eof,
}

impl PipeCapture {
    /// A capture for `spec`; nothing is opened yet.
    pub fn new(spec: PipeSpec) -> PipeCapture {
        PipeCapture {
            spec,
            fd: None,
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            jpeg: JpegScan::default(),
            y4m: None,
            skipping: None,
        }
    }

    /// The stream's format for log lines: `MJPEG`, `Y4M`, `raw I420 640x480`.
    pub fn stream_description(&self) -> String {
        match self.spec.stream.format {
            StreamFormat::Raw(f) => format!("raw {f:?} {}x{}", self.spec.stream.width, self.spec.stream.height),
            StreamFormat::Mjpeg => "MJPEG".into(),
            StreamFormat::Y4m => "Y4M".into(),
        }
    }

    /// Read from `fd` from now on (a new writer starts a new stream: nothing buffered
    /// from the last one is kept).
    pub fn attach(&mut self, fd: OwnedFd) {
        self.fd = Some(fd);
        (self.start, self.end, self.eof, self.jpeg, self.y4m) = (0, 0, false, JpegScan::default(), None);
        self.skipping = None;
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Make room and read what the pipe has, waiting until `deadline` at most.
    fn fill(&mut self, deadline: Instant) -> std::io::Result<Fill> {
        let Some(fd) = &self.fd else { return Err(std::io::Error::other("not open")) };
        if self.start > 0 && (self.end == self.buf.len() || self.start == self.end) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let limit = self.buffer_limit();
            if self.buf.len() >= limit {
                return Err(std::io::Error::other(format!("read buffer limit ({limit} bytes) reached")));
            }
            self.buf.resize((self.buf.len() * 2).clamp(1 << 16, limit), 0);
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(Fill::Timeout);
            }
            let room = &mut self.buf[self.end..];
            let got = unsafe { libc::read(fd.as_raw_fd(), room.as_mut_ptr().cast(), room.len()) };
            if got > 0 {
                self.end += got as usize;
                return Ok(Fill::Data);
            }
            if got == 0 {
                return Ok(Fill::Eof);
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock if !left.is_zero() => continue,
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock => return Ok(Fill::Timeout),
                _ => return Err(e),
            }
        }
    }

    /// The read buffer's most: two of the largest frames this stream can carry (both
    /// checked against [`MAX_RAW_FRAME`] / [`MAX_ENCODED_FRAME`] before they get here).
    fn buffer_limit(&self) -> usize {
        let frame = match (self.spec.stream.format, self.y4m) {
            (StreamFormat::Raw(f), _) => f.frame_len(self.spec.stream.width, self.spec.stream.height).unwrap_or(0),
            (StreamFormat::Y4m, Some((f, w, h, _))) => f.frame_len(w, h).unwrap_or(0) + MAX_Y4M_LINE,
            _ => 0,
        };
        2 * frame.max(MAX_ENCODED_FRAME)
    }

    fn parse(&mut self, frame: &mut Frame) -> Parsed {
        match self.spec.stream.format {
            StreamFormat::Raw(format) => {
                let n = format.frame_len(self.spec.stream.width, self.spec.stream.height).expect("raw format");
                if self.end - self.start < n {
                    return Parsed::NeedMore;
                }
                let (w, h, colour) = (self.spec.stream.width, self.spec.stream.height, self.spec.stream.colour);
                self.take_frame(frame, n, format, w, h, colour);
                Parsed::Frame
            }
            StreamFormat::Mjpeg => self.parse_jpeg(frame),
            StreamFormat::Y4m => self.parse_y4m(frame),
        }
    }

    /// Move the next `n` bytes into `frame` (reusing its buffer).
    fn take_frame(&mut self, frame: &mut Frame, n: usize, format: PixelFormat, w: u32, h: u32, colour: YuvColour) {
        frame.data.clear();
        frame.data.extend_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        frame.format = format;
        frame.width = w;
        frame.height = h;
        frame.colour = colour;
        frame.origin = None;
    }

    /// Skip `n` bytes on the way to the next frame start. With `found` (the next frame starts
    /// right after them) or past [`MAX_ENCODED_FRAME`] skipped, report the run as one bad frame;
    /// otherwise wait for more.
    fn skip(&mut self, n: usize, found: bool, why: &'static str) -> Parsed {
        self.start += n;
        let run = self.skipping.get_or_insert(Skipping { why, bytes: 0 });
        run.bytes += n;
        if found || run.bytes >= MAX_ENCODED_FRAME { self.report_skipped() } else { Parsed::NeedMore }
    }

    /// Report the bytes skipped so far, if any, as one bad frame.
    fn report_skipped(&mut self) -> Parsed {
        match self.skipping.take() {
            Some(Skipping { why, bytes }) => Parsed::Bad(format!("{why} ({bytes} bytes skipped)")),
            None => Parsed::NeedMore,
        }
    }

    /// Skip to the next JPEG start (`FF D8 FF`) after `from`.
    fn resync_jpeg(&mut self, from: usize, why: &'static str) -> Parsed {
        self.jpeg = JpegScan::default();
        let data = self.available();
        match memchr::memmem::find(&data[from.min(data.len())..], &[0xFF, 0xD8, 0xFF]) {
            Some(i) => self.skip(i + from, true, why),
            // Keep the last two bytes: they may begin a marker that is still arriving.
            None => self.skip(data.len().saturating_sub(2), false, why),
        }
    }

    fn parse_jpeg(&mut self, frame: &mut Frame) -> Parsed {
        let data = &self.buf[self.start..self.end];
        if data.len() < 3 {
            return Parsed::NeedMore;
        }
        if data[..3] != [0xFF, 0xD8, 0xFF] {
            return self.resync_jpeg(0, "data between JPEG frames");
        }
        if self.skipping.is_some() {
            return self.report_skipped();
        }
        let mut scan = if self.jpeg.pos == 0 { JpegScan { pos: 2, in_entropy: false } } else { self.jpeg };
        loop {
            if scan.pos >= MAX_ENCODED_FRAME {
                return self.resync_jpeg(2, "JPEG frame too large or without an end marker");
            }
            // A segment length can point past what has arrived (or past the stream's end):
            // wait for more, and never index beyond the data.
            if scan.pos >= data.len() {
                break;
            }
            if scan.in_entropy {
                // Entropy-coded data: FF is followed by 00 (stuffing) or D0-D7 (restart) inside it.
                let Some(i) = memchr::memchr(0xFF, &data[scan.pos..]) else {
                    scan.pos = data.len();
                    break;
                };
                let at = scan.pos + i;
                let Some(&next) = data.get(at + 1) else {
                    scan.pos = at;
                    break;
                };
                if next == 0x00 || (0xD0..=0xD7).contains(&next) {
                    scan.pos = at + 2;
                    continue;
                }
                scan.pos = at;
                scan.in_entropy = false;
                continue;
            }
            // A marker: FF (FF fill bytes) code [length].
            if scan.pos + 2 > data.len() {
                break;
            }
            if data[scan.pos] != 0xFF {
                let at = scan.pos;
                return self.resync_jpeg(at, "corrupt JPEG: no marker where one belongs");
            }
            let code = data[scan.pos + 1];
            match code {
                0xFF => scan.pos += 1,
                0xD9 => {
                    let n = scan.pos + 2;
                    self.jpeg = JpegScan::default();
                    self.take_frame(frame, n, PixelFormat::Encoded, 0, 0, YuvColour::default());
                    return Parsed::Frame;
                }
                0xD8 => {
                    let at = scan.pos;
                    self.jpeg = JpegScan::default();
                    self.start += at;
                    return Parsed::Bad(format!("truncated JPEG ({at} bytes, a new frame began before its end)"));
                }
                0x01 | 0xD0..=0xD7 => scan.pos += 2,
                _ => {
                    if scan.pos + 4 > data.len() {
                        break;
                    }
                    let len = usize::from(u16::from_be_bytes([data[scan.pos + 2], data[scan.pos + 3]]));
                    if len < 2 {
                        let at = scan.pos;
                        return self.resync_jpeg(at, "corrupt JPEG: bad segment length");
                    }
                    scan.pos += 2 + len;
                    scan.in_entropy = code == 0xDA;
                }
            }
        }
        self.jpeg = scan;
        Parsed::NeedMore
    }

    fn parse_y4m(&mut self, frame: &mut Frame) -> Parsed {
        let data = &self.buf[self.start..self.end];
        let Some(nl) = memchr::memchr(b'\n', &data[..data.len().min(MAX_Y4M_LINE)]) else {
            if data.len() >= MAX_Y4M_LINE {
                return self.resync_y4m(1, "no Y4M header or FRAME line");
            }
            return Parsed::NeedMore;
        };
        let line = &data[..nl];
        if self.skipping.is_some() && (line.starts_with(b"YUV4MPEG2") || line.starts_with(b"FRAME")) {
            return self.report_skipped();
        }
        if line.starts_with(b"YUV4MPEG2") {
            match parse_y4m_header(line, self.spec.stream.colour) {
                Ok(h) => {
                    self.y4m = Some(h);
                    self.start += nl + 1;
                    return self.parse_y4m(frame);
                }
                Err(why) => {
                    self.y4m = None;
                    self.start += nl + 1;
                    return Parsed::Bad(why);
                }
            }
        }
        if !line.starts_with(b"FRAME") {
            return self.resync_y4m(1, "lost Y4M frame sync");
        }
        let Some((format, w, h, colour)) = self.y4m else {
            self.start += nl + 1;
            return Parsed::Bad("Y4M frame before any valid stream header".into());
        };
        let n = format.frame_len(w, h).expect("raw format");
        if data.len() < nl + 1 + n {
            return Parsed::NeedMore;
        }
        // A frame cut short shows as the next FRAME marker inside this frame's bytes.
        let payload = &data[nl + 1..nl + 1 + n];
        if let Some(i) = memchr::memmem::find(payload, b"FRAME") {
            self.start += nl + 1 + i;
            return Parsed::Bad(format!("truncated Y4M frame ({i} of {n} bytes)"));
        }
        self.start += nl + 1;
        self.take_frame(frame, n, format, w, h, colour);
        Parsed::Frame
    }

    /// Skip to the next `FRAME` after `from` (at least 1: every call must make progress, or a
    /// few stray bytes would be reported as bad frames forever); without one, keep the last 4
    /// bytes, which may begin a marker still arriving.
    fn resync_y4m(&mut self, from: usize, why: &'static str) -> Parsed {
        let data = self.available();
        let from = from.clamp(1, data.len().max(1));
        match memchr::memmem::find(&data[from.min(data.len())..], b"FRAME") {
            Some(i) => self.skip((i + from).min(data.len()), true, why),
            None => self.skip(data.len().saturating_sub(4).max(from).min(data.len()), false, why),
        }
    }
}

/// `YUV4MPEG2 W640 H480 F30:1 Ip A1:1 C420jpeg XCOLORRANGE=LIMITED` → layout, size, colour.
fn parse_y4m_header(line: &[u8], colour: YuvColour) -> Result<(PixelFormat, u32, u32, YuvColour), String> {
    let text = String::from_utf8_lossy(line);
    let (mut w, mut h, mut format, mut colour) = (0u32, 0u32, PixelFormat::I420, colour);
    for token in text.split_ascii_whitespace().skip(1) {
        // By character, not byte: a hostile header's first byte may begin a multi-byte one.
        let Some(first) = token.chars().next() else { continue };
        let (tag, value) = token.split_at(first.len_utf8());
        match tag {
            "W" => w = value.parse().map_err(|_| format!("bad Y4M width `{token}`"))?,
            "H" => h = value.parse().map_err(|_| format!("bad Y4M height `{token}`"))?,
            "C" => {
                format = match value {
                    "420" | "420jpeg" | "420paldv" | "420mpeg2" => PixelFormat::I420,
                    "mono" => PixelFormat::Grey,
                    other => return Err(format!("Y4M colour space `{other}` not supported (expected 420* or mono)")),
                }
            }
            "X" if value.eq_ignore_ascii_case("COLORRANGE=FULL") => colour.range = Range::Full,
            "X" if value.eq_ignore_ascii_case("COLORRANGE=LIMITED") => colour.range = Range::Limited,
            _ => {}
        }
    }
    if w == 0 || h == 0 || w > crate::preprocess::MAX_SIDE || h > crate::preprocess::MAX_SIDE {
        return Err(format!("bad Y4M frame size {w}x{h}"));
    }
    if format.frame_len(w, h).is_none_or(|n| n > MAX_RAW_FRAME) {
        return Err(format!("Y4M frame size {w}x{h} over the {MAX_RAW_FRAME}-byte frame limit"));
    }
    Ok((format, w, h, colour))
}

impl Capture for PipeCapture {
    fn open(&mut self) -> Result<(), OpenError> {
        let fd = if self.spec.path == "-" {
            let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
            if fd < 0 {
                return Err(OpenError::Unsupported(format!("stdin: {}", std::io::Error::last_os_error())));
            }
            fd
        } else {
            let c = std::ffi::CString::new(self.spec.path.as_bytes())
                .map_err(|_| OpenError::Unsupported(format!("`{}`: path holds a NUL byte", self.spec.path)))?;
            // Non-blocking: opening a FIFO for reading must not wait for a writer.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(OpenError::Unavailable(format!("{}", std::io::Error::last_os_error())));
            }
            fd
        };
        self.attach(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(())
    }

    fn read(&mut self, frame: &mut Frame, timeout: Duration) -> Read {
        let deadline = Instant::now() + timeout;
        loop {
            match self.parse(frame) {
                Parsed::Frame => return Read::Frame,
                Parsed::Bad(why) => return Read::Bad(why),
                Parsed::NeedMore => {}
            }
            if self.eof {
                let left = self.end - self.start;
                (self.start, self.end, self.jpeg) = (0, 0, JpegScan::default());
                if let Some(Skipping { why, bytes }) = self.skipping.take() {
                    return Read::Bad(format!("{why} ({} bytes skipped before the end of the stream)", bytes + left));
                }
                if left > 0 {
                    return Read::Bad(format!("{left} bytes of an incomplete frame at the end of the stream"));
                }
                return if self.spec.reopen_at_end {
                    Read::Failed("the writer closed the pipe".into())
                } else {
                    Read::End
                };
            }
            match self.fill(deadline) {
                Ok(Fill::Data) => {}
                Ok(Fill::Timeout) => return Read::Timeout,
                Ok(Fill::Eof) => self.eof = true,
                Err(e) => return Read::Failed(format!("read failed: {e}")),
            }
        }
    }

    fn close(&mut self) {
        self.fd = None;
    }

    fn reopen_on_stall(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        let path = if self.spec.path == "-" { "stdin" } else { &self.spec.path };
        format!("pipe `{path}` ({})", self.stream_description())
    }
}

#[cfg(test)]
mod tests {
    //! Hostile streams: each must end at its end of stream, in a bounded number of reads,
    //! without a panic. The streams are regular files, which `poll` always reports readable.

    use super::*;
    use crate::frame::Frame;

    /// What each `read` returned until the stream ended (or `limit` reads, for a parser that spins).
    fn reads(bytes: &[u8], format: StreamFormat, width: u32, height: u32) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream");
        std::fs::write(&path, bytes).unwrap();
        let stream = StreamKeys { format, width, height, colour: YuvColour::default() };
        let spec = PipeSpec::for_stream(stream, path.to_string_lossy().into_owned());
        let mut capture = PipeCapture::new(spec);
        capture.open().unwrap();
        let mut frame = Frame::empty();
        let mut seen = Vec::new();
        for _ in 0..1000 {
            seen.push(one_read(&mut capture, &mut frame));
            if seen.last().unwrap() == "end" {
                return seen;
            }
        }
        panic!("no end of stream after 1000 reads: {:?}", &seen[..10]);
    }

    /// A minimal well-formed JPEG's marker structure (the splitter does not decode).
    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x11, 0x22, 0xFF, 0x00, 0x33, 0xFF, 0xD9];

    #[test]
    fn mjpeg_split_inside_a_segment_length_waits_then_ends() {
        // An SOS header whose length points far past the end of the stream: this indexed past
        // the data and panicked the capture thread.
        let seen = reads(&[0xFF, 0xD8, 0xFF, 0xDA, 0xFF, 0xFF, 0x00, 0x00], StreamFormat::Mjpeg, 0, 0);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[0].contains("incomplete frame at the end"), "{seen:?}");
        assert_eq!(seen[1], "end");
    }

    #[test]
    fn mjpeg_frames_survive_garbage_and_cut_headers_around_them() {
        let mut stream = JPEG.to_vec();
        stream.extend_from_slice(b"garbage");
        stream.extend_from_slice(JPEG);
        stream.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xC0, 0xFF]);
        let seen = reads(&stream, StreamFormat::Mjpeg, 0, 0);
        let frames = seen.iter().filter(|s| s.starts_with("frame")).count();
        assert_eq!(frames, 2, "{seen:?}");
        assert!(seen.iter().any(|s| s.contains("data between JPEG frames")), "{seen:?}");
        assert_eq!(seen.last().unwrap(), "end");
    }

    #[test]
    fn y4m_stray_bytes_between_frames_are_skipped_and_the_stream_ends() {
        let mut stream = b"YUV4MPEG2 W2 H2 C420jpeg\n".to_vec();
        let frame = [b"FRAME\n".as_slice(), &[16u8; 6]].concat();
        stream.extend_from_slice(&frame);
        // A few stray bytes with a newline: this reported "lost sync" without skipping
        // anything, forever, and never reached the end of the stream.
        stream.extend_from_slice(b"x\n");
        stream.extend_from_slice(&frame);
        stream.extend_from_slice(b"ab\n");
        let seen = reads(&stream, StreamFormat::Y4m, 0, 0);
        let frames = seen.iter().filter(|s| *s == "frame 6 bytes").count();
        assert_eq!(frames, 2, "{seen:?}");
        assert!(seen.len() < 10, "{seen:?}");
        assert_eq!(seen.last().unwrap(), "end");
    }

    #[test]
    fn y4m_header_claiming_a_huge_frame_is_refused_not_buffered() {
        let mut stream = b"YUV4MPEG2 W8192 H8192 C420jpeg\nFRAME\n".to_vec();
        stream.extend_from_slice(&[0u8; 1000]);
        let seen = reads(&stream, StreamFormat::Y4m, 0, 0);
        assert!(seen[0].contains("frame limit"), "{seen:?}");
        assert_eq!(seen.last().unwrap(), "end");
    }

    #[test]
    fn raw_stream_ends_with_its_partial_frame_reported() {
        let seen = reads(&[7u8; 4 * 4 + 5], StreamFormat::Raw(PixelFormat::Grey), 4, 4);
        assert_eq!(seen, ["frame 16 bytes", "bad: 5 bytes of an incomplete frame at the end of the stream", "end"]);
    }

    use std::io::Write;

    /// What one read gives, as a line of `reads`.
    fn one_read(capture: &mut PipeCapture, frame: &mut Frame) -> String {
        match capture.read(frame, Duration::from_millis(20)) {
            Read::Frame => format!("frame {} bytes", frame.data.len()),
            Read::Bad(why) => format!("bad: {why}"),
            Read::Timeout => "timeout".into(),
            Read::Failed(why) => format!("failed: {why}"),
            Read::End => "end".into(),
        }
    }

    #[test]
    fn a_run_of_garbage_arriving_in_pieces_is_one_bad_frame() {
        // On a real pipe, garbage that arrives over several reads was counted as a bad frame
        // per read: a camera glitch of one frame's worth of noise counted as several frames.
        for (format, garbage, good) in [
            (StreamFormat::Mjpeg, vec![0x11u8; 300], JPEG.to_vec()),
            (StreamFormat::Y4m, b"noise\nmore noise".to_vec(), [b"FRAME\n".as_slice(), &[16u8; 6]].concat()),
        ] {
            let mut fds = [0; 2];
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            let [rx, tx] = fds;
            let mut writer = unsafe { std::fs::File::from_raw_fd(tx) };
            let stream = StreamKeys { format, width: 0, height: 0, colour: YuvColour::default() };
            let mut capture = PipeCapture::new(PipeSpec::for_stream(stream, "pipe".into()));
            capture.attach(unsafe { OwnedFd::from_raw_fd(rx) });
            let mut frame = Frame::empty();
            if format == StreamFormat::Y4m {
                writer.write_all(b"YUV4MPEG2 W2 H2 C420jpeg\n").unwrap();
                writer.write_all(&good).unwrap();
                assert_eq!(one_read(&mut capture, &mut frame), "frame 6 bytes");
            }
            let (first, rest) = garbage.split_at(garbage.len() / 2);
            writer.write_all(first).unwrap();
            assert_eq!(
                one_read(&mut capture, &mut frame),
                "timeout",
                "{format:?}: half the garbage is not reported yet"
            );
            writer.write_all(rest).unwrap();
            assert_eq!(
                one_read(&mut capture, &mut frame),
                "timeout",
                "{format:?}: nor all of it, before a frame starts"
            );
            writer.write_all(&good).unwrap();
            let bad = one_read(&mut capture, &mut frame);
            assert!(
                bad.starts_with("bad: ") && bad.contains(&format!("({} bytes skipped)", garbage.len())),
                "{format:?}: {bad}"
            );
            assert!(one_read(&mut capture, &mut frame).starts_with("frame"), "{format:?}: the frame after the garbage");
            // Garbage at the very end is reported once too, then the stream ends.
            writer.write_all(first).unwrap();
            assert_eq!(one_read(&mut capture, &mut frame), "timeout");
            drop(writer);
            let at_end = one_read(&mut capture, &mut frame);
            assert!(at_end.contains("skipped before the end of the stream"), "{format:?}: {at_end}");
            assert_eq!(one_read(&mut capture, &mut frame), "end", "{format:?}");
        }
    }
}
