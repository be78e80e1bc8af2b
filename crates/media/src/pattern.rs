//! The synthetic camera: a moving test pattern whose every frame carries its number and the
//! instant it was made, written in pixels (two rows of 40 black-or-white blocks across the top)
//! so that a receiver — Hearth, a browser, a screenshot of the pane — can read them back after
//! VP8 and scaling, and measure glass-to-glass latency. Also writes the pattern as a Y4M file
//! and a tone as a WAV file, the formats Chromium's fake capture devices play.

use crate::frame::I420;
use std::io::Write;

/// Blocks across the frame; each block is `width / COLUMNS` pixels square.
pub const COLUMNS: u32 = 40;
const LOW: u8 = 16;
const HIGH: u8 = 235;

/// What a frame says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub frame: u32,
    /// Milliseconds since the Unix epoch, modulo 2^40, when the frame was made.
    pub sent_ms: u64,
}

fn check_byte(frame: u32) -> u8 {
    frame
        .to_be_bytes()
        .iter()
        .fold(0xA5u8, |acc, b| acc ^ b.rotate_left(3))
}

fn bits(stamp: Stamp) -> [bool; 80] {
    let mut out = [false; 80];
    let row0 = (u64::from(stamp.frame) << 8) | u64::from(check_byte(stamp.frame));
    let row1 = stamp.sent_ms & ((1 << 40) - 1);
    for i in 0..40 {
        out[i] = (row0 >> (39 - i)) & 1 == 1;
        out[40 + i] = (row1 >> (39 - i)) & 1 == 1;
    }
    out
}

/// The synthetic camera.
#[derive(Debug, Clone)]
pub struct Pattern {
    width: u32,
    height: u32,
    frame: u32,
    base: Vec<u8>,
}

impl Pattern {
    /// A pattern of this size (even, at least 80 wide).
    pub fn new(width: u32, height: u32) -> Self {
        let (w, h) = (width as usize, height as usize);
        // Vertical colour bars in luma/chroma, fixed; the moving parts are drawn per frame.
        let mut base = vec![0u8; crate::frame::i420_len(width, height)];
        let bars: [(u8, u8, u8); 7] = [
            (180, 128, 128),
            (168, 44, 136),
            (145, 147, 44),
            (133, 63, 52),
            (63, 193, 204),
            (51, 109, 212),
            (28, 212, 120),
        ];
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        for y in 0..h {
            for x in 0..w {
                base[y * w + x] = bars[x * 7 / w].0;
            }
        }
        for y in 0..ch {
            for x in 0..cw {
                let bar = bars[(x * 2) * 7 / w];
                base[w * h + y * cw + x] = bar.1;
                base[w * h + cw * ch + y * cw + x] = bar.2;
            }
        }
        Self {
            width,
            height,
            frame: 0,
            base,
        }
    }

    /// The next frame, stamped with its number and `now_ms`.
    pub fn next_frame(&mut self, now_ms: u64) -> I420 {
        let stamp = Stamp {
            frame: self.frame,
            sent_ms: now_ms,
        };
        self.frame = self.frame.wrapping_add(1);
        self.draw(stamp)
    }

    /// The frame for a given stamp.
    pub fn draw(&self, stamp: Stamp) -> I420 {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut data = self.base.clone();
        // A white box sweeping left to right, so that motion is visible and encoded.
        let size = h / 6;
        let span = w.saturating_sub(size).max(1);
        let x0 = (stamp.frame as usize * 4) % span;
        let y0 = h / 2;
        for y in y0..(y0 + size).min(h) {
            data[y * w + x0..y * w + (x0 + size).min(w)].fill(HIGH);
        }
        write_stamp(&mut data, w, h, stamp);
        I420 {
            width: self.width,
            height: self.height,
            data,
        }
    }
}

