//! Hearth's desktop shell. It reads the command line, starts the core, opens the window and
//! registers the commands; everything else lives in `hearth-core`.

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
mod push;

use hearth_core::clock::SystemClock;
use hearth_core::launch::LaunchOptions;
use hearth_core::Workstation;
use std::process::ExitCode;
use std::sync::Arc;
use tauri::{Manager, WebviewUrl, WebviewWindowBuilder};

fn main() -> ExitCode {
    let options = match LaunchOptions::parse(
        std::env::args_os().skip(1),
        std::env::var_os("HEARTH_CONFIG"),
    ) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("hearth: {e}");
            return ExitCode::from(2);
        }
    };
    let result = tauri::Builder::default()
        .invoke_handler(tauri::generate_handler![
            commands::app_status,
            commands::schedule_day,
            commands::open_chart,
            commands::sync_panel,
            commands::resolve_conflict,
            commands::settle_failed_write,
            commands::sign_in,
            commands::sign_out,
            commands::activity,
            commands::lock_now,
            commands::visit_room,
            commands::visit_invite,
            commands::visit_admit,
            commands::watch_status,
            commands::watch_visit_room,
            commands::call_start,
            commands::call_devices,
            commands::call_admit,
            commands::call_frame_ack,
            commands::call_mute,
            commands::call_camera,
            commands::call_chat,
            commands::call_leave,
            commands::call_end,
            commands::watch_call,
            commands::watch_call_frames,
            commands::note_open,
            commands::note_save,
            commands::note_sign,
            commands::note_amend,
            commands::charge_correct,
            commands::code_search,
        ])
        .setup(move |app| {
            let data_dir = match options.data_dir.clone() {
                Some(dir) => dir,
                None => app.path().app_local_data_dir()?,
            };
            std::fs::create_dir_all(&data_dir)?;
            let options = LaunchOptions {
                data_dir: Some(data_dir.clone()),
                ..options
            };
            let workstation = Workstation::start(&options, Arc::new(SystemClock));
            // Connected to an EHR: the sync engine runs for the life of the app.
            if let Some(link) = workstation.ehr_link() {
                match hearth_sync::Engine::for_workstation(&link, workstation.token_source()) {
                    Ok(engine) => {
                        workstation.attach_sync(Arc::new(engine.handle()));
                        tauri::async_runtime::spawn(engine.run(std::future::pending()));
                    }
                    Err(e) => eprintln!("hearth: synchronisation cannot start: {e}"),
                }
            }
            // The signed-in user's access token is renewed before it ends, for the life of the
            // app; a refused renewal shows at once (the window asks the user to sign in again).
            if let Some(signon) = workstation.signon() {
                tauri::async_runtime::spawn(
                    signon
                        .clone()
                        .keep_fresh(std::time::Duration::from_secs(15)),
                );
                // The OS locking the session or going to sleep locks the window (Linux:
                // logind on the system bus; none there, e.g. in a container: only the idle
                // lock, which counts the time asleep).
                #[cfg(target_os = "linux")]
                {
                    let signon = signon.clone();
                    tauri::async_runtime::spawn(async move {
                        if let Err(e) = hearth_core::os_lock::follow_system(signon).await {
                            eprintln!("hearth: {e}; the idle lock alone applies");
                        }
                    });
                }
                // A refresh token the last run left in the keychain is revoked, then removed.
                tauri::async_runtime::spawn(async move {
                    if let Err(e) = signon.revoke_leftover().await {
                        eprintln!("hearth: an old sign-in could not be revoked yet: {e}");
                    }
                });
            }
            app.manage(workstation);
            app.manage(push::Subscriptions::default());
            // Patients arriving in a virtual waiting room raise a desktop notification.
            push::notify_arrivals(app.handle().clone());
            WebviewWindowBuilder::new(app, "main", WebviewUrl::App("index.html".into()))
                .title("Hearth")
                .inner_size(1280.0, 800.0)
                .min_inner_size(960.0, 600.0)
                .data_directory(data_dir.join("webview"))
                // The window shows Hearth's own pages and nothing else: a link, a script or a
                // redirect that would take it to another origin goes nowhere, and no page
                // opens windows of its own.
                .on_navigation(|url| {
                    let ours = is_app_origin(url);
                    if !ours {
                        eprintln!("hearth: the window refused to leave for another origin");
                    }
                    ours
                })
                .on_new_window(|_, _| tauri::webview::NewWindowResponse::Deny)
                .build()?;
            Ok(())
        })
        .run(tauri::generate_context!());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The origin Tauri serves the embedded UI from: `tauri://localhost` (Linux, macOS), or
/// `http://tauri.localhost` / `https://tauri.localhost` (Windows, Android).
fn is_app_origin(url: &tauri::Url) -> bool {
    match url.scheme() {
        "tauri" => url.host_str() == Some("localhost") && url.port().is_none(),
        "http" | "https" => url.host_str() == Some("tauri.localhost") && url.port().is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_app_origin;

    #[test]
    fn only_the_apps_own_origin_is_a_place_for_the_window() {
        for ours in [
            "tauri://localhost/index.html",
            "tauri://localhost/",
            "http://tauri.localhost/index.html",
            "https://tauri.localhost/",
        ] {
            assert!(is_app_origin(&ours.parse().unwrap()), "{ours}");
        }
        for theirs in [
            "http://127.0.0.1:8080/",
            "http://localhost/",
            "https://evil.example/",
            "tauri://localhost.evil.example/",
            "tauri://evil/",
            "http://tauri.localhost:8080/",
            "file:///etc/passwd",
            "data:text/html,hi",
            "javascript:alert(1)",
            "about:blank",
        ] {
            assert!(!is_app_origin(&theirs.parse().unwrap()), "{theirs}");
        }
    }
}
