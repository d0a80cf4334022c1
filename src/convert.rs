//! Pixel conversions from camera formats (YUYV, NV12, I420) to the 8-bit RGB or
//! grey the resizer and the model take.
//!
//! The reference is the textbook Y'CbCr → R'G'B' formula evaluated in `f64`
//! and rounded to the nearest level ([`reference_rgb`]): for BT.601 limited
//! range, `R = 255/219·(Y−16) + 255/224·1.402·(V−128)` and so on. The fast path
//! adds per-level tables in 16.16 fixed point (the precision swscale and libyuv
//! use); tests check it against the reference on all 2^24 (Y, U, V) inputs (R and
//! B equal everywhere, G off by one level on at most 256 inputs that sit within
//! 2^-15 of a rounding tie) and against ffmpeg's own conversion of real frames.
//! 4:2:0 and 4:2:2 chroma is replicated to the pixels it covers (nearest), as
//! ffmpeg does with `-sws_flags neighbor+full_chroma_int`.
//!
//! Nothing here allocates once the output buffer has grown to the frame size.

use crate::frame::{Matrix, PixelFormat, Range, YuvColour};

const SHIFT: u32 = 16;
const HALF: i32 = 1 << (SHIFT - 1);

/// (Kr, Kb) of a matrix.
fn weights(matrix: Matrix) -> (f64, f64) {
    match matrix {
        Matrix::Bt601 => (0.299, 0.114),
        Matrix::Bt709 => (0.2126, 0.0722),
    }
}

/// Scale of Y and of Cb/Cr, and the Y offset, of a range.
fn scales(range: Range) -> (f64, f64, f64) {
    match range {
        Range::Limited => (255.0 / 219.0, 255.0 / 224.0, 16.0),
        Range::Full => (1.0, 1.0, 0.0),
    }
}

/// The reference conversion of one sample triple, in `f64`, rounded and clamped.
pub fn reference_rgb(colour: YuvColour, y: u8, u: u8, v: u8) -> [u8; 3] {
    let (kr, kb) = weights(colour.matrix);
    let kg = 1.0 - kr - kb;
    let (sy, sc, yo) = scales(colour.range);
    let (y, u, v) = (sy * (f64::from(y) - yo), sc * (f64::from(u) - 128.0), sc * (f64::from(v) - 128.0));
    let r = y + 2.0 * (1.0 - kr) * v;
    let b = y + 2.0 * (1.0 - kb) * u;
    let g = y - 2.0 * (1.0 - kb) * kb / kg * u - 2.0 * (1.0 - kr) * kr / kg * v;
    [r, g, b].map(|x| (x + 0.5).floor().clamp(0.0, 255.0) as u8)
}

/// Converts YUV frames of one colour description; tables built once.
#[derive(Clone)]
pub struct YuvConverter {
    colour: YuvColour,
    y: [i32; 256],
    rv: [i32; 256],
    gu: [i32; 256],
    gv: [i32; 256],
    bu: [i32; 256],
    /// Full-range luma of each Y level (for grey models).
    grey: [u8; 256],
}

impl YuvConverter {
    /// Tables for `colour`.
    pub fn new(colour: YuvColour) -> YuvConverter {
        let (kr, kb) = weights(colour.matrix);
        let kg = 1.0 - kr - kb;
        let (sy, sc, yo) = scales(colour.range);
        let fixed = |k: f64, offset: f64| -> [i32; 256] {
            std::array::from_fn(|i| (k * (i as f64 - offset) * f64::from(1u32 << SHIFT)).round() as i32)
        };
        YuvConverter {
            colour,
            y: fixed(sy, yo),
            rv: fixed(sc * 2.0 * (1.0 - kr), 128.0),
            gu: fixed(-sc * 2.0 * (1.0 - kb) * kb / kg, 128.0),
            gv: fixed(-sc * 2.0 * (1.0 - kr) * kr / kg, 128.0),
            bu: fixed(sc * 2.0 * (1.0 - kb), 128.0),
            grey: std::array::from_fn(|i| (sy * (i as f64 - yo) + 0.5).floor().clamp(0.0, 255.0) as u8),
        }
    }

    /// The colour description these tables are for.
    pub fn colour(&self) -> YuvColour {
        self.colour
    }

