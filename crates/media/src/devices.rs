//! Cameras, microphones and speakers: listing them (name + stable id), opening one by id, and
//! what a call's threads read from them. Cameras through nokhwa (V4L2, AVFoundation, Media
//! Foundation), sound through cpal (ALSA, CoreAudio, WASAPI).
//!
//! No device is a normal answer: a machine without a camera or sound card (CI) lists nothing
//! and the call runs on the synthetic [`Pattern`] and [`Tone`]. Every failure is a
//! [`DeviceError`] whose message says in plain words what the user can do.
//!
//! The call's threads hold a [`Feed`]: the device they read, until it fails; then they say so
//! once ([`Polled::Lost`]) and carry on without it until another one is chosen.

use crate::audio::{Tone, FRAME_SAMPLES, SAMPLE_RATE};
use crate::frame::I420;
use crate::pattern::Pattern;
use crate::sound::{downmix, to_i16, Resampler, Voice};
use crate::MediaError;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// The size every camera picture is brought to (the top of the ladder).
pub const CAMERA_WIDTH: u32 = 640;
pub const CAMERA_HEIGHT: u32 = 480;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Camera,
    Microphone,
    Speaker,
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Camera => "camera",
            Self::Microphone => "microphone",
            Self::Speaker => "speaker",
        })
    }
}

impl DeviceKind {
    /// What the call does without it.
    fn without(self) -> &'static str {
        match self {
            Self::Camera => " or continue without video",
            Self::Microphone => "; until then the others cannot hear you",
            Self::Speaker => "; until then you cannot hear the others",
        }
    }
}

/// A device the user can choose.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Device {
    pub kind: DeviceKind,
    /// Stable across runs where the system allows (V4L2 by-id path, the audio host's id).
    pub id: String,
    pub name: String,
}

/// Why a device cannot be used, in words for the user; [`DeviceError::code`] for the UI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("That {kind} is not connected. Choose another {kind}.")]
    NotFound { kind: DeviceKind },
    #[error(
        "Your {kind} is in use by another application. Close it there, or choose another {kind}."
    )]
    Busy { kind: DeviceKind },
    #[error("Your {kind} was disconnected. Choose another {kind}{}.", kind.without())]
    Unplugged { kind: DeviceKind },
    #[error("Hearth is not allowed to use your {kind}. Allow it in the system's privacy settings, then choose it again.")]
    PermissionDenied { kind: DeviceKind },
    #[error("Your {kind} stopped working ({detail}). Choose another {kind}{}.", kind.without())]
    Failed { kind: DeviceKind, detail: String },
    #[error("This call was started without a {kind}; leave and join again to use one.")]
    NotInCall { kind: DeviceKind },
}

impl DeviceError {
    /// A stable code for the IPC layer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "media_device_not_found",
            Self::Busy { .. } => "media_device_busy",
            Self::Unplugged { .. } => "media_device_unplugged",
            Self::PermissionDenied { .. } => "media_device_permission",
            Self::Failed { .. } => "media_device_failed",
            Self::NotInCall { .. } => "media_device_not_in_call",
        }
    }

    pub fn kind(&self) -> DeviceKind {
        match self {
            Self::NotFound { kind }
            | Self::Busy { kind }
            | Self::Unplugged { kind }
            | Self::PermissionDenied { kind }
            | Self::Failed { kind, .. }
            | Self::NotInCall { kind } => *kind,
        }
    }
}

/// The devices of one kind connected now (possibly none).
pub fn devices(kind: DeviceKind) -> Result<Vec<Device>, DeviceError> {
    Ok(match kind {
        DeviceKind::Camera => camera_list()?.into_iter().map(|(d, _)| d).collect(),
        _ => audio_list(kind)?.into_iter().map(|(d, _)| d).collect(),
    })
}

pub fn cameras() -> Result<Vec<Device>, DeviceError> {
    devices(DeviceKind::Camera)
}

pub fn microphones() -> Result<Vec<Device>, DeviceError> {
    devices(DeviceKind::Microphone)
}

pub fn speakers() -> Result<Vec<Device>, DeviceError> {
    devices(DeviceKind::Speaker)
}

// ------------------------------------------------------------------ what the threads read

/// Pictures for the camera thread.
pub trait PictureSource: Send {
    /// The newest picture since the last call, [`CAMERA_WIDTH`]×[`CAMERA_HEIGHT`]; `None`
    /// when none has come yet. An error means the device is gone.
    fn latest(&mut self, now_ms: u64) -> Result<Option<I420>, DeviceError>;
}

