//! JPEG decoding with libjpeg-turbo at the size the model needs.
//!
//! A JPEG's 8x8 DCT blocks can be inverted straight to 1/2, 1/4 or 1/8 of the image's size,
//! skipping most of the inverse DCT, the colour conversion of pixels that the resize would
//! throw away, and most of the resize itself. [`JpegDecoder::decode_covering`] picks the
//! smallest of those scales whose image still covers the model's input in both directions, so
//! the resize that follows only ever shrinks (by less than 2x). Measured with `armcount` on a
//! Pi 4 core, a 1280x720 camera frame decodes in 9.9 M instructions at 1/4 against 33 M for the
//! pure-Rust decoder at full size (docs/performance.md).
//!
//! libjpeg-turbo (TurboJPEG API 2.x: Debian 12's 2.1.5; 3.x keeps these functions) is linked
//! statically by `build.rs`, so the binary needs no JPEG library on the board. Its SIMD code
//! (SSE2/AVX2 on x86, NEON on ARM) is chosen at run time.

use std::ffi::{CStr, c_char, c_int, c_uchar, c_ulong, c_void};
use std::ptr::NonNull;

use crate::preprocess::{MAX_DECODED, MAX_SIDE, PreprocessError};

// The subset of turbojpeg.h that vigil calls.
const TJPF_RGB: c_int = 0;
const TJPF_GRAY: c_int = 6;
const TJCS_CMYK: c_int = 3;
const TJCS_YCCK: c_int = 4;
const TJERR_WARNING: c_int = 0;
/// Refuse progressive JPEGs with an unreasonable number of scans (hundreds of scans make a
/// small file cost seconds to decode; libjpeg-turbo's limit is 500).
const TJFLAG_LIMITSCANS: c_int = 32768;

unsafe extern "C" {
    fn tjInitDecompress() -> *mut c_void;
    fn tjDestroy(handle: *mut c_void) -> c_int;
    fn tjDecompressHeader3(
        handle: *mut c_void,
        jpeg: *const c_uchar,
        size: c_ulong,
        width: *mut c_int,
        height: *mut c_int,
        subsampling: *mut c_int,
        colorspace: *mut c_int,
    ) -> c_int;
    fn tjDecompress2(
        handle: *mut c_void,
        jpeg: *const c_uchar,
        size: c_ulong,
        dst: *mut c_uchar,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        flags: c_int,
    ) -> c_int;
    fn tjGetErrorStr2(handle: *mut c_void) -> *const c_char;
    fn tjGetErrorCode(handle: *mut c_void) -> c_int;
}

/// The pixels [`JpegDecoder::decode_covering`] writes: interleaved RGB, or grey (the JPEG's
/// luma, which is what a grey model's BT.601 conversion of the RGB pixels would give).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegPixels {
    /// 3 bytes per pixel, R G B.
    Rgb,
    /// 1 byte per pixel.
    Grey,
}

impl JpegPixels {
    /// Bytes per pixel.
    pub fn channels(self) -> usize {
        match self {
            JpegPixels::Rgb => 3,
            JpegPixels::Grey => 1,
        }
    }
}

/// What a JPEG's header says.
#[derive(Debug, Clone, Copy)]
pub struct JpegHeader {
    /// Full-size width.
    pub width: u32,
    /// Full-size height.
    pub height: u32,
    /// CMYK or YCCK (print files, never cameras): libjpeg-turbo cannot convert them to RGB.
    pub cmyk: bool,
}

/// One libjpeg-turbo decompressor; one per [`crate::preprocess::Preprocessor`], so one per
/// worker thread. Created on first use and reused for every frame.
#[derive(Default)]
pub struct JpegDecoder {
    handle: Option<Handle>,
}

/// An owned TurboJPEG handle.
struct Handle(NonNull<c_void>);

// SAFETY: a TurboJPEG handle holds no thread-local state; it may move between threads as long
// as one thread uses it at a time, which `&mut self` on every call guarantees.
unsafe impl Send for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitDecompress and is destroyed once.
        unsafe { tjDestroy(self.0.as_ptr()) };
    }
}

impl JpegDecoder {
    /// A decoder; the libjpeg-turbo state is made on the first frame.
    pub fn new() -> JpegDecoder {
        JpegDecoder::default()
    }

