//! The IPC commands: each converts its request, calls the core, and converts the answer.
//! No domain logic here. Names match `hearth_ipc::command`; permissions are in
//! `permissions/workstation.toml`.

use hearth_core::Workstation;
use hearth_ipc::{AppStatus, Chart, ChartRequest, IpcError, ScheduleDay, ScheduleRequest};
use tauri::State;

#[tauri::command]
pub async fn app_status(workstation: State<'_, Workstation>) -> Result<AppStatus, IpcError> {
    Ok(workstation.status()?)
}

#[tauri::command]
pub async fn schedule_day(
    workstation: State<'_, Workstation>,
    request: ScheduleRequest,
) -> Result<ScheduleDay, IpcError> {
    Ok(workstation.schedule(&request)?)
}

#[tauri::command]
pub async fn open_chart(
    workstation: State<'_, Workstation>,
    request: ChartRequest,
) -> Result<Chart, IpcError> {
    Ok(workstation.chart(&request)?)
}
