//! The call engine: one connection to the visit service (`host` with media, or `join` with a
//! link), a full mesh of webrtc-rs peer connections to the other admitted participants, the
//! synthetic (or real) camera and microphone encoded once and sent to every peer, each peer's
//! video and audio decoded, the "chat" data channel, quality readings and the video ladder.
//!
//! Signaling follows the join page (`crates/visit-server/assets/join.js`, PROTOCOL.md): the
//! newcomer offers to everyone listed in `admitted`, the others answer; trickled candidates
//! wait until the remote description is set; a re-offer in the same SDP session (same `o=`
//! session id) is an ICE restart on the same connection; when both sides offered, the lower
//! participant id yields.

use crate::audio::{self, OpusDecoder, OpusEncoder, Tone};
use crate::devices::{
    self, DeviceError, DeviceKind, Feed, PictureSource, Polled, SoundSink, SoundSource,
};
use crate::frame::I420;
use crate::pattern::{self, Pattern};
use crate::quality::{Adapter, PathReading, Quality, LADDER};
use crate::sound::{Mixer, Voice};
use crate::vpx::{EncoderSettings, Vp8Decoder, Vp8Encoder};
use crate::MediaError;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hearth_visit_client::VisitClient;
use hearth_visit_protocol::{
    ClientMsg, ErrorCode, IceConfig, IcePolicy, Participant, Peer, Role, Secret, ServerMsg,
};
use rtc::media::io::sample_builder::SampleBuilder;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::Message;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceServer,
    RTCIceTransportPolicy, RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSdpType,
    RTCSessionDescription, RTCStatsReportEntry, Registry, SettingEngineBuilder, StatsSelector,
};
use webrtc::rtp_transceiver::RtpSender;

/// Where the camera picture comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoInput {
    /// The moving, self-stamping test pattern (CI and demo mode).
    Synthetic,
    /// A camera by its id ([`devices::cameras`]), brought to I420 640×480.
    Camera { id: String },
    /// No camera: the peers get no video from us.
    None,
}

/// Where the microphone sound comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioInput {
    /// A sine tone (CI and demo mode).
    Tone { hz: f32 },
    /// A microphone by its id ([`devices::microphones`]), mono 48 kHz through echo
    /// cancellation and noise suppression.
    Microphone { id: String },
    /// No microphone.
    None,
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct CallOptions {
    pub video: VideoInput,
    pub audio: AudioInput,
    /// The address the media sockets bind to: `127.0.0.1` for loopback tests, `0.0.0.0` for
    /// a workstation.
    pub bind: IpAddr,
    /// Start on this rung of [`LADDER`] (0 = 640×480@30).
    pub start_rung: usize,
    /// The speaker the peers are heard on, by id ([`devices::speakers`]); `None` plays
    /// nothing (tests).
    pub speaker: Option<String>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            video: VideoInput::Synthetic,
            audio: AudioInput::Tone { hz: 440.0 },
            bind: IpAddr::from([0, 0, 0, 0]),
            start_rung: 0,
            speaker: None,
        }
    }
}

/// How the engine enters the visit.
#[derive(Clone)]
pub enum Entry {
    /// As the clinician: `host` with the clinician's token for the service.
    Host {
        client: VisitClient,
        visit: String,
        name: Option<String>,
    },
    /// As the clinician of demo mode's simulated visit ([`crate::demo`]): no sign-in.
    HostDemo { ws_url: String, visit: String },
    /// As a patient or guest with a join link's token (the demo's simulated patient, tests).
    Join {
        /// The service's WebSocket address (`ws://…/v1/ws`).
        ws_url: String,
        token: Secret,
        name: String,
    },
}

/// The state of the media path to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    Connecting,
    Connected,
    /// Lost; ICE is restarting.
    Reconnecting,
    Failed,
}

/// What the engine tells the pane.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    Welcome {
        participant: String,
        role: Role,
    },
    Waiting,
    Admitted,
    Roster(Vec<Participant>),
    PeerJoined(Peer),
    PeerLeft(String),
    Link {
        peer: String,
        link: Link,
    },
    Chat {
        from: String,
        name: String,
        text: String,
    },
    Quality {
        peer: String,
        quality: Quality,
    },
    /// The video we send moved to this rung of [`LADDER`].
    Rung(usize),
    /// The service refused or cannot be reached; `fatal` when the call is over because of it.
    Trouble {
        code: Option<ErrorCode>,
        message: String,
        fatal: bool,
    },
    Removed,
    Ended,
    /// A camera, microphone or speaker failed during the call (unplugged); the call carries
    /// on without it until another is chosen.
    Device {
        kind: DeviceKind,
        message: String,
    },
}

/// A decoded picture from a peer (or `self` for the preview).
#[derive(Debug, Clone)]
pub struct VideoFrame {
    pub peer: String,
    pub frame: Arc<I420>,
    /// When it was decoded (ms since the Unix epoch).
    pub at_ms: u64,
}

/// What has arrived from one peer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerMedia {
    pub frames_decoded: u64,
    pub decode_errors: u64,
    pub key_frames: u64,
    pub plis_sent: u64,
    pub width: u32,
    pub height: u32,
    pub audio_frames: u64,
    /// Audio frames whose level was above silence (RMS > 0.01).
    pub audio_loud_frames: u64,
    pub last_rms: f32,
    /// The last stamp read from the peer's pattern, when it sends one.
    pub last_stamp: Option<pattern::Stamp>,
    /// Glass-to-glass latency of the last stamped frame (ms), when the clocks are shared.
    pub last_latency_ms: Option<u64>,
    pub quality: Option<Quality>,
    /// The last reading of the path from this peer.
    pub path: Option<PathReading>,
    pub link: Option<Link>,
    /// Set-up time of the current connection to this peer: ms from its first SDP offer, sent
    /// or received by us, to its first `Connected` (ICE and DTLS done). `None` until then;
    /// cleared when a new connection replaces it; an ICE restart does not change it.
    pub connected_ms: Option<u64>,
}

/// What we have sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SentMedia {
    pub frames_encoded: u64,
    pub key_frames: u64,
    pub plis_received: u64,
    pub audio_frames: u64,
    pub rung: usize,
}

enum Command {
    Admit(String),
    Remove(String),
    End,
    Leave,
    Chat(String),
}

/// Events from peer connections and their tasks to the engine.
enum PcEvent {
    Candidate(String, u64, RTCIceCandidateInit),
    State(String, u64, RTCPeerConnectionState),
    DataChannel(String, u64, Arc<dyn DataChannel>),
    Track(String, u64, Arc<dyn TrackRemote>),
    Chat(String, String),
}

