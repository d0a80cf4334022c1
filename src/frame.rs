//! The unit of data that flows from a source to the preprocessor.

use std::path::Path;
use std::sync::Arc;

/// How the bytes of a [`Frame`] are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// A compressed still (JPEG or PNG), sniffed from its first bytes; one MJPEG frame.
    Encoded,
    /// Packed 8-bit R, G, B; `width * height * 3` bytes.
    Rgb24,
    /// 8-bit luma; `width * height` bytes.
    Grey,
    /// Packed 4:2:2 Y0 U Y1 V (V4L2 `YUYV`); `width * height * 2` bytes, even width.
    Yuyv,
    /// Planar 4:2:0: Y plane, then interleaved U V at half size (V4L2 `NV12`).
    Nv12,
    /// Planar 4:2:0: Y plane, U plane, V plane at half size (V4L2 `YU12`, ffmpeg `yuv420p`).
    I420,
}

impl PixelFormat {
    /// Bytes of one `width` x `height` frame; `None` for encoded frames (any size).
    /// Chroma planes of odd sizes round up, as V4L2 and ffmpeg lay them out.
    pub fn frame_len(self, width: u32, height: u32) -> Option<usize> {
        let (w, h) = (width as usize, height as usize);
        let chroma = w.div_ceil(2) * h.div_ceil(2);
        match self {
            PixelFormat::Encoded => None,
            PixelFormat::Rgb24 => Some(w * h * 3),
            PixelFormat::Grey => Some(w * h),
            PixelFormat::Yuyv => Some(w.div_ceil(2) * 4 * h),
            PixelFormat::Nv12 | PixelFormat::I420 => Some(w * h + 2 * chroma),
        }
    }

    /// Whether frames of this format carry Y'CbCr samples (and so a [`YuvColour`] matters).
    pub fn is_yuv(self) -> bool {
        matches!(self, PixelFormat::Yuyv | PixelFormat::Nv12 | PixelFormat::I420)
    }
}

/// Which Y'CbCr to R'G'B' matrix a YUV frame was encoded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Matrix {
    /// ITU-R BT.601 (SD video, JPEG, most webcams): Kr 0.299, Kb 0.114.
    #[default]
    Bt601,
    /// ITU-R BT.709 (HD video): Kr 0.2126, Kb 0.0722.
    Bt709,
}

/// The code range of a YUV frame's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Range {
    /// Y in 16..=235, Cb/Cr in 16..=240 ("TV" or "limited" range; the video default).
    #[default]
    Limited,
    /// All of 0..=255 ("PC" or "full" range; JPEG).
    Full,
}

/// How to read a YUV frame's samples: BT.601 limited range unless the device says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct YuvColour {
    /// The conversion matrix.
    pub matrix: Matrix,
    /// The code range.
    pub range: Range,
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
    /// Matrix and range of YUV formats (ignored for the others).
    pub colour: YuvColour,
    /// The pixel bytes (or the encoded file), rows packed without padding.
    pub data: Vec<u8>,
    /// Where the frame came from (a file path), for log lines; shared, so cloning is free.
    pub origin: Option<Arc<Path>>,
}

impl Frame {
    /// An empty frame, ready to be filled by a source.
    pub fn empty() -> Frame {
        Frame {
            seq: 0,
            t_ms: 0,
            format: PixelFormat::Encoded,
            width: 0,
            height: 0,
            colour: YuvColour::default(),
            data: Vec::new(),
            origin: None,
        }
    }

    /// A short description of the frame's origin for log lines.
    pub fn origin_display(&self) -> std::borrow::Cow<'_, str> {
        match &self.origin {
            Some(p) => p.to_string_lossy(),
            None => std::borrow::Cow::Borrowed("(stream)"),
        }
    }
}
