//! The IPC commands: each converts its request, calls the core, and converts the answer.
//! No domain logic here. Names match `hearth_ipc::command`; permissions are in
//! `permissions/workstation.toml`.

use hearth_core::{CoreError, Workstation};
use hearth_ipc::{
    AmendNoteRequest, CodeOption, CodeSearchRequest, CorrectChargeRequest, NoteRequest, NoteSaved,
    NoteView, SaveNoteRequest, SignNoteRequest,
};
use hearth_ipc::{
    AppStatus, CallAdmitRequest, CallChatRequest, CallDevices, CallFrameAck, CallFramesRequest,
    CallStartRequest, CallToggleRequest, CallView, Chart, ChartRequest, IpcError,
    ResolveConflictRequest, ScheduleDay, ScheduleRequest, SettleFailedWriteRequest, SyncPanel,
    UserSummary, VisitAdmitRequest, VisitInvite, VisitInviteRequest, VisitRoom, VisitRoomRequest,
};
use tauri::ipc::Channel;
use tauri::{AppHandle, State, Webview};

#[tauri::command]
pub async fn app_status(workstation: State<'_, Workstation>) -> Result<AppStatus, IpcError> {
    workstation.status().map_err(ipc)
}

#[tauri::command]
pub async fn schedule_day(
    workstation: State<'_, Workstation>,
    request: ScheduleRequest,
) -> Result<ScheduleDay, IpcError> {
    workstation.schedule(&request).map_err(ipc)
}

#[tauri::command]
pub async fn open_chart(
    workstation: State<'_, Workstation>,
    request: ChartRequest,
) -> Result<Chart, IpcError> {
    workstation.chart(&request).map_err(ipc)
}

#[tauri::command]
pub async fn sync_panel(workstation: State<'_, Workstation>) -> Result<SyncPanel, IpcError> {
    workstation.sync_panel().map_err(ipc)
}

#[tauri::command]
pub async fn resolve_conflict(
    workstation: State<'_, Workstation>,
    request: ResolveConflictRequest,
) -> Result<(), IpcError> {
    workstation.resolve_conflict(&request).map_err(ipc)
}

#[tauri::command]
pub async fn settle_failed_write(
    workstation: State<'_, Workstation>,
    request: SettleFailedWriteRequest,
) -> Result<(), IpcError> {
    workstation.settle_failed_write(&request).map_err(ipc)
}

#[tauri::command]
pub async fn sign_in(workstation: State<'_, Workstation>) -> Result<UserSummary, IpcError> {
    workstation.sign_in().await.map_err(ipc)
}

#[tauri::command]
pub async fn sign_out(workstation: State<'_, Workstation>) -> Result<(), IpcError> {
    workstation.sign_out().await.map_err(ipc)
}

#[tauri::command]
pub async fn activity(workstation: State<'_, Workstation>) -> Result<(), IpcError> {
    workstation.activity();
    Ok(())
}

#[tauri::command]
pub async fn lock_now(workstation: State<'_, Workstation>) -> Result<(), IpcError> {
    workstation.lock_now().map_err(ipc)
}

#[tauri::command]
pub async fn visit_room(
    workstation: State<'_, Workstation>,
    request: VisitRoomRequest,
) -> Result<VisitRoom, IpcError> {
    workstation.visit_room(&request).map_err(ipc)
}

#[tauri::command]
pub async fn visit_invite(
    workstation: State<'_, Workstation>,
    request: VisitInviteRequest,
) -> Result<VisitInvite, IpcError> {
    workstation.visit_invite(&request).await.map_err(ipc)
}

#[tauri::command]
pub async fn visit_admit(
    workstation: State<'_, Workstation>,
    request: VisitAdmitRequest,
) -> Result<(), IpcError> {
    workstation.visit_admit(&request).await.map_err(ipc)
}

/// The status from now on, pushed over `channel` as it changes (see `crate::push`).
#[tauri::command]
pub async fn watch_status(
    app: AppHandle,
    webview: Webview,
    workstation: State<'_, Workstation>,
    channel: Channel<AppStatus>,
) -> Result<(), IpcError> {
    let feed = workstation.status_feed().map_err(ipc)?;
    crate::push::status(&app, webview.label(), feed, channel);
    Ok(())
}

/// A visit's room from now on, pushed over `channel` as it changes.
#[tauri::command]
pub async fn watch_visit_room(
    app: AppHandle,
    webview: Webview,
    workstation: State<'_, Workstation>,
    request: VisitRoomRequest,
    channel: Channel<VisitRoom>,
) -> Result<(), IpcError> {
    let feed = workstation.room_feed(&request).map_err(ipc)?;
    crate::push::room(&app, webview.label(), feed, channel);
    Ok(())
}