/// A running call. Dropping it leaves the visit.
pub struct Call {
    has_video: bool,
    has_audio: bool,
    commands: mpsc::UnboundedSender<Command>,
    events: broadcast::Sender<CallEvent>,
    frames: broadcast::Sender<VideoFrame>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    received: Mutex<HashMap<String, PeerMedia>>,
    sent: Mutex<SentMedia>,
    outgoing: Mutex<HashMap<String, Outgoing>>,
    mic_muted: AtomicBool,
    camera_off: AtomicBool,
    force_key: AtomicBool,
    rung: AtomicUsize,
    stop: AtomicBool,
    frames: broadcast::Sender<VideoFrame>,
    encoded_bytes: AtomicU64,
    events: broadcast::Sender<CallEvent>,
    /// A camera or microphone chosen during the call, for its thread to take up.
    next_camera: Mutex<Option<Box<dyn PictureSource>>>,
    next_microphone: Mutex<Option<Box<dyn SoundSource>>>,
    /// The peers' decoded sound for the speaker; `None` when nothing is played.
    mixer: Option<Mixer>,
    /// Echo cancellation and noise suppression shared by the microphone and the speaker.
    voice: Option<Voice>,
}

#[derive(Clone)]
struct Outgoing {
    video: Option<Sending>,
    audio: Option<Sending>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Call {
    /// Connects to the service and starts the engine; events follow on [`Call::events`].
    pub async fn start(entry: Entry, options: CallOptions) -> Result<Self, MediaError> {
        let voice = match Voice::new() {
            Ok(voice) => Some(voice),
            Err(e) => {
                tracing::warn!("no echo cancellation: {e}");
                None
            }
        };
        // Devices first: one that cannot be opened is said before joining.
        let sources = open_sources(&options, voice.clone()).await?;
        let (ws_url, first) = match &entry {
            Entry::Host {
                client,
                visit,
                name,
            } => (
                client.ws_url().to_string(),
                ClientMsg::Host {
                    access_token: client.service_token().await.map_err(MediaError::Visit)?,
                    visit: visit.clone(),
                    media: true,
                    name: name.clone(),
                },
            ),
            Entry::HostDemo { ws_url, visit } => (
                ws_url.clone(),
                ClientMsg::Host {
                    access_token: Secret::new("demo"),
                    visit: visit.clone(),
                    media: true,
                    name: Some("You".into()),
                },
            ),
            Entry::Join {
                ws_url,
                token,
                name,
            } => (
                ws_url.clone(),
                ClientMsg::Join {
                    token: token.clone(),
                    name: name.clone(),
                    visit: None,
                },
            ),
        };
        let (socket, _) = tokio::time::timeout(
            Duration::from_secs(15),
            tokio_tungstenite::connect_async(ws_url.as_str()),
        )
        .await
        .map_err(|_| MediaError::Signaling("the visit service did not answer in 15 s".into()))?
        .map_err(|e| MediaError::Signaling(format!("the visit service cannot be reached: {e}")))?;
        let (events, _) = broadcast::channel(256);
        let (frames, _) = broadcast::channel(8);
        let shared = Arc::new(Shared {
            received: Mutex::new(HashMap::new()),
            sent: Mutex::new(SentMedia::default()),
            outgoing: Mutex::new(HashMap::new()),
            mic_muted: AtomicBool::new(false),
            camera_off: AtomicBool::new(false),
            force_key: AtomicBool::new(true),
            rung: AtomicUsize::new(options.start_rung.min(LADDER.len() - 1)),
            stop: AtomicBool::new(false),
            frames: frames.clone(),
            encoded_bytes: AtomicU64::new(0),
            events: events.clone(),
            next_camera: Mutex::new(None),
            next_microphone: Mutex::new(None),
            mixer: options.speaker.is_some().then(Mixer::default),
            voice,
        });
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (pc_tx, pc_rx) = mpsc::unbounded_channel();
        let (has_video, has_audio) = (sources.0.is_some(), sources.1.is_some());
        start_sources(sources, &shared);
        let engine = Engine {
            options,
            me: String::new(),
            ice: None,
            peers: HashMap::new(),
            names: HashMap::new(),
            generation: 0,
            events: events.clone(),
            shared: shared.clone(),
            pc_tx,
            adapter: Adapter::default(),
        };
        let task = tokio::spawn(engine.run(socket, first, commands_rx, pc_rx));
        Ok(Self {
            has_video,
            has_audio,
            commands,
            events,
            frames,
            shared,
            task,
        })
    }

    /// Everything the engine says from now on.
    pub fn events(&self) -> broadcast::Receiver<CallEvent> {
        self.events.subscribe()
    }

    /// Decoded frames of every peer and the local preview (`self`), newest first to go when a
    /// receiver lags (a pane paints the latest, never a backlog).
    pub fn frames(&self) -> broadcast::Receiver<VideoFrame> {
        self.frames.subscribe()
    }

    /// What has arrived from each peer so far.
    pub fn received(&self) -> HashMap<String, PeerMedia> {
        lock(&self.shared.received).clone()
    }

    pub fn sent(&self) -> SentMedia {
        let mut s = lock(&self.shared.sent).clone();
        s.rung = self.shared.rung.load(Ordering::Relaxed);
        s
    }

    pub fn admit(&self, participant: &str) {
        let _ = self.commands.send(Command::Admit(participant.to_owned()));
    }

    pub fn remove(&self, participant: &str) {
        let _ = self.commands.send(Command::Remove(participant.to_owned()));
    }

    /// Ends the visit for everyone (clinician only).
    pub fn end(&self) {
        let _ = self.commands.send(Command::End);
    }

    /// Leaves the visit (the others carry on).
    pub fn leave(&self) {
        let _ = self.commands.send(Command::Leave);
    }

    /// Sends a chat line to every connected peer (the join page's `{"text": …}`).
    pub fn chat(&self, text: &str) {
        let _ = self.commands.send(Command::Chat(text.to_owned()));
    }

    pub fn set_mic_muted(&self, muted: bool) {
        self.shared.mic_muted.store(muted, Ordering::Relaxed);
    }

    pub fn set_camera_off(&self, off: bool) {
        self.shared.camera_off.store(off, Ordering::Relaxed);
    }

    pub fn mic_muted(&self) -> bool {
        self.shared.mic_muted.load(Ordering::Relaxed)
    }

    pub fn camera_off(&self) -> bool {
        self.shared.camera_off.load(Ordering::Relaxed)
    }

    /// Sends another camera's picture from now on (the old camera is closed). The call must
    /// have started with video.
    pub async fn switch_camera(&self, id: &str) -> Result<(), MediaError> {
        if !self.has_video {
            return Err(DeviceError::NotInCall {
                kind: DeviceKind::Camera,
            }
            .into());
        }
        let id = id.to_owned();
        let camera = open_blocking(DeviceKind::Camera, move || devices::open_camera(&id)).await?;
        *lock(&self.shared.next_camera) = Some(camera);
        Ok(())
    }

    /// Sends another microphone's sound from now on. The call must have started with audio.
    pub async fn switch_microphone(&self, id: &str) -> Result<(), MediaError> {
        if !self.has_audio {
            return Err(DeviceError::NotInCall {
                kind: DeviceKind::Microphone,
            }
            .into());
        }
        let (id, voice) = (id.to_owned(), self.shared.voice.clone());
        let microphone = open_blocking(DeviceKind::Microphone, move || {
            devices::open_microphone(&id, voice)
        })
        .await?;
        *lock(&self.shared.next_microphone) = Some(microphone);
        Ok(())
    }

    /// Whether the engine is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Leave);
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------ sources

/// The camera, microphone and speaker of a call (`None`: not used).
type Sources = (
    Option<Box<dyn PictureSource>>,
    Option<Box<dyn SoundSource>>,
    Option<Box<dyn SoundSink>>,
);

/// Opening a device blocks (a camera takes a moment to start): off the runtime's threads.
async fn open_blocking<T: Send + 'static>(
    kind: DeviceKind,
    open: impl FnOnce() -> Result<T, DeviceError> + Send + 'static,
) -> Result<T, DeviceError> {
    tokio::task::spawn_blocking(open).await.unwrap_or_else(|e| {
        Err(DeviceError::Failed {
            kind,
            detail: e.to_string(),
        })
    })
}

async fn open_sources(options: &CallOptions, voice: Option<Voice>) -> Result<Sources, MediaError> {
    let camera: Option<Box<dyn PictureSource>> = match &options.video {
        VideoInput::Synthetic => Some(Box::new(Pattern::new(LADDER[0].width, LADDER[0].height))),
        VideoInput::Camera { id } => {
            let id = id.clone();
            Some(open_blocking(DeviceKind::Camera, move || devices::open_camera(&id)).await?)
        }
        VideoInput::None => None,
    };
    let microphone: Option<Box<dyn SoundSource>> = match &options.audio {
        AudioInput::Tone { hz } => Some(Box::new(Tone::new(*hz, 0.3))),
        AudioInput::Microphone { id } => {
            let (id, voice) = (id.clone(), voice.clone());
            Some(
                open_blocking(DeviceKind::Microphone, move || {
                    devices::open_microphone(&id, voice)
                })
                .await?,
            )
        }
        AudioInput::None => None,
    };
    let speaker = match options.speaker.clone() {
        Some(id) => Some(
            open_blocking(DeviceKind::Speaker, move || {
                devices::open_speaker(&id, voice)
            })
            .await?,
        ),
        None => None,
    };
    Ok((camera, microphone, speaker))
}

impl Shared {
    /// A device failed during the call: said once, the call carries on without it.
    fn device_lost(&self, e: &DeviceError) {
        tracing::warn!("{e}");
        let _ = self.events.send(CallEvent::Device {
            kind: e.kind(),
            message: e.to_string(),
        });
    }
}

/// Starts the camera and microphone threads (each makes a frame on time, encodes it once and
/// hands it to every peer's track) and the speaker's.
fn start_sources((camera, microphone, speaker): Sources, shared: &Arc<Shared>) {
    let runtime = tokio::runtime::Handle::current();
    if let Some(camera) = camera {
        let shared = shared.clone();
        let rt = runtime.clone();
        let _ = std::thread::Builder::new()
            .name("hearth-camera".into())
            .spawn(move || video_loop(shared, rt, Feed::new(Some(camera))));
    }
    if let Some(microphone) = microphone {
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("hearth-microphone".into())
            .spawn(move || audio_loop(shared, runtime, Feed::new(Some(microphone))));
    }
    if let Some(speaker) = speaker {
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("hearth-speaker".into())
            .spawn(move || speaker_loop(shared, Feed::new(Some(speaker))));
    }
}

fn video_loop(
    shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
    mut camera: Feed<dyn PictureSource>,
) {
    let mut encoder: Option<Vp8Encoder> = None;
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let rung = LADDER[shared.rung.load(Ordering::Relaxed).min(LADDER.len() - 1)];
        let period = Duration::from_micros(1_000_000 / u64::from(rung.fps.max(1)));
        pace(&mut next, period);
        let sent_ms = now_ms();
        if let Some(other) = lock(&shared.next_camera).take() {
            camera.replace(other);
        }
        let full = match camera.poll(|c| c.latest(sent_ms)) {
            Polled::Got(Some(picture)) => picture,
            Polled::Got(None) | Polled::Idle => continue,
            Polled::Lost(e) => {
                shared.device_lost(&e);
                continue;
            }
        };
        let _ = shared.frames.send(VideoFrame {
            peer: "self".into(),
            frame: Arc::new(full.clone()),
            at_ms: sent_ms,
        });
        if shared.camera_off.load(Ordering::Relaxed) {
            continue;
        }
        let wanted = EncoderSettings {
            width: rung.width,
            height: rung.height,
            fps: rung.fps,
            kbps: rung.kbps,
        };
        if encoder.as_ref().map(Vp8Encoder::settings) != Some(wanted) {
            encoder = Vp8Encoder::new(wanted).ok();
            shared.force_key.store(true, Ordering::Relaxed);
        }
        let Some(enc) = encoder.as_mut() else {
            continue;
        };
        let frame = full.scaled(rung.width, rung.height);
        let key = shared.force_key.swap(false, Ordering::Relaxed);
        let Ok(packets) = enc.encode(&frame, sent_ms as i64, key) else {
            continue;
        };
        for packet in packets {
            {
                let mut sent = lock(&shared.sent);
                sent.frames_encoded += 1;
                sent.key_frames += u64::from(packet.key);
            }
            shared
                .encoded_bytes
                .fetch_add(packet.data.len() as u64, Ordering::Relaxed);
            send_to_peers(
                &shared,
                &rt,
                |o| o.video.clone(),
                Bytes::from(packet.data),
                period,
            );
        }
    }
}

