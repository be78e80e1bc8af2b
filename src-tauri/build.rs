//! Generates Tauri's context and its access-control manifests. Every command Hearth registers
//! is declared here (from the IPC crate's list), so each one needs an explicit permission.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = tauri_build::AppManifest::new().commands(hearth_ipc::command::ALL);
    tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest))?;
    Ok(())
}
