//! The video call of the visit pane: at most one at a time per window, run by hearth-media's
//! engine, followed here into what the pane shows ([`CallView`]) and packed into the binary
//! frames the pane paints ([`FrameHeader`] + JPEG or RGBA).

use crate::clock::Zone;
use crate::CoreError;
use hearth_ipc::{
    CallLink, CallPeer, CallPhase, CallQuality, CallView, CallWaiting, ChatLine, FrameEncoding,
    FrameHeader, RoomRole,
};
use hearth_media::quality::{Quality, LADDER};
use hearth_media::{Call, CallEvent, CallOptions, Entry, Link, VideoFrame};
use hearth_visit_client::VisitClient;
use hearth_visit_protocol::Role;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// At most this many chat lines are kept for the pane.
const CHAT_LINES: usize = 200;

struct Active {
    appointment_id: String,
    call: Arc<Call>,
    task: tokio::task::JoinHandle<()>,
    /// Demo mode: the simulated visit (stand-in service and patient), for the call's life.
    _demo: Option<hearth_media::demo::DemoVisit>,
}

#[derive(Default)]
struct State {
    phase: Option<CallPhase>,
    message: Option<String>,
    /// Peers in the order they came, with their tile (1–3).
    peers: Vec<(String, String, Role, u8)>,
    links: HashMap<String, Link>,
    /// Who waits to be admitted (from the service's roster).
    waiting: Vec<(String, String, Role)>,
    qualities: HashMap<String, Quality>,
    chat: Vec<ChatLine>,
    encounter: Option<String>,
}

/// The window's call.
pub struct CallDesk {
    active: Mutex<Option<Active>>,
    state: Arc<Mutex<State>>,
    /// Bumped on every change the pane shows.
    pulse: Arc<watch::Sender<u64>>,
    options: CallOptions,
    /// The newest frame the pane acknowledged (see [`FrameFeed`]).
    acked: Arc<std::sync::atomic::AtomicU32>,
    /// Use this computer's camera, microphone and speaker when it has them.
    devices: bool,
}

