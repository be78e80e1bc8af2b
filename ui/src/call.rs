//! The video call beside the chart: remote tiles and the self view painted from the frames the
//! shell pushes (JPEG decoded by the webview, or raw RGBA), mute, camera off, chat, leave, end
//! for all, and the connection-quality indicator. Each tile's canvas carries what it painted
//! (`data-frames`, `data-fps`, `data-latency-ms`) for the tests and the frame-path benchmark.

use crate::{bridge, error_notice};
use hearth_ipc::{
    command, CallAdmitRequest, CallChatRequest, CallDevices, CallFrameAck, CallFramesRequest,
    CallLink, CallPhase, CallQuality, CallStartRequest, CallToggleRequest, CallView, FrameEncoding,
    FrameHeader, IpcError, RoomRole,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::{Clamped, JsCast};
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, HtmlInputElement};
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct CallProps {
    pub appointment_id: String,
    /// Demo mode: the waiting room is the call's own (no visit service above it).
    pub demo: bool,
}

/// What a tile painted in the last second, and since the start.
#[derive(Default)]
struct TileStats {
    frames: u64,
    window_start: f64,
    window_frames: u32,
    window_latency: f64,
    last_seq: u32,
}

/// The encoding the pane asks for: JPEG unless `localStorage["hearth.frame-encoding"]` is
/// `rgba` (how the benchmark measures the alternative path).
fn chosen_encoding() -> FrameEncoding {
    let stored = web_sys::window()
        .and_then(|w| w.local_storage().ok().flatten())
        .and_then(|s| s.get_item("hearth.frame-encoding").ok().flatten());
    if stored.as_deref() == Some("rgba") {
        FrameEncoding::Rgba
    } else {
        FrameEncoding::Jpeg
    }
}

fn canvas(tile: u8) -> Option<(HtmlCanvasElement, CanvasRenderingContext2d)> {
    let document = web_sys::window()?.document()?;
    let canvas: HtmlCanvasElement = document
        .get_element_by_id(&format!("tile-{tile}"))?
        .dyn_into()
        .ok()?;
    let ctx = canvas
        .get_context("2d")
        .ok()
        .flatten()?
        .dyn_into::<CanvasRenderingContext2d>()
        .ok()?;
    Some((canvas, ctx))
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Records a painted frame on the tile's canvas (`data-*`), once a second.
fn painted(
    stats: &Rc<RefCell<HashMap<u8, TileStats>>>,
    header: &FrameHeader,
    el: &HtmlCanvasElement,
) {
    let now = now_ms();
    let mut all = stats.borrow_mut();
    let s = all.entry(header.tile).or_default();
    s.frames += 1;
    s.window_frames += 1;
    s.window_latency += (now - header.at_ms as f64).max(0.0);
    if s.window_start == 0.0 {
        s.window_start = now;
    }
    let elapsed = now - s.window_start;
    let set = |k: &str, v: String| {
        let _ = el.set_attribute(k, &v);
    };
    set("data-frames", s.frames.to_string());
    if elapsed >= 1000.0 {
        set(
            "data-fps",
            format!("{:.1}", f64::from(s.window_frames) * 1000.0 / elapsed),
        );
        set(
            "data-latency-ms",
            format!(
                "{:.1}",
                s.window_latency / f64::from(s.window_frames.max(1))
            ),
        );
        s.window_start = now;
        s.window_frames = 0;
        s.window_latency = 0.0;
    }
}

/// Tells the shell the pane is done with frames up to `seq` (it sends only a few ahead).
/// At most one acknowledgement every 200 ms (each is an IPC call: one per frame would double
/// the window's IPC load).
fn ack(seq: u32) {
    thread_local! {
        static LAST: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
    }
    let now = now_ms();
    if LAST.with(|l| now - l.get() < 200.0) {
        return;
    }
    LAST.with(|l| l.set(now));
    spawn_local(async move {
        let _: Result<(), IpcError> =
            bridge::call(command::CALL_FRAME_ACK, &CallFrameAck { seq }).await;
    });
}

/// Paints one binary frame message on its tile; frames older than the last painted one of
/// the tile are dropped (JPEG decoding may finish out of order).
fn paint(bytes: js_sys::Uint8Array, stats: Rc<RefCell<HashMap<u8, TileStats>>>) {
    let mut head = [0u8; FrameHeader::LEN];
    if bytes.length() < FrameHeader::LEN as u32 {
        return;
    }
    bytes.slice(0, FrameHeader::LEN as u32).copy_to(&mut head);
    let Some(header) = FrameHeader::read(&head) else {
        return;
    };
    {
        let mut all = stats.borrow_mut();
        let s = all.entry(header.tile).or_default();
        if header.seq <= s.last_seq && s.last_seq - header.seq < u32::MAX / 2 {
            ack(header.seq);
            return;
        }
        s.last_seq = header.seq;
    }
    let Some((el, ctx)) = canvas(header.tile) else {
        ack(header.seq);
        return;
    };
    let (w, h) = (u32::from(header.width), u32::from(header.height));
    if el.width() != w || el.height() != h {
        el.set_width(w);
        el.set_height(h);
    }
    let body = bytes.subarray(FrameHeader::LEN as u32, bytes.length());
    match header.encoding {
        FrameEncoding::Rgba => {
            let pixels = body.to_vec();
            if let Ok(image) =
                web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(&pixels), w, h)
            {
                let _ = ctx.put_image_data(&image, 0.0, 0.0);
                painted(&stats, &header, &el);
            }
            ack(header.seq);
        }
        FrameEncoding::Jpeg => {
            let parts = js_sys::Array::of1(&body);
            let options = web_sys::BlobPropertyBag::new();
            options.set_type("image/jpeg");
            let Ok(blob) = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)
            else {
                return;
            };
            let Some(promise) =
                web_sys::window().and_then(|w| w.create_image_bitmap_with_blob(&blob).ok())
            else {
                return;
            };
            spawn_local(async move {
                if let Ok(bitmap) = JsFuture::from(promise).await {
                    let bitmap: web_sys::ImageBitmap = bitmap.unchecked_into();
                    let _ = ctx.draw_image_with_image_bitmap(&bitmap, 0.0, 0.0);
                    bitmap.close();
                    painted(&stats, &header, &el);
                }
            });
        }
    }
}