/// Waits for the next tick of a source `period` apart (a late tick restarts the count:
/// never a burst to catch up).
fn pace(next: &mut Instant, period: Duration) {
    *next += period;
    let now = Instant::now();
    if *next > now {
        std::thread::sleep(*next - now);
    } else {
        *next = now;
    }
}

type Sending = (Arc<TrackLocalStaticSample>, u32, Option<u8>);

/// One encoded frame (or audio packet) to every connected peer's track of its kind.
fn send_to_peers(
    shared: &Shared,
    rt: &tokio::runtime::Handle,
    track_of: impl Fn(&Outgoing) -> Option<Sending>,
    data: Bytes,
    period: Duration,
) {
    let targets: Vec<_> = lock(&shared.outgoing)
        .values()
        .filter_map(track_of)
        .collect();
    rt.block_on(async {
        // A peer whose payload type is not negotiated yet gets nothing.
        for (track, ssrc, pt) in targets {
            if let Some(pt) = pt {
                let sample = Sample {
                    data: data.clone(),
                    duration: period,
                    ..Sample::new(Instant::now())
                };
                let _ = track.write_sample(ssrc, pt, &sample, &[]).await;
            }
        }
    });
}

fn audio_loop(
    shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
    mut microphone: Feed<dyn SoundSource>,
) {
    let Ok(mut encoder) = OpusEncoder::new() else {
        return;
    };
    let period = Duration::from_millis(20);
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        pace(&mut next, period);
        if let Some(other) = lock(&shared.next_microphone).take() {
            microphone.replace(other);
        }
        let mut pcm = match microphone.poll(|m| m.frame()) {
            Polled::Got(pcm) => pcm,
            Polled::Idle => vec![0; audio::FRAME_SAMPLES],
            Polled::Lost(e) => {
                shared.device_lost(&e);
                vec![0; audio::FRAME_SAMPLES]
            }
        };
        if shared.mic_muted.load(Ordering::Relaxed) {
            pcm.fill(0);
        }
        let Ok(packet) = encoder.encode(&pcm) else {
            continue;
        };
        lock(&shared.sent).audio_frames += 1;
        send_to_peers(
            &shared,
            &rt,
            |o| o.audio.clone(),
            Bytes::from(packet),
            period,
        );
    }
}

