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
        let c = self.chroma(u, v);
        self.pixel(y, c)
    }

    /// The chroma terms of one (U, V) pair: added to R, G and B of every pixel it covers.
    #[inline(always)]
    fn chroma(&self, u: u8, v: u8) -> [i32; 3] {
        let (u, v) = (usize::from(u), usize::from(v));
        [self.rv[v], self.gu[u] + self.gv[v], self.bu[u]]
    }

    #[inline(always)]
    fn pixel(&self, y: u8, [r, g, b]: [i32; 3]) -> [u8; 3] {
        let y = self.y[usize::from(y)] + HALF;
        let clamp = |x: i32| (x >> SHIFT).clamp(0, 255) as u8;
        [clamp(y + r), clamp(y + g), clamp(y + b)]
    }

    /// One row: pixels in pairs sharing a chroma sample (`chroma` yields one per pair),
    /// then a lone last pixel when the width is odd.
    #[inline(always)]
    fn row(&self, luma: &[u8], mut chroma: impl Iterator<Item = (u8, u8)>, out: &mut [u8]) {
        let mut pairs_out = out.chunks_exact_mut(6);
        let mut pairs_in = luma.chunks_exact(2);
        for ((o, y), (u, v)) in (&mut pairs_out).zip(&mut pairs_in).zip(&mut chroma) {
            let c = self.chroma(u, v);
            o[..3].copy_from_slice(&self.pixel(y[0], c));
            o[3..].copy_from_slice(&self.pixel(y[1], c));
        }
        if let (Some(&y), Some((u, v))) = (pairs_in.remainder().first(), chroma.next()) {
            let o = pairs_out.into_remainder();
            o.copy_from_slice(&self.rgb(y, u, v));
        }
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
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        match format {
            PixelFormat::Yuyv => {
                // Y0 U Y1 V groups: two pixels sharing one chroma pair.
                for (packed, out) in src.chunks_exact(cw * 4).zip(dst.chunks_exact_mut(w * 3)).take(h) {
                    let mut pairs_out = out.chunks_exact_mut(6);
                    for (o, g) in (&mut pairs_out).zip(packed.chunks_exact(4)) {
                        let c = self.chroma(g[1], g[3]);
                        o[..3].copy_from_slice(&self.pixel(g[0], c));
                        o[3..].copy_from_slice(&self.pixel(g[2], c));
                    }
                    if w % 2 == 1 {
                        let g = &packed[(cw - 1) * 4..];
                        pairs_out.into_remainder().copy_from_slice(&self.rgb(g[0], g[1], g[3]));
                    }
                }
            }
            PixelFormat::Nv12 => {
                let (luma, uv) = src.split_at(w * h);
                for (row, (y, out)) in luma.chunks_exact(w).zip(dst.chunks_exact_mut(w * 3)).enumerate() {
                    let uv = &uv[(row / 2) * cw * 2..(row / 2 + 1) * cw * 2];
                    self.row(y, uv.chunks_exact(2).map(|c| (c[0], c[1])), out);
                }
            }
            PixelFormat::I420 => {
                let (luma, chroma) = src.split_at(w * h);
                let (u_plane, v_plane) = chroma.split_at(cw * ch);
                for (row, (y, out)) in luma.chunks_exact(w).zip(dst.chunks_exact_mut(w * 3)).enumerate() {
                    let u = &u_plane[(row / 2) * cw..(row / 2 + 1) * cw];
                    let v = &v_plane[(row / 2) * cw..(row / 2 + 1) * cw];
                    self.row(y, u.iter().copied().zip(v.iter().copied()), out);
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

    /// Odd sizes: the last column and row have chroma of their own (rounded-up planes).
    #[test]
    fn odd_sizes_convert_every_pixel_with_its_chroma() {
        let c = YuvConverter::new(YuvColour::default());
        let (w, h) = (5usize, 3usize);
        let (cw, ch) = (3, 2);
        let y: Vec<u8> = (0..w * h).map(|i| (20 + i * 13) as u8).collect();
        let u: Vec<u8> = (0..cw * ch).map(|i| (60 + i * 29) as u8).collect();
        let v: Vec<u8> = (0..cw * ch).map(|i| (200 - i * 23) as u8).collect();
        let want: Vec<u8> = (0..w * h)
            .flat_map(|i| c.rgb(y[i], u[(i / w / 2) * cw + (i % w) / 2], v[(i / w / 2) * cw + (i % w) / 2]))
            .collect();
        let mut i420 = y.clone();
        i420.extend_from_slice(&u);
        i420.extend_from_slice(&v);
        let mut nv12 = y.clone();
        nv12.extend(u.iter().zip(&v).flat_map(|(a, b)| [*a, *b]));
        let mut out = Vec::new();
        for (format, src) in [(PixelFormat::I420, i420), (PixelFormat::Nv12, nv12)] {
            assert_eq!(src.len(), format.frame_len(5, 3).unwrap());
            c.to_rgb(format, 5, 3, &src, &mut out);
            assert_eq!(out, want, "{format:?}");
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