fn quality_text(q: CallQuality) -> (&'static str, &'static str) {
    match q {
        CallQuality::Unknown => ("Checking", "quality-unknown"),
        CallQuality::Good => ("Good", "quality-good"),
        CallQuality::Fair => ("Fair: the picture may drop in quality", "quality-fair"),
        CallQuality::Poor => ("Poor: the call may freeze", "quality-poor"),
    }
}

fn link_text(l: CallLink) -> &'static str {
    match l {
        CallLink::Connecting => "Connecting…",
        CallLink::Connected => "",
        CallLink::Reconnecting => "Connection lost, reconnecting…",
        CallLink::Failed => "Could not connect",
    }
}

/// The pre-call device check: what this computer has and what the call will send.
#[function_component(DeviceCheck)]
fn device_check() -> Html {
    let devices = use_state(|| None::<Result<CallDevices, IpcError>>);
    {
        let devices = devices.clone();
        use_effect_with((), move |_| {
            spawn_local(async move {
                devices.set(Some(bridge::call_no_args(command::CALL_DEVICES).await));
            });
            || ()
        });
    }
    let list = |what: &str, names: &[String]| {
        let text = if names.is_empty() {
            format!("{what}: none found")
        } else {
            format!("{what}: {}", names.join(", "))
        };
        html! { <li>{ text }</li> }
    };
    html! {
        <section id="device-check" aria-labelledby="device-check-heading">
            <h4 id="device-check-heading">{ "Camera and microphone check" }</h4>
            {
                match &*devices {
                    None => html! { <p class="muted">{ "Checking this computer's camera and microphone…" }</p> },
                    Some(Err(e)) => error_notice(e),
                    Some(Ok(d)) => html! {
                        <>
                            <ul id="device-list">
                                { list("Cameras", &d.cameras) }
                                { list("Microphones", &d.microphones) }
                                { list("Speakers", &d.speakers) }
                            </ul>
                            <p id="device-using">{ &d.using }</p>
                            { for d.problems.iter().map(|p| html! { <p class="notice error" role="alert">{ p }</p> }) }
                        </>
                    },
                }
            }
        </section>
    }
}