/// Every 20 ms, the peers' mix to the speaker (which hands it to the echo canceller).
fn speaker_loop(shared: Arc<Shared>, mut speaker: Feed<dyn SoundSink>) {
    let Some(mixer) = shared.mixer.as_ref() else {
        return;
    };
    let period = Duration::from_millis(20);
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        pace(&mut next, period);
        let pcm = mixer.pull(audio::FRAME_SAMPLES);
        if let Polled::Lost(e) = speaker.poll(|s| s.play(&pcm)) {
            shared.device_lost(&e);
        }
    }
}

// ------------------------------------------------------------------ the engine

/// Remote ICE candidates taken per connection (and per ICE restart).
const MAX_CANDIDATES: u32 = 64;

struct PeerConn {
    /// Remote candidates taken so far.
    candidates: u32,
    /// Remote tracks being received (one video and one audio at most).
    tracks: (bool, bool),
    pc: Arc<dyn PeerConnection>,
    generation: u64,
    offerer: bool,
    pending: Vec<RTCIceCandidateInit>,
    remote_set: bool,
    channel: Option<Arc<dyn DataChannel>>,
    video_sender: Option<Arc<dyn RtpSender>>,
    audio_sender: Option<Arc<dyn RtpSender>>,
    link: Link,
    lost_since: Option<Instant>,
    last_pli_count: u32,
    /// Cumulative (lost, received) packets of each incoming stream at the last reading.
    last_counts: HashMap<u32, (i64, u64)>,
    smoothed_loss: Option<f64>,
    /// When this connection's first offer went out or came in; taken at its first Connected
    /// (-> `PeerMedia::connected_ms`).
    sdp_at: Option<Instant>,
}

struct Engine {
    options: CallOptions,
    me: String,
    ice: Option<IceConfig>,
    peers: HashMap<String, PeerConn>,
    names: HashMap<String, String>,
    generation: u64,
    events: broadcast::Sender<CallEvent>,
    shared: Arc<Shared>,
    pc_tx: mpsc::UnboundedSender<PcEvent>,
    adapter: Adapter,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send_msg(socket: &mut Socket, msg: &ClientMsg) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

/// The session id of an SDP (`o=` line): the same for every offer of one connection.
fn session_id(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("o="))
        .and_then(|o| o.split_whitespace().nth(1))
}

impl Engine {
    fn emit(&self, event: CallEvent) {
        let _ = self.events.send(event);
    }

