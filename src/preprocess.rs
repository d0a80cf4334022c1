//! The preprocess stage: decode, convert to the model's channels, resize and
//! normalise a [`Frame`] into the model's input tensor.
//!
//! A [`Preprocessor`] owns every intermediate buffer and reuses it: once it
//! has seen a frame of the largest size, it allocates nothing more of its own
//! (libjpeg-turbo allocates and frees its per-image work buffers with C's malloc on
//! each frame; the PNG decoder keeps small scratch of its own per call).

use std::io::Cursor;
use std::time::{Duration, Instant};

use fast_image_resize as fr;
use image::{ImageDecoder, ImageReader, Limits};

use crate::bundle::{Channels, InputSpec, Layout};
use crate::convert::YuvConverter;
use crate::frame::{Frame, PixelFormat, YuvColour};
use crate::jpeg::{JpegDecoder, JpegPixels};

/// Largest frame side vigil decodes; bigger headers are refused before any allocation.
pub const MAX_SIDE: u32 = 8192;
/// Most bytes an image may decode to: 64 MiB holds a 4K RGBA or 16-bit RGB frame.
pub const MAX_DECODED: usize = 64 << 20;

/// Why a frame could not be turned into a tensor. The frame is dropped and counted.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The encoded image is truncated, corrupt or not an image.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// A raw frame's byte count does not match its declared size.
    #[error("raw frame is {got} bytes, expected {expected} for {width}x{height}")]
    WrongSize {
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        expected: usize,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// A pixel layout vigil does not convert.
    #[error("unsupported pixel layout: {0}")]
    Unsupported(String),
}

/// Time spent in each part of preprocessing one frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct PreprocessTimes {
    /// Decoding JPEG/PNG, or converting YUV (zero for RGB and grey frames).
    pub decode: Duration,
    /// Channel conversion, resize and normalisation.
    pub prepare: Duration,
}

/// Decoded pixels as the decoder laid them out.
#[derive(Debug, Clone, Copy)]
struct Pixels {
    width: u32,
    height: u32,
    channels: usize,
    bytes_per_sample: usize,
}

/// Turns frames into input tensors for one model; one per worker.
pub struct Preprocessor {
    spec: InputSpec,
    decoded: Vec<u8>,
    converted: Vec<u8>,
    resized: Vec<u8>,
    resizer: fr::Resizer,
    resize_options: fr::ResizeOptions,
    /// Tables for the last YUV colour description seen.
    yuv: YuvConverter,
    /// YUV frames larger than the model: the source planes a packed frame is split into
    /// (luma; interleaved chroma), and the planes at the model's size (luma; chroma as
    /// U V pairs, or U then V for I420), converted after resizing.
    planes: YuvPlanes,
    /// Per channel: value for each of the 256 pixel levels.
    lut: Vec<[f32; 256]>,
    /// libjpeg-turbo's decompressor, kept from frame to frame.
    jpeg: JpegDecoder,
}

