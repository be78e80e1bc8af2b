//! Calls into the desktop shell. The only place the UI touches Tauri: its IPC core,
//! `window.__TAURI_INTERNALS__` (`invoke`, and `transformCallback` under the IPC channel),
//! typed by the IPC crate. The shell does not inject the global `window.__TAURI__` API
//! (`withGlobalTauri` is off): a script that got into the page finds no ready-made API.

use hearth_ipc::{ErrorCode, IpcError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::BTreeMap;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = ["window", "__TAURI_INTERNALS__"], catch)]
    async fn invoke(cmd: &str, args: JsValue) -> Result<JsValue, JsValue>;

    /// Registers a callback the shell can run by its number (what a `Channel` is made of).
    #[wasm_bindgen(js_namespace = ["window", "__TAURI_INTERNALS__"], js_name = transformCallback)]
    fn transform_callback(callback: &Closure<dyn Fn(JsValue)>, once: bool) -> u32;
}

/// Tauri's IPC channel, as its JavaScript API makes it: a callback the shell runs with
/// `{ message, index }` for each push (and `{ end, index }` when it drops the channel),
/// passed to a command as the text `__CHANNEL__:<callback id>`. A large message comes by a
/// separate fetch and may overtake a smaller one: messages are handed on in index order.
struct Channel {
    id: u32,
}

impl Channel {
    fn new(on_message: impl Fn(JsValue) + 'static) -> Self {
        let next = RefCell::new((0u64, BTreeMap::<u64, JsValue>::new()));
        let callback = Closure::<dyn Fn(JsValue)>::new(move |raw: JsValue| {
            let field = |name: &str| js_sys::Reflect::get(&raw, &JsValue::from_str(name)).ok();
            let Some(index) = field("index").and_then(|i| i.as_f64()) else {
                return;
            };
            if field("end").is_some_and(|e| e.is_truthy()) {
                return;
            }
            let message = field("message").unwrap_or(JsValue::UNDEFINED);
            let mut next = next.borrow_mut();
            let (expected, waiting) = &mut *next;
            waiting.insert(index as u64, message);
            while let Some(message) = waiting.remove(expected) {
                *expected += 1;
                on_message(message);
            }
        });
        let id = transform_callback(&callback, false);
        // The shell runs the callback for as long as it pushes, which may outlive any owner
        // here: it stays (one small closure per subscription).
        callback.forget();
        Self { id }
    }

    fn arg(&self) -> JsValue {
        JsValue::from_str(&format!("__CHANNEL__:{}", self.id))
    }
}

#[derive(Serialize)]
struct Args<'a, T> {
    request: &'a T,
}

#[derive(Serialize)]
struct NoArgs {}

fn serializer() -> serde_wasm_bindgen::Serializer {
    serde_wasm_bindgen::Serializer::json_compatible()
}

/// Invokes `cmd` with `{ request }` and decodes the answer or the command's [`IpcError`].
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    cmd: &str,
    request: &Req,
) -> Result<Resp, IpcError> {
    let args = Args { request }
        .serialize(&serializer())
        .map_err(|e| IpcError::new(ErrorCode::Internal, format!("cannot encode {cmd}: {e}")))?;
    decode(cmd, invoke(cmd, args).await)
}

/// Invokes a command that takes no arguments.
pub async fn call_no_args<Resp: DeserializeOwned>(cmd: &str) -> Result<Resp, IpcError> {
    let args = NoArgs {}
        .serialize(&serializer())
        .map_err(|e| IpcError::new(ErrorCode::Internal, format!("cannot encode {cmd}: {e}")))?;
    decode(cmd, invoke(cmd, args).await)
}

/// Subscribes with `cmd` (and `{ request }` when given): the shell answers the call (an error
/// ends it there), then pushes each change into `on_message` for the life of the page, or
/// until a newer subscription of the same kind replaces this one. No polling.
pub async fn subscribe<Req: Serialize, T: DeserializeOwned + 'static>(
    cmd: &'static str,
    request: Option<&Req>,
    on_message: impl Fn(Result<T, IpcError>) + 'static,
) -> Result<(), IpcError> {
    let encoding = |e: serde_wasm_bindgen::Error| {
        IpcError::new(ErrorCode::Internal, format!("cannot encode {cmd}: {e}"))
    };
    let args = js_sys::Object::new();
    if let Some(request) = request {
        let value = request.serialize(&serializer()).map_err(encoding)?;
        js_sys::Reflect::set(&args, &JsValue::from_str("request"), &value)
            .map_err(|_| IpcError::new(ErrorCode::Internal, format!("cannot encode {cmd}")))?;
    }
    let channel = Channel::new(move |message: JsValue| {
        on_message(decode(cmd, Ok(message)));
    });
    js_sys::Reflect::set(&args, &JsValue::from_str("channel"), &channel.arg())
        .map_err(|_| IpcError::new(ErrorCode::Internal, format!("cannot encode {cmd}")))?;
    decode(cmd, invoke(cmd, args.into()).await)
}

/// Subscribes with `cmd` to a channel of binary messages: each comes to `on_bytes` as it is
/// (an `ArrayBuffer`), in order.
pub async fn subscribe_raw<Req: Serialize>(
    cmd: &'static str,
    request: &Req,
    on_bytes: impl Fn(js_sys::Uint8Array) + 'static,
) -> Result<(), IpcError> {
    let cannot = || IpcError::new(ErrorCode::Internal, format!("cannot encode {cmd}"));
    let args = js_sys::Object::new();
    let value = request.serialize(&serializer()).map_err(|_| cannot())?;
    js_sys::Reflect::set(&args, &JsValue::from_str("request"), &value).map_err(|_| cannot())?;
    let channel = Channel::new(move |message: JsValue| {
        if message.is_instance_of::<js_sys::ArrayBuffer>() {
            on_bytes(js_sys::Uint8Array::new(&message));
        }
    });
    js_sys::Reflect::set(&args, &JsValue::from_str("channel"), &channel.arg())
        .map_err(|_| cannot())?;
    decode(cmd, invoke(cmd, args.into()).await)
}

fn decode<Resp: DeserializeOwned>(
    cmd: &str,
    answer: Result<JsValue, JsValue>,
) -> Result<Resp, IpcError> {
    match answer {
        // The decoder's message could quote clinical content: name only the command.
        Ok(value) => serde_wasm_bindgen::from_value(value).map_err(|_| {
            IpcError::new(
                ErrorCode::Internal,
                format!("unexpected answer to {cmd} (the UI and the shell disagree on its shape)"),
            )
        }),
        Err(err) => Err(
            serde_wasm_bindgen::from_value::<IpcError>(err.clone()).unwrap_or_else(|_| {
                // Not one of ours: the shell refused the call itself (e.g. not permitted).
                let text = err
                    .as_string()
                    .unwrap_or_else(|| "no reason given".to_string());
                IpcError::new(ErrorCode::Internal, format!("{cmd} failed: {text}"))
            }),
        ),
    }
}