    async fn run(
        mut self,
        mut socket: Socket,
        first: ClientMsg,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut pc_rx: mpsc::UnboundedReceiver<PcEvent>,
    ) {
        if !send_msg(&mut socket, &first).await {
            self.emit(CallEvent::Trouble {
                code: None,
                message: "the visit service closed the connection".into(),
                fatal: true,
            });
            return self.shutdown().await;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ping_id = 0u64;
        let mut since_ping = 0u32;
        loop {
            tokio::select! {
                incoming = socket.next() => {
                    let text = match incoming {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            self.emit(CallEvent::Trouble {
                                code: None,
                                message: "the connection to the visit service dropped".into(),
                                fatal: true,
                            });
                            break;
                        }
                        Some(Ok(_)) => continue,
                    };
                    let Ok(msg) = serde_json::from_str::<ServerMsg>(&text) else { continue };
                    if !self.on_server(&mut socket, msg).await {
                        break;
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    let msg = match command {
                        Command::Admit(p) => ClientMsg::Admit { participant: p },
                        Command::Remove(p) => ClientMsg::Remove { participant: p },
                        Command::End => ClientMsg::End,
                        Command::Leave => {
                            let _ = send_msg(&mut socket, &ClientMsg::Leave).await;
                            break;
                        }
                        Command::Chat(text) => {
                            self.send_chat(&text).await;
                            continue;
                        }
                    };
                    if !send_msg(&mut socket, &msg).await {
                        break;
                    }
                }
                event = pc_rx.recv() => {
                    let Some(event) = event else { break };
                    self.on_pc(&mut socket, event).await;
                }
                _ = tick.tick() => {
                    self.read_stats(&mut socket).await;
                    since_ping += 1;
                    if since_ping >= 20 {
                        since_ping = 0;
                        ping_id += 1;
                        if !send_msg(&mut socket, &ClientMsg::Ping { id: ping_id }).await {
                            break;
                        }
                    }
                }
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        lock(&self.shared.outgoing).clear();
        for (_, peer) in self.peers.drain() {
            let _ = peer.pc.close().await;
        }
    }

    /// Handles one message of the service; false when the call is over.
    async fn on_server(&mut self, socket: &mut Socket, msg: ServerMsg) -> bool {
        match msg {
            ServerMsg::Welcome {
                participant,
                role,
                ice,
                ..
            } => {
                self.me = participant.clone();
                self.ice = Some(ice);
                self.emit(CallEvent::Welcome { participant, role });
            }
            ServerMsg::Waiting => self.emit(CallEvent::Waiting),
            ServerMsg::Admitted { peers, ice } => {
                if ice.is_some() {
                    self.ice = ice;
                }
                self.emit(CallEvent::Admitted);
                for peer in peers {
                    self.names.insert(peer.id.clone(), peer.name.clone());
                    self.emit(CallEvent::PeerJoined(peer.clone()));
                    if let Err(e) = self.offer_to(socket, &peer.id, false).await {
                        self.trouble_with(&peer.id, &e);
                    }
                }
            }
            ServerMsg::PeerJoined { peer } => {
                self.names.insert(peer.id.clone(), peer.name.clone());
                self.drop_peer(&peer.id).await;
                self.emit(CallEvent::PeerJoined(peer));
            }
            ServerMsg::PeerLeft { peer } => {
                self.drop_peer(&peer).await;
                self.emit(CallEvent::PeerLeft(peer));
            }
            ServerMsg::Signal { from, data } => {
                if let Err(e) = self.on_signal(socket, &from, data).await {
                    self.trouble_with(&from, &e);
                }
            }
            ServerMsg::Roster { participants, .. } => self.emit(CallEvent::Roster(participants)),
            ServerMsg::Removed => {
                self.emit(CallEvent::Removed);
                return false;
            }
            ServerMsg::Ended => {
                self.emit(CallEvent::Ended);
                return false;
            }
            ServerMsg::Pong { .. } => {}
            ServerMsg::Error(body) => {
                let fatal = matches!(
                    body.code,
                    ErrorCode::Unauthorized
                        | ErrorCode::NotOnAppointment
                        | ErrorCode::VisitOver
                        | ErrorCode::LinkInvalid
                        | ErrorCode::LinkExpired
                        | ErrorCode::LinkNotYet
                        | ErrorCode::WrongVisit
                        | ErrorCode::VisitFull
                        | ErrorCode::RateLimited
                        | ErrorCode::EhrUnavailable
                        | ErrorCode::NotJoined
                ) && self.me.is_empty();
                self.emit(CallEvent::Trouble {
                    code: Some(body.code),
                    message: body.message,
                    fatal,
                });
                if fatal {
                    return false;
                }
            }
        }
        true
    }

    fn trouble_with(&self, peer: &str, e: &MediaError) {
        tracing::warn!(error = %e, "media: connection trouble with a peer");
        self.emit(CallEvent::Link {
            peer: peer.to_owned(),
            link: Link::Failed,
        });
    }

    fn ice_config(&self) -> (Vec<RTCIceServer>, RTCIceTransportPolicy) {
        let Some(ice) = &self.ice else {
            return (Vec::new(), RTCIceTransportPolicy::All);
        };
        let servers = ice
            .servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s
                    .credential
                    .as_ref()
                    .map(|c| c.expose().to_owned())
                    .unwrap_or_default(),
            })
            .collect();
        let policy = match ice.transport_policy {
            IcePolicy::Relay => RTCIceTransportPolicy::Relay,
            IcePolicy::All => RTCIceTransportPolicy::All,
        };
        (servers, policy)
    }

    async fn new_connection(&mut self, peer: &str, offerer: bool) -> Result<(), MediaError> {
        self.drop_peer(peer).await;
        self.generation += 1;
        let generation = self.generation;
        let mut media = MediaEngine::default();
        register_codecs(&mut media)?;
        let registry =
            register_default_interceptors(Registry::new(), &mut media).map_err(rtc_err)?;
        let loopback = self.options.bind.is_loopback();
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(loopback)
            // Set-up time (benches/call.rs). webrtc-rs 0.21.1's driver is not woken by
            // add_ice_candidate, and the DTLS client's first flight waits in its queue until
            // the next timer: both go out on the ICE agent's next tick, so the tick is 50 ms
            // instead of 200 (28 attempts keep its 1.4 s per pair). A pair whose remote was
            // learnt from its own check (peer-reflexive: the check beat the candidate trickled
            // over signaling) is a path the peer has just used: nominated at once, not after 1 s.
            .with_ice_connection_attempts(Some(Duration::from_millis(50)), Some(28))
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            .build();
        let (servers, policy) = self.ice_config();
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(servers)
            .with_ice_transport_policy(policy)
            .build();
        let handler = Arc::new(Handler {
            peer: peer.to_owned(),
            generation,
            tx: self.pc_tx.clone(),
        });
        let runtime = webrtc::runtime::default_runtime()
            .ok_or_else(|| MediaError::Rtc("no async runtime for webrtc".into()))?;
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(handler)
            .with_runtime(runtime)
            .with_udp_addrs(vec![format!("{}:0", self.options.bind)])
            .build()
            .await
            .map_err(rtc_err)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        self.peers.insert(
            peer.to_owned(),
            PeerConn {
                candidates: 0,
                tracks: (false, false),
                pc,
                generation,
                offerer,
                pending: Vec::new(),
                remote_set: false,
                channel: None,
                video_sender: None,
                audio_sender: None,
                link: Link::Connecting,
                lost_since: None,
                last_pli_count: 0,
                last_counts: HashMap::new(),
                smoothed_loss: None,
                sdp_at: None,
            },
        );
        {
            let mut received = lock(&self.shared.received);
            let m = received.entry(peer.to_owned()).or_default();
            m.link = Some(Link::Connecting);
            m.connected_ms = None;
        }
        self.emit(CallEvent::Link {
            peer: peer.to_owned(),
            link: Link::Connecting,
        });
        Ok(())
    }

    /// Our camera and microphone tracks on a connection.
    async fn add_tracks(&mut self, peer: &str) -> Result<(), MediaError> {
        let Some(conn) = self.peers.get_mut(peer) else {
            return Ok(());
        };
        let mut out = Outgoing {
            video: None,
            audio: None,
        };
        if self.options.video != VideoInput::None {
            let (track, ssrc, sender) =
                add_local(&conn.pc, RtpCodecKind::Video, vp8_codec().rtp_codec).await?;
            conn.video_sender = Some(sender);
            out.video = Some((track, ssrc, None));
        }
        if self.options.audio != AudioInput::None {
            let (track, ssrc, sender) =
                add_local(&conn.pc, RtpCodecKind::Audio, opus_codec().rtp_codec).await?;
            conn.audio_sender = Some(sender);
            out.audio = Some((track, ssrc, None));
        }
        lock(&self.shared.outgoing).insert(peer.to_owned(), out);
        Ok(())
    }

    async fn offer_to(
        &mut self,
        socket: &mut Socket,
        peer: &str,
        restart: bool,
    ) -> Result<(), MediaError> {
        if !restart {
            self.new_connection(peer, true).await?;
            self.add_tracks(peer).await?;
            let Some(conn) = self.peers.get_mut(peer) else {
                return Ok(());
            };
            let channel = conn
                .pc
                .create_data_channel("chat", None)
                .await
                .map_err(rtc_err)?;
            conn.channel = Some(channel.clone());
            spawn_channel(peer.to_owned(), channel, self.pc_tx.clone());
        }
        let Some(conn) = self.peers.get_mut(peer) else {
            return Ok(());
        };
        if restart {
            conn.pc.restart_ice().await.map_err(rtc_err)?;
        }
        conn.candidates = 0;
        let offer = conn.pc.create_offer(None).await.map_err(rtc_err)?;
        conn.pc
            .set_local_description(offer.clone())
            .await
            .map_err(rtc_err)?;
        if !restart {
            conn.sdp_at.get_or_insert_with(Instant::now);
        }
        self.send_sdp(socket, peer, &offer).await;
        Ok(())
    }

    async fn send_sdp(&self, socket: &mut Socket, peer: &str, desc: &RTCSessionDescription) {
        let kind = match desc.sdp_type {
            RTCSdpType::Offer => "offer",
            _ => "answer",
        };
        let data = serde_json::json!({ "sdp": { "type": kind, "sdp": desc.sdp } });
        let _ = send_msg(
            socket,
            &ClientMsg::Signal {
                to: peer.to_owned(),
                data,
            },
        )
        .await;
    }

    async fn on_signal(
        &mut self,
        socket: &mut Socket,
        from: &str,
        data: serde_json::Value,
    ) -> Result<(), MediaError> {
        let arrived = Instant::now();
        if let Some(sdp) = data.get("sdp") {
            let kind = sdp.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let text = sdp
                .get("sdp")
                .and_then(|t| t.as_str())
                .unwrap_or("")
                .to_owned();
            if kind == "offer" {
                let mut fresh = match self.peers.get(from) {
                    None => true,
                    Some(conn) => match conn.pc.remote_description().await {
                        Some(remote) => session_id(&remote.sdp) != session_id(&text),
                        None => !conn.offerer,
                    },
                };
                if let Some(conn) = self.peers.get(from) {
                    if !fresh && conn.offerer && !conn.remote_set {
                        // Both offered: the lower participant id yields (as the join page).
                        if self.me.as_str() < from {
                            fresh = true;
                        } else {
                            return Ok(());
                        }
                    }
                }
                if fresh {
                    self.new_connection(from, false).await?;
                    if let Some(conn) = self.peers.get_mut(from) {
                        conn.sdp_at = Some(arrived);
                    }
                }
                let offer = RTCSessionDescription::offer(text).map_err(rtc_err)?;
                let Some(conn) = self.peers.get(from) else {
                    return Ok(());
                };
                conn.pc
                    .set_remote_description(offer)
                    .await
                    .map_err(rtc_err)?;
                if fresh {
                    self.add_tracks(from).await?;
                }
                self.flush_candidates(from).await;
                let Some(conn) = self.peers.get(from) else {
                    return Ok(());
                };
                let answer = conn.pc.create_answer(None).await.map_err(rtc_err)?;
                conn.pc
                    .set_local_description(answer.clone())
                    .await
                    .map_err(rtc_err)?;
                self.send_sdp(socket, from, &answer).await;
            } else if kind == "answer" {
                let Some(conn) = self.peers.get(from) else {
                    return Ok(());
                };
                let answer = RTCSessionDescription::answer(text).map_err(rtc_err)?;
                conn.pc
                    .set_remote_description(answer)
                    .await
                    .map_err(rtc_err)?;
                self.flush_candidates(from).await;
            }
        } else if let Some(candidate) = data.get("candidate") {
            let Ok(init) = serde_json::from_value::<RTCIceCandidateInit>(candidate.clone()) else {
                return Ok(());
            };
            if init.candidate.is_empty() {
                return Ok(());
            }
            let Some(conn) = self.peers.get_mut(from) else {
                return Ok(());
            };
            // A peer gathers a handful of candidates; a flood would make us probe whatever
            // addresses it names. At most MAX_CANDIDATES per connection.
            conn.candidates += 1;
            if conn.candidates > MAX_CANDIDATES {
                return Ok(());
            }
            if conn.remote_set {
                let _ = conn.pc.add_ice_candidate(init).await;
            } else {
                conn.pending.push(init);
            }
        }
        Ok(())
    }

    async fn flush_candidates(&mut self, peer: &str) {
        let Some(conn) = self.peers.get_mut(peer) else {
            return;
        };
        conn.remote_set = true;
        for c in std::mem::take(&mut conn.pending) {
            let _ = conn.pc.add_ice_candidate(c).await;
        }
    }

    async fn drop_peer(&mut self, peer: &str) {
        lock(&self.shared.outgoing).remove(peer);
        if let Some(conn) = self.peers.remove(peer) {
            let _ = conn.pc.close().await;
        }
    }

    async fn on_pc(&mut self, socket: &mut Socket, event: PcEvent) {
        match event {
            PcEvent::Candidate(peer, generation, init) => {
                if self.peers.get(&peer).map(|c| c.generation) == Some(generation) {
                    if let Ok(candidate) = serde_json::to_value(&init) {
                        let _ = send_msg(
                            socket,
                            &ClientMsg::Signal {
                                to: peer,
                                data: serde_json::json!({ "candidate": candidate }),
                            },
                        )
                        .await;
                    }
                }
            }
            PcEvent::State(peer, generation, state) => {
                let Some(conn) = self.peers.get_mut(&peer) else {
                    return;
                };
                if conn.generation != generation {
                    return;
                }
                let link = match state {
                    RTCPeerConnectionState::Connected => Link::Connected,
                    RTCPeerConnectionState::Disconnected => Link::Reconnecting,
                    RTCPeerConnectionState::Failed => Link::Reconnecting,
                    RTCPeerConnectionState::Closed => Link::Failed,
                    _ => conn.link,
                };
                if link == Link::Connected {
                    if let Some(at) = conn.sdp_at.take() {
                        lock(&self.shared.received)
                            .entry(peer.clone())
                            .or_default()
                            .connected_ms = Some(at.elapsed().as_millis() as u64);
                    }
                    conn.lost_since = None;
                    resolve_payload_types(&peer, conn, &self.shared).await;
                    self.shared.force_key.store(true, Ordering::Relaxed);
                } else if link == Link::Reconnecting && conn.lost_since.is_none() {
                    conn.lost_since = Some(Instant::now());
                }
                let restart = state == RTCPeerConnectionState::Failed && conn.offerer;
                if link != conn.link {
                    conn.link = link;
                    lock(&self.shared.received)
                        .entry(peer.clone())
                        .or_default()
                        .link = Some(link);
                    self.emit(CallEvent::Link {
                        peer: peer.clone(),
                        link,
                    });
                }
                if restart {
                    // The offering side restarts ICE (RFC 8445 §9; the join page does the same).
                    if let Err(e) = self.offer_to(socket, &peer, true).await {
                        self.trouble_with(&peer, &e);
                    }
                }
            }
            PcEvent::DataChannel(peer, generation, channel) => {
                let Some(conn) = self.peers.get_mut(&peer) else {
                    return;
                };
                if conn.generation == generation {
                    conn.channel = Some(channel.clone());
                    spawn_channel(peer, channel, self.pc_tx.clone());
                }
            }
            PcEvent::Track(peer, generation, track) => {
                let Some(conn) = self.peers.get_mut(&peer) else {
                    return;
                };
                if conn.generation != generation {
                    return;
                }
                // One camera and one microphone per peer: further tracks (a renegotiating
                // peer adding m-lines) are not decoded.
                let video = track.kind().await == RtpCodecKind::Video;
                let slot = if video {
                    &mut conn.tracks.0
                } else {
                    &mut conn.tracks.1
                };
                if !*slot {
                    *slot = true;
                    tokio::spawn(receive(peer, track, self.shared.clone()));
                }
            }
            PcEvent::Chat(peer, text) => {
                let name = self.names.get(&peer).cloned().unwrap_or_default();
                self.emit(CallEvent::Chat {
                    from: peer,
                    name,
                    text,
                });
            }
        }
    }

    async fn send_chat(&self, text: &str) {
        let text: String = text.trim().chars().take(2000).collect();
        if text.is_empty() {
            return;
        }
        let payload = serde_json::json!({ "text": text }).to_string();
        for conn in self.peers.values() {
            if let Some(channel) = &conn.channel {
                let _ = channel.send_text(&payload).await;
            }
        }
    }

    /// Once a second: each connection's RTCP-fed statistics → quality, PLIs → key frames,
    /// the worst path → the video ladder.
    async fn read_stats(&mut self, socket: &mut Socket) {
        let mut worst = Quality::Unknown;
        let mut restart = Vec::new();
        for (peer, conn) in self.peers.iter_mut() {
            let report = conn.pc.get_stats(Instant::now(), StatsSelector::None).await;
            // The path from the peer: loss from what our receivers counted (RFC 3550 §6.4.1's
            // cumulative lost against received, as a delta over the last second; audio has no
            // retransmission, so it shows the path's loss as it is), RTT from the ICE
            // consent checks on the selected pair (RFC 7675). webrtc-rs 0.21 leaves the
            // remote-inbound (receiver report) statistics empty, so the sender's view is not
            // available here.
            let (mut worst_loss, mut rtt, mut plis) = (None::<f64>, None, 0u32);
            for entry in report.iter() {
                match entry {
                    RTCStatsReportEntry::InboundRtp(i) => {
                        let r = &i.received_rtp_stream_stats;
                        let counts = (r.packets_lost.max(0), r.packets_received);
                        let ssrc = r.rtp_stream_stats.ssrc;
                        let (last_lost, last_got) =
                            conn.last_counts.insert(ssrc, counts).unwrap_or((0, 0));
                        let d_lost = (counts.0 - last_lost).max(0) as f64;
                        let d_got = counts.1.saturating_sub(last_got) as f64;
                        if d_lost + d_got > 0.0 {
                            let loss = d_lost / (d_lost + d_got);
                            worst_loss = Some(worst_loss.map_or(loss, |w| w.max(loss)));
                        }
                    }
                    RTCStatsReportEntry::IceCandidatePair(p)
                        if p.nominated && p.current_round_trip_time > 0.0 =>
                    {
                        rtt = Some(p.current_round_trip_time);
                    }
                    RTCStatsReportEntry::OutboundRtp(o)
                        if o.sent_rtp_stream_stats.rtp_stream_stats.kind == RtpCodecKind::Video =>
                    {
                        plis += o.pli_count;
                    }
                    _ => {}
                }
            }
            // Smoothed (EWMA, weight 0.3 to the new second): one unlucky second of a steady
            // path neither flips the indicator nor moves the ladder.
            let reading = worst_loss.map(|loss| {
                let smooth = conn.smoothed_loss.map_or(loss, |s| 0.7 * s + 0.3 * loss);
                conn.smoothed_loss = Some(smooth);
                PathReading { loss: smooth, rtt }
            });
            if plis > conn.last_pli_count {
                lock(&self.shared.sent).plis_received += u64::from(plis - conn.last_pli_count);
                conn.last_pli_count = plis;
                self.shared.force_key.store(true, Ordering::Relaxed);
            }
            if let Some(reading) = reading {
                let q = reading.quality();
                worst = worst.max(q);
                let mut received = lock(&self.shared.received);
                let entry = received.entry(peer.clone()).or_default();
                entry.path = Some(reading);
                if entry.quality != Some(q) {
                    entry.quality = Some(q);
                    let _ = self.events.send(CallEvent::Quality {
                        peer: peer.clone(),
                        quality: q,
                    });
                }
            }
            if conn.offerer
                && conn
                    .lost_since
                    .is_some_and(|t| t.elapsed() > Duration::from_secs(5))
            {
                conn.lost_since = Some(Instant::now());
                restart.push(peer.clone());
            }
        }
        for peer in restart {
            if let Err(e) = self.offer_to(socket, &peer, true).await {
                self.trouble_with(&peer, &e);
            }
        }
        if let Some(rung) = self.adapter.observe(worst) {
            self.shared.rung.store(rung, Ordering::Relaxed);
            self.emit(CallEvent::Rung(rung));
        }
    }
}

/// The negotiated payload types of our senders (write_sample stamps them on every packet).
async fn resolve_payload_types(peer: &str, conn: &PeerConn, shared: &Shared) {
    async fn pt(sender: &Option<Arc<dyn RtpSender>>) -> Option<u8> {
        let sender = sender.as_ref()?;
        let params = sender.get_parameters().await.ok()?;
        params.rtp_parameters.codecs.first().map(|c| c.payload_type)
    }
    let video = pt(&conn.video_sender).await;
    let audio = pt(&conn.audio_sender).await;
    if let Some(out) = lock(&shared.outgoing).get_mut(peer) {
        if let Some(v) = out.video.as_mut() {
            v.2 = video;
        }
        if let Some(a) = out.audio.as_mut() {
            a.2 = audio;
        }
    }
}

/// A local track of `kind` added to a connection: the track, its SSRC and its sender.
async fn add_local(
    pc: &Arc<dyn PeerConnection>,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
) -> Result<(Arc<TrackLocalStaticSample>, u32, Arc<dyn RtpSender>), MediaError> {
    let ssrc = rand_ssrc();
    let track = Arc::new(
        TrackLocalStaticSample::new(Instant::now(), local_track(kind, ssrc, codec))
            .map_err(rtc_err)?,
    );
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(rtc_err)?;
    Ok((track, ssrc, sender))
}

fn rand_ssrc() -> u32 {
    // Unique enough within one call; RFC 3550 §8.1 handles the rare collision.
    let n = now_ms() ^ (std::process::id() as u64) << 20;
    static COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9);
    let c = COUNTER.fetch_add(0x6A09_E667, Ordering::Relaxed);
    ((n ^ c.rotate_left(17)) as u32) | 1
}

