//! The unit of data that flows from a source to the preprocessor.

use std::path::Path;
use std::sync::Arc;

/// How the bytes of a [`Frame`] are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// A compressed still (JPEG or PNG), sniffed from its first bytes.
    Encoded,
    /// Packed 8-bit R, G, B; `width * height * 3` bytes.
    Rgb24,
    /// 8-bit luma; `width * height` bytes.
    Grey,
}

/// One captured frame. Frames are pooled: the pipeline hands the same `Frame`
/// (and so the same `data` allocation) back to the source once it has been
/// preprocessed, so a warm pipeline allocates no frame buffers.
#[derive(Debug)]
pub struct Frame {
    /// Position in the stream, assigned by the pipeline; decisions are made in this order.
    pub seq: u64,
    /// Capture time in milliseconds since the run started (monotonic clock).
    pub t_ms: u64,
    /// Layout of `data`.
    pub format: PixelFormat,
    /// Width in pixels for raw formats; 0 for [`PixelFormat::Encoded`].
    pub width: u32,
    /// Height in pixels for raw formats; 0 for [`PixelFormat::Encoded`].
    pub height: u32,
    /// The pixel bytes (or the encoded file).
    pub data: Vec<u8>,
    /// Where the frame came from (a file path), for log lines; shared, so cloning is free.
    pub origin: Option<Arc<Path>>,
}

impl Frame {
    /// An empty frame, ready to be filled by a source.
    pub fn empty() -> Frame {
        Frame { seq: 0, t_ms: 0, format: PixelFormat::Encoded, width: 0, height: 0, data: Vec::new(), origin: None }
    }

    /// A short description of the frame's origin for log lines.
    pub fn origin_display(&self) -> std::borrow::Cow<'_, str> {
        match &self.origin {
            Some(p) => p.to_string_lossy(),
            None => std::borrow::Cow::Borrowed("(stream)"),
        }
    }
}
