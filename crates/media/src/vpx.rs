//! VP8 through libvpx (Debian's `libvpx-dev`, the same library browsers ship): an encoder tuned
//! for real-time calls and a decoder. The only `unsafe` of the crate lives here, each block
//! next to the libvpx rule it keeps (`vpx/vpx_encoder.h`, `vpx/vpx_decoder.h`).
#![allow(
    unsafe_code,
    reason = "the libvpx C API: each block keeps the header's contract"
)]

use crate::frame::I420;
use crate::MediaError;
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_long, c_uint, c_ulong};
use std::ptr;
use vpx_sys as vpx;

fn check(what: &'static str, err: vpx::vpx_codec_err_t) -> Result<(), MediaError> {
    if err == vpx::vpx_codec_err_t::VPX_CODEC_OK {
        Ok(())
    } else {
        Err(MediaError::Codec {
            what,
            code: err as i32,
        })
    }
}

/// A VP8 frame out of the encoder.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub key: bool,
}

/// Encoder settings: resolution, frame rate and target bitrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub kbps: u32,
}

/// A real-time VP8 encoder (one pass, CBR, no lag, error resilient: what WebRTC senders use).
pub struct Vp8Encoder {
    // Boxed: libvpx keeps pointers into the context, so it never moves after init.
    ctx: Box<vpx::vpx_codec_ctx_t>,
    settings: EncoderSettings,
    pts: i64,
}

// SAFETY: the context is owned by this value alone and libvpx contexts may be used from any
// thread as long as calls are not concurrent (`&mut self` guarantees that).
unsafe impl Send for Vp8Encoder {}

