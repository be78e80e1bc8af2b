//! Audio: the synthetic microphone (a tone), Opus at 48 kHz in 20 ms frames, and the energy
//! of what was heard (how a test, and the pane's level meter, know sound arrived).

use crate::MediaError;

/// Samples per 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
pub const SAMPLE_RATE: u32 = 48_000;

/// A sine tone, the synthetic microphone.
#[derive(Debug, Clone)]
pub struct Tone {
    step: f32,
    phase: f32,
    amplitude: f32,
}

impl Tone {
    pub fn new(hz: f32, amplitude: f32) -> Self {
        Self {
            step: std::f32::consts::TAU * hz / SAMPLE_RATE as f32,
            phase: 0.0,
            amplitude: amplitude.clamp(0.0, 1.0),
        }
    }

    /// The next `n` samples.
    pub fn take(&mut self, n: u32) -> Vec<i16> {
        (0..n)
            .map(|_| {
                let s = self.phase.sin() * self.amplitude * f32::from(i16::MAX);
                self.phase = (self.phase + self.step) % std::f32::consts::TAU;
                s as i16
            })
            .collect()
    }
}

/// Root-mean-square level of samples, 0.0 (silence) to 1.0 (full scale).
pub fn rms(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|s| f64::from(*s).powi(2)).sum();
    ((sum / samples.len() as f64).sqrt() / f64::from(i16::MAX)) as f32
}

fn opus_error(what: &'static str) -> impl Fn(opus::Error) -> MediaError {
    move |e| MediaError::Codec {
        what,
        code: e.code() as i32,
    }
}

/// Opus encoder for voice, mono 48 kHz.
pub struct OpusEncoder(opus::Encoder);

impl OpusEncoder {
    pub fn new() -> Result<Self, MediaError> {
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .map_err(opus_error("opus encoder"))?;
        enc.set_inband_fec(true).map_err(opus_error("opus fec"))?;
        enc.set_packet_loss_perc(5)
            .map_err(opus_error("opus loss"))?;
        Ok(Self(enc))
    }

    /// One 20 ms frame ([`FRAME_SAMPLES`] samples) to one Opus packet.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, MediaError> {
        self.0
            .encode_vec(pcm, 1500)
            .map_err(opus_error("opus encode"))
    }
}

/// Opus decoder to mono 48 kHz (a stereo stream is mixed down by libopus).
pub struct OpusDecoder(opus::Decoder);

impl OpusDecoder {
    pub fn new() -> Result<Self, MediaError> {
        opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)
            .map(Self)
            .map_err(opus_error("opus decoder"))
    }

    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, MediaError> {
        let mut out = vec![0i16; FRAME_SAMPLES * 6];
        let n = self
            .0
            .decode(packet, &mut out, false)
            .map_err(opus_error("opus decode"))?;
        out.truncate(n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_survives_opus_with_its_energy() {
        let mut tone = Tone::new(440.0, 0.3);
        let mut enc = OpusEncoder::new().unwrap_or_else(|e| panic!("{e}"));
        let mut dec = OpusDecoder::new().unwrap_or_else(|e| panic!("{e}"));
        let mut last = 0.0;
        for _ in 0..20 {
            let pcm = tone.take(FRAME_SAMPLES as u32);
            let packet = enc.encode(&pcm).unwrap_or_else(|e| panic!("{e}"));
            last = rms(&dec.decode(&packet).unwrap_or_else(|e| panic!("{e}")));
        }
        // A sine of amplitude 0.3 has an RMS of 0.3/√2 ≈ 0.212.
        assert!((last - 0.212).abs() < 0.05, "rms {last}");
        assert_eq!(rms(&[0; 960]), 0.0);
    }
}
