//! What the shell pushes: the status and a visit room to the window over IPC channels, and
//! arrivals in the waiting rooms as desktop notifications. When and what to push are the
//! core's feeds; here they are only carried.

use hearth_core::call::FrameFeed;
use hearth_core::{CallFeed, RoomFeed, StatusFeed, Workstation};
use hearth_ipc::{AppStatus, CallView, FrameEncoding, VisitRoom};
use std::collections::HashMap;
use std::sync::Mutex;
use tauri::async_runtime::JoinHandle;
use tauri::ipc::Channel;
use tauri::{AppHandle, Manager};

/// The running subscriptions, one of each kind per webview: a new one (the page reloaded, or
/// the visit pane shows another visit) ends the one it replaces, whose channel then closes.
#[derive(Default)]
pub struct Subscriptions(Mutex<HashMap<String, JoinHandle<()>>>);

impl Subscriptions {
    fn replace(&self, key: String, task: JoinHandle<()>) {
        let mut running = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = running.insert(key, task) {
            old.abort();
        }
    }
}

/// Sends the status over `channel` whenever it changes, the first at once.
pub fn status(app: &AppHandle, webview: &str, mut feed: StatusFeed, channel: Channel<AppStatus>) {
    let handle = app.clone();
    let task = tauri::async_runtime::spawn(async move {
        let workstation = handle.state::<Workstation>();
        while let Some(status) = workstation.next_status(&mut feed).await {
            if channel.send(status).is_err() {
                break; // the window is gone
            }
        }
    });
    app.state::<Subscriptions>()
        .replace(format!("{webview}/status"), task);
}

/// Sends a visit room over `channel` whenever it changes, the first at once.
pub fn room(app: &AppHandle, webview: &str, mut feed: RoomFeed, channel: Channel<VisitRoom>) {
    let handle = app.clone();
    let task = tauri::async_runtime::spawn(async move {
        let workstation = handle.state::<Workstation>();
        while let Some(room) = workstation.next_room(&mut feed).await {
            if channel.send(room).is_err() {
                break;
            }
        }
    });
    app.state::<Subscriptions>()
        .replace(format!("{webview}/visit-room"), task);
}

/// Sends the call over `channel` whenever it changes, the first at once.
pub fn call(app: &AppHandle, webview: &str, mut feed: CallFeed, channel: Channel<CallView>) {
    let handle = app.clone();
    let task = tauri::async_runtime::spawn(async move {
        let workstation = handle.state::<Workstation>();
        while let Some(view) = workstation.next_call(&mut feed).await {
            if channel.send(view).is_err() {
                break;
            }
        }
    });
    app.state::<Subscriptions>()
        .replace(format!("{webview}/call"), task);
}

/// Sends the call's frames over `channel` as binary messages until the call ends.
pub fn frames(
    app: &AppHandle,
    webview: &str,
    mut feed: FrameFeed,
    encoding: FrameEncoding,
    channel: Channel<tauri::ipc::InvokeResponseBody>,
) {
    let handle = app.clone();
    let task = tauri::async_runtime::spawn(async move {
        let workstation = handle.state::<Workstation>();
        while let Some(message) = workstation.next_call_frame(&mut feed, encoding).await {
            if channel
                .send(tauri::ipc::InvokeResponseBody::Raw(message))
                .is_err()
            {
                break;
            }
        }
    });
    app.state::<Subscriptions>()
        .replace(format!("{webview}/call-frames"), task);
}

/// Raises a desktop notification for each patient or guest arriving in a waiting room, for
/// the life of the app (nothing without a visit service).
pub fn notify_arrivals(app: AppHandle) {
    tauri::async_runtime::spawn(async move {
        let workstation = app.state::<Workstation>();
        let Some(mut feed) = workstation.arrival_feed() else {
            return;
        };
        loop {
            for arrival in workstation.next_arrivals(&mut feed).await {
                let (title, body) = arrival.notification();
                // A notification is a blocking D-Bus call: off the async runtime.
                tauri::async_runtime::spawn_blocking(move || {
                    if let Err(e) = notify_rust::Notification::new()
                        .summary(&title)
                        .body(&body)
                        .appname("Hearth")
                        .show()
                    {
                        eprintln!("hearth: desktop notification failed: {e}");
                    }
                });
            }
        }
    });
}
