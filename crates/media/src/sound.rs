//! Sound between the devices and the codec: the peers' decoded voices mixed for the speaker,
//! echo cancellation and noise suppression of the microphone (WebRTC's audio processing
//! module), and the conversions a sound card's own rate and channels need.

use crate::audio::SAMPLE_RATE;
use crate::MediaError;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use webrtc_audio_processing as apm;

/// Most sound held for one peer (200 ms): a peer that sends faster than we play loses its
/// oldest sound rather than drifting ever later.
const PEER_CAP: usize = SAMPLE_RATE as usize / 5;
/// Sound a peer must have queued before it is heard (40 ms), again after it ran dry, so
/// network jitter does not chop every frame.
const PRIME: usize = SAMPLE_RATE as usize / 25;

#[derive(Default)]
struct PeerSound {
    queue: VecDeque<i16>,
    primed: bool,
}

/// The peers' decoded sound, mixed for the speaker. Receivers [`push`](Mixer::push) what they
/// decode; the speaker thread [`pull`](Mixer::pull)s 20 ms at a time.
#[derive(Default)]
pub struct Mixer {
    peers: Mutex<HashMap<String, PeerSound>>,
}

impl Mixer {
    /// Decoded mono 48 kHz sound from one peer.
    pub fn push(&self, peer: &str, pcm: &[i16]) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let sound = peers.entry(peer.to_owned()).or_default();
        sound.queue.extend(pcm);
        let excess = sound.queue.len().saturating_sub(PEER_CAP);
        sound.queue.drain(..excess);
        if sound.queue.len() >= PRIME {
            sound.primed = true;
        }
    }

    /// A peer who left: their sound is dropped.
    pub fn remove(&self, peer: &str) {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
    }

    /// The next `n` samples: every primed peer's sound added (clipped to 16 bits), silence
    /// where nobody speaks.
    pub fn pull(&self, n: usize) -> Vec<i16> {
        let mut sum = vec![0i32; n];
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        for sound in peers.values_mut().filter(|s| s.primed) {
            let take = n.min(sound.queue.len());
            for (acc, s) in sum.iter_mut().zip(sound.queue.drain(..take)) {
                *acc += i32::from(s);
            }
            if sound.queue.is_empty() {
                sound.primed = false;
            }
        }
        sum.into_iter()
            .map(|s| s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16)
            .collect()
    }
}

/// Echo cancellation and noise suppression for a microphone, with what the speaker plays as
/// the echo reference. Clones share one processor: the speaker's thread renders, the
/// microphone's thread captures.
#[derive(Clone)]
pub struct Voice(apm::Processor);

impl Voice {
    /// AEC (delay-agnostic with the extended filter: a sound card does not report its delay),
    /// noise suppression and the high-pass filter, mono 48 kHz.
    pub fn new() -> Result<Self, MediaError> {
        let mut processor = apm::Processor::new(&apm::InitializationConfig {
            num_capture_channels: 1,
            num_render_channels: 1,
            ..Default::default()
        })
        .map_err(|_| MediaError::Codec {
            what: "echo canceller",
            code: -1,
        })?;
        processor.set_config(apm::Config {
            echo_cancellation: Some(apm::EchoCancellation {
                suppression_level: apm::EchoCancellationSuppressionLevel::High,
                enable_extended_filter: true,
                enable_delay_agnostic: true,
                stream_delay_ms: None,
            }),
            noise_suppression: Some(apm::NoiseSuppression {
                suppression_level: apm::NoiseSuppressionLevel::High,
            }),
            enable_high_pass_filter: true,
            ..Default::default()
        });
        Ok(Self(processor))
    }

    /// What the speaker is about to play (the echo the microphone will hear).
    pub fn render(&mut self, pcm: &[i16]) {
        for chunk in pcm.chunks_exact(apm::NUM_SAMPLES_PER_FRAME as usize) {
            let mut frame: Vec<f32> = chunk.iter().map(|s| f32::from(*s) / 32768.0).collect();
            let _ = self.0.process_render_frame(&mut frame);
        }
    }