    fn handle(&mut self) -> Result<*mut c_void, PreprocessError> {
        if self.handle.is_none() {
            // SAFETY: no preconditions; returns null only when out of memory.
            let raw = unsafe { tjInitDecompress() };
            let h = NonNull::new(raw).ok_or_else(|| PreprocessError::Decode("libjpeg-turbo: out of memory".into()))?;
            self.handle = Some(Handle(h));
        }
        Ok(self.handle.as_ref().map(|h| h.0.as_ptr()).unwrap_or(std::ptr::null_mut()))
    }

    /// Drop the handle after a failed call: libjpeg-turbo 2.1 can leave it in a state where
    /// every later call fails ("Improper call to JPEG library in state ..."), which would make
    /// one bad frame turn all of a worker's next frames into errors. The next frame gets a new one.
    fn reset(&mut self) {
        self.handle = None;
    }

    /// Read a JPEG's header (size and colour space) without decoding it.
    pub fn header(&mut self, jpeg: &[u8]) -> Result<JpegHeader, PreprocessError> {
        let handle = self.handle()?;
        let size = c_ulong::try_from(jpeg.len()).map_err(|_| PreprocessError::Decode("JPEG too large".into()))?;
        let (mut w, mut h, mut subsampling, mut colorspace) = (0, 0, 0, 0);
        // SAFETY: `jpeg` is valid for `size` bytes; the outputs are plain ints.
        let r = unsafe {
            tjDecompressHeader3(handle, jpeg.as_ptr(), size, &mut w, &mut h, &mut subsampling, &mut colorspace)
        };
        if r != 0 {
            let message = error_message(handle);
            self.reset();
            return Err(PreprocessError::Decode(message));
        }
        let side = |v: c_int| u32::try_from(v).ok().filter(|&v| v > 0);
        match (side(w), side(h)) {
            (Some(width), Some(height)) => {
                Ok(JpegHeader { width, height, cmyk: colorspace == TJCS_CMYK || colorspace == TJCS_YCCK })
            }
            _ => Err(PreprocessError::Unsupported(format!("JPEG of {w}x{h} pixels"))),
        }
    }

    /// Decode `jpeg` into `out` at the smallest of the scales 1/8, 1/4, 1/2 and 1 whose image
    /// is at least `min_width` x `min_height` (full size when even that is smaller), as
    /// `pixels`. Returns the decoded width and height; `out` holds exactly their pixels.
    ///
    /// Corrupt data is an error, except for stray bytes between segments, which some webcams
    /// write into every frame and which lose no image data.
    pub fn decode_covering(
        &mut self,
        jpeg: &[u8],
        header: JpegHeader,
        (min_width, min_height): (u32, u32),
        pixels: JpegPixels,
        out: &mut Vec<u8>,
    ) -> Result<(u32, u32), PreprocessError> {
        let JpegHeader { width, height, .. } = header;
        if width > MAX_SIDE || height > MAX_SIDE {
            return Err(PreprocessError::Unsupported(format!(
                "JPEG of {width}x{height} pixels, over the {MAX_SIDE}-pixel side limit"
            )));
        }
        // libjpeg-turbo's own buffers for a progressive JPEG hold every coefficient of the
        // full-size image (about 2 bytes per sample) whatever the output scale: bounded here.
        let full = width as usize * height as usize * 3;
        if full > MAX_DECODED {
            return Err(PreprocessError::Unsupported(format!(
                "JPEG of {width}x{height} pixels decodes to {full} bytes, over the {MAX_DECODED}-byte limit"
            )));
        }
        let (w, h) = covering_scale(width, height, min_width, min_height);
        let pitch = w as usize * pixels.channels();
        out.resize(pitch * h as usize, 0);
        let handle = self.handle()?;
        let format = match pixels {
            JpegPixels::Rgb => TJPF_RGB,
            JpegPixels::Grey => TJPF_GRAY,
        };
        // SAFETY: `out` holds `pitch * h` bytes, the size TurboJPEG writes for a `w` x `h`
        // image at this pitch; w, h and pitch fit in c_int (side <= MAX_SIDE, checked above).
        let r = unsafe {
            tjDecompress2(
                handle,
                jpeg.as_ptr(),
                jpeg.len() as c_ulong,
                out.as_mut_ptr(),
                w as c_int,
                pitch as c_int,
                h as c_int,
                format,
                TJFLAG_LIMITSCANS,
            )
        };
        if r != 0 {
            let message = error_message(handle);
            // SAFETY: a valid handle.
            let warning = unsafe { tjGetErrorCode(handle) } == TJERR_WARNING;
            if !(warning && message.contains("extraneous bytes before marker")) {
                self.reset();
                return Err(PreprocessError::Decode(format!("libjpeg-turbo: {message}")));
            }
        }
        Ok((w, h))
    }
}