impl Preprocessor {
    /// A preprocessor for the model input `spec`.
    pub fn new(spec: &InputSpec) -> Preprocessor {
        let channels = spec.channels.count();
        let lut = (0..channels)
            .map(|c| {
                let (mean, std) = (spec.mean_of(c), spec.std_of(c));
                std::array::from_fn(|v| (v as f32 * spec.scale - mean) / std)
            })
            .collect();
        Preprocessor {
            spec: spec.clone(),
            decoded: Vec::new(),
            converted: Vec::new(),
            resized: vec![0; spec.width as usize * spec.height as usize * channels],
            resizer: fr::Resizer::new(),
            // Bilinear with the support widened when shrinking, as Pillow's BILINEAR (what the
            // bundles' Python tooling uses): results within 1-2 levels of Pillow's.
            resize_options: fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear)),
            yuv: YuvConverter::new(YuvColour::default()),
            planes: YuvPlanes::default(),
            lut,
            jpeg: JpegDecoder::new(),
        }
    }

    /// Fill `out` (the model's input tensor, `spec.len()` elements) from `frame`.
    pub fn run(&mut self, frame: &Frame, out: &mut [f32]) -> Result<PreprocessTimes, PreprocessError> {
        assert_eq!(out.len(), self.spec.len(), "output tensor size");
        let t0 = Instant::now();
        if frame.format.is_yuv() && self.larger_than_model(frame) {
            check_raw_size(frame)?;
            self.yuv_at_model_size(frame)?;
            self.normalise(out);
            // Converting and resizing are one step here: all of it counts as preparing.
            return Ok(PreprocessTimes { decode: Duration::ZERO, prepare: t0.elapsed() });
        }
        let pixels = match frame.format {
            PixelFormat::Encoded => self.decode(&frame.data)?,
            raw => {
                check_raw_size(frame)?;
                if raw.is_yuv() {
                    self.convert_yuv(frame);
                }
                let channels = match raw {
                    PixelFormat::Rgb24 => 3,
                    PixelFormat::Grey => 1,
                    _ => self.spec.channels.count(),
                };
                Pixels { width: frame.width, height: frame.height, channels, bytes_per_sample: 1 }
            }
        };
        let t1 = Instant::now();
        // Decoded and YUV-converted pixels are in `decoded`; RGB and grey frames are used as they are.
        let source: &[u8] = match frame.format {
            PixelFormat::Rgb24 | PixelFormat::Grey => &frame.data,
            _ => &self.decoded,
        };
        let wanted = self.spec.channels.count();
        let model_ready = pixels.channels == wanted && pixels.bytes_per_sample == 1;
        if !model_ready {
            convert_channels(source, pixels, self.spec.channels, &mut self.converted)?;
        }
        let ready: &[u8] = if model_ready { source } else { &self.converted };
        let (w, h) = (self.spec.width, self.spec.height);
        resize(
            &mut self.resizer,
            &self.resize_options,
            (ready, pixels.width, pixels.height),
            (&mut self.resized, w, h),
            wanted,
        )?;
        self.normalise(out);
        Ok(PreprocessTimes { decode: t1 - t0, prepare: t1.elapsed() })
    }

    /// The model-size pixels of the last frame (RGB or grey), for debugging and tests.
    pub fn resized_pixels(&self) -> &[u8] {
        &self.resized
    }

    /// Whether `frame` is larger than the model's input both ways (so it will be shrunk).
    fn larger_than_model(&self, frame: &Frame) -> bool {
        frame.width > self.spec.width && frame.height > self.spec.height
    }

    fn use_colour(&mut self, colour: YuvColour) {
        if self.yuv.colour() != colour {
            self.yuv = YuvConverter::new(colour);
        }
    }

    /// A YUV frame larger than the model: resize its planes to the model's size first, then
    /// convert only the model's pixels (a 1280x720 frame into 160x160 converts 36x fewer).
    /// Conversion is affine in Y, U and V, so this differs from converting first only by
    /// rounding and by clamping out-of-gamut samples after averaging rather than before:
    /// within 2 levels on real camera frames (`tests/integration/camera.rs`). Chroma planes
    /// are resized from the extent they cover, so their samples land where the
    /// nearest-replication reference puts them.
    fn yuv_at_model_size(&mut self, frame: &Frame) -> Result<(), PreprocessError> {
        self.use_colour(frame.colour);
        let (w, h) = (frame.width, frame.height);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let (mw, mh) = (self.spec.width, self.spec.height);
        let n = mw as usize * mh as usize;
        let p = &mut self.planes;
        let luma_len = w as usize * h as usize;
        // The luma plane and the chroma plane(s) as the frame has them (YUYV is split first).
        let (luma, chroma_rows): (&[u8], u32) = match frame.format {
            PixelFormat::Yuyv => {
                split_yuyv(&frame.data, w as usize, h as usize, &mut p.luma, &mut p.chroma);
                (&p.luma, h)
            }
            _ => (&frame.data[..luma_len], ch),
        };
        let chroma_extent = (f64::from(w) / 2.0, f64::from(h) / if chroma_rows == h { 1.0 } else { 2.0 });
        p.small_luma.resize(n, 0);
        resize(&mut self.resizer, &self.resize_options, (luma, w, h), (&mut p.small_luma, mw, mh), 1)?;
        if self.spec.channels == Channels::Grey {
            for (d, &y) in self.resized.iter_mut().zip(&p.small_luma) {
                *d = self.yuv.grey(y);
            }
            return Ok(());
        }
        // U8x2 is U V here, not luma + alpha: nothing to premultiply.
        let options = self.resize_options.clone().use_alpha(false).crop(0.0, 0.0, chroma_extent.0, chroma_extent.1);
        match frame.format {
            PixelFormat::I420 => {
                let (u, v) = frame.data[luma_len..].split_at(cw as usize * ch as usize);
                p.small_chroma.resize(2 * n, 0);
                let (su, sv) = p.small_chroma.split_at_mut(n);
                resize(&mut self.resizer, &options, (u, cw, ch), (su, mw, mh), 1)?;
                resize(&mut self.resizer, &options, (&v[..cw as usize * ch as usize], cw, ch), (sv, mw, mh), 1)?;
                let (su, sv) = p.small_chroma.split_at(n);
                let chroma = su.iter().copied().zip(sv.iter().copied());
                yuv_to_rgb(&self.yuv, &p.small_luma, chroma, &mut self.resized);
            }
            format => {
                let uv: &[u8] = if format == PixelFormat::Yuyv { &p.chroma } else { &frame.data[luma_len..] };
                p.small_chroma.resize(2 * n, 0);
                resize(&mut self.resizer, &options, (uv, cw, chroma_rows), (&mut p.small_chroma, mw, mh), 2)?;
                let chroma = p.small_chroma.chunks_exact(2).map(|c| (c[0], c[1]));
                yuv_to_rgb(&self.yuv, &p.small_luma, chroma, &mut self.resized);
            }
        }
        Ok(())
    }

    /// YUV straight to the model's channels (RGB, or grey from Y alone) in `decoded`.
    fn convert_yuv(&mut self, frame: &Frame) {
        self.use_colour(frame.colour);
        match self.spec.channels {
            Channels::Rgb => self.yuv.to_rgb(frame.format, frame.width, frame.height, &frame.data, &mut self.decoded),
            Channels::Grey => self.yuv.to_grey(frame.format, frame.width, frame.height, &frame.data, &mut self.decoded),
        }
    }

    /// Decode a JPEG or PNG into `decoded`. JPEGs go through libjpeg-turbo at the smallest
    /// DCT scale that still covers the model ([`crate::jpeg`]); PNGs, and the CMYK JPEGs
    /// libjpeg-turbo cannot turn into RGB, through the `image` crate at full size.
    fn decode(&mut self, data: &[u8]) -> Result<Pixels, PreprocessError> {
        if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
            check_jpeg_end(data)?;
            let header = self.jpeg.header(data)?;
            if !header.cmyk {
                let pixels = match self.spec.channels {
                    Channels::Rgb => JpegPixels::Rgb,
                    Channels::Grey => JpegPixels::Grey,
                };
                let model = (self.spec.width, self.spec.height);
                let (width, height) = self.jpeg.decode_covering(data, header, model, pixels, &mut self.decoded)?;
                return Ok(Pixels { width, height, channels: pixels.channels(), bytes_per_sample: 1 });
            }
        }
        let decode_err = |e: image::ImageError| PreprocessError::Decode(e.to_string());
        let mut reader = ImageReader::new(Cursor::new(data))
            .with_guessed_format()
            .map_err(|e| PreprocessError::Decode(e.to_string()))?;
        if reader.format().is_none() {
            return Err(PreprocessError::Decode("not a JPEG or PNG image".into()));
        }
        let mut limits = Limits::default();
        limits.max_image_width = Some(MAX_SIDE);
        limits.max_image_height = Some(MAX_SIDE);
        reader.limits(limits);
        let decoder = reader.into_decoder().map_err(decode_err)?;
        let (width, height) = decoder.dimensions();
        let color = decoder.color_type();
        let bytes_per_sample = usize::from(color.bytes_per_pixel() / color.channel_count());
        if bytes_per_sample > 2 || width == 0 || height == 0 {
            return Err(PreprocessError::Unsupported(format!("{color:?} {width}x{height}")));
        }
        // Checked before allocating: a 74-byte PNG can claim 8192x8192 16-bit RGBA (512 MiB),
        // and the decode buffer, reused from frame to frame, would keep that size for good.
        let total = usize::try_from(decoder.total_bytes()).unwrap_or(usize::MAX);
        if total > MAX_DECODED {
            return Err(PreprocessError::Unsupported(format!(
                "{color:?} {width}x{height} decodes to {total} bytes, over the {MAX_DECODED}-byte limit"
            )));
        }
        self.decoded.resize(total, 0);
        decoder.read_image(&mut self.decoded).map_err(decode_err)?;
        Ok(Pixels { width, height, channels: usize::from(color.channel_count()), bytes_per_sample })
    }

    fn normalise(&self, out: &mut [f32]) {
        let channels = self.lut.len();
        let plane = self.spec.width as usize * self.spec.height as usize;
        match self.spec.layout {
            Layout::Nchw => {
                for (c, lut) in self.lut.iter().enumerate() {
                    let dst = &mut out[c * plane..(c + 1) * plane];
                    for (d, px) in dst.iter_mut().zip(self.resized.chunks_exact(channels)) {
                        *d = lut[usize::from(px[c])];
                    }
                }
            }
            Layout::Nhwc => {
                // Interleaved, like the resized pixels: element i is channel i % channels.
                for (i, (d, &v)) in out.iter_mut().zip(&self.resized).enumerate() {
                    *d = self.lut[i % channels][usize::from(v)];
                }
            }
        }
    }
}