fn write_stamp(data: &mut [u8], w: usize, h: usize, stamp: Stamp) {
    let block = (w / COLUMNS as usize).max(1);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    for (i, on) in bits(stamp).iter().enumerate() {
        let (row, col) = (i / 40, i % 40);
        for y in row * block..((row + 1) * block).min(h) {
            data[y * w + col * block..y * w + (col + 1) * block].fill(if *on { HIGH } else { LOW });
        }
    }
    // Neutral chroma under the strip, so the blocks are pure black and white.
    for y in 0..(2 * block).div_ceil(2).min(ch) {
        data[w * h + y * cw..w * h + (y + 1) * cw].fill(128);
        data[w * h + cw * ch + y * cw..w * h + cw * ch + (y + 1) * cw].fill(128);
    }
}

/// Reads the stamp from luma samples: `luma(x, y)` for a picture `width` wide whose pattern
/// fills it. `None` when the blocks do not read as a stamp (its check byte does not match).
pub fn read_stamp(width: u32, luma: impl Fn(u32, u32) -> u8) -> Option<Stamp> {
    // Block edges at fractional positions: a picture scaled to any width (a pane's canvas)
    // keeps its 40 columns even when `width` is not a multiple of 40.
    let block = f64::from(width) / f64::from(COLUMNS);
    if block < 2.0 {
        return None;
    }
    let mut value = [0u64; 2];
    for i in 0..80u32 {
        let (row, col) = (i / 40, i % 40);
        // The middle half of the block, averaged: robust to codec ringing at its edges.
        let x0 = ((f64::from(col) + 0.25) * block).round() as u32;
        let x1 = (((f64::from(col) + 0.75) * block).round() as u32).max(x0 + 1);
        let y0 = ((f64::from(row) + 0.25) * block).round() as u32;
        let y1 = (((f64::from(row) + 0.75) * block).round() as u32).max(y0 + 1);
        let mut sum = 0u32;
        for y in y0..y1 {
            for x in x0..x1 {
                sum += u32::from(luma(x, y));
            }
        }
        let bit = sum / ((x1 - x0) * (y1 - y0)) > (u32::from(LOW) + u32::from(HIGH)) / 2;
        value[row as usize] = (value[row as usize] << 1) | u64::from(bit);
    }
    let frame = (value[0] >> 8) as u32;
    if (value[0] & 0xFF) as u8 != check_byte(frame) {
        return None;
    }
    Some(Stamp {
        frame,
        sent_ms: value[1],
    })
}

/// Reads the stamp of an I420 picture that is the pattern (at any scale).
pub fn read_i420(frame: &I420) -> Option<Stamp> {
    let w = frame.width;
    // The two rows of blocks must fit: a wide, short picture has no stamp.
    if f64::from(frame.height) < 2.0 * f64::from(w) / f64::from(COLUMNS) {
        return None;
    }
    let y = frame.y();
    read_stamp(w, |x, row| {
        y.get((row * w + x) as usize).copied().unwrap_or(0)
    })
}

/// Reads the stamp from RGBA pixels (a screenshot of the pane) of the region
/// `(left, top, width)` of an image `stride_px` pixels wide.
pub fn read_rgba(rgba: &[u8], stride_px: u32, left: u32, top: u32, width: u32) -> Option<Stamp> {
    read_stamp(width, |x, y| {
        let i = (((top + y) * stride_px + left + x) * 4) as usize;
        match rgba.get(i..i + 3) {
            Some(p) => ((u16::from(p[0]) + u16::from(p[1]) + u16::from(p[2])) / 3) as u8,
            None => 0,
        }
    })
}

/// Writes `frames` frames of the pattern as a YUV4MPEG2 file (Chromium's
/// `--use-file-for-fake-video-capture`); frame `i` carries number `i` and time 0.
pub fn write_y4m(
    out: &mut impl Write,
    width: u32,
    height: u32,
    fps: u32,
    frames: u32,
) -> std::io::Result<()> {
    writeln!(
        out,
        "YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg"
    )?;
    let pattern = Pattern::new(width, height);
    for frame in 0..frames {
        out.write_all(b"FRAME\n")?;
        out.write_all(&pattern.draw(Stamp { frame, sent_ms: 0 }).data)?;
    }
    Ok(())
}