fn local_track(kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec) -> MediaStreamTrack {
    MediaStreamTrack::new(
        "hearth".to_owned(),
        format!("hearth-{kind}"),
        format!("hearth-{kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )
}

fn vp8_codec() -> RTCRtpCodecParameters {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![
                fb("goog-remb", ""),
                fb("ccm", "fir"),
                fb("nack", ""),
                fb("nack", "pli"),
            ],
        },
        payload_type: 96,
    }
}

fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 111,
    }
}

/// VP8 (with its RTX for retransmissions, RFC 4588) and Opus: the codecs every browser has.
fn register_codecs(media: &mut MediaEngine) -> Result<(), MediaError> {
    media
        .register_codec(opus_codec(), RtpCodecKind::Audio)
        .map_err(rtc_err)?;
    media
        .register_codec(vp8_codec(), RtpCodecKind::Video)
        .map_err(rtc_err)?;
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: rtc::peer_connection::configuration::media_engine::MIME_TYPE_RTX
                        .to_owned(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: "apt=96".to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: 97,
            },
            RtpCodecKind::Video,
        )
        .map_err(rtc_err)
}

fn rtc_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::Rtc(e.to_string())
}

struct Handler {
    peer: String,
    generation: u64,
    tx: mpsc::UnboundedSender<PcEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self
                .tx
                .send(PcEvent::Candidate(self.peer.clone(), self.generation, init));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self
            .tx
            .send(PcEvent::State(self.peer.clone(), self.generation, state));
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        if channel.label().await.map(|l| l == "chat").unwrap_or(false) {
            let _ = self.tx.send(PcEvent::DataChannel(
                self.peer.clone(),
                self.generation,
                channel,
            ));
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self
            .tx
            .send(PcEvent::Track(self.peer.clone(), self.generation, track));
    }
}