/// The planes of a YUV frame resized before conversion ([`Preprocessor`]); grown once.
#[derive(Default)]
struct YuvPlanes {
    /// A YUYV frame's Y samples, `width * height`.
    luma: Vec<u8>,
    /// A YUYV frame's U V pairs, `ceil(width / 2) * height` pairs.
    chroma: Vec<u8>,
    /// Y at the model's size.
    small_luma: Vec<u8>,
    /// Chroma at the model's size: U V pairs, or (I420) the U plane then the V plane.
    small_chroma: Vec<u8>,
}

/// A JPEG cut short must not be scored as a whole one (decoders fill the missing part with
/// grey): a whole JPEG ends with its end-of-image marker (some writers pad after it with zeros).
fn check_jpeg_end(data: &[u8]) -> Result<(), PreprocessError> {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end < 2 || data[end - 2..end] != [0xFF, 0xD9] {
        return Err(PreprocessError::Decode("truncated JPEG (no end-of-image marker)".into()));
    }
    Ok(())
}

/// A raw frame's byte count must match its declared size.
fn check_raw_size(frame: &Frame) -> Result<(), PreprocessError> {
    let expected = frame.format.frame_len(frame.width, frame.height).expect("raw formats have a size");
    if frame.data.len() != expected || frame.width == 0 || frame.height == 0 {
        return Err(PreprocessError::WrongSize {
            got: frame.data.len(),
            expected,
            width: frame.width,
            height: frame.height,
        });
    }
    Ok(())
}