impl Vp8Encoder {
    pub fn new(settings: EncoderSettings) -> Result<Self, MediaError> {
        if settings.width == 0 || settings.height == 0 || settings.width % 2 == 1 {
            return Err(MediaError::BadFrame("VP8 needs an even, non-zero size"));
        }
        // SAFETY: `vpx_codec_enc_config_default` fills the whole struct it is given; zeroed
        // memory is a valid starting point for this plain-data C struct.
        let mut cfg: vpx::vpx_codec_enc_cfg_t = unsafe { MaybeUninit::zeroed().assume_init() };
        // SAFETY: the interface pointer is a static of libvpx; cfg is a valid out pointer.
        check("config_default", unsafe {
            vpx::vpx_codec_enc_config_default(vpx::vpx_codec_vp8_cx(), &mut cfg, 0)
        })?;
        cfg.g_w = settings.width;
        cfg.g_h = settings.height;
        cfg.g_timebase = vpx::vpx_rational { num: 1, den: 1000 };
        cfg.rc_target_bitrate = settings.kbps;
        cfg.g_threads = 1;
        cfg.g_lag_in_frames = 0;
        cfg.g_pass = vpx::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.rc_end_usage = vpx::vpx_rc_mode::VPX_CBR;
        cfg.g_error_resilient = 1;
        cfg.rc_dropframe_thresh = 0;
        cfg.rc_min_quantizer = 4;
        cfg.rc_max_quantizer = 56;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_sz = 1000;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_max_dist = settings.fps.max(1) * 10;
        // SAFETY: zeroed is the documented initial state of a context before init.
        let mut ctx: Box<vpx::vpx_codec_ctx_t> =
            Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        // SAFETY: ctx and cfg are valid for the call; the ABI version is the header's.
        check("enc_init", unsafe {
            vpx::vpx_codec_enc_init_ver(
                &mut *ctx,
                vpx::vpx_codec_vp8_cx(),
                &cfg,
                0,
                vpx::VPX_ENCODER_ABI_VERSION as c_int,
            )
        })?;
        let mut encoder = Self {
            ctx,
            settings,
            pts: 0,
        };
        // Speed: -6 is the real-time setting browsers use on desktop CPUs.
        // SAFETY: VP8E_SET_CPUUSED takes one int, as passed.
        check("set_cpuused", unsafe {
            vpx::vpx_codec_control_(
                &mut *encoder.ctx,
                vpx::vp8e_enc_control_id::VP8E_SET_CPUUSED as c_int,
                -6 as c_int,
            )
        })?;
        encoder.pts = 0;
        Ok(encoder)
    }

    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// Encodes one frame (`at_ms`: its capture time, for pacing); a key frame when asked.
    pub fn encode(
        &mut self,
        frame: &I420,
        at_ms: i64,
        key: bool,
    ) -> Result<Vec<EncodedFrame>, MediaError> {
        if frame.width != self.settings.width || frame.height != self.settings.height {
            return Err(MediaError::BadFrame(
                "frame size differs from the encoder's",
            ));
        }
        let mut data = frame.data.clone();
        // SAFETY: zeroed image struct, filled by vpx_img_wrap over `data` (I420 of exactly
        // width×height, checked by I420's constructor); `data` outlives the encode call.
        let mut image: vpx::vpx_image_t = unsafe { MaybeUninit::zeroed().assume_init() };
        let wrapped = unsafe {
            vpx::vpx_img_wrap(
                &mut image,
                vpx::vpx_img_fmt::VPX_IMG_FMT_I420,
                frame.width as c_uint,
                frame.height as c_uint,
                1,
                data.as_mut_ptr(),
            )
        };
        if wrapped.is_null() {
            return Err(MediaError::BadFrame("libvpx could not wrap the frame"));
        }
        let pts = at_ms.max(self.pts + 1);
        let duration = (1000 / self.settings.fps.max(1)) as c_ulong;
        self.pts = pts;
        let flags = if key {
            vpx::VPX_EFLAG_FORCE_KF as c_long
        } else {
            0
        };
        // SAFETY: ctx is initialised; image points into `data`, alive until after this call.
        check("encode", unsafe {
            vpx::vpx_codec_encode(
                &mut *self.ctx,
                &image,
                pts,
                duration,
                flags,
                vpx::VPX_DL_REALTIME as c_ulong,
            )
        })?;
        let mut out = Vec::new();
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: iterating the packets of the last encode call, as documented.
            let pkt = unsafe { vpx::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if pkt.is_null() {
                break;
            }
            // SAFETY: non-null packet from libvpx, valid until the next encode call.
            let pkt = unsafe { &*pkt };
            if pkt.kind == vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                // SAFETY: for a frame packet the `frame` member of the union is the live one;
                // buf/sz describe libvpx's buffer, copied out before the next call.
                let f = unsafe { pkt.data.frame };
                let bytes =
                    unsafe { std::slice::from_raw_parts(f.buf as *const u8, f.sz as usize) };
                out.push(EncodedFrame {
                    data: bytes.to_vec(),
                    key: f.flags & vpx::VPX_FRAME_IS_KEY != 0,
                });
            }
        }
        Ok(out)
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed once.
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// The largest picture decoded from a peer (1080p, the most a call's camera sends).
pub const MAX_WIDTH: u32 = 1920;
pub const MAX_HEIGHT: u32 = 1088;

/// A VP8 decoder.
pub struct Vp8Decoder {
    ctx: Box<vpx::vpx_codec_ctx_t>,
}

// SAFETY: as for the encoder: owned, and only used through `&mut self`.
unsafe impl Send for Vp8Decoder {}

impl Vp8Decoder {
    pub fn new() -> Result<Self, MediaError> {
        // SAFETY: zeroed context before init, as documented; a null config means "from the
        // stream"; the ABI version is the header's.
        let mut ctx: Box<vpx::vpx_codec_ctx_t> =
            Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        let cfg = vpx::vpx_codec_dec_cfg_t {
            threads: 1,
            w: 0,
            h: 0,
        };
        check("dec_init", unsafe {
            vpx::vpx_codec_dec_init_ver(
                &mut *ctx,
                vpx::vpx_codec_vp8_dx(),
                &cfg,
                0,
                vpx::VPX_DECODER_ABI_VERSION as c_int,
            )
        })?;
        Ok(Self { ctx })
    }