fn spawn_channel(peer: String, channel: Arc<dyn DataChannel>, tx: mpsc::UnboundedSender<PcEvent>) {
    tokio::spawn(async move {
        let (mut window, mut lines) = (Instant::now(), 0u32);
        while let Some(event) = channel.poll().await {
            match event {
                DataChannelEvent::OnMessage(msg) => {
                    // The join page's chat: `{"text": "…"}`, at most 2,000 characters shown,
                    // and at most 5 lines a second from one peer (the rest are dropped: the
                    // service's rate limit does not see peer-to-peer chat).
                    if msg.data.len() > 20_000 {
                        continue;
                    }
                    let now = Instant::now();
                    if now.duration_since(window) >= Duration::from_secs(1) {
                        window = now;
                        lines = 0;
                    }
                    lines += 1;
                    if lines > 5 {
                        continue;
                    }
                    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&msg.data) else {
                        continue;
                    };
                    let text: String = value
                        .get("text")
                        .and_then(|t| t.as_str())
                        .unwrap_or("")
                        .trim()
                        .chars()
                        .take(2000)
                        .collect();
                    if !text.is_empty() && tx.send(PcEvent::Chat(peer.clone(), text)).is_err() {
                        break;
                    }
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
}

/// Receives one remote track: VP8 frames reassembled (jitter-tolerant), decoded, counted and
/// published; a gap or a decode error asks for a key frame (PLI, RFC 4585 §6.3.1) and skips
/// until one comes. Opus decoded and its level measured.
async fn receive(peer: String, track: Arc<dyn TrackRemote>, shared: Arc<Shared>) {
    let kind = track.kind().await;
    let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    if kind == RtpCodecKind::Video {
        let Ok(mut decoder) = Vp8Decoder::new() else {
            return;
        };
        let mut builder = SampleBuilder::new(256, Vp8Packet::default(), 90000)
            .with_max_time_delay(Duration::from_millis(500));
        let mut need_key = true;
        let mut last_pli = Instant::now() - Duration::from_secs(10);
        while let Some(event) = track.poll().await {
            let TrackRemoteEvent::OnRtpPacket(packet) = event else {
                if matches!(event, TrackRemoteEvent::OnEnded) {
                    break;
                }
                continue;
            };
            let now = Instant::now();
            builder.push(now, packet);
            while let Some(sample) = builder.pop(now) {
                if sample.prev_dropped_packets > 0 {
                    need_key = true;
                }
                // VP8 payload header, RFC 6386 §9.1: bit 0 of the first byte is 0 on a key frame.
                let key = sample.data.first().is_some_and(|b| b & 1 == 0);
                if need_key && !key {
                    if last_pli.elapsed() > Duration::from_millis(300) {
                        last_pli = Instant::now();
                        let pli = PictureLossIndication {
                            sender_ssrc: 0,
                            media_ssrc: ssrc,
                        };
                        if track.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
                            lock(&shared.received)
                                .entry(peer.clone())
                                .or_default()
                                .plis_sent += 1;
                        }
                    }
                    continue;
                }
                match decoder.decode(&sample.data) {
                    Ok(Some(frame)) => {
                        need_key = false;
                        let at_ms = now_ms();
                        let stamp = pattern::read_i420(&frame);
                        {
                            let mut received = lock(&shared.received);
                            let m = received.entry(peer.clone()).or_default();
                            m.frames_decoded += 1;
                            m.key_frames += u64::from(key);
                            m.width = frame.width;
                            m.height = frame.height;
                            if let Some(stamp) = stamp {
                                m.last_stamp = Some(stamp);
                                let sent = stamp.sent_ms;
                                let now40 = at_ms & ((1 << 40) - 1);
                                m.last_latency_ms =
                                    (sent > 0 && now40 >= sent && now40 - sent < 60_000)
                                        .then_some(now40 - sent);
                            }
                        }
                        let _ = shared.frames.send(VideoFrame {
                            peer: peer.clone(),
                            frame: Arc::new(frame),
                            at_ms,
                        });
                    }
                    Ok(None) => {}
                    Err(_) => {
                        need_key = true;
                        lock(&shared.received)
                            .entry(peer.clone())
                            .or_default()
                            .decode_errors += 1;
                    }
                }
            }
        }
    } else {
        let Ok(mut decoder) = OpusDecoder::new() else {
            return;
        };
        while let Some(event) = track.poll().await {
            match event {
                TrackRemoteEvent::OnRtpPacket(packet) => {
                    if let Ok(pcm) = decoder.decode(&packet.payload) {
                        if let Some(mixer) = &shared.mixer {
                            mixer.push(&peer, &pcm);
                        }
                        let level = audio::rms(&pcm);
                        let mut received = lock(&shared.received);
                        let m = received.entry(peer.clone()).or_default();
                        m.audio_frames += 1;
                        m.last_rms = level;
                        if level > 0.01 {
                            m.audio_loud_frames += 1;
                        }
                    }
                }
                TrackRemoteEvent::OnEnded => break,
                _ => {}
            }
        }
        if let Some(mixer) = &shared.mixer {
            mixer.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdp_session_id_is_the_second_field_of_the_origin_line() {
        let sdp = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\n";
        assert_eq!(session_id(sdp), Some("4611731400430051336"));
        assert_eq!(session_id("v=0\r\n"), None);
    }
}
