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