/// The size of the smallest power-of-two reduction (1/8 at most) of `width` x `height` that is
/// still at least `min_width` x `min_height`, as libjpeg-turbo rounds it (up).
///
/// Only 1/2, 1/4 and 1/8 are used: libjpeg-turbo's other scales (3/8, 5/8, ...) run its
/// generic, slower inverse DCTs and cost more than a full decode.
pub fn covering_scale(width: u32, height: u32, min_width: u32, min_height: u32) -> (u32, u32) {
    let scaled = |v: u32, d: u32| v.div_ceil(d);
    let mut d = 1;
    while d < 8 && scaled(width, d * 2) >= min_width && scaled(height, d * 2) >= min_height {
        d *= 2;
    }
    (scaled(width, d), scaled(height, d))
}

fn error_message(handle: *mut c_void) -> String {
    // SAFETY: returns a NUL-terminated string that lives until the next call on this handle.
    let s = unsafe { tjGetErrorStr2(handle) };
    if s.is_null() {
        return "unknown libjpeg-turbo error".into();
    }
    // SAFETY: non-null, NUL-terminated (above); copied out at once.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_is_the_smallest_that_still_covers_the_model() {
        assert_eq!(covering_scale(1280, 720, 160, 160), (320, 180)); // 1/4
        assert_eq!(covering_scale(640, 480, 160, 160), (320, 240)); // 1/2: 1/4 is 160x120
        assert_eq!(covering_scale(640, 480, 224, 224), (320, 240));
        assert_eq!(covering_scale(1920, 1080, 128, 128), (240, 135)); // 1/8
        assert_eq!(covering_scale(300, 300, 128, 128), (150, 150));
        assert_eq!(covering_scale(255, 255, 128, 128), (128, 128)); // 1/2, rounded up, covers exactly
        assert_eq!(covering_scale(254, 255, 128, 128), (254, 255)); // 1/2 would be 127 wide
        assert_eq!(covering_scale(100, 80, 160, 160), (100, 80)); // smaller than the model: full size
        assert_eq!(covering_scale(4000, 3000, 16, 16), (500, 375)); // never below 1/8
    }

    /// A small real JPEG (the elpv-solar sample cell0004, grey, 128x128, quality 92).
    fn good_jpeg() -> Vec<u8> {
        let png = concat!(env!("CARGO_MANIFEST_DIR"), "/models/elpv-solar/samples/cell0004.128.png");
        let img = image::open(png).unwrap().to_luma8();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92).encode_image(&img).unwrap();
        out
    }

    #[test]
    fn a_corrupt_frame_does_not_spoil_the_next_ones() {
        let good = good_jpeg();
        let mut zero_height = good.clone();
        let sof = zero_height.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        (zero_height[sof + 5], zero_height[sof + 6]) = (0, 0);
        let mut cut = good[..good.len() / 2].to_vec();
        cut.extend_from_slice(&[0xFF, 0xD9]);
        let mut d = JpegDecoder::new();
        let mut out = Vec::new();
        for bad in [&zero_height, &cut] {
            let failed = d.header(bad).and_then(|h| d.decode_covering(bad, h, (64, 64), JpegPixels::Grey, &mut out));
            assert!(failed.is_err(), "{failed:?}");
            let h = d.header(&good).expect("a good header after a bad frame");
            assert_eq!(d.decode_covering(&good, h, (64, 64), JpegPixels::Grey, &mut out).unwrap(), (64, 64));
            assert_eq!(out.len(), 64 * 64);
        }
    }

    #[test]
    fn not_a_jpeg_is_an_error_not_a_panic() {
        let mut d = JpegDecoder::new();
        assert!(matches!(d.header(b"not a jpeg at all"), Err(PreprocessError::Decode(_))));
        assert!(matches!(d.header(&[]), Err(PreprocessError::Decode(_))));
        let cut = d.header(&[0xFF, 0xD8, 0xFF]);
        assert!(cut.is_err(), "{cut:?}");
    }
}
