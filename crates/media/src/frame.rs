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
}