/// The call's sources: this computer's first camera, microphone and speaker where there are
/// some (listed off the async runtime), else the synthetic ones of `base`.
async fn with_devices(base: CallOptions) -> CallOptions {
    use hearth_media::devices::{cameras, microphones, speakers};
    let found = tokio::task::spawn_blocking(|| {
        let first = |r: Result<Vec<hearth_media::devices::Device>, _>| {
            r.ok().and_then(|l| l.into_iter().next()).map(|d| d.id)
        };
        (first(cameras()), first(microphones()), first(speakers()))
    })
    .await
    .unwrap_or((None, None, None));
    let mut options = base;
    if let Some(id) = found.0 {
        options.video = hearth_media::VideoInput::Camera { id };
    }
    if let Some(id) = found.1 {
        options.audio = hearth_media::AudioInput::Microphone { id };
    }
    options.speaker = found.2;
    options
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn media_error(e: hearth_media::MediaError) -> CoreError {
    CoreError::Media(e.to_string())
}

fn room_role(r: Role) -> RoomRole {
    match r {
        Role::Clinician => RoomRole::Clinician,
        Role::Patient => RoomRole::Patient,
        Role::Guest => RoomRole::Guest,
    }
}

fn link_of(l: Option<&Link>) -> CallLink {
    match l {
        Some(Link::Connected) => CallLink::Connected,
        Some(Link::Reconnecting) => CallLink::Reconnecting,
        Some(Link::Failed) => CallLink::Failed,
        Some(Link::Connecting) | None => CallLink::Connecting,
    }
}

fn quality_of(q: Option<&Quality>) -> CallQuality {
    match q {
        Some(Quality::Good) => CallQuality::Good,
        Some(Quality::Fair) => CallQuality::Fair,
        Some(Quality::Poor) => CallQuality::Poor,
        Some(Quality::Unknown) | None => CallQuality::Unknown,
    }
}

fn bump(pulse: &watch::Sender<u64>) {
    pulse.send_modify(|n| *n = n.wrapping_add(1));
}

impl CallDesk {
    pub fn new(options: CallOptions) -> Self {
        Self {
            active: Mutex::new(None),
            state: Arc::default(),
            pulse: Arc::new(watch::Sender::new(0)),
            options,
            acked: Arc::default(),
            devices: false,
        }
    }

    /// Uses this computer's devices when it has them (see [`with_devices`]).
    pub fn with_devices(mut self, on: bool) -> Self {
        self.devices = on;
        self
    }

    /// Whether calls use this computer's devices (else the test pattern and a tone).
    pub fn uses_devices(&self) -> bool {
        self.devices
    }

    /// The pane painted (or dropped) frames up to `seq`.
    pub fn ack_frame(&self, seq: u32) {
        self.acked
            .fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
    }

    /// Changes whenever the pane's view of the call does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.pulse.subscribe()
    }

    /// Joins the visit as its clinician, with media; a call already running for this
    /// appointment is kept, one for another is left first.
    pub async fn start(
        &self,
        client: VisitClient,
        appointment_id: &str,
        zone: Zone,
    ) -> Result<(), CoreError> {
        let entry = Entry::Host {
            client,
            visit: appointment_id.to_owned(),
            name: None,
        };
        self.start_with(entry, None, appointment_id, zone).await
    }

    /// Demo mode: a simulated visit on this machine, whose simulated patient (`patient_name`)
    /// waits to be admitted from the pane.
    pub async fn start_demo(
        &self,
        appointment_id: &str,
        patient_name: &str,
        zone: Zone,
    ) -> Result<(), CoreError> {
        let demo = hearth_media::demo::DemoVisit::start(appointment_id, patient_name)
            .await
            .map_err(media_error)?;
        self.start_with(demo.entry(), Some(demo), appointment_id, zone)
            .await
    }

    async fn start_with(
        &self,
        entry: Entry,
        demo: Option<hearth_media::demo::DemoVisit>,
        appointment_id: &str,
        zone: Zone,
    ) -> Result<(), CoreError> {
        {
            let mut active = lock(&self.active);
            if let Some(a) = active.as_ref() {
                if a.appointment_id == appointment_id && a.call.is_running() {
                    return Ok(());
                }
            }
            if let Some(old) = active.take() {
                old.call.leave();
                old.task.abort();
            }
        }
        *lock(&self.state) = State {
            phase: Some(CallPhase::Connecting),
            ..State::default()
        };
        bump(&self.pulse);
        let options = if self.devices {
            with_devices(self.options.clone()).await
        } else {
            self.options.clone()
        };
        let synthetic = options.video == self.options.video && options.audio == self.options.audio;
        let started = match Call::start(entry.clone(), options).await {
            // A device that would not open: the call goes ahead with the test sources, and
            // says so.
            Err(hearth_media::MediaError::Device(e)) if !synthetic => {
                let started = Call::start(entry, self.options.clone()).await;
                lock(&self.state).message = Some(format!(
                    "{e} The call sends the test pattern and tone instead."
                ));
                started
            }
            other => other,
        };
        let call = started.map_err(|e| {
            let mut s = lock(&self.state);
            s.phase = Some(CallPhase::Trouble);
            s.message = Some(e.to_string());
            bump(&self.pulse);
            media_error(e)
        })?;
        let call = Arc::new(call);
        let task = tokio::spawn(follow(
            call.events(),
            self.state.clone(),
            self.pulse.clone(),
            zone,
        ));
        *lock(&self.active) = Some(Active {
            appointment_id: appointment_id.to_owned(),
            call,
            task,
            _demo: demo,
        });
        Ok(())
    }

    fn call(&self) -> Result<(String, Arc<Call>), CoreError> {
        lock(&self.active)
            .as_ref()
            .map(|a| (a.appointment_id.clone(), a.call.clone()))
            .ok_or_else(|| CoreError::InvalidInput("there is no call in this window".into()))
    }

    /// Lets a waiting participant in (through the call's own connection).
    pub fn admit(&self, participant: &str) -> Result<(), CoreError> {
        self.call()?.1.admit(participant);
        Ok(())
    }

    pub fn set_mic_muted(&self, muted: bool) -> Result<(), CoreError> {
        self.call()?.1.set_mic_muted(muted);
        bump(&self.pulse);
        Ok(())
    }

    pub fn set_camera_off(&self, off: bool) -> Result<(), CoreError> {
        self.call()?.1.set_camera_off(off);
        bump(&self.pulse);
        Ok(())
    }

    /// Sends a chat line to everyone in the call (and shows it as ours).
    pub fn chat(&self, text: &str, zone: Zone) -> Result<(), CoreError> {
        let text: String = text.trim().chars().take(2000).collect();
        if text.is_empty() {
            return Err(CoreError::InvalidInput("an empty chat line".into()));
        }
        self.call()?.1.chat(&text);
        push_chat(
            &self.state,
            ChatLine {
                mine: true,
                name: "You".into(),
                text,
                at_label: now_label(zone),
            },
        );
        bump(&self.pulse);
        Ok(())
    }

    /// Leaves any call and forgets its state (chat, names): on sign-out.
    pub fn forget(&self) {
        let _ = self.leave();
        *lock(&self.state) = State::default();
        bump(&self.pulse);
    }

    /// Leaves the call; the others carry on.
    pub fn leave(&self) -> Result<(), CoreError> {
        let active = lock(&self.active).take();
        if let Some(a) = active {
            a.call.leave();
            a.task.abort();
        }
        lock(&self.state).phase = Some(CallPhase::Idle);
        bump(&self.pulse);
        Ok(())
    }

    /// Ends the visit for everyone and waits (at most 10 s) until the service says it has
    /// ended; returns the appointment.
    pub async fn end(&self) -> Result<String, CoreError> {
        let (appointment_id, call) = self.call()?;
        let mut events = call.events();
        call.end();
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.recv().await {
                    Ok(CallEvent::Ended) => return true,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return !call.is_running(),
                }
            }
        })
        .await
        // The event may have been dropped by a lagging receiver: the engine stopping after
        // `end` is the same answer.
        .unwrap_or_else(|_| !call.is_running());
        if !ended {
            return Err(CoreError::VisitService(
                "the visit service did not confirm the end of the visit within 10 s".into(),
            ));
        }
        let mut s = lock(&self.state);
        s.phase = Some(CallPhase::Ended);
        drop(s);
        bump(&self.pulse);
        Ok(appointment_id)
    }

    /// Shows what became of the Encounter after the call.
    pub fn set_encounter_note(&self, note: String) {
        lock(&self.state).encounter = Some(note);
        bump(&self.pulse);
    }

    /// The call as the pane shows it.
    pub fn view(&self) -> CallView {
        let active = lock(&self.active);
        let s = lock(&self.state);
        let Some(a) = active.as_ref() else {
            let mut idle = CallView::idle();
            idle.phase = s
                .phase
                .filter(|p| *p == CallPhase::Ended)
                .unwrap_or(CallPhase::Idle);
            idle.encounter = s.encounter.clone();
            return idle;
        };
        let received = a.call.received();
        let sent = a.call.sent();
        let peers: Vec<CallPeer> = s
            .peers
            .iter()
            .map(|(id, name, role, tile)| {
                let m = received.get(id).cloned().unwrap_or_default();
                CallPeer {
                    id: id.clone(),
                    name: name.clone(),
                    role: room_role(*role),
                    tile: *tile,
                    link: link_of(s.links.get(id)),
                    quality: quality_of(s.qualities.get(id)),
                    frames_decoded: m.frames_decoded,
                    audio_level: m.last_rms,
                    audio_frames: m.audio_frames,
                }
            })
            .collect();
        let quality = peers
            .iter()
            .map(|p| p.quality)
            .filter(|q| *q != CallQuality::Unknown)
            .max_by_key(|q| match q {
                CallQuality::Poor => 3,
                CallQuality::Fair => 2,
                CallQuality::Good => 1,
                CallQuality::Unknown => 0,
            })
            .unwrap_or(CallQuality::Unknown);
        let rung = LADDER[sent.rung.min(LADDER.len() - 1)];
        CallView {
            appointment_id: Some(a.appointment_id.clone()),
            phase: s.phase.unwrap_or(CallPhase::Connecting),
            message: s.message.clone(),
            peers,
            mic_muted: a.call.mic_muted(),
            camera_off: a.call.camera_off(),
            chat: s.chat.clone(),
            quality,
            sending: format!("{}×{}, {} fps", rung.width, rung.height, rung.fps),
            encounter: s.encounter.clone(),
            waiting: s
                .waiting
                .iter()
                .map(|(id, name, role)| CallWaiting {
                    id: id.clone(),
                    name: name.clone(),
                    role: room_role(*role),
                })
                .collect(),
        }
    }

    /// The call's frames from now on, and how to pack them for the pane.
    pub fn frames(&self) -> Option<FrameFeed> {
        let active = lock(&self.active);
        let a = active.as_ref()?;
        self.acked.store(0, std::sync::atomic::Ordering::Relaxed);
        Some(FrameFeed {
            frames: a.call.frames(),
            state: self.state.clone(),
            seq: 0,
            last_self_ms: 0,
            acked: self.acked.clone(),
        })
    }
}

