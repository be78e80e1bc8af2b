//! Calls into the desktop shell. The only place the UI touches Tauri: the `invoke` binding
//! and its IPC `Channel` (both from `withGlobalTauri`'s `core`), typed by the IPC crate.

use hearth_ipc::{ErrorCode, IpcError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = ["window", "__TAURI__", "core"], catch)]
    async fn invoke(cmd: &str, args: JsValue) -> Result<JsValue, JsValue>;
}

#[wasm_bindgen]
extern "C" {
    /// Tauri's IPC channel: passed to a command, it receives what the shell pushes.
    #[wasm_bindgen(js_namespace = ["window", "__TAURI__", "core"])]
    type Channel;

    #[wasm_bindgen(constructor, js_namespace = ["window", "__TAURI__", "core"])]
    fn new(onmessage: &Closure<dyn Fn(JsValue)>) -> Channel;
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
    let callback = Closure::<dyn Fn(JsValue)>::new(move |message: JsValue| {
        on_message(decode(cmd, Ok(message)));
    });
    let channel = Channel::new(&callback);
    // The channel calls back for as long as the shell pushes, which may outlive any owner
    // here: the callback stays (one small closure per subscription).
    callback.forget();
    js_sys::Reflect::set(&args, &JsValue::from_str("channel"), &channel)
        .map_err(|_| IpcError::new(ErrorCode::Internal, format!("cannot encode {cmd}")))?;
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