    /// One pixel, fixed point.
    #[inline(always)]
    pub fn rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let y = self.y[usize::from(y)] + HALF;
        let (u, v) = (usize::from(u), usize::from(v));
        let clamp = |x: i32| (x >> SHIFT).clamp(0, 255) as u8;
        [clamp(y + self.rv[v]), clamp(y + self.gu[u] + self.gv[v]), clamp(y + self.bu[u])]
    }

    /// Full-range grey of a Y sample.
    #[inline(always)]
    pub fn grey(&self, y: u8) -> u8 {
        self.grey[usize::from(y)]
    }

    /// Convert a whole frame to packed RGB in `dst` (resized to `width * height * 3`).
    /// `src` must hold at least `format.frame_len(width, height)` bytes.
    pub fn to_rgb(&self, format: PixelFormat, width: u32, height: u32, src: &[u8], dst: &mut Vec<u8>) {
        let (w, h) = (width as usize, height as usize);
        dst.resize(w * h * 3, 0);
        match format {
            PixelFormat::Yuyv => {
                let row_bytes = w.div_ceil(2) * 4;
                for (row, out) in src.chunks_exact(row_bytes).zip(dst.chunks_exact_mut(w * 3)).take(h) {
                    for (x, px) in out.chunks_exact_mut(3).enumerate() {
                        let pair = &row[(x / 2) * 4..(x / 2) * 4 + 4];
                        px.copy_from_slice(&self.rgb(pair[(x & 1) * 2], pair[1], pair[3]));
                    }
                }
            }
            PixelFormat::Nv12 | PixelFormat::I420 => {
                let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
                let (luma, chroma) = src.split_at(w * h);
                for (row, (yrow, out)) in luma.chunks_exact(w).zip(dst.chunks_exact_mut(w * 3)).enumerate() {
                    let crow = row / 2;
                    if format == PixelFormat::Nv12 {
                        let uv = &chroma[crow * cw * 2..(crow + 1) * cw * 2];
                        for (x, (px, &y)) in out.chunks_exact_mut(3).zip(yrow).enumerate() {
                            px.copy_from_slice(&self.rgb(y, uv[(x / 2) * 2], uv[(x / 2) * 2 + 1]));
                        }
                    } else {
                        let u = &chroma[crow * cw..(crow + 1) * cw];
                        let v = &chroma[cw * ch + crow * cw..cw * ch + (crow + 1) * cw];
                        for (x, (px, &y)) in out.chunks_exact_mut(3).zip(yrow).enumerate() {
                            px.copy_from_slice(&self.rgb(y, u[x / 2], v[x / 2]));
                        }
                    }
                }
            }
            other => unreachable!("{other:?} is not a YUV format"),
        }
    }

    /// Convert a whole frame to full-range grey in `dst` (resized to `width * height`):
    /// the Y samples, range-expanded; chroma is not needed.
    pub fn to_grey(&self, format: PixelFormat, width: u32, height: u32, src: &[u8], dst: &mut Vec<u8>) {
        let (w, h) = (width as usize, height as usize);
        dst.resize(w * h, 0);
        match format {
            PixelFormat::Yuyv => {
                let row_bytes = w.div_ceil(2) * 4;
                for (row, out) in src.chunks_exact(row_bytes).zip(dst.chunks_exact_mut(w)).take(h) {
                    for (o, y) in out.iter_mut().zip(row.iter().step_by(2)) {
                        *o = self.grey(*y);
                    }
                }
            }
            PixelFormat::Nv12 | PixelFormat::I420 => {
                for (o, y) in dst.iter_mut().zip(&src[..w * h]) {
                    *o = self.grey(*y);
                }
            }
            other => unreachable!("{other:?} is not a YUV format"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (Y, U, V) against the f64 reference: R and B exact, G within one level at
    /// near-ties only.
    #[test]
    fn fixed_point_matches_the_reference_on_every_input() {
        for matrix in [Matrix::Bt601, Matrix::Bt709] {
            for range in [Range::Limited, Range::Full] {
                let colour = YuvColour { matrix, range };
                let c = YuvConverter::new(colour);
                let mut off_by_one = 0;
                for y in 0..=255u8 {
                    for u in 0..=255u8 {
                        for v in 0..=255u8 {
                            let (got, want) = (c.rgb(y, u, v), reference_rgb(colour, y, u, v));
                            if got != want {
                                assert_eq!(got[0], want[0], "R {colour:?} {y} {u} {v}");
                                assert_eq!(got[2], want[2], "B {colour:?} {y} {u} {v}");
                                assert_eq!(got[1].abs_diff(want[1]), 1, "G {colour:?} {y} {u} {v}");
                                off_by_one += 1;
                            }
                        }
                    }
                }
                assert!(off_by_one <= 256, "{colour:?}: {off_by_one} of 16.7M inputs off by one");
            }
        }
    }

    #[test]
    fn limited_range_black_and_white_map_to_0_and_255() {
        let c = YuvConverter::new(YuvColour::default());
        assert_eq!(c.rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(c.rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!((c.grey(16), c.grey(235), c.grey(0), c.grey(255)), (0, 255, 0, 255));
    }

    #[test]
    fn layouts_pick_the_right_chroma_for_each_pixel() {
        // 4x2 frame; each 2x2 block has its own chroma so a wrong index shows.
        let c = YuvConverter::new(YuvColour { matrix: Matrix::Bt601, range: Range::Full });
        let y = [10u8, 20, 30, 40, 50, 60, 70, 80];
        let (u, v) = ([100u8, 200], [60u8, 160]);
        let want: Vec<u8> = (0..8).flat_map(|i| c.rgb(y[i], u[(i % 4) / 2], v[(i % 4) / 2])).collect();
        let mut i420 = y.to_vec();
        i420.extend_from_slice(&u);
        i420.extend_from_slice(&v);
        let mut nv12 = y.to_vec();
        nv12.extend_from_slice(&[u[0], v[0], u[1], v[1]]);
        let mut yuyv = Vec::new();
        for row in 0..2 {
            for pair in 0..2 {
                yuyv.extend_from_slice(&[y[row * 4 + pair * 2], u[pair], y[row * 4 + pair * 2 + 1], v[pair]]);
            }
        }
        for (format, src) in [(PixelFormat::I420, i420), (PixelFormat::Nv12, nv12), (PixelFormat::Yuyv, yuyv)] {
            assert_eq!(src.len(), format.frame_len(4, 2).unwrap());
            let mut out = Vec::new();
            c.to_rgb(format, 4, 2, &src, &mut out);
            assert_eq!(out, want, "{format:?}");
            c.to_grey(format, 4, 2, &src, &mut out);
            assert_eq!(out, y, "{format:?} grey");
        }
    }
}
