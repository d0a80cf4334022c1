//! The preprocess stage: decode, convert to the model's channels, resize and
//! normalise a [`Frame`] into the model's input tensor.
//!
//! A [`Preprocessor`] owns every intermediate buffer and reuses it: once it
//! has seen a frame of the largest size, it allocates nothing more of its own
//! (the JPEG/PNG decoders keep small internal scratch of their own per call).

use std::io::Cursor;
use std::time::{Duration, Instant};

use fast_image_resize as fr;
use image::{ImageDecoder, ImageReader, Limits};

use crate::bundle::{Channels, InputSpec, Layout};
use crate::convert::YuvConverter;
use crate::frame::{Frame, PixelFormat, YuvColour};

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
    /// Per channel: value for each of the 256 pixel levels.
    lut: Vec<[f32; 256]>,
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
            lut,
        }
    }

    /// Fill `out` (the model's input tensor, `spec.len()` elements) from `frame`.
    pub fn run(&mut self, frame: &Frame, out: &mut [f32]) -> Result<PreprocessTimes, PreprocessError> {
        assert_eq!(out.len(), self.spec.len(), "output tensor size");
        let t0 = Instant::now();
        let pixels = match frame.format {
            PixelFormat::Encoded => self.decode(&frame.data)?,
            raw => {
                let expected = raw.frame_len(frame.width, frame.height).expect("raw formats have a size");
                if frame.data.len() != expected || frame.width == 0 || frame.height == 0 {
                    return Err(PreprocessError::WrongSize {
                        got: frame.data.len(),
                        expected,
                        width: frame.width,
                        height: frame.height,
                    });
                }
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

    /// YUV straight to the model's channels (RGB, or grey from Y alone) in `decoded`.
    fn convert_yuv(&mut self, frame: &Frame) {
        if self.yuv.colour() != frame.colour {
            self.yuv = YuvConverter::new(frame.colour);
        }
        match self.spec.channels {
            Channels::Rgb => self.yuv.to_rgb(frame.format, frame.width, frame.height, &frame.data, &mut self.decoded),
            Channels::Grey => self.yuv.to_grey(frame.format, frame.width, frame.height, &frame.data, &mut self.decoded),
        }
    }

    fn decode(&mut self, data: &[u8]) -> Result<Pixels, PreprocessError> {
        let decode_err = |e: image::ImageError| PreprocessError::Decode(e.to_string());
        let mut reader = ImageReader::new(Cursor::new(data))
            .with_guessed_format()
            .map_err(|e| PreprocessError::Decode(e.to_string()))?;
        if reader.format().is_none() {
            return Err(PreprocessError::Decode("not a JPEG or PNG image".into()));
        }
        // The JPEG decoder fills a truncated image with grey and calls it good: a frame cut
        // short would be scored as a real one. A whole JPEG ends with its EOI marker (some
        // writers pad after it with zeros).
        if reader.format() == Some(image::ImageFormat::Jpeg) {
            let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if end < 2 || data[end - 2..end] != [0xFF, 0xD9] {
                return Err(PreprocessError::Decode("truncated JPEG (no end-of-image marker)".into()));
            }
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

/// Resize interleaved 8-bit pixels (1 or 3 channels); a plain copy when the sizes match.
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
    let pixel_type = if channels == 3 { fr::PixelType::U8x3 } else { fr::PixelType::U8 };
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
