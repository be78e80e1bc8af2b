//! Calls into the desktop shell. The only place the UI touches Tauri: one `invoke` binding
//! (from `withGlobalTauri`), typed by the IPC crate.

use hearth_ipc::{ErrorCode, IpcError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = ["window", "__TAURI__", "core"], catch)]
    async fn invoke(cmd: &str, args: JsValue) -> Result<JsValue, JsValue>;
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
