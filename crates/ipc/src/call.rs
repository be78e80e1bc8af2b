//! The video call in the visit pane: its state as the pane shows it, the clinician's controls,
//! and the binary frames pushed to the pane's canvases.

use crate::RoomRole;
use serde::{Deserialize, Serialize};

/// `call_start`: join the visit of this appointment with camera and microphone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStartRequest {
    pub appointment_id: String,
}

/// `call_mute` / `call_camera`: turn the microphone or the camera off (`off: true`) or on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallToggleRequest {
    pub off: bool,
}

/// `call_chat`: one line to everyone in the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallChatRequest {
    pub text: String,
}

/// How the call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallPhase {
    /// No call in this window.
    Idle,
    Connecting,
    Live,
    /// The service refused or dropped the call; `message` says why.
    Trouble,
    Ended,
}

/// The media path to one participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallLink {
    Connecting,
    Connected,
    Reconnecting,
    Failed,
}

/// The connection-quality indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallQuality {
    Unknown,
    Good,
    Fair,
    Poor,
}

/// One other participant of the call, with the tile their video is painted in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallPeer {
    pub id: String,
    pub name: String,
    pub role: RoomRole,
    /// 1–3: the tile ([`FrameHeader::tile`]) their frames come to.
    pub tile: u8,
    pub link: CallLink,
    pub quality: CallQuality,
    pub frames_decoded: u64,
    /// Share of their 20 ms audio frames heard above silence so far (0–1).
    pub audio_level: f32,
    pub audio_frames: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine {
    pub mine: bool,
    pub name: String,
    pub text: String,
    pub at_label: String,
}

/// `watch_call`: the call as the pane shows it, pushed on every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallView {
    pub appointment_id: Option<String>,
    pub phase: CallPhase,
    pub message: Option<String>,
    pub peers: Vec<CallPeer>,
    pub mic_muted: bool,
    pub camera_off: bool,
    pub chat: Vec<ChatLine>,
    /// The worst path of the call.
    pub quality: CallQuality,
    /// What we send now, e.g. `640×480, 30 fps`.
    pub sending: String,
    /// After the call: whether its Encounter went to the EHR's queue, or why not.
    pub encounter: Option<String>,
    /// Who waits to be admitted, as the call's connection hears it (demo mode shows these;
    /// with a visit service the waiting room above the call does).
    pub waiting: Vec<CallWaiting>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallWaiting {
    pub id: String,
    pub name: String,
    pub role: RoomRole,
}

/// `call_frame_ack`: the pane is done with the frames up to `seq` (the shell sends a few
/// frames ahead of this, never more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallFrameAck {
    pub seq: u32,
}

/// `call_admit`: let a waiting participant into the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallAdmitRequest {
    pub participant_id: String,
}

impl CallView {
    pub fn idle() -> Self {
        Self {
            appointment_id: None,
            phase: CallPhase::Idle,
            message: None,
            peers: Vec::new(),
            mic_muted: false,
            camera_off: false,
            chat: Vec::new(),
            quality: CallQuality::Unknown,
            sending: String::new(),
            encounter: None,
            waiting: Vec::new(),
        }
    }
}

/// How frames are packed for the pane (`watch_call_frames`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameEncoding {
    /// JPEG, decoded by the webview (`createImageBitmap`).
    Jpeg,
    /// Raw RGBA, painted with `putImageData` (the alternative measured against JPEG).
    Rgba,
}

/// `watch_call_frames`: frames of the call from now on, in this encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallFramesRequest {
    pub encoding: FrameEncoding,
}

/// The fixed 24-byte header in front of each binary frame message (little endian):
/// `"HF"`, version 1, tile (0 = self view, 1–3 = [`CallPeer::tile`]), encoding (0 JPEG,
/// 1 RGBA), one zero byte, width u16, height u16, two zero bytes, made-at ms u64 (Unix
/// epoch: when the frame was decoded or captured), sequence u32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub tile: u8,
    pub encoding: FrameEncoding,
    pub width: u16,
    pub height: u16,
    pub at_ms: u64,
    pub seq: u32,
}

impl FrameHeader {
    pub const LEN: usize = 24;

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HF");
        out.push(1);
        out.push(self.tile);
        out.push(match self.encoding {
            FrameEncoding::Jpeg => 0,
            FrameEncoding::Rgba => 1,
        });
        out.push(0);
        out.extend_from_slice(&self.width.to_le_bytes());
        out.extend_from_slice(&self.height.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.at_ms.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
    }

    /// Reads a header; `None` for anything else.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < Self::LEN || &bytes[..3] != b"HF\x01" {
            return None;
        }
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let mut at = [0u8; 8];
        at.copy_from_slice(&bytes[12..20]);
        let mut seq = [0u8; 4];
        seq.copy_from_slice(&bytes[20..24]);
        Some(Self {
            tile: bytes[3],
            encoding: match bytes[4] {
                0 => FrameEncoding::Jpeg,
                1 => FrameEncoding::Rgba,
                _ => return None,
            },
            width: u16_at(6),
            height: u16_at(8),
            at_ms: u64::from_le_bytes(at),
            seq: u32::from_le_bytes(seq),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_header_reads_back_and_garbage_does_not() {
        let h = FrameHeader {
            tile: 2,
            encoding: FrameEncoding::Rgba,
            width: 640,
            height: 480,
            at_ms: 1_796_000_000_123,
            seq: 77,
        };
        let mut out = Vec::new();
        h.write(&mut out);
        assert_eq!(out.len(), FrameHeader::LEN);
        assert_eq!(FrameHeader::read(&out), Some(h));
        assert_eq!(FrameHeader::read(&out[..10]), None);
        out[0] = b'X';
        assert_eq!(FrameHeader::read(&out), None);
    }
}

/// `call_devices`: the pre-call device check — what this computer has, and what the call will
/// use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallDevices {
    pub cameras: Vec<String>,
    pub microphones: Vec<String>,
    pub speakers: Vec<String>,
    /// What the call sends, in words (e.g. the test pattern and a tone).
    pub using: String,
    /// A device list that could not be read, said plainly.
    pub problems: Vec<String>,
}
