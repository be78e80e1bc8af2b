//! Hearth's media engine: the clinician's side of a video visit, in Rust, because Linux's
//! webview has no `RTCPeerConnection` (TEST-PEERS.md). webrtc-rs carries the media; VP8 is
//! libvpx, audio is Opus; the synthetic camera and microphone let CI and demo mode run whole
//! calls without hardware.
//!
//! - [`call`]: the engine (signaling through hearth-visit, the mesh, send and receive).
//! - [`devices`]: cameras, microphones and speakers (listing, opening by id, unplugging).
//!   [`sound`]: the speaker's mix, echo cancellation and noise suppression.
//! - [`vpx`], [`audio`]: the codecs. [`frame`]: pictures. [`pattern`]: the self-stamping test
//!   pattern and the files Chromium's fake devices play. [`quality`]: the indicator and the
//!   video ladder.

pub mod audio;
pub mod call;
pub mod demo;
pub mod devices;
pub mod frame;
pub mod pattern;
pub mod quality;
pub mod sound;
pub mod vpx;

pub use call::{
    AudioInput, Call, CallEvent, CallOptions, Entry, Link, PeerMedia, SentMedia, VideoFrame,
    VideoInput,
};
pub use devices::{Device, DeviceError, DeviceKind};

/// Errors of the media engine (stable codes through [`MediaError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the {what} step of the codec failed (code {code})")]
    Codec { what: &'static str, code: i32 },
    #[error("a video frame could not be used: {0}")]
    BadFrame(&'static str),
    #[error("WebRTC: {0}")]
    Rtc(String),
    #[error("signaling: {0}")]
    Signaling(String),
    #[error(transparent)]
    Visit(hearth_visit_client::VisitError),
    #[error(transparent)]
    Device(#[from] devices::DeviceError),
}

impl MediaError {
    /// A stable code for the IPC layer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Codec { .. } => "media_codec",
            Self::BadFrame(_) => "media_frame",
            Self::Rtc(_) => "media_webrtc",
            Self::Signaling(_) => "media_signaling",
            Self::Visit(_) => "media_visit_service",
            Self::Device(e) => e.code(),
        }
    }
}
