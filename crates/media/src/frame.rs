//! Raw video frames: planar I420 (what the codecs take and give) and RGBA (what the pane paints).

use crate::MediaError;

/// A picture in I420: the Y plane, then U and V at half size (rounded up), packed.
#[derive(Clone, PartialEq, Eq)]
pub struct I420 {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for I420 {
    // Never the pixels: a frame of a call is PHI.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420({}x{})", self.width, self.height)
    }
}

/// Bytes of an I420 picture of this size.
pub fn i420_len(width: u32, height: u32) -> usize {
    let (w, h) = (width as usize, height as usize);
    w * h + 2 * w.div_ceil(2) * h.div_ceil(2)
}

impl I420 {
    /// A picture from packed planes; refuses a buffer of the wrong length.
    pub fn from_packed(width: u32, height: u32, data: Vec<u8>) -> Result<Self, MediaError> {
        if width == 0 || height == 0 || data.len() != i420_len(width, height) {
            return Err(MediaError::BadFrame("I420 buffer does not match its size"));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// A flat grey picture.
    pub fn grey(width: u32, height: u32) -> Self {
        let mut data = vec![128u8; i420_len(width, height)];
        data[..(width * height) as usize].fill(16);
        Self {
            width,
            height,
            data,
        }
    }

    fn chroma(&self) -> (usize, usize) {
        (
            (self.width as usize).div_ceil(2),
            (self.height as usize).div_ceil(2),
        )
    }

    /// The luma plane.
    pub fn y(&self) -> &[u8] {
        &self.data[..(self.width * self.height) as usize]
    }

    /// Scaled to another size (area average when shrinking, nearest when growing).
    pub fn scaled(&self, width: u32, height: u32) -> Self {
        if width == self.width && height == self.height {
            return self.clone();
        }
        let mut out = Vec::with_capacity(i420_len(width, height));
        let (cw, ch) = self.chroma();
        let (ow, oh) = ((width as usize).div_ceil(2), (height as usize).div_ceil(2));
        let y_len = (self.width * self.height) as usize;
        let planes = [
            (
                &self.data[..y_len],
                self.width as usize,
                self.height as usize,
                width as usize,
                height as usize,
            ),
            (&self.data[y_len..y_len + cw * ch], cw, ch, ow, oh),
            (&self.data[y_len + cw * ch..], cw, ch, ow, oh),
        ];
        for (plane, sw, sh, dw, dh) in planes {
            for dy in 0..dh {
                let y0 = dy * sh / dh;
                let y1 = ((dy + 1) * sh / dh).max(y0 + 1).min(sh);
                for dx in 0..dw {
                    let x0 = dx * sw / dw;
                    let x1 = ((dx + 1) * sw / dw).max(x0 + 1).min(sw);
                    let mut sum = 0u32;
                    for y in y0..y1 {
                        for x in x0..x1 {
                            sum += u32::from(plane[y * sw + x]);
                        }
                    }
                    let n = ((y1 - y0) * (x1 - x0)) as u32;
                    out.push((sum / n.max(1)) as u8);
                }
            }
        }
        Self {
            width,
            height,
            data: out,
        }
    }

    /// RGBA, 4 bytes a pixel (BT.601 limited range, what VP8 carries).
    pub fn to_rgba(&self) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = self.chroma();
        let y_plane = &self.data[..w * h];
        let u_plane = &self.data[w * h..w * h + cw * ch];
        let v_plane = &self.data[w * h + cw * ch..];
        let mut out = vec![0u8; w * h * 4];
        for row in 0..h {
            for col in 0..w {
                let c = (row / 2) * cw + col / 2;
                let y = (i32::from(y_plane[row * w + col]) - 16) * 298;
                let u = i32::from(u_plane[c]) - 128;
                let v = i32::from(v_plane[c]) - 128;
                let px = &mut out[(row * w + col) * 4..(row * w + col) * 4 + 4];
                px[0] = ((y + 409 * v + 128) >> 8).clamp(0, 255) as u8;
                px[1] = ((y - 100 * u - 208 * v + 128) >> 8).clamp(0, 255) as u8;
                px[2] = ((y + 516 * u + 128) >> 8).clamp(0, 255) as u8;
                px[3] = 255;
            }
        }
        out
    }
}

/// BT.601 limited range, what VP8 carries and what [`I420::to_rgba`] undoes.
fn rgb_to_yuv(r: u8, g: u8, b: u8) -> (u8, i32, i32) {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    (y.clamp(0, 255) as u8, u, v)
}

/// Camera pictures to I420: each takes a camera's packed buffer and refuses one whose length
/// does not match the size.
impl I420 {
    fn checked(width: u32, height: u32, got: usize, want: usize) -> Result<(), MediaError> {
        if width == 0 || height == 0 || got < want {
            return Err(MediaError::BadFrame(
                "the camera's buffer does not match its size",
            ));
        }
        Ok(())
    }