/// Writes `seconds` of a sine tone at `hz` as 16-bit mono 48 kHz WAV (Chromium's
/// `--use-file-for-fake-audio-capture`).
pub fn write_wav(out: &mut impl Write, hz: f32, seconds: u32) -> std::io::Result<()> {
    let rate = 48_000u32;
    let samples = crate::audio::Tone::new(hz, 0.3).take(rate * seconds);
    let bytes = (samples.len() * 2) as u32;
    out.write_all(b"RIFF")?;
    out.write_all(&(36 + bytes).to_le_bytes())?;
    out.write_all(b"WAVEfmt ")?;
    out.write_all(&16u32.to_le_bytes())?;
    out.write_all(&1u16.to_le_bytes())?;
    out.write_all(&1u16.to_le_bytes())?;
    out.write_all(&rate.to_le_bytes())?;
    out.write_all(&(rate * 2).to_le_bytes())?;
    out.write_all(&2u16.to_le_bytes())?;
    out.write_all(&16u16.to_le_bytes())?;
    out.write_all(b"data")?;
    out.write_all(&bytes.to_le_bytes())?;
    for s in samples {
        out.write_all(&s.to_le_bytes())?;
    }
    Ok(())
}

/// Writes the pattern (640×480, 30 fps, 60 frames) and a 660 Hz tone into `dir` for
/// Chromium's fake camera and microphone; returns the Chromium flags that play them (test
/// peers and benchmarks: a patient whose frames carry their numbers).
pub fn write_fake_devices(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    let y4m = dir.join("pattern.y4m");
    let wav = dir.join("tone.wav");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&y4m)?);
    write_y4m(&mut out, 640, 480, 30, 60)?;
    out.flush()?;
    write_wav(&mut std::fs::File::create(&wav)?, 660.0, 3)?;
    Ok(vec![
        format!("--use-file-for-fake-video-capture={}", y4m.display()),
        format!("--use-file-for-fake-audio-capture={}", wav.display()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_from_the_frame_at_full_and_half_size() {
        let mut p = Pattern::new(640, 480);
        let _ = p.next_frame(1);
        let frame = p.next_frame(1_764_000_123_456);
        // The time is kept modulo 2^40 ms (about 35 years).
        let want = Stamp {
            frame: 1,
            sent_ms: 1_764_000_123_456 % (1 << 40),
        };
        assert_eq!(read_i420(&frame), Some(want));
        assert_eq!(read_i420(&frame.scaled(320, 240)), Some(want));
        // A width that is not a multiple of 40 (a pane's canvas): 291 pixels.
        assert_eq!(read_i420(&frame.scaled(291, 218)), Some(want));
        let rgba = frame.to_rgba();
        assert_eq!(read_rgba(&rgba, 640, 0, 0, 640), Some(want));
    }

    #[test]
    fn a_picture_without_a_stamp_reads_as_none() {
        assert_eq!(read_i420(&I420::grey(640, 480)), None);
        // Too short for the two rows of blocks: none, never a panic.
        assert_eq!(read_i420(&I420::grey(640, 16)), None);
        assert_eq!(read_i420(&I420::grey(1920, 64)), None);
        let mut f = Pattern::new(640, 480).draw(Stamp {
            frame: 7,
            sent_ms: 9,
        });
        // Flip one block of the frame number: the check byte no longer matches.
        for y in 0..16 {
            for x in 16 * 30..16 * 31 {
                f.data[y * 640 + x] = 255 - f.data[y * 640 + x];
            }
        }
        assert_eq!(read_i420(&f), None);
    }

    #[test]
    fn the_y4m_file_has_a_header_and_whole_frames() {
        let mut out = Vec::new();
        write_y4m(&mut out, 160, 120, 30, 3).unwrap_or_else(|e| panic!("{e}"));
        let header = b"YUV4MPEG2 W160 H120 F30:1 Ip A1:1 C420jpeg\n".len();
        assert_eq!(out.len(), header + 3 * (6 + 160 * 120 * 3 / 2));
    }
}
