//! A profile's place on this machine: its database in the profile folder and the OS keychain
//! accounts of its secrets. The app and the `hearth-sync` tool both take them from here, so
//! the tool opens the database the app made (and the app the one the tool made).

use crate::CoreError;
use std::path::{Path, PathBuf};

/// The encrypted store's file in a profile folder (`--data-dir`).
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("hearth.db")
}

/// The keychain account (under [`crate::KEYCHAIN_SERVICE`]) of the key of the database at `db`:
/// one key per database file.
pub fn database_key_account(db: &Path) -> String {
    format!("database-key:{}", db.display())
}

/// The keychain account of the refresh token of whoever signs in on the profile whose
/// database is at `db`.
pub fn refresh_token_account(db: &Path) -> String {
    format!("refresh-token:{}", db.display())
}

/// The EHR and sign-on settings `config` gives a profile: what the profile is bound to.
/// `None` without `[ehr]` (demo mode opens no profile store).
pub fn binding_of(config: &crate::config::MachineConfig) -> Option<hearth_store::ProfileBinding> {
    let ehr = config.ehr.as_ref()?;
    Some(hearth_store::ProfileBinding {
        fhir_base_url: ehr.fhir_base_url.trim_end_matches('/').to_string(),
        issuer: config
            .identity
            .as_ref()
            .map(|i| i.issuer.trim_end_matches('/').to_string()),
        client_id: config.identity.as_ref().map(|i| i.client_id.clone()),
    })
}

/// Binds the profile whose store is `store` (the database at `db`) to the EHR and sign-on settings of `config` the
/// first time it is opened, and refuses it afterwards under other settings: a profile made
/// with sign-in is never opened by a configuration without it (or with another EHR or
/// identity provider). The binding is kept inside the encrypted database, so it cannot be
/// changed without the key. The error names each setting that differs; `config_name` is the
/// configuration's file, for the message.
pub fn check_binding(
    store: &hearth_store::Store,
    db: &Path,
    config: &crate::config::MachineConfig,
    config_name: &str,
) -> Result<(), CoreError> {
    let Some(wanted) = binding_of(config) else {
        return Ok(());
    };
    let folder = db.parent().unwrap_or(db).display();
    // A profile of a version before bindings is bound by the first configuration that opens
    // it: never to "no sign-in" when someone has signed in to it (its audit log says so).
    if wanted.issuer.is_none()
        && store.profile_binding()?.is_none()
        && store.audit_has_action("sign-in")?
    {
        return Err(CoreError::Configuration {
            source_name: config_name.to_string(),
            problem: format!(
                "the profile {folder} was used with sign-in, and this configuration has none \
                 (no `[identity]`): Hearth does not open it without sign-in. Start Hearth with \
                 the configuration this profile was used with, or with another profile folder \
                 (--data-dir)"
            ),
        });
    }
    let bound = store.bind_profile(&wanted)?;
    let differences = differences(&bound, &wanted);
    if differences.is_empty() {
        return Ok(());
    }
    Err(CoreError::Configuration {
        source_name: config_name.to_string(),
        problem: format!(
            "the profile {folder} was set up with other EHR and sign-in settings, and Hearth \
             opens a profile only with those: {}. Start Hearth with the configuration this \
             profile was made with, or with another profile folder (--data-dir)",
            differences.join("; ")
        ),
    })
}

fn differences(
    bound: &hearth_store::ProfileBinding,
    wanted: &hearth_store::ProfileBinding,
) -> Vec<String> {
    let show = |v: &Option<String>| {
        v.as_deref()
            .map_or_else(|| "none (no sign-in)".to_string(), str::to_string)
    };
    let mut out = Vec::new();
    if bound.fhir_base_url.trim_end_matches('/') != wanted.fhir_base_url.trim_end_matches('/') {
        out.push(format!(
            "the EHR (`ehr.fhir_base_url`) is {} for the profile but {} in the configuration",
            bound.fhir_base_url, wanted.fhir_base_url
        ));
    }
    let issuer = |v: &Option<String>| v.as_deref().map(|i| i.trim_end_matches('/').to_string());
    if issuer(&bound.issuer) != issuer(&wanted.issuer) {
        out.push(format!(
            "the identity provider (`identity.issuer`) is {} for the profile but {} in the configuration",
            show(&bound.issuer),
            show(&wanted.issuer)
        ));
    }
    if bound.client_id != wanted.client_id {
        out.push(format!(
            "the client id (`identity.client_id`) is {} for the profile but {} in the configuration",
            show(&bound.client_id),
            show(&wanted.client_id)
        ));
    }
    out
}