    /// From packed RGB (3 bytes a pixel), or BGR when `bgr`; chroma is the 2×2 average.
    pub fn from_rgb(width: u32, height: u32, rgb: &[u8], bgr: bool) -> Result<Self, MediaError> {
        let (w, h) = (width as usize, height as usize);
        Self::checked(width, height, rgb.len(), w * h * 3)?;
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut data = vec![0u8; i420_len(width, height)];
        let mut u_sum = vec![0i32; cw * ch];
        let mut v_sum = vec![0i32; cw * ch];
        let mut count = vec![0i32; cw * ch];
        for row in 0..h {
            for col in 0..w {
                let px = &rgb[(row * w + col) * 3..(row * w + col) * 3 + 3];
                let (r, b) = if bgr { (px[2], px[0]) } else { (px[0], px[2]) };
                let (y, u, v) = rgb_to_yuv(r, px[1], b);
                data[row * w + col] = y;
                let c = (row / 2) * cw + col / 2;
                u_sum[c] += u;
                v_sum[c] += v;
                count[c] += 1;
            }
        }
        for c in 0..cw * ch {
            let n = count[c].max(1);
            data[w * h + c] = ((u_sum[c] + n / 2) / n).clamp(0, 255) as u8;
            data[w * h + cw * ch + c] = ((v_sum[c] + n / 2) / n).clamp(0, 255) as u8;
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// From YUYV 4:2:2 (Y0 U Y1 V for each pair of pixels): luma as is, chroma of two rows
    /// averaged.
    pub fn from_yuyv(width: u32, height: u32, yuyv: &[u8]) -> Result<Self, MediaError> {
        let (w, h) = (width as usize, height as usize);
        let stride = w.div_ceil(2) * 4;
        Self::checked(width, height, yuyv.len(), stride * h)?;
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut data = vec![0u8; i420_len(width, height)];
        for row in 0..h {
            let line = &yuyv[row * stride..(row + 1) * stride];
            for col in 0..w {
                data[row * w + col] = line[(col / 2) * 4 + (col % 2) * 2];
            }
        }
        for crow in 0..ch {
            let a = &yuyv[2 * crow * stride..(2 * crow + 1) * stride];
            let b_row = (2 * crow + 1).min(h - 1);
            let b = &yuyv[b_row * stride..(b_row + 1) * stride];
            for ccol in 0..cw {
                let avg = |i: usize| (u16::from(a[i]) + u16::from(b[i])).div_ceil(2) as u8;
                data[w * h + crow * cw + ccol] = avg(ccol * 4 + 1);
                data[w * h + cw * ch + crow * cw + ccol] = avg(ccol * 4 + 3);
            }
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// From NV12 (the Y plane, then U and V interleaved at half size).
    pub fn from_nv12(width: u32, height: u32, nv12: &[u8]) -> Result<Self, MediaError> {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        Self::checked(width, height, nv12.len(), w * h + cw * ch * 2)?;
        let mut data = vec![0u8; i420_len(width, height)];
        data[..w * h].copy_from_slice(&nv12[..w * h]);
        for c in 0..cw * ch {
            data[w * h + c] = nv12[w * h + 2 * c];
            data[w * h + cw * ch + c] = nv12[w * h + 2 * c + 1];
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// From 8-bit grey: the luma plane, no colour.
    pub fn from_gray(width: u32, height: u32, gray: &[u8]) -> Result<Self, MediaError> {
        let n = (width * height) as usize;
        Self::checked(width, height, gray.len(), n)?;
        let mut data = vec![128u8; i420_len(width, height)];
        data[..n].copy_from_slice(&gray[..n]);
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// A rectangle of the picture; `left` and `top` are rounded down to even so the chroma
    /// planes stay aligned.
    pub fn cropped(&self, left: u32, top: u32, width: u32, height: u32) -> Self {
        let (left, top) = (left & !1, top & !1);
        let width = width.min(self.width.saturating_sub(left)).max(1);
        let height = height.min(self.height.saturating_sub(top)).max(1);
        let (sw, (scw, sch)) = (self.width as usize, self.chroma());
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let (l, t) = (left as usize, top as usize);
        let mut data = Vec::with_capacity(i420_len(width, height));
        for row in t..t + h {
            data.extend_from_slice(&self.data[row * sw + l..row * sw + l + w]);
        }
        let y_len = sw * self.height as usize;
        for plane in [y_len, y_len + scw * sch] {
            for row in t / 2..t / 2 + ch {
                let start = plane + row * scw + l / 2;
                data.extend_from_slice(&self.data[start..start + cw]);
            }
        }
        Self {
            width,
            height,
            data,
        }
    }

    /// To exactly `width`×`height` without stretching: the centre cut to that shape, then
    /// scaled.
    pub fn fitted(&self, width: u32, height: u32) -> Self {
        let (sw, sh) = (u64::from(self.width), u64::from(self.height));
        let (w, h) = (u64::from(width), u64::from(height));
        let cut = if sw * h > sh * w {
            let cw = (sh * w / h) as u32;
            self.cropped((self.width - cw) / 2, 0, cw, self.height)
        } else if sw * h < sh * w {
            let ch = (sw * h / w) as u32;
            self.cropped(0, (self.height - ch) / 2, self.width, ch)
        } else {
            return self.scaled(width, height);
        };
        cut.scaled(width, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_of_the_wrong_length_is_refused() {
        assert!(I420::from_packed(4, 4, vec![0; 23]).is_err());
        assert!(I420::from_packed(4, 4, vec![0; 24]).is_ok());
        // Odd sizes round the chroma planes up: 3×3 luma + 2 × 2×2 chroma.
        assert!(I420::from_packed(3, 3, vec![0; 17]).is_ok());
    }

    #[test]
    fn scaling_averages_and_keeps_the_layout() {
        let mut f = I420::grey(4, 2);
        f.data[..8].copy_from_slice(&[0, 100, 200, 200, 0, 100, 200, 200]);
        let half = f.scaled(2, 2);
        assert_eq!(half.data.len(), i420_len(2, 2));
        assert_eq!(&half.data[..4], &[50, 200, 50, 200]);
    }

    #[test]
    fn white_and_black_convert_to_rgb_extremes() {
        let mut f = I420::grey(2, 2);
        f.data[..4].copy_from_slice(&[235, 235, 16, 16]);
        let rgba = f.to_rgba();
        assert_eq!(&rgba[..4], &[255, 255, 255, 255]);
        assert_eq!(&rgba[8..12], &[0, 0, 0, 255]);
    }

    #[test]
    fn yuyv_keeps_luma_and_averages_chroma_of_two_rows() {
        // Two rows of 4 pixels: Y0 U Y1 V per pair.
        let yuyv = [
            10, 100, 20, 200, 30, 110, 40, 210, //
            50, 120, 60, 220, 70, 130, 80, 230,
        ];
        let f = I420::from_yuyv(4, 2, &yuyv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.data, [10, 20, 30, 40, 50, 60, 70, 80, 110, 120, 210, 220]);
        assert!(I420::from_yuyv(4, 2, &yuyv[..15]).is_err());
    }

    #[test]
    fn rgb_and_bgr_take_bt601_limited_range() {
        // Red, green / blue, white: the 2×2 block's chroma is their average.
        let rgb = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        let f = I420::from_rgb(2, 2, &rgb, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.y(), &[82, 144, 41, 235]);
        // U: (90 + 54 + 240 + 128) / 4 = 128; V: (240 + 34 + 110 + 128) / 4 = 128.
        assert_eq!(&f.data[4..], &[128, 128]);
        let bgr: Vec<u8> = rgb.chunks(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
        assert_eq!(I420::from_rgb(2, 2, &bgr, true).ok(), Some(f.clone()));
        // And back: white stays white through to_rgba.
        assert_eq!(&f.to_rgba()[12..16], &[255, 255, 255, 255]);
    }

    #[test]
    fn nv12_and_grey_unpack() {
        let nv12 = [1, 2, 3, 4, 5, 6, 7, 8, 90, 190, 91, 191];
        let f = I420::from_nv12(4, 2, &nv12).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.data, [1, 2, 3, 4, 5, 6, 7, 8, 90, 91, 190, 191]);
        let g = I420::from_gray(2, 2, &[9, 8, 7, 6]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.data, [9, 8, 7, 6, 128, 128]);
    }

    #[test]
    fn a_wide_picture_is_cut_to_4_3_in_the_middle_not_stretched() {
        // 16×6: columns 0-3 and 12-15 are 0, the middle 8 columns 200 (8×6 is 4:3).
        let mut f = I420::grey(16, 6);
        for row in 0..6 {
            for col in 4..12 {
                f.data[row * 16 + col] = 200;
            }
        }
        let fit = f.fitted(8, 6);
        assert_eq!(fit.data.len(), i420_len(8, 6));
        assert!(fit.y().iter().all(|v| *v == 200), "{:?}", fit.y());
        let tall = I420::grey(6, 16).fitted(640, 480);
        assert_eq!((tall.width, tall.height), (640, 480));
    }
}