/// Split packed YUYV (Y0 U Y1 V) into a luma plane and a plane of U V pairs, one per two pixels.
fn split_yuyv(src: &[u8], w: usize, h: usize, luma: &mut Vec<u8>, chroma: &mut Vec<u8>) {
    let cw = w.div_ceil(2);
    luma.resize(w * h, 0);
    chroma.resize(cw * 2 * h, 0);
    for ((packed, y), uv) in src.chunks_exact(cw * 4).zip(luma.chunks_exact_mut(w)).zip(chroma.chunks_exact_mut(cw * 2))
    {
        for ((g, y), uv) in packed.chunks_exact(4).zip(y.chunks_mut(2)).zip(uv.chunks_exact_mut(2)) {
            y[0] = g[0];
            if let Some(y1) = y.get_mut(1) {
                *y1 = g[2];
            }
            uv[0] = g[1];
            uv[1] = g[3];
        }
    }
}

/// Packed RGB from model-size planes: one luma and one (U, V) pair per pixel.
fn yuv_to_rgb(yuv: &YuvConverter, luma: &[u8], chroma: impl Iterator<Item = (u8, u8)>, out: &mut [u8]) {
    for ((o, &y), (u, v)) in out.chunks_exact_mut(3).zip(luma).zip(chroma) {
        o.copy_from_slice(&yuv.rgb(y, u, v));
    }
}

/// Resize interleaved 8-bit pixels (1, 2 or 3 channels); a plain copy when the sizes match.
///
/// `fast_image_resize` (SIMD: AVX2/SSE4.1 on x86, NEON on ARM) recomputes its filter
/// coefficients on every call, about 450 small allocations for 640x480 -> 224x224: the
/// one per-frame allocation left in preprocessing, accepted because the crate is 6-8x
/// faster than an allocation-free resampler measured here (docs/performance.md).
fn resize(
    resizer: &mut fr::Resizer,
    options: &fr::ResizeOptions,
    (src, sw, sh): (&[u8], u32, u32),
    (dst, dw, dh): (&mut [u8], u32, u32),
    channels: usize,
) -> Result<(), PreprocessError> {
    if (sw, sh) == (dw, dh) {
        let n = dst.len();
        dst.copy_from_slice(&src[..n]);
        return Ok(());
    }
    let pixel_type = match channels {
        3 => fr::PixelType::U8x3,
        2 => fr::PixelType::U8x2,
        _ => fr::PixelType::U8,
    };
    let unsupported = |e: &dyn std::fmt::Display| PreprocessError::Unsupported(e.to_string());
    let src = fr::images::ImageRef::new(sw, sh, src, pixel_type).map_err(|e| unsupported(&e))?;
    let mut dst = fr::images::Image::from_slice_u8(dw, dh, dst, pixel_type).map_err(|e| unsupported(&e))?;
    resizer.resize(&src, &mut dst, options).map_err(|e| unsupported(&e))
}