    /// What the microphone heard, cleaned in place (whole 10 ms chunks; a 20 ms frame is two).
    pub fn capture(&mut self, pcm: &mut [i16]) {
        for chunk in pcm.chunks_exact_mut(apm::NUM_SAMPLES_PER_FRAME as usize) {
            let mut frame: Vec<f32> = chunk.iter().map(|s| f32::from(*s) / 32768.0).collect();
            if self.0.process_capture_frame(&mut frame).is_ok() {
                for (out, s) in chunk.iter_mut().zip(frame) {
                    *out = to_i16(s);
                }
            }
        }
    }
}

/// A float sample (−1.0 to 1.0) to 16 bits, clipped.
pub fn to_i16(s: f32) -> i16 {
    (s * 32768.0).clamp(-32768.0, 32767.0) as i16
}

/// Interleaved frames of `channels` samples to mono (their average).
pub fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    let channels = channels.max(1);
    interleaved
        .chunks_exact(channels)
        .map(|f| f.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// Linear-interpolation resampler of a mono stream, continuous across calls. Voice needs no
/// better: this only runs when a sound card cannot do 48 kHz itself.
#[derive(Debug, Clone)]
pub struct Resampler {
    /// Input samples per output sample.
    step: f64,
    /// Where the next output sample falls, in input samples from the start of the next chunk
    /// (−1.0 is the last sample of the previous chunk).
    pos: f64,
    last: f32,
}

impl Resampler {
    pub fn new(from_hz: u32, to_hz: u32) -> Self {
        Self {
            step: f64::from(from_hz.max(1)) / f64::from(to_hz.max(1)),
            pos: 0.0,
            last: 0.0,
        }
    }

    /// Whether it changes anything.
    pub fn is_identity(&self) -> bool {
        self.step == 1.0
    }

    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.is_identity() {
            out.extend_from_slice(input);
            return;
        }
        let at = |i: isize| -> f32 {
            if i < 0 {
                self.last
            } else {
                input[i as usize]
            }
        };
        let len = input.len() as f64;
        while self.pos < len - 1.0 {
            let i = self.pos.floor();
            let frac = (self.pos - i) as f32;
            let (a, b) = (at(i as isize), at(i as isize + 1));
            out.push(a + (b - a) * frac);
            self.pos += self.step;
        }
        if let Some(last) = input.last() {
            self.last = *last;
        }
        self.pos -= len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{rms, FRAME_SAMPLES as FRAME};

    #[test]
    fn the_mixer_adds_peers_and_clips() {
        let mixer = Mixer::default();
        mixer.push("a", &[1000; 1920]);
        mixer.push("b", &[-300; 1920]);
        assert_eq!(mixer.pull(960), vec![700; 960]);
        mixer.push("loud", &[30_000; 1920]);
        mixer.push("louder", &[30_000; 1920]);
        let mixed = mixer.pull(960);
        assert!(mixed.iter().all(|s| *s == i16::MAX), "clipped, not wrapped");
    }

    #[test]
    fn a_peer_is_heard_once_40_ms_are_queued_and_silence_fills_gaps() {
        let mixer = Mixer::default();
        assert_eq!(mixer.pull(960), vec![0; 960], "nobody: silence");
        mixer.push("a", &[500; 960]);
        assert_eq!(
            mixer.pull(960),
            vec![0; 960],
            "20 ms is not enough to start"
        );
        mixer.push("a", &[500; 960]);
        // 40 ms queued: heard, all of it.
        assert_eq!(mixer.pull(960), vec![500; 960]);
        assert_eq!(mixer.pull(960), vec![500; 960]);
        // Ran dry part-way: the rest is silence, and the peer waits to be primed again.
        mixer.push("a", &[500; 480]);
        mixer.push("a", &[500; 1440]);
        let out = mixer.pull(2400);
        assert_eq!(&out[..1920], &[500; 1920][..]);
        assert_eq!(&out[1920..], &[0; 480][..]);
        mixer.push("a", &[500; 960]);
        assert_eq!(mixer.pull(960), vec![0; 960]);
    }

    #[test]
    fn the_mixer_holds_at_most_200_ms_of_a_peer_and_forgets_who_left() {
        let mixer = Mixer::default();
        let mut ramp: Vec<i16> = (0..20_000).map(|i| (i % 30_000) as i16).collect();
        mixer.push("a", &ramp);
        let out = mixer.pull(PEER_CAP + 10);
        // The newest 200 ms survive; the oldest went.
        let newest = ramp.split_off(ramp.len() - PEER_CAP);
        assert_eq!(&out[..PEER_CAP], &newest[..]);
        mixer.push("b", &[100; 1920]);
        mixer.remove("b");
        assert_eq!(mixer.pull(960), vec![0; 960]);
    }

    #[test]
    fn downmix_averages_channels() {
        assert_eq!(downmix(&[0.5, -0.5, 1.0, 0.0], 2), vec![0.0, 0.5]);
        assert_eq!(downmix(&[0.25, 0.75], 1), vec![0.25, 0.75]);
    }

    #[test]
    fn resampling_44k1_to_48k_keeps_duration_and_pitch() {
        let mut r = Resampler::new(44_100, 48_000);
        let mut out = Vec::new();
        // One second of 441 Hz in chunks of 441 samples (10 ms).
        let input: Vec<f32> = (0..44_100)
            .map(|i| (std::f32::consts::TAU * 441.0 * i as f32 / 44_100.0).sin())
            .collect();
        for chunk in input.chunks(441) {
            r.process(chunk, &mut out);
        }
        assert!(
            (out.len() as i64 - 48_000).abs() <= 2,
            "{} samples",
            out.len()
        );
        // 441 Hz at 48 kHz: rising zero crossings once a period, 441 of them in a second.
        let rising = out.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        assert!((rising as i64 - 441).abs() <= 1, "{rising} crossings");
        let mut same = Resampler::new(48_000, 48_000);
        let mut copy = Vec::new();
        same.process(&[0.1, 0.2], &mut copy);
        assert_eq!(copy, vec![0.1, 0.2]);
    }

    /// The echo canceller, for real (WebRTC's module as linked): the microphone hears the
    /// speaker's sound 30 ms late and attenuated; after a few seconds of adaptation little of
    /// it is sent on. Noise-like "speech" so the suppressor sees a broadband signal.
    #[test]
    fn the_echo_of_the_speaker_is_cancelled() {
        let mut render = Voice::new().unwrap_or_else(|e| panic!("{e}"));
        let mut capture = render.clone();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut noise = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 40) as i32 - (1 << 23)) as f32 / (1 << 23) as f32
        };
        let delay = 30 * 48;
        let mut played: VecDeque<i16> = VecDeque::from(vec![0; delay]);
        let (mut before, mut after) = (0.0, 0.0);
        for frame in 0..300 {
            // Amplitude-modulated noise, like syllables.
            let envelope = if (frame / 10) % 2 == 0 { 0.5 } else { 0.15 };
            let speaker: Vec<i16> = (0..FRAME).map(|_| to_i16(noise() * envelope)).collect();
            render.render(&speaker);
            played.extend(&speaker);
            let mut heard: Vec<i16> = played.drain(..FRAME).map(|s| s / 2).collect();
            if frame >= 250 {
                before += rms(&heard);
            }
            capture.capture(&mut heard);
            if frame >= 250 {
                after += rms(&heard);
            }
        }
        assert!(
            after < before * 0.1,
            "echo left: {after:.3} of {before:.3} (sum of RMS over the last second)"
        );
    }

    #[test]
    fn noise_suppression_lowers_a_steady_hiss() {
        let mut voice = Voice::new().unwrap_or_else(|e| panic!("{e}"));
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let (mut before, mut after) = (0.0, 0.0);
        for frame in 0..150 {
            let mut heard: Vec<i16> = (0..FRAME)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    ((seed >> 52) as i16 - 2048) * 2
                })
                .collect();
            if frame >= 100 {
                before += rms(&heard);
            }
            voice.capture(&mut heard);
            if frame >= 100 {
                after += rms(&heard);
            }
        }
        assert!(after < before * 0.5, "hiss left: {after:.4} of {before:.4}");
    }
}