/// Sound for the microphone thread.
pub trait SoundSource: Send {
    /// The next 20 ms, mono 48 kHz ([`FRAME_SAMPLES`] samples); silence fills what the device
    /// has not delivered. An error means the device is gone.
    fn frame(&mut self) -> Result<Vec<i16>, DeviceError>;
}

/// Where the mixed sound of the peers goes.
pub trait SoundSink: Send {
    /// 20 ms of mono 48 kHz to play. An error means the device is gone.
    fn play(&mut self, pcm: &[i16]) -> Result<(), DeviceError>;
}

/// The synthetic camera: the self-stamping test pattern.
impl PictureSource for Pattern {
    fn latest(&mut self, now_ms: u64) -> Result<Option<I420>, DeviceError> {
        Ok(Some(self.next_frame(now_ms)))
    }
}

/// The synthetic microphone.
impl SoundSource for Tone {
    fn frame(&mut self) -> Result<Vec<i16>, DeviceError> {
        Ok(self.take(FRAME_SAMPLES as u32))
    }
}

/// What a thread got from its device on one tick.
#[derive(Debug, PartialEq)]
pub enum Polled<T> {
    Got(T),
    /// No device: none was chosen, or the one in use went away earlier.
    Idle,
    /// The device went away just now (said once); the feed is empty until
    /// [`Feed::replace`].
    Lost(DeviceError),
}

/// The device a call's thread reads, until it fails.
pub struct Feed<S: ?Sized> {
    current: Option<Box<S>>,
}

impl<S: ?Sized> Feed<S> {
    pub fn new(source: Option<Box<S>>) -> Self {
        Self { current: source }
    }

    /// Another device (chosen during the call); the old one is closed.
    pub fn replace(&mut self, source: Box<S>) {
        self.current = Some(source);
    }