    /// Decodes one VP8 frame; `None` when libvpx has no picture to show for it.
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<I420>, MediaError> {
        if data.is_empty() {
            return Ok(None);
        }
        let len =
            c_uint::try_from(data.len()).map_err(|_| MediaError::BadFrame("frame too large"))?;
        // A key frame says its size: refuse one larger than a call needs before libvpx
        // allocates for it (a peer could send 16384×16384).
        if data[0] & 1 == 0 {
            // SAFETY: zeroed plain-data struct whose `sz` is set as the API requires.
            let mut info: vpx::vpx_codec_stream_info_t =
                unsafe { MaybeUninit::zeroed().assume_init() };
            info.sz = std::mem::size_of::<vpx::vpx_codec_stream_info_t>() as c_uint;
            // SAFETY: data is a valid slice; info is a valid out pointer.
            let peeked = unsafe {
                vpx::vpx_codec_peek_stream_info(
                    vpx::vpx_codec_vp8_dx(),
                    data.as_ptr(),
                    len,
                    &mut info,
                )
            };
            if peeked == vpx::vpx_codec_err_t::VPX_CODEC_OK
                && (info.w > MAX_WIDTH || info.h > MAX_HEIGHT)
            {
                return Err(MediaError::BadFrame("a key frame larger than 1920×1088"));
            }
        }
        // SAFETY: data is a valid slice for the call; libvpx copies what it keeps.
        check("decode", unsafe {
            vpx::vpx_codec_decode(&mut *self.ctx, data.as_ptr(), len, ptr::null_mut(), 0)
        })?;
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        let mut last = None;
        loop {
            // SAFETY: iterating the pictures of the last decode call.
            let img = unsafe { vpx::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
            if img.is_null() {
                break;
            }
            // SAFETY: a non-null picture stays valid until the next decode call.
            let img = unsafe { &*img };
            last = Some(copy_image(img)?);
        }
        Ok(last)
    }
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// Copies a decoded I420 picture (strided planes) into a packed [`I420`].
fn copy_image(img: &vpx::vpx_image_t) -> Result<I420, MediaError> {
    if img.fmt != vpx::vpx_img_fmt::VPX_IMG_FMT_I420 {
        return Err(MediaError::BadFrame("decoded picture is not I420"));
    }
    let (w, h) = (img.d_w as usize, img.d_h as usize);
    if img.d_w > MAX_WIDTH || img.d_h > MAX_HEIGHT {
        return Err(MediaError::BadFrame("a picture larger than 1920×1088"));
    }
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut data = Vec::with_capacity(w * h + 2 * cw * ch);
    for (plane, pw, ph) in [(0usize, w, h), (1, cw, ch), (2, cw, ch)] {
        let stride = usize::try_from(img.stride[plane]).unwrap_or(0);
        if stride < pw || img.planes[plane].is_null() {
            return Err(MediaError::BadFrame(
                "a decoded plane narrower than its picture",
            ));
        }
        for row in 0..ph {
            // SAFETY: libvpx's plane pointers cover `stride × rows` bytes of each plane.
            let line =
                unsafe { std::slice::from_raw_parts(img.planes[plane].add(row * stride), pw) };
            data.extend_from_slice(line);
        }
    }
    I420::from_packed(w as u32, h as u32, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::{read_i420, Pattern};

    #[test]
    fn the_pattern_survives_vp8_with_its_stamp() {
        let settings = EncoderSettings {
            width: 640,
            height: 480,
            fps: 30,
            kbps: 900,
        };
        let mut enc = Vp8Encoder::new(settings).unwrap_or_else(|e| panic!("{e}"));
        let mut dec = Vp8Decoder::new().unwrap_or_else(|e| panic!("{e}"));
        let mut pattern = Pattern::new(640, 480);
        let mut read = Vec::new();
        for i in 0..10u64 {
            let frame = pattern.next_frame(1_000 + i * 33);
            for packet in enc
                .encode(&frame, (i * 33) as i64, i == 0)
                .unwrap_or_else(|e| panic!("{e}"))
            {
                assert_eq!(packet.key, i == 0, "only the first frame is a key frame");
                let picture = dec.decode(&packet.data).unwrap_or_else(|e| panic!("{e}"));
                let picture = picture.unwrap_or_else(|| panic!("frame {i}: no picture"));
                assert_eq!((picture.width, picture.height), (640, 480));
                read.push(read_i420(&picture).map(|s| (s.frame, s.sent_ms)));
            }
        }
        let want: Vec<_> = (0..10u64)
            .map(|i| Some((i as u32, 1_000 + i * 33)))
            .collect();
        assert_eq!(read, want);
        // A size other than the encoder's is refused, not scaled silently.
        assert!(enc.encode(&I420::grey(320, 240), 400, false).is_err());
        // Garbage is an error from the decoder, not a crash.
        assert!(dec.decode(&[0xff; 40]).is_err() || dec.decode(&[0xff; 40]).is_ok());
    }
}