#[tauri::command]
pub async fn call_start(
    workstation: State<'_, Workstation>,
    request: CallStartRequest,
) -> Result<(), IpcError> {
    workstation.call_start(&request).await.map_err(ipc)
}

#[tauri::command]
pub async fn call_devices(workstation: State<'_, Workstation>) -> Result<CallDevices, IpcError> {
    workstation.call_devices().await.map_err(ipc)
}

#[tauri::command]
pub async fn call_frame_ack(
    workstation: State<'_, Workstation>,
    request: CallFrameAck,
) -> Result<(), IpcError> {
    workstation.call_frame_ack(request.seq).map_err(ipc)
}

#[tauri::command]
pub async fn call_admit(
    workstation: State<'_, Workstation>,
    request: CallAdmitRequest,
) -> Result<(), IpcError> {
    workstation.call_admit(&request.participant_id).map_err(ipc)
}

#[tauri::command]
pub async fn call_mute(
    workstation: State<'_, Workstation>,
    request: CallToggleRequest,
) -> Result<(), IpcError> {
    workstation.call_mute(request.off).map_err(ipc)
}

#[tauri::command]
pub async fn call_camera(
    workstation: State<'_, Workstation>,
    request: CallToggleRequest,
) -> Result<(), IpcError> {
    workstation.call_camera(request.off).map_err(ipc)
}

#[tauri::command]
pub async fn call_chat(
    workstation: State<'_, Workstation>,
    request: CallChatRequest,
) -> Result<(), IpcError> {
    workstation.call_chat(&request.text).map_err(ipc)
}

#[tauri::command]
pub async fn call_leave(workstation: State<'_, Workstation>) -> Result<(), IpcError> {
    workstation.call_leave().map_err(ipc)
}

#[tauri::command]
pub async fn call_end(workstation: State<'_, Workstation>) -> Result<(), IpcError> {
    workstation.call_end().await.map_err(ipc)
}

/// The call from now on, pushed over `channel` as it changes.
#[tauri::command]
pub async fn watch_call(
    app: AppHandle,
    webview: Webview,
    workstation: State<'_, Workstation>,
    channel: Channel<CallView>,
) -> Result<(), IpcError> {
    let feed = workstation.call_feed().map_err(ipc)?;
    crate::push::call(&app, webview.label(), feed, channel);
    Ok(())
}

/// The call's video frames from now on, as binary messages over `channel`.
#[tauri::command]
pub async fn watch_call_frames(
    app: AppHandle,
    webview: Webview,
    workstation: State<'_, Workstation>,
    request: CallFramesRequest,
    channel: Channel<tauri::ipc::InvokeResponseBody>,
) -> Result<(), IpcError> {
    if let Some(feed) = workstation.call_frames().map_err(ipc)? {
        crate::push::frames(&app, webview.label(), feed, request.encoding, channel);
    }
    Ok(())
}

/// A core error as the UI receives it: the stable code and the message.
fn ipc(e: CoreError) -> IpcError {
    IpcError::new(e.code(), e.to_string())
}

#[tauri::command]
pub async fn note_open(
    workstation: State<'_, Workstation>,
    request: NoteRequest,
) -> Result<NoteView, IpcError> {
    workstation.note_open(&request).map_err(ipc)
}

#[tauri::command]
pub async fn note_save(
    workstation: State<'_, Workstation>,
    request: SaveNoteRequest,
) -> Result<NoteSaved, IpcError> {
    workstation.note_save(&request).map_err(ipc)
}

#[tauri::command]
pub async fn note_sign(
    workstation: State<'_, Workstation>,
    request: SignNoteRequest,
) -> Result<NoteView, IpcError> {
    workstation.note_sign(&request).map_err(ipc)
}

#[tauri::command]
pub async fn note_amend(
    workstation: State<'_, Workstation>,
    request: AmendNoteRequest,
) -> Result<NoteView, IpcError> {
    workstation.note_amend(&request).map_err(ipc)
}

#[tauri::command]
pub async fn charge_correct(
    workstation: State<'_, Workstation>,
    request: CorrectChargeRequest,
) -> Result<NoteView, IpcError> {
    workstation.charge_correct(&request).map_err(ipc)
}

#[tauri::command]
pub async fn code_search(
    workstation: State<'_, Workstation>,
    request: CodeSearchRequest,
) -> Result<Vec<CodeOption>, IpcError> {
    workstation.code_search(&request).map_err(ipc)
}