    /// Reads the device; on an error the device is dropped (closed) and the error returned
    /// once.
    pub fn poll<T>(&mut self, read: impl FnOnce(&mut S) -> Result<T, DeviceError>) -> Polled<T> {
        let Some(source) = self.current.as_mut() else {
            return Polled::Idle;
        };
        match read(source) {
            Ok(t) => Polled::Got(t),
            Err(e) => {
                self.current = None;
                Polled::Lost(e)
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------ errors from the systems

/// An error the system reported as text (nokhwa passes V4L2's `io::Error`s on as strings),
/// by the words and errno the C library uses. `running`: the device was in use (a vanished
/// device is then "disconnected", not "not connected").
fn classify(kind: DeviceKind, text: &str, running: bool) -> DeviceError {
    let t = text.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if any(&["os error 16)", "busy"]) {
        DeviceError::Busy { kind }
    } else if any(&[
        "os error 13)",
        "os error 1)",
        "permission denied",
        "not permitted",
        "access denied",
    ]) {
        DeviceError::PermissionDenied { kind }
    } else if any(&[
        "os error 19)",
        "os error 2)",
        "no such device",
        "no such file",
        "disconnected",
    ]) {
        if running {
            DeviceError::Unplugged { kind }
        } else {
            DeviceError::NotFound { kind }
        }
    } else {
        DeviceError::Failed {
            kind,
            detail: text.chars().take(200).collect(),
        }
    }
}

fn audio_error(kind: DeviceKind, e: &cpal::Error, running: bool) -> DeviceError {
    use cpal::ErrorKind as K;
    match e.kind() {
        K::DeviceBusy => DeviceError::Busy { kind },
        K::PermissionDenied => DeviceError::PermissionDenied { kind },
        K::DeviceNotAvailable | K::HostUnavailable | K::StreamInvalidated if running => {
            DeviceError::Unplugged { kind }
        }
        K::DeviceNotAvailable | K::HostUnavailable => DeviceError::NotFound { kind },
        _ => classify(kind, &e.to_string(), running),
    }
}

/// Errors of a running sound stream that do not end it.
fn harmless(e: &cpal::Error) -> bool {
    matches!(
        e.kind(),
        cpal::ErrorKind::Xrun | cpal::ErrorKind::RealtimeDenied | cpal::ErrorKind::DeviceChanged
    )
}

// ------------------------------------------------------------------ cameras (nokhwa)

fn camera_list() -> Result<Vec<(Device, CameraIndex)>, DeviceError> {
    let kind = DeviceKind::Camera;
    let infos = match nokhwa::query(ApiBackend::Auto) {
        Ok(infos) => infos,
        // No camera backend on this platform: no cameras.
        Err(
            nokhwa::NokhwaError::UnsupportedOperationError(_)
            | nokhwa::NokhwaError::NotImplementedError(_),
        ) => return Ok(Vec::new()),
        Err(e) => return Err(classify(kind, &e.to_string(), false)),
    };
    let stable = stable_v4l_ids();
    Ok(infos
        .into_iter()
        .filter(|info| is_capture_node(info.index()))
        .map(|info| {
            let index = info.index().clone();
            let id = match &index {
                // macOS and Windows put the system's device id in `misc`.
                _ if !info.misc().is_empty() => info.misc(),
                CameraIndex::Index(n) => stable
                    .iter()
                    .find(|(i, _)| i == n)
                    .map(|(_, id)| id.clone())
                    .unwrap_or_else(|| format!("v4l:video{n}")),
                CameraIndex::String(s) => s.clone(),
            };
            (
                Device {
                    kind,
                    id,
                    name: info.human_name(),
                },
                index,
            )
        })
        .collect())
}

/// V4L2 nodes by their udev links, stable across runs: by-id (the camera, whatever port) and
/// by-path (the port) as `v4l:<link name>`.
#[cfg(target_os = "linux")]
fn stable_v4l_ids() -> Vec<(u32, String)> {
    let mut ids: Vec<(u32, String)> = Vec::new();
    for dir in ["/dev/v4l/by-id", "/dev/v4l/by-path"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut links: Vec<_> = entries.flatten().collect();
        links.sort_by_key(|e| e.file_name());
        for link in links {
            let node = std::fs::canonicalize(link.path()).ok().and_then(|target| {
                target
                    .file_name()?
                    .to_str()?
                    .strip_prefix("video")?
                    .parse::<u32>()
                    .ok()
            });
            if let Some(n) = node.filter(|n| !ids.iter().any(|(i, _)| i == n)) {
                ids.push((n, format!("v4l:{}", link.file_name().to_string_lossy())));
            }
        }
    }
    ids
}

#[cfg(not(target_os = "linux"))]
fn stable_v4l_ids() -> Vec<(u32, String)> {
    Vec::new()
}

/// A V4L2 node that captures video (a USB camera also has a metadata node, which cannot).
/// One that cannot be asked (permission) is kept: opening it says why.
#[cfg(target_os = "linux")]
fn is_capture_node(index: &CameraIndex) -> bool {
    let CameraIndex::Index(n) = index else {
        return true;
    };
    match v4l::Device::new(*n as usize).and_then(|d| d.query_caps()) {
        Ok(caps) => caps
            .capabilities
            .contains(v4l::capability::Flags::VIDEO_CAPTURE),
        Err(_) => true,
    }
}

#[cfg(not(target_os = "linux"))]
fn is_capture_node(_: &CameraIndex) -> bool {
    true
}

/// A camera buffer to I420 at [`CAMERA_WIDTH`]×[`CAMERA_HEIGHT`] (centre cut to 4:3, then
/// scaled).
pub fn camera_picture(
    format: FrameFormat,
    width: u32,
    height: u32,
    data: &[u8],
) -> Result<I420, MediaError> {
    let full = match format {
        FrameFormat::MJPEG => {
            // mozjpeg reports a damaged JPEG by unwinding (its libjpeg error handler panics):
            // caught here, so one bad frame from a camera is skipped, not the capture thread.
            let rgb = std::panic::catch_unwind(|| nokhwa::utils::mjpeg_to_rgb(data, false))
                .ok()
                .and_then(Result::ok)
                .ok_or(MediaError::BadFrame(
                    "the camera's JPEG could not be decoded",
                ))?;
            I420::from_rgb(width, height, &rgb, false)?
        }
        FrameFormat::YUYV => I420::from_yuyv(width, height, data)?,
        FrameFormat::NV12 => I420::from_nv12(width, height, data)?,
        FrameFormat::GRAY => I420::from_gray(width, height, data)?,
        FrameFormat::RAWRGB => I420::from_rgb(width, height, data, false)?,
        FrameFormat::RAWBGR => I420::from_rgb(width, height, data, true)?,
    };
    Ok(full.fitted(CAMERA_WIDTH, CAMERA_HEIGHT))
}

/// The formats asked of a camera, MJPEG first (what USB cameras send at 640×480@30).
const CAMERA_FORMATS: [FrameFormat; 6] = [
    FrameFormat::MJPEG,
    FrameFormat::YUYV,
    FrameFormat::NV12,
    FrameFormat::RAWRGB,
    FrameFormat::RAWBGR,
    FrameFormat::GRAY,
];

#[derive(Default)]
struct Captured {
    latest: Option<I420>,
    gone: Option<DeviceError>,
}

/// A camera read by its own thread (nokhwa's camera stays on the thread that opened it); the
/// call's camera thread takes the newest picture.
struct NokhwaCamera {
    captured: Arc<Mutex<Captured>>,
    stop: Arc<AtomicBool>,
}

impl Drop for NokhwaCamera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl PictureSource for NokhwaCamera {
    fn latest(&mut self, _now_ms: u64) -> Result<Option<I420>, DeviceError> {
        let mut captured = lock(&self.captured);
        match captured.gone.take() {
            Some(e) => Err(e),
            None => Ok(captured.latest.take()),
        }
    }
}

/// Opens the camera with this id (blocks while it starts, up to 10 s).
pub fn open_camera(id: &str) -> Result<Box<dyn PictureSource>, DeviceError> {
    let kind = DeviceKind::Camera;
    if !nokhwa::nokhwa_check() {
        // macOS: ask once; the user answers the system's prompt and chooses again.
        nokhwa::nokhwa_initialize(|_| {});
        return Err(DeviceError::PermissionDenied { kind });
    }
    let index = camera_list()?
        .into_iter()
        .find(|(d, _)| d.id == id)
        .map(|(_, index)| index)
        .ok_or(DeviceError::NotFound { kind })?;
    let captured = Arc::new(Mutex::new(Captured::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let (c, s) = (captured.clone(), stop.clone());
    std::thread::Builder::new()
        .name("hearth-camera-capture".into())
        .spawn(move || capture(index, ready_tx, c, s))
        .map_err(|e| DeviceError::Failed {
            kind,
            detail: e.to_string(),
        })?;
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(Box::new(NokhwaCamera { captured, stop })),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            Err(DeviceError::Failed {
                kind,
                detail: "it did not start within 10 seconds".into(),
            })
        }
    }
}

/// The capture thread: opens the camera, says whether that worked, then keeps the newest
/// picture until stopped or the camera fails (a vanished device at once; other errors after
/// a second of them in a row).
fn capture(
    index: CameraIndex,
    ready: mpsc::SyncSender<Result<(), DeviceError>>,
    captured: Arc<Mutex<Captured>>,
    stop: Arc<AtomicBool>,
) {
    let kind = DeviceKind::Camera;
    let wanted = CameraFormat::new(
        Resolution::new(CAMERA_WIDTH, CAMERA_HEIGHT),
        FrameFormat::MJPEG,
        30,
    );
    let request =
        RequestedFormat::with_formats(RequestedFormatType::Closest(wanted), &CAMERA_FORMATS);
    let opened = nokhwa::Camera::new(index, request).and_then(|mut c| c.open_stream().map(|()| c));
    let mut camera = match opened {
        Ok(camera) => {
            let _ = ready.send(Ok(()));
            camera
        }
        Err(e) => {
            let _ = ready.send(Err(classify(kind, &e.to_string(), false)));
            return;
        }
    };
    let mut failures = 0;
    while !stop.load(Ordering::Relaxed) {
        match camera.frame() {
            Ok(buffer) => {
                failures = 0;
                let size = buffer.resolution();
                let picture = camera_picture(
                    buffer.source_frame_format(),
                    size.width(),
                    size.height(),
                    buffer.buffer(),
                );
                // A damaged frame is skipped.
                if let Ok(picture) = picture {
                    lock(&captured).latest = Some(picture);
                }
            }
            Err(e) => {
                let e = classify(kind, &e.to_string(), true);
                failures += 1;
                if matches!(e, DeviceError::Unplugged { .. }) || failures >= 30 {
                    lock(&captured).gone = Some(e);
                    break;
                }
                std::thread::sleep(Duration::from_millis(33));
            }
        }
    }
    let _ = camera.stop_stream();
}

// ------------------------------------------------------------------ sound (cpal)

/// ALSA names every card many times over (front:, surround51:, dmix:, hw:, …); the user
/// chooses among the system's default, the sound servers and each card's converting device.
/// `null` (discards, or records silence) is no device at all. Other hosts list devices once.
fn offered(id: &str) -> bool {
    match id.strip_prefix("alsa:") {
        Some(pcm) => {
            pcm == "default"
                || pcm == "pipewire"
                || pcm == "pulse"
                || pcm.starts_with("sysdefault:")
                || pcm.starts_with("plughw:")
        }
        None => true,
    }
}

fn audio_list(kind: DeviceKind) -> Result<Vec<(Device, cpal::Device)>, DeviceError> {
    let host = cpal::default_host();
    let found: Result<Vec<cpal::Device>, cpal::Error> = match kind {
        DeviceKind::Microphone => host.input_devices().map(Iterator::collect),
        DeviceKind::Speaker => host.output_devices().map(Iterator::collect),
        DeviceKind::Camera => Ok(Vec::new()),
    };
    let found = match found {
        Ok(found) => found,
        Err(e)
            if matches!(
                e.kind(),
                cpal::ErrorKind::HostUnavailable | cpal::ErrorKind::DeviceNotAvailable
            ) =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(audio_error(kind, &e, false)),
    };
    Ok(found
        .into_iter()
        .filter_map(|device| {
            let id = device.id().ok()?.to_string();
            if !offered(&id) {
                return None;
            }
            let name = device
                .description()
                .map(|d| d.name().to_owned())
                .unwrap_or_else(|_| id.clone());
            Some((Device { kind, id, name }, device))
        })
        .collect())
}

fn find_audio(kind: DeviceKind, id: &str) -> Result<cpal::Device, DeviceError> {
    audio_list(kind)?
        .into_iter()
        .find(|(d, _)| d.id == id)
        .map(|(_, device)| device)
        .ok_or(DeviceError::NotFound { kind })
}

/// 48 kHz when the device can (fewest channels, float first), else its default.
fn stream_config(
    device: &cpal::Device,
    kind: DeviceKind,
) -> Result<cpal::SupportedStreamConfig, cpal::Error> {
    use cpal::SampleFormat as F;
    let ranges: Vec<_> = if kind == DeviceKind::Microphone {
        device.supported_input_configs()?.collect()
    } else {
        device.supported_output_configs()?.collect()
    };
    let best = ranges
        .into_iter()
        .filter(|r| matches!(r.sample_format(), F::F32 | F::I16 | F::I32 | F::U16))
        .filter(|r| r.min_sample_rate() <= SAMPLE_RATE && r.max_sample_rate() >= SAMPLE_RATE)
        .min_by_key(|r| (r.channels(), r.sample_format() != F::F32));
    match best {
        Some(range) => Ok(range.with_sample_rate(SAMPLE_RATE)),
        None if kind == DeviceKind::Microphone => device.default_input_config(),
        None => device.default_output_config(),
    }
}

/// Sound between a device's callback and the call's thread, and whether the device failed.
#[derive(Default)]
struct Ring {
    samples: VecDeque<f32>,
    gone: Option<DeviceError>,
}

/// The error callback of a stream: a fatal error is kept for the call's thread to see.
fn on_stream_error(
    ring: Arc<Mutex<Ring>>,
    kind: DeviceKind,
) -> impl FnMut(cpal::Error) + Send + 'static {
    move |e| {
        if !harmless(&e) {
            let mut ring = lock(&ring);
            if ring.gone.is_none() {
                ring.gone = Some(audio_error(kind, &e, true));
            }
        }
    }
}

struct CpalMicrophone {
    _stream: cpal::Stream,
    ring: Arc<Mutex<Ring>>,
    voice: Option<Voice>,
}

impl SoundSource for CpalMicrophone {
    fn frame(&mut self) -> Result<Vec<i16>, DeviceError> {
        let mut pcm = {
            let mut ring = lock(&self.ring);
            if let Some(e) = ring.gone.take() {
                return Err(e);
            }
            // At most 100 ms wait: a microphone whose clock runs a little fast must not add
            // delay for ever.
            let excess = ring.samples.len().saturating_sub(5 * FRAME_SAMPLES);
            ring.samples.drain(..excess);
            let take = FRAME_SAMPLES.min(ring.samples.len());
            let mut pcm: Vec<i16> = ring.samples.drain(..take).map(to_i16).collect();
            pcm.resize(FRAME_SAMPLES, 0);
            pcm
        };
        if let Some(voice) = self.voice.as_mut() {
            voice.capture(&mut pcm);
        }
        Ok(pcm)
    }
}

/// Opens the microphone with this id: mono 48 kHz (downmixed and resampled when the device
/// cannot), cleaned by `voice` (echo cancellation and noise suppression) when given.
pub fn open_microphone(
    id: &str,
    voice: Option<Voice>,
) -> Result<Box<dyn SoundSource>, DeviceError> {
    let kind = DeviceKind::Microphone;
    let device = find_audio(kind, id)?;
    let supported = stream_config(&device, kind).map_err(|e| audio_error(kind, &e, false))?;
    let ring = Arc::new(Mutex::new(Ring::default()));
    let config = supported.config();
    let stream = match supported.sample_format() {
        cpal::SampleFormat::F32 => input_stream::<f32>(&device, config, &ring),
        cpal::SampleFormat::I16 => input_stream::<i16>(&device, config, &ring),
        cpal::SampleFormat::I32 => input_stream::<i32>(&device, config, &ring),
        cpal::SampleFormat::U16 => input_stream::<u16>(&device, config, &ring),
        other => Err(DeviceError::Failed {
            kind,
            detail: format!("it records only {other} samples"),
        }),
    }?;
    stream.play().map_err(|e| audio_error(kind, &e, false))?;
    Ok(Box::new(CpalMicrophone {
        _stream: stream,
        ring,
        voice,
    }))
}

fn input_stream<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    ring: &Arc<Mutex<Ring>>,
) -> Result<cpal::Stream, DeviceError>
where
    T: cpal::SizedSample,
    f32: cpal::FromSample<T>,
{
    let kind = DeviceKind::Microphone;
    let channels = usize::from(config.channels);
    let mut resampler = Resampler::new(config.sample_rate, SAMPLE_RATE);
    let mut out = Vec::new();
    let to_ring = ring.clone();
    device
        .build_input_stream::<T, _, _>(
            config,
            move |data: &[T], _| {
                let floats: Vec<f32> = data
                    .iter()
                    .map(|s| <f32 as cpal::FromSample<T>>::from_sample_(*s))
                    .collect();
                out.clear();
                resampler.process(&downmix(&floats, channels), &mut out);
                let mut ring = lock(&to_ring);
                ring.samples.extend(&out);
                let excess = ring.samples.len().saturating_sub(SAMPLE_RATE as usize / 5);
                ring.samples.drain(..excess);
            },
            on_stream_error(ring.clone(), kind),
            Some(Duration::from_secs(5)),
        )
        .map_err(|e| audio_error(kind, &e, false))
}

struct CpalSpeaker {
    _stream: cpal::Stream,
    ring: Arc<Mutex<Ring>>,
    resampler: Resampler,
    /// 200 ms at the device's rate: the most that waits to be played.
    cap: usize,
    voice: Option<Voice>,
}

impl SoundSink for CpalSpeaker {
    fn play(&mut self, pcm: &[i16]) -> Result<(), DeviceError> {
        if let Some(e) = lock(&self.ring).gone.take() {
            return Err(e);
        }
        // What is played is what the echo canceller must expect to hear back.
        if let Some(voice) = self.voice.as_mut() {
            voice.render(pcm);
        }
        let floats: Vec<f32> = pcm.iter().map(|s| f32::from(*s) / 32768.0).collect();
        let mut out = Vec::with_capacity(floats.len() * 2);
        self.resampler.process(&floats, &mut out);
        let mut ring = lock(&self.ring);
        ring.samples.extend(out);
        let excess = ring.samples.len().saturating_sub(self.cap);
        ring.samples.drain(..excess);
        Ok(())
    }
}

/// Opens the speaker with this id; what is played is given to `voice` as the echo reference.
pub fn open_speaker(id: &str, voice: Option<Voice>) -> Result<Box<dyn SoundSink>, DeviceError> {
    let kind = DeviceKind::Speaker;
    let device = find_audio(kind, id)?;
    let supported = stream_config(&device, kind).map_err(|e| audio_error(kind, &e, false))?;
    let ring = Arc::new(Mutex::new(Ring::default()));
    let config = supported.config();
    let rate = config.sample_rate;
    let stream = match supported.sample_format() {
        cpal::SampleFormat::F32 => output_stream::<f32>(&device, config, &ring),
        cpal::SampleFormat::I16 => output_stream::<i16>(&device, config, &ring),
        cpal::SampleFormat::I32 => output_stream::<i32>(&device, config, &ring),
        cpal::SampleFormat::U16 => output_stream::<u16>(&device, config, &ring),
        other => Err(DeviceError::Failed {
            kind,
            detail: format!("it plays only {other} samples"),
        }),
    }?;
    stream.play().map_err(|e| audio_error(kind, &e, false))?;
    Ok(Box::new(CpalSpeaker {
        _stream: stream,
        ring,
        resampler: Resampler::new(SAMPLE_RATE, rate),
        cap: rate as usize / 5,
        voice,
    }))
}

fn output_stream<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    ring: &Arc<Mutex<Ring>>,
) -> Result<cpal::Stream, DeviceError>
where
    T: cpal::SizedSample + cpal::FromSample<f32>,
{
    let kind = DeviceKind::Speaker;
    let channels = usize::from(config.channels).max(1);
    let from_ring = ring.clone();
    device
        .build_output_stream::<T, _, _>(
            config,
            move |data: &mut [T], _| {
                let mut ring = lock(&from_ring);
                for frame in data.chunks_mut(channels) {
                    // Nothing queued: silence.
                    let s = ring.samples.pop_front().unwrap_or(0.0);
                    frame.fill(T::from_sample_(s));
                }
            },
            on_stream_error(ring.clone(), kind),
            Some(Duration::from_secs(5)),
        )
        .map_err(|e| audio_error(kind, &e, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine (and CI) has no camera or sound card: an empty list is an answer, not an
    /// error. Where devices exist, each has a name and a distinct id.
    #[test]
    fn listing_answers_even_with_no_devices() {
        for kind in [
            DeviceKind::Camera,
            DeviceKind::Microphone,
            DeviceKind::Speaker,
        ] {
            let list = devices(kind).unwrap_or_else(|e| panic!("{kind}: {e}"));
            let mut ids: Vec<_> = list.iter().map(|d| d.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), list.len(), "{kind} ids repeat: {list:?}");
            assert!(list.iter().all(|d| d.kind == kind && !d.id.is_empty()));
        }
    }

    #[test]
    fn opening_an_absent_device_says_so_plainly() {
        let id = "no-such-device:hearth-test";
        let e = open_camera(id).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("That camera is not connected. Choose another camera.")
        );
        let e = open_microphone(id, None).err();
        assert_eq!(
            e,
            Some(DeviceError::NotFound {
                kind: DeviceKind::Microphone
            })
        );
        let e = open_speaker(id, None).err();
        assert_eq!(
            e,
            Some(DeviceError::NotFound {
                kind: DeviceKind::Speaker
            })
        );
        let e = MediaError::from(DeviceError::NotFound {
            kind: DeviceKind::Speaker,
        });
        assert_eq!(e.code(), "media_device_not_found");
    }

    #[test]
    fn the_messages_say_what_to_do() {
        let unplugged = |kind| DeviceError::Unplugged { kind }.to_string();
        assert_eq!(
            unplugged(DeviceKind::Camera),
            "Your camera was disconnected. Choose another camera or continue without video."
        );
        assert_eq!(
            unplugged(DeviceKind::Microphone),
            "Your microphone was disconnected. Choose another microphone; until then the \
             others cannot hear you."
        );
        assert_eq!(
            DeviceError::Busy {
                kind: DeviceKind::Camera
            }
            .to_string(),
            "Your camera is in use by another application. Close it there, or choose another camera."
        );
        assert_eq!(
            DeviceError::PermissionDenied {
                kind: DeviceKind::Microphone
            }
            .code(),
            "media_device_permission"
        );
    }

    #[test]
    fn system_errors_are_told_apart() {
        let cam = DeviceKind::Camera;
        let open = |t: &str| classify(cam, t, false);
        let running = |t: &str| classify(cam, t, true);
        assert_eq!(
            open("Could not open device stream: Device or resource busy (os error 16)"),
            DeviceError::Busy { kind: cam }
        );
        assert_eq!(
            open("Could not open device 0: Permission denied (os error 13)"),
            DeviceError::PermissionDenied { kind: cam }
        );
        assert_eq!(
            open("Could not open device 3: No such file or directory (os error 2)"),
            DeviceError::NotFound { kind: cam }
        );
        assert_eq!(
            running("Could not capture frame: No such device (os error 19)"),
            DeviceError::Unplugged { kind: cam }
        );
        assert!(matches!(
            running("Could not capture frame: Invalid argument (os error 22)"),
            DeviceError::Failed { .. }
        ));
        let mic = DeviceKind::Microphone;
        let gone = cpal::Error::new(cpal::ErrorKind::DeviceNotAvailable);
        assert_eq!(
            audio_error(mic, &gone, true),
            DeviceError::Unplugged { kind: mic }
        );
        assert_eq!(
            audio_error(mic, &gone, false),
            DeviceError::NotFound { kind: mic }
        );
        let busy = cpal::Error::new(cpal::ErrorKind::DeviceBusy);
        assert_eq!(
            audio_error(mic, &busy, false),
            DeviceError::Busy { kind: mic }
        );
        assert!(harmless(&cpal::Error::new(cpal::ErrorKind::Xrun)));
    }

    #[test]
    fn alsa_aliases_are_not_offered() {
        assert!(offered("alsa:default"));
        assert!(offered("alsa:plughw:CARD=PCH,DEV=0"));
        assert!(offered("alsa:sysdefault:CARD=PCH"));
        assert!(!offered("alsa:null"));
        assert!(!offered("alsa:surround51:CARD=PCH,DEV=0"));
        assert!(!offered("alsa:hw:CARD=PCH,DEV=0"));
        assert!(offered("wasapi:{0.0.1.00000000}.{abc}"));
    }

    /// A camera that gives two pictures, then is pulled out.
    struct Unplugging(u32);

    impl PictureSource for Unplugging {
        fn latest(&mut self, _: u64) -> Result<Option<I420>, DeviceError> {
            self.0 += 1;
            if self.0 > 2 {
                return Err(DeviceError::Unplugged {
                    kind: DeviceKind::Camera,
                });
            }
            Ok(Some(I420::grey(CAMERA_WIDTH, CAMERA_HEIGHT)))
        }
    }

    #[test]
    fn an_unplugged_device_is_reported_once_and_the_feed_carries_on_empty() {
        let mut feed: Feed<dyn PictureSource> = Feed::new(Some(Box::new(Unplugging(0))));
        let read = |feed: &mut Feed<dyn PictureSource>| match feed.poll(|c| c.latest(0)) {
            Polled::Got(p) => Polled::Got(p.map(|p| (p.width, p.height))),
            Polled::Idle => Polled::Idle,
            Polled::Lost(e) => Polled::Lost(e),
        };
        assert_eq!(read(&mut feed), Polled::Got(Some((640, 480))));
        assert_eq!(read(&mut feed), Polled::Got(Some((640, 480))));
        let Polled::Lost(e) = read(&mut feed) else {
            panic!("the unplug was not reported");
        };
        assert_eq!(
            e.to_string(),
            "Your camera was disconnected. Choose another camera or continue without video."
        );
        // Said once; then nothing, for as long as no other camera is chosen.
        assert_eq!(read(&mut feed), Polled::Idle);
        assert_eq!(read(&mut feed), Polled::Idle);
        // Another camera (here the synthetic one) chosen during the call.
        feed.replace(Box::new(Pattern::new(CAMERA_WIDTH, CAMERA_HEIGHT)));
        assert_eq!(read(&mut feed), Polled::Got(Some((640, 480))));
        let mut silent: Feed<dyn SoundSource> = Feed::new(None);
        assert_eq!(silent.poll(|m| m.frame()), Polled::Idle);
        silent.replace(Box::new(Tone::new(440.0, 0.3)));
        assert!(
            matches!(silent.poll(|m| m.frame()), Polled::Got(pcm) if pcm.len() == FRAME_SAMPLES)
        );
    }

    /// A picture with known colours through a real JPEG (mozjpeg, the library the camera path
    /// decodes with): left half red, right half blue, 64×48.
    #[test]
    fn an_mjpeg_frame_becomes_i420_at_640x480() {
        let (w, h) = (64usize, 48usize);
        let mut rgb = Vec::with_capacity(w * h * 3);
        for _ in 0..h {
            for x in 0..w {
                rgb.extend_from_slice(if x < w / 2 {
                    &[255, 0, 0]
                } else {
                    &[0, 0, 255]
                });
            }
        }
        let mut jpeg = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        jpeg.set_size(w, h);
        jpeg.set_quality(95.0);
        let mut started = jpeg
            .start_compress(Vec::new())
            .unwrap_or_else(|e| panic!("{e}"));
        started
            .write_scanlines(&rgb)
            .unwrap_or_else(|e| panic!("{e}"));
        let jpeg = started.finish().unwrap_or_else(|e| panic!("{e}"));
        let picture = camera_picture(FrameFormat::MJPEG, w as u32, h as u32, &jpeg)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((picture.width, picture.height), (640, 480));
        let y = picture.y();
        let (u0, v0) = (640 * 480, 640 * 480 + 320 * 240);
        // BT.601 limited range: red is Y 82 U 90 V 240; blue is Y 41 U 240 V 110 (JPEG is
        // lossy: a few steps of tolerance).
        let near = |got: u8, want: i32| (i32::from(got) - want).abs() <= 6;
        let (left, right) = (240 * 640 + 100, 240 * 640 + 540);
        assert!(
            near(y[left], 82) && near(y[right], 41),
            "Y {} {}",
            y[left],
            y[right]
        );
        let (cl, cr) = (120 * 320 + 50, 120 * 320 + 270);
        assert!(near(picture.data[u0 + cl], 90) && near(picture.data[v0 + cl], 240));
        assert!(near(picture.data[u0 + cr], 240) && near(picture.data[v0 + cr], 110));
        assert!(camera_picture(FrameFormat::MJPEG, 64, 48, b"not a jpeg").is_err());
    }

    #[test]
    fn raw_camera_formats_become_i420_at_640x480() {
        // Each format's values are checked in frame.rs; here the dispatch and the fit.
        let yuyv = [
            10, 100, 20, 200, 30, 110, 40, 210, //
            50, 120, 60, 220, 70, 130, 80, 230,
        ];
        let p = camera_picture(FrameFormat::YUYV, 4, 2, &yuyv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.width, p.height), (640, 480));
        let grey =
            camera_picture(FrameFormat::GRAY, 8, 6, &[77; 48]).unwrap_or_else(|e| panic!("{e}"));
        assert!(grey.y().iter().all(|v| *v == 77));
        assert!(grey.data[640 * 480..].iter().all(|v| *v == 128));
        let rgb = camera_picture(FrameFormat::RAWRGB, 4, 3, &[255u8; 36])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(rgb.y().iter().all(|v| *v == 235), "white is Y 235");
        assert!(camera_picture(FrameFormat::NV12, 640, 480, &[0; 10]).is_err());
    }
}
