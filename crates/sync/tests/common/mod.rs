//! Shared set-up of the sync tests: a real FHIR server with the Synthea patients and today's
//! schedule, a fresh encrypted store, an engine between them.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary uses part of the kit"
)]

use hearth_fhir::{Client, NoToken, RetryPolicy};
use hearth_model::settings::PatientScope;
use hearth_store::{DbKey, Store};
use hearth_sync::{Engine, EngineConfig};
pub use hearth_testkit::clinic::{server_with_clinic, server_with_clinic_at, Clinic};
use hearth_testkit::FhirServer;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// A new encrypted store in a temp folder (key generated here; the keychain has its own tests).
pub fn fresh_store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let key = DbKey::generate().unwrap();
    let store = Store::open(&dir.path().join("hearth.db"), &key).unwrap();
    (dir, Arc::new(store))
}

pub fn engine(base_url: &str, store: &Arc<Store>, scope: PatientScope, poll: Duration) -> Engine {
    engine_with(base_url, store, |config| {
        config.scope = scope;
        config.poll_interval = poll;
    })
}

/// An engine with the default settings as `edit` changes them.
pub fn engine_with(
    base_url: &str,
    store: &Arc<Store>,
    edit: impl FnOnce(&mut EngineConfig),
) -> Engine {
    let retry = RetryPolicy {
        attempts: 2,
        base_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let client = Client::new(base_url, Arc::new(NoToken), retry).unwrap();
    let mut config = EngineConfig::from_settings(&hearth_model::settings::SyncConfig::default());
    edit(&mut config);
    Engine::new(client, store.clone(), config)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The server's current copy of a resource, parsed.
pub fn server_resource(server: &FhirServer, ty: &str, id: &str) -> Value {
    serde_json::from_str(&server.get_json(&format!("/fhir/{ty}/{id}"))).unwrap()
}

/// Another client's update at the server (a plain PUT of `edit(current)`); returns the new
/// version id.
pub fn update_at_server(
    server: &FhirServer,
    ty: &str,
    id: &str,
    edit: impl FnOnce(&mut Value),
) -> String {
    let mut r = server_resource(server, ty, id);
    edit(&mut r);
    let (status, body) = server
        .request("PUT", &format!("/fhir/{ty}/{id}"), Some(&r.to_string()))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["meta"]["versionId"].as_str().unwrap().to_string()
}

/// The parsed local copy of a resource.
pub fn local(store: &Store, ty: &str, id: &str) -> Option<Value> {
    store
        .resource(ty, id)
        .unwrap()
        .map(|j| serde_json::from_str(&j).unwrap())
}

/// A clinic on a real FHIR server, a fresh store, and an engine (polling off) that has done
/// its first round.
pub struct Synced {
    pub server: FhirServer,
    pub clinic: Clinic,
    pub store: Arc<Store>,
    pub engine: Engine,
    pub handle: hearth_sync::SyncHandle,
    pub rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

/// [`Synced`] for test `test`; `None` (skip reported) without the sample data.
pub fn synced(test: &str, scope: PatientScope) -> Option<Synced> {
    let (server, clinic) = server_with_clinic(test)?;
    let (dir, store) = fresh_store();
    let engine = engine(&server.base_url, &store, scope, Duration::from_secs(3600));
    let handle = engine.handle();
    let rt = runtime();
    rt.block_on(engine.round()).unwrap();
    Some(Synced {
        server,
        clinic,
        store,
        engine,
        handle,
        rt,
        _dir: dir,
    })
}