/// BT.601 luma from 8-bit R, G, B, rounded (the weights ffmpeg and libjpeg use).
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((19595 * u32::from(r) + 38470 * u32::from(g) + 7471 * u32::from(b) + 32768) >> 16) as u8
}

/// Convert decoded pixels (1–4 channels, 8 or 16 bits) to 8-bit RGB or grey.
fn convert_channels(src: &[u8], p: Pixels, to: Channels, dst: &mut Vec<u8>) -> Result<(), PreprocessError> {
    let n = p.width as usize * p.height as usize;
    let stride = p.channels * p.bytes_per_sample;
    if src.len() < n * stride {
        return Err(PreprocessError::WrongSize {
            got: src.len(),
            expected: n * stride,
            width: p.width,
            height: p.height,
        });
    }
    // The two camera cases, an RGB24 frame into a grey model and a grey frame into an RGB one,
    // get loops without per-pixel branches, which the compiler vectorises: the general loop
    // below cost 1.4 ms for a 640x480 RGB24 frame, more than converting a YUV one.
    if p.bytes_per_sample == 1 {
        match (p.channels, to) {
            (3, Channels::Grey) => {
                dst.clear();
                dst.resize(n, 0);
                for (px, d) in src[..n * 3].chunks_exact(3).zip(dst.iter_mut()) {
                    *d = luma(px[0], px[1], px[2]);
                }
                return Ok(());
            }
            (1, Channels::Rgb) => {
                dst.clear();
                dst.resize(n * 3, 0);
                for (&v, d) in src[..n].iter().zip(dst.chunks_exact_mut(3)) {
                    d.fill(v);
                }
                return Ok(());
            }
            _ => {}
        }
    }
    // 16-bit samples are native-endian; their high byte is the 8-bit value.
    let high = if cfg!(target_endian = "little") { p.bytes_per_sample - 1 } else { 0 };
    let sample = |px: &[u8], c: usize| px[c * p.bytes_per_sample + high];
    dst.clear();
    dst.reserve(n * to.count());
    for px in src.chunks_exact(stride).take(n) {
        let (r, g, b) = match p.channels {
            1 | 2 => {
                let v = sample(px, 0);
                (v, v, v)
            }
            3 | 4 => (sample(px, 0), sample(px, 1), sample(px, 2)),
            c => return Err(PreprocessError::Unsupported(format!("{c} channels"))),
        };
        match to {
            Channels::Rgb => dst.extend_from_slice(&[r, g, b]),
            Channels::Grey if p.channels <= 2 => dst.push(r),
            Channels::Grey => dst.push(luma(r, g, b)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that exercise every level, without a random-number crate.
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect()
    }

    #[test]
    fn rgb_into_grey_is_the_luma_of_each_pixel() {
        let (w, h) = (37, 5);
        let src = pattern(w * h * 3 + 7); // longer than the frame: the tail must be ignored
        let p = Pixels { width: w as u32, height: h as u32, channels: 3, bytes_per_sample: 1 };
        let mut dst = vec![9; 3];
        convert_channels(&src, p, Channels::Grey, &mut dst).unwrap();
        let expected: Vec<u8> = src[..w * h * 3].chunks_exact(3).map(|c| luma(c[0], c[1], c[2])).collect();
        assert_eq!(dst, expected);
    }

    #[test]
    fn grey_into_rgb_repeats_each_level() {
        let src = pattern(41);
        let p = Pixels { width: 41, height: 1, channels: 1, bytes_per_sample: 1 };
        let mut dst = Vec::new();
        convert_channels(&src, p, Channels::Rgb, &mut dst).unwrap();
        assert_eq!(dst.len(), 123);
        for (v, rgb) in src.iter().zip(dst.chunks_exact(3)) {
            assert_eq!(rgb, [*v, *v, *v]);
        }
    }

    #[test]
    fn a_short_buffer_is_refused() {
        let p = Pixels { width: 4, height: 4, channels: 3, bytes_per_sample: 1 };
        assert!(matches!(
            convert_channels(&[0; 47], p, Channels::Grey, &mut Vec::new()),
            Err(PreprocessError::WrongSize { got: 47, expected: 48, .. })
        ));
    }
}