#[function_component(CallPane)]
pub fn call_pane(props: &CallProps) -> Html {
    let view = use_state(|| None::<CallView>);
    let error = use_state(|| None::<IpcError>);
    let frames_on = use_mut_ref(|| false);
    let stats = use_mut_ref(HashMap::<u8, TileStats>::new);
    let chat_text = use_node_ref();
    // The call's state, pushed by the shell on every change.
    {
        let view = view.clone();
        use_effect_with((), move |_| {
            spawn_local(async move {
                let pushed = view.clone();
                let answer =
                    bridge::subscribe::<(), CallView>(command::WATCH_CALL, None, move |v| {
                        if let Ok(v) = v {
                            pushed.set(Some(v));
                        }
                    })
                    .await;
                if answer.is_err() {
                    view.set(None);
                }
            });
            || ()
        });
    }
    // Frames: subscribed once the call is live (also after a reload of the page mid-call).
    {
        let live = view
            .as_ref()
            .is_some_and(|v| matches!(v.phase, CallPhase::Connecting | CallPhase::Live));
        let frames_on = frames_on.clone();
        let stats = stats.clone();
        use_effect_with(live, move |live| {
            if *live && !*frames_on.borrow() {
                *frames_on.borrow_mut() = true;
                let request = CallFramesRequest {
                    encoding: chosen_encoding(),
                };
                spawn_local(async move {
                    let s = stats.clone();
                    let answer =
                        bridge::subscribe_raw(command::WATCH_CALL_FRAMES, &request, move |b| {
                            paint(b, s.clone())
                        })
                        .await;
                    if answer.is_err() {
                        *frames_on.borrow_mut() = false;
                    }
                });
            } else if !*live {
                *frames_on.borrow_mut() = false;
                stats.borrow_mut().clear();
            }
            || ()
        });
    }
    let act = |cmd: &'static str, error: UseStateHandle<Option<IpcError>>| {
        Callback::from(move |_: MouseEvent| {
            let error = error.clone();
            spawn_local(async move {
                let answer: Result<(), IpcError> = bridge::call_no_args(cmd).await;
                error.set(answer.err());
            });
        })
    };
    let toggle = |cmd: &'static str, off: bool, error: UseStateHandle<Option<IpcError>>| {
        Callback::from(move |_: MouseEvent| {
            let error = error.clone();
            spawn_local(async move {
                let answer: Result<(), IpcError> =
                    bridge::call(cmd, &CallToggleRequest { off }).await;
                error.set(answer.err());
            });
        })
    };
    let start = {
        let error = error.clone();
        let id = props.appointment_id.clone();
        Callback::from(move |_: MouseEvent| {
            let error = error.clone();
            let request = CallStartRequest {
                appointment_id: id.clone(),
            };
            spawn_local(async move {
                let answer: Result<(), IpcError> =
                    bridge::call(command::CALL_START, &request).await;
                error.set(answer.err());
            });
        })
    };
    let send_chat = {
        let error = error.clone();
        let input = chat_text.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let Some(field) = input.cast::<HtmlInputElement>() else {
                return;
            };
            let text = field.value();
            if text.trim().is_empty() {
                return;
            }
            field.set_value("");
            let error = error.clone();
            spawn_local(async move {
                let answer: Result<(), IpcError> =
                    bridge::call(command::CALL_CHAT, &CallChatRequest { text }).await;
                error.set(answer.err());
            });
        })
    };
    let errors = html! {
        if let Some(e) = &*error {
            { error_notice(e) }
        }
    };
    let this_visit =
        |v: &CallView| v.appointment_id.as_deref() == Some(props.appointment_id.as_str());
    let Some(v) = view.as_ref().filter(|v| {
        this_visit(v)
            && matches!(
                v.phase,
                CallPhase::Connecting | CallPhase::Live | CallPhase::Trouble
            )
    }) else {
        let ended = view.as_ref().filter(|v| v.phase == CallPhase::Ended);
        return html! {
            <section id="call" aria-labelledby="call-heading">
                <h3 id="call-heading">{ "Video" }</h3>
                if let Some(v) = ended {
                    <p id="call-status" role="status">{ "The visit has ended." }</p>
                    if let Some(note) = &v.encounter {
                        <p id="call-encounter" class="muted">{ note }</p>
                    }
                }
                <DeviceCheck />
                <button id="call-start" type="button" onclick={start}>{ "Start video" }</button>
                <p class="muted">{ "Hearth joins the visit with your camera and microphone; whoever you admit from the waiting room appears here." }</p>
                { errors }
            </section>
        };
    };
    let (quality, quality_class) = quality_text(v.quality);
    let tiles = v.peers.iter().map(|p| {
        let label = match p.role {
            RoomRole::Guest => format!("{} (guest)", p.name),
            RoomRole::Clinician => format!("{} (clinician)", p.name),
            RoomRole::Patient => p.name.clone(),
        };
        let (peer_quality, peer_class) = quality_text(p.quality);
        html! {
            <figure class="call-tile" data-peer={p.id.clone()}>
                <canvas id={format!("tile-{}", p.tile)} class="tile-video" width="640" height="480"
                    role="img" aria-label={format!("Video of {label}")}></canvas>
                <figcaption>
                    <span class="tile-name">{ label }</span>
                    <span class="tile-status">{ link_text(p.link) }</span>
                    <span class={classes!("tile-quality", peer_class)} data-quality={format!("{:?}", p.quality).to_lowercase()}>{ format!("Connection: {peer_quality}") }</span>
                    <span class="tile-counts" data-frames-decoded={p.frames_decoded.to_string()} data-audio-frames={p.audio_frames.to_string()} data-audio-level={format!("{:.3}", p.audio_level)} hidden=true></span>
                </figcaption>
            </figure>
        }
    });
    let waiting = if props.demo && !v.waiting.is_empty() {
        html! {
            <ul id="call-waiting" aria-label="Waiting to join">
                { for v.waiting.iter().map(|w| {
                    let error = error.clone();
                    let participant_id = w.id.clone();
                    let onclick = Callback::from(move |_: MouseEvent| {
                        let error = error.clone();
                        let request = CallAdmitRequest { participant_id: participant_id.clone() };
                        spawn_local(async move {
                            let answer: Result<(), IpcError> = bridge::call(command::CALL_ADMIT, &request).await;
                            error.set(answer.err());
                        });
                    });
                    html! {
                        <li class="room-person">
                            <span class="room-name">{ &w.name }</span>{ " is waiting " }
                            <button type="button" class="call-admit-button" aria-label={format!("Admit {}", w.name)} {onclick}>{ "Admit" }</button>
                        </li>
                    }
                }) }
            </ul>
        }
    } else {
        html! {}
    };
    let (mute_label, mute_cmd) = if v.mic_muted {
        (
            "Unmute microphone",
            toggle(command::CALL_MUTE, false, error.clone()),
        )
    } else {
        (
            "Mute microphone",
            toggle(command::CALL_MUTE, true, error.clone()),
        )
    };
    let (camera_label, camera_cmd) = if v.camera_off {
        (
            "Camera on",
            toggle(command::CALL_CAMERA, false, error.clone()),
        )
    } else {
        (
            "Camera off",
            toggle(command::CALL_CAMERA, true, error.clone()),
        )
    };
    html! {
        <section id="call" aria-labelledby="call-heading" data-phase={format!("{:?}", v.phase).to_lowercase()}>
            <h3 id="call-heading">{ "Video" }</h3>
            <p id="call-quality" class={classes!("call-quality", quality_class)} role="status" data-quality={format!("{:?}", v.quality).to_lowercase()}>
                { format!("Connection: {quality}") }
                <span class="muted">{ format!(" · sending {}", v.sending) }</span>
            </p>
            if let Some(m) = &v.message {
                <p class="notice error" role="alert">{ m }</p>
            }
            { waiting }
            <div id="call-tiles" class="call-tiles" data-count={v.peers.len().to_string()}>
                if v.peers.is_empty() {
                    <p class="muted" id="call-alone">{ "Admit the patient from the waiting room; their video appears here." }</p>
                }
                { for tiles }
                <figure class="call-tile self">
                    <canvas id="tile-0" class="tile-video" width="320" height="240" role="img" aria-label="Your camera (self view)"></canvas>
                    <figcaption>{ if v.camera_off { "Your camera is off" } else { "You" } }</figcaption>
                </figure>
            </div>
            <div class="call-controls" role="group" aria-label="Call controls">
                <button id="call-mute" type="button" aria-pressed={v.mic_muted.to_string()} onclick={mute_cmd}>{ mute_label }</button>
                <button id="call-camera" type="button" aria-pressed={v.camera_off.to_string()} onclick={camera_cmd}>{ camera_label }</button>
                <label for="call-device" class="sr-only">{ "Camera and microphone" }</label>
                <select id="call-device" aria-label="Camera and microphone">
                    <option value="synthetic" selected=true>{ "Test pattern and tone (no devices on this machine)" }</option>
                </select>
                <button id="call-leave" type="button" onclick={act(command::CALL_LEAVE, error.clone())}>{ "Leave" }</button>
                <button id="call-end" type="button" class="danger" onclick={act(command::CALL_END, error.clone())}>{ "End visit for all" }</button>
            </div>
            <section id="call-chat" aria-labelledby="call-chat-heading">
                <h4 id="call-chat-heading">{ "Chat" }</h4>
                <div id="call-chat-log" aria-live="polite">
                    { for v.chat.iter().map(|line| html! {
                        <p class={classes!("chat-line", line.mine.then_some("mine"))}>
                            <strong>{ format!("{}: ", line.name) }</strong>
                            <span class="chat-text">{ &line.text }</span>
                            <span class="muted">{ format!(" {}", line.at_label) }</span>
                        </p>
                    }) }
                </div>
                <form id="call-chat-form" onsubmit={send_chat}>
                    <label for="call-chat-input" class="sr-only">{ "Message" }</label>
                    <input id="call-chat-input" type="text" maxlength="2000" autocomplete="off" ref={chat_text} />
                    <button id="call-chat-send" type="submit">{ "Send" }</button>
                </form>
            </section>
            { errors }
        </section>
    }
}