/// A subscription to the call's frames, packed for the pane.
pub struct FrameFeed {
    frames: broadcast::Receiver<VideoFrame>,
    state: Arc<Mutex<State>>,
    seq: u32,
    last_self_ms: u64,
    /// The newest frame the pane says it has painted (or dropped).
    acked: Arc<std::sync::atomic::AtomicU32>,
}

/// Frames sent to the pane and not yet acknowledged, at most (about a second of video; the
/// pane acknowledges every 200 ms): a slow webview gets fewer frames, never a growing queue
/// in the shell.
const IN_FLIGHT: u32 = 40;

/// Peer pictures larger than this are scaled down before packing (the tile is smaller).
const PANE_MAX: (u32, u32) = (640, 480);

/// The self view is small: a third of the frames, at 320×240.
const SELF_VIEW: (u32, u32, u64) = (320, 240, 90);

impl FrameFeed {
    /// The next frame as one binary message for the pane; `None` when the call is over. A
    /// pane that falls behind gets the newest frames, never a backlog.
    pub async fn next(&mut self, encoding: FrameEncoding) -> Option<Vec<u8>> {
        loop {
            let frame = match self.frames.recv().await {
                Ok(f) => f,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            let tile = if frame.peer == "self" {
                if frame.at_ms < self.last_self_ms + SELF_VIEW.2 {
                    continue;
                }
                self.last_self_ms = frame.at_ms;
                0
            } else {
                match lock(&self.state).peers.iter().find(|p| p.0 == frame.peer) {
                    Some(p) => p.3,
                    None => continue,
                }
            };
            let acked = self.acked.load(std::sync::atomic::Ordering::Relaxed);
            if acked > 0 && self.seq.wrapping_sub(acked) >= IN_FLIGHT && self.seq > acked {
                continue;
            }
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            let packed = {
                let f = &frame.frame;
                let picture = if tile == 0 {
                    f.scaled(SELF_VIEW.0, SELF_VIEW.1)
                } else if f.width > PANE_MAX.0 || f.height > PANE_MAX.1 {
                    let k = f64::from(PANE_MAX.0) / f64::from(f.width);
                    let k = k.min(f64::from(PANE_MAX.1) / f64::from(f.height));
                    let even = |v: f64| ((v as u32) & !1).max(2);
                    f.scaled(even(f64::from(f.width) * k), even(f64::from(f.height) * k))
                } else {
                    (**f).clone()
                };
                pack_frame(&picture, tile, encoding, frame.at_ms, seq)
            };
            if packed.is_some() {
                return packed;
            }
        }
    }
}

/// A frame as the pane's binary message: [`FrameHeader`], then JPEG or RGBA.
pub fn pack_frame(
    picture: &hearth_media::frame::I420,
    tile: u8,
    encoding: FrameEncoding,
    at_ms: u64,
    seq: u32,
) -> Option<Vec<u8>> {
    let (w, h) = (
        u16::try_from(picture.width).ok()?,
        u16::try_from(picture.height).ok()?,
    );
    let rgba = picture.to_rgba();
    let mut out = Vec::with_capacity(FrameHeader::LEN + rgba.len() / 8);
    FrameHeader {
        tile,
        encoding,
        width: w,
        height: h,
        at_ms,
        seq,
    }
    .write(&mut out);
    match encoding {
        FrameEncoding::Rgba => out.extend_from_slice(&rgba),
        FrameEncoding::Jpeg => {
            let encoder = jpeg_encoder::Encoder::new(&mut out, 85);
            encoder
                .encode(&rgba, w, h, jpeg_encoder::ColorType::Rgba)
                .ok()?;
        }
    }
    Some(out)
}

fn now_label(zone: Zone) -> String {
    zone.local(&chrono::Utc::now()).format("%H:%M").to_string()
}

fn push_chat(state: &Mutex<State>, line: ChatLine) {
    let mut s = lock(state);
    s.chat.push(line);
    let extra = s.chat.len().saturating_sub(CHAT_LINES);
    s.chat.drain(..extra);
}

/// Follows the engine's events into the pane's state; a tick each second refreshes the
/// counters (frames, sound) the pane shows.
async fn follow(
    mut events: broadcast::Receiver<CallEvent>,
    state: Arc<Mutex<State>>,
    pulse: Arc<watch::Sender<u64>>,
    zone: Zone,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = tick.tick() => {
                bump(&pulse);
                continue;
            }
        };
        let event = match event {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let mut s = lock(&state);
        match event {
            CallEvent::Welcome { .. } | CallEvent::Admitted => {
                s.phase = Some(CallPhase::Live);
            }
            CallEvent::Waiting => {}
            CallEvent::Roster(people) => {
                // Names and roles of those in the visit (the engine hears of peers by id).
                s.waiting = people
                    .iter()
                    .filter(|p| p.standing == hearth_visit_protocol::Standing::Waiting)
                    .map(|p| (p.id.clone(), p.name.clone(), p.role))
                    .collect();
                for p in people {
                    if let Some(peer) = s.peers.iter_mut().find(|x| x.0 == p.id) {
                        peer.1 = p.name;
                        peer.2 = p.role;
                    }
                }
            }
            CallEvent::PeerJoined(peer) => {
                if !s.peers.iter().any(|p| p.0 == peer.id) {
                    let used: Vec<u8> = s.peers.iter().map(|p| p.3).collect();
                    // Three tiles (the mesh's most); never two peers on one.
                    if let Some(tile) = (1..=3u8).find(|t| !used.contains(t)) {
                        s.peers.push((peer.id, peer.name, peer.role, tile));
                    }
                }
            }
            CallEvent::PeerLeft(id) => {
                s.peers.retain(|p| p.0 != id);
                s.links.remove(&id);
                s.qualities.remove(&id);
            }
            CallEvent::Link { peer, link } => {
                s.links.insert(peer, link);
            }
            CallEvent::Quality { peer, quality } => {
                s.qualities.insert(peer, quality);
            }
            CallEvent::Chat { from, name, text } => {
                // Named with their role, so a guest cannot pass for the patient (or "You").
                let role = s.peers.iter().find(|p| p.0 == from).map(|p| p.2);
                let name = match role {
                    Some(Role::Patient) => format!("{name} (patient)"),
                    Some(Role::Clinician) => format!("{name} (clinician)"),
                    _ => format!("{name} (guest)"),
                };
                drop(s);
                push_chat(
                    &state,
                    ChatLine {
                        mine: false,
                        name,
                        text,
                        at_label: now_label(zone),
                    },
                );
                bump(&pulse);
                continue;
            }
            CallEvent::Rung(_) => {}
            CallEvent::Device { message, .. } => {
                // A camera or microphone gone mid-call: said in the pane; the call goes on.
                s.message = Some(message);
            }
            CallEvent::Trouble { message, fatal, .. } => {
                s.message = Some(message);
                if fatal {
                    s.phase = Some(CallPhase::Trouble);
                }
            }
            CallEvent::Removed | CallEvent::Ended => {
                s.phase = Some(CallPhase::Ended);
            }
        }
        drop(s);
        bump(&pulse);
    }
}
