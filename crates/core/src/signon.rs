//! Sign-on as the workstation uses it: who is signed in, the idle lock, the EHR launch, and
//! the audit of each (sign-in, sign-out, lock, unlock, failures). The protocol work is
//! `hearth-auth`'s.

use crate::launch::EhrLaunch;
use crate::CoreError;
use hearth_auth::{
    AuthError, AuthSettings, Browser, Clock, IdleLock, LaunchContext, LockState, LoginRequest,
    PendingLogin, Provider, Tokens, Vault, DEFAULT_SCOPES,
};
use hearth_ipc::{LaunchSummary, SessionState, UserSummary};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the browser may take to bring the sign-in back.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);

/// Something to record in the audit log: (action, what).
pub type AuditFn = Arc<dyn Fn(&str, &str, &str) + Send + Sync>;

pub struct SignOn {
    settings: AuthSettings,
    browser: Browser,
    vault: Vault,
    tokens: Arc<Tokens>,
    provider: tokio::sync::Mutex<Option<Arc<Provider>>>,
    lock: IdleLock,
    pending_launch: Mutex<Option<EhrLaunch>>,
    launch: Mutex<Option<LaunchContext>>,
    /// One sign-in at a time.
    signing_in: tokio::sync::Mutex<()>,
    audit: AuditFn,
    /// Bumped when the session changes (sign-in, sign-out, lock, unlock), for the window.
    pulse: tokio::sync::watch::Sender<u64>,
    /// Why the current session's renewal was refused (its stable code), until a sign-in
    /// replaces it.
    renewal_refused: Mutex<Option<&'static str>>,
}

impl std::fmt::Debug for SignOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignOn")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether an authentication at `auth_time` (whole seconds, as ID tokens carry it) came after
/// the lock closed at `locked_at`.
fn fresh_since(
    auth_time: Option<std::time::SystemTime>,
    locked_at: Option<std::time::SystemTime>,
) -> Result<(), AuthError> {
    let Some(locked_at) = locked_at else {
        return Ok(());
    };
    let Some(auth_time) = auth_time else {
        return Err(AuthError::StaleAuthentication(
            "the identity token carries no auth_time".into(),
        ));
    };
    // auth_time is cut to the second: a login in the second the lock closed counts.
    if auth_time + Duration::from_secs(1) > locked_at {
        Ok(())
    } else {
        Err(AuthError::StaleAuthentication(
            "its auth_time is before the lock".into(),
        ))
    }
}

/// Two URLs name the same FHIR server (trailing slashes aside).
fn same_base(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

impl SignOn {
    #[allow(
        clippy::too_many_arguments,
        reason = "built once, from the configuration"
    )]
    pub fn new(
        fhir_base: &str,
        identity: &crate::config::IdentityConfig,
        idle_minutes: u32,
        vault: Vault,
        clock: Arc<dyn Clock>,
        launch: Option<EhrLaunch>,
        audit: AuditFn,
    ) -> Self {
        Self {
            settings: AuthSettings {
                fhir_base: fhir_base.to_string(),
                issuer: identity.issuer.clone(),
                client_id: identity.client_id.clone(),
                scopes: identity
                    .scopes
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect()),
                resources: Vec::new(),
            },
            browser: identity
                .browser
                .clone()
                .map_or(Browser::System, Browser::Command),
            vault,
            tokens: Tokens::new(),
            provider: tokio::sync::Mutex::new(None),
            lock: IdleLock::new(clock, Duration::from_secs(u64::from(idle_minutes) * 60)),
            pending_launch: Mutex::new(launch),
            launch: Mutex::new(None),
            signing_in: tokio::sync::Mutex::new(()),
            audit,
            pulse: tokio::sync::watch::Sender::new(0),
            renewal_refused: Mutex::new(None),
        }
    }

    /// Sign-on for the profile whose database is `db`, as the configuration asks (`None`
    /// without `[identity]` or `[ehr]`): the refresh token in the keychain under the
    /// profile's account, sign-ins, sign-outs and locks audited in the profile's store. The
    /// app and the `hearth-sync` tool both sign on through this.
    pub fn for_profile(
        config: &crate::config::MachineConfig,
        db: &std::path::Path,
        store: &Arc<hearth_store::Store>,
        idle_clock: Arc<dyn Clock>,
        launch: Option<EhrLaunch>,
    ) -> Option<Self> {
        let (ehr, identity) = (config.ehr.as_ref()?, config.identity.as_ref()?);
        let audit_store = store.clone();
        let mut signon = Self::new(
            &ehr.fhir_base_url,
            identity,
            config.session.idle_lock_minutes,
            Vault::new(
                crate::KEYCHAIN_SERVICE,
                &crate::profile::refresh_token_account(db),
            ),
            idle_clock,
            launch,
            Arc::new(move |actor: &str, action: &str, what: &str| {
                // The audit log is the store's hash chain; a failure to write it is reported
                // on stderr without the user (no PHI either way).
                if let Err(e) = audit_store.audit(actor, action, what) {
                    eprintln!("hearth: audit of {action} failed: {e}");
                }
            }),
        );
        // The visit service gets a token of its own (RFC 8707): the provider is told of it at
        // sign-in.
        if let Some(resource) = config
            .visit
            .as_ref()
            .and_then(|v| hearth_visit_client::resource_indicator(&v.service_url).ok())
        {
            signon.settings.resources.push(resource);
        }
        Some(signon)
    }

    /// The FHIR client's token source.
    pub fn tokens(&self) -> Arc<Tokens> {
        self.tokens.clone()
    }

    fn actor(&self) -> String {
        self.tokens.current().map_or_else(
            || "unknown-user".to_string(),
            |s| {
                let u = s.user();
                u.fhir_user
                    .clone()
                    .unwrap_or_else(|| format!("user/{}", u.subject))
            },
        )
    }

    /// Follows the session: the value changes on sign-in, sign-out, lock, unlock and a
    /// refused renewal. (The idle lock and the access token's end fall due without an event:
    /// see [`SignOn::lock_due_in`] and [`SignOn::expiry_due_in`]; a renewal that worked is
    /// [`SignOn::renewals`].)
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.pulse.subscribe()
    }

    /// Follows the access token's renewals (each one that worked).
    pub fn renewals(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tokens.renewals()
    }

    /// Keeps the signed-in user's access token fresh for as long as the process runs
    /// (unreachable provider: again after `retry`). A renewal the provider refuses, or whose
    /// answer Hearth rejects, ends the session's health at once: the state is
    /// [`SessionState::Expired`] (no PHI, the window offers to sign in again), the status
    /// says that nothing is synchronised, and the failure is audited.
    pub async fn keep_fresh(self: Arc<Self>, retry: Duration) {
        let me = self.clone();
        self.tokens
            .clone()
            .keep_fresh(retry, move |e| me.renewal_failed(e))
            .await;
    }

    /// The current session could not be renewed (`e` says why): the user must sign in again.
    pub fn renewal_failed(&self, e: &AuthError) {
        if self.tokens.current().is_none() {
            return;
        }
        *guard(&self.renewal_refused) = Some(e.code());
        (self.audit)(&self.actor(), "renewal-failed", e.code());
        self.session_changed();
    }

    /// How long until the access token ends without a renewal (`None` signed out, or ended
    /// already): when the state must be looked at again.
    pub fn expiry_due_in(&self) -> Option<Duration> {
        let ends = self.tokens.current()?.expires_at()?;
        ends.duration_since(std::time::SystemTime::now()).ok()
    }

    /// Why the session is [`SessionState::Expired`], in words for the status line.
    pub fn expiry_reason(&self) -> Option<String> {
        self.tokens.current()?;
        if let Some(code) = *guard(&self.renewal_refused) {
            return Some(format!(
                "the sign-in service would not renew the sign-in ({code})"
            ));
        }
        self.access_ended()
            .then(|| "the sign-in ran out and could not be renewed".to_string())
    }

    /// The session's access token has run out.
    fn access_ended(&self) -> bool {
        self.tokens.current().is_some_and(|s| s.bearer().is_none())
    }

    fn session_changed(&self) {
        self.pulse.send_modify(|n| *n += 1);
    }

    /// How long until the idle lock falls due without input (`None` signed out or locked):
    /// when the state must be looked at again.
    pub fn lock_due_in(&self) -> Option<Duration> {
        self.tokens.current()?;
        self.lock.remaining()
    }

    pub fn state(&self) -> SessionState {
        if self.tokens.current().is_none() {
            return SessionState::SignedOut;
        }
        match self.session_state(self.lock.check()) {
            SessionState::SignedIn
                if guard(&self.renewal_refused).is_some() || self.access_ended() =>
            {
                SessionState::Expired
            }
            state => state,
        }
    }

    /// The session state for a lock state; a lock just found due is audited (once).
    fn session_state(&self, lock: LockState) -> SessionState {
        match lock {
            LockState::Open => SessionState::SignedIn,
            LockState::JustLocked => {
                (self.audit)(&self.actor(), "lock", "idle timeout");
                self.session_changed();
                SessionState::Locked
            }
            LockState::Locked => SessionState::Locked,
        }
    }

    /// PHI may be shown: someone is signed in and the window is not locked.
    pub fn check_open(&self) -> Result<(), CoreError> {
        match self.state() {
            SessionState::SignedIn => Ok(()),
            _ => Err(CoreError::Locked),
        }
    }

    pub fn user(&self) -> Option<UserSummary> {
        self.tokens.current().map(|s| UserSummary {
            display_name: s.user().display_name(),
            fhir_user: s.user().fhir_user.clone(),
        })
    }

    pub fn launch(&self) -> Option<LaunchSummary> {
        guard(&self.launch).as_ref().map(|c| LaunchSummary {
            patient_id: c.patient.clone(),
            encounter_id: c.encounter.clone(),
        })
    }

    pub fn idle_minutes(&self) -> u32 {
        u32::try_from(self.lock.timeout().as_secs() / 60).unwrap_or(u32::MAX)
    }

    /// The user did something: keeps the lock away (does not open a locked window).
    pub fn activity(&self) {
        if self.tokens.current().is_some() {
            self.session_state(self.lock.touch());
        }
    }

    pub fn lock_now(&self) {
        self.lock_for("by the user");
    }

    /// Locks at once for `why` (the user, the OS locking the session, sleep); audited.
    pub fn lock_for(&self, why: &str) {
        if self.tokens.current().is_some() && self.lock.lock_now() {
            (self.audit)(&self.actor(), "lock", why);
            self.session_changed();
        }
    }

    async fn provider(&self) -> Result<Arc<Provider>, AuthError> {
        let mut p = self.provider.lock().await;
        if let Some(p) = p.as_ref() {
            return Ok(p.clone());
        }
        let discovered = Provider::discover(self.settings.clone()).await?;
        *p = Some(discovered.clone());
        Ok(discovered)
    }

    /// Revokes (RFC 7009) and then removes a refresh token an earlier run left in the keychain
    /// (an app that was closed, not signed out): Hearth does not resume sessions at start, so
    /// that token only waits to be stolen. The shell runs this at start; a sign-in does it
    /// too before it stores its own. Nothing to do while someone is signed in. A provider
    /// out of reach leaves the token for the next attempt (it is never used); a provider that
    /// offers no revocation endpoint gets it deleted only. Audited either way.
    pub async fn revoke_leftover(&self) -> Result<(), CoreError> {
        let _one = self.signing_in.lock().await;
        self.revoke_leftover_inner().await.map_err(CoreError::from)
    }

    async fn revoke_leftover_inner(&self) -> Result<(), AuthError> {
        if self.tokens.current().is_some() {
            return Ok(());
        }
        let Some(leftover) = self.vault.off_runtime(Vault::load).await? else {
            return Ok(());
        };
        let outcome = match self.provider().await {
            Ok(provider) => provider.revoke(&leftover, "refresh_token").await,
            Err(e) => Err(e),
        };
        let what = match &outcome {
            Ok(true) => "revoked".to_string(),
            Ok(false) => "deleted (the provider offers no revocation)".to_string(),
            Err(e) => format!("kept for another attempt: {}", e.code()),
        };
        (self.audit)("hearth", "revoke-leftover-token", &what);
        outcome?;
        self.vault.off_runtime(Vault::delete).await
    }

    /// Signs in through the browser, or, when locked, authenticates the same user again to
    /// unlock. An EHR launch's `launch` is echoed the first time.
    pub async fn sign_in(&self) -> Result<UserSummary, CoreError> {
        let _one = self.signing_in.lock().await;
        let result = self.sign_in_inner().await;
        if let Err(e) = &result {
            (self.audit)(
                &self.actor(),
                "sign-in-failed",
                &format!("{}: {e}", e.code()),
            );
        }
        result.map_err(CoreError::from)
    }

    async fn sign_in_inner(&self) -> Result<UserSummary, AuthError> {
        // Locked, or a session whose renewal failed: the same user must come back (their
        // work is on screen and their changes wait in the queue).
        let state = self.state();
        let unlocking = self
            .tokens
            .current()
            .filter(|_| matches!(state, SessionState::Locked | SessionState::Expired));
        let launch = guard(&self.pending_launch).clone();
        if let Some(l) = &launch {
            if !same_base(&l.iss, &self.settings.fhir_base) {
                *guard(&self.pending_launch) = None;
                return Err(AuthError::Invalid(format!(
                    "this launch came from {}, which is not the EHR this workstation is set up for ({})",
                    l.iss, self.settings.fhir_base
                )));
            }
        }
        let provider = self.provider().await?;
        if unlocking.is_none() && self.tokens.current().is_none() {
            // A token an earlier run left behind is revoked before this sign-in's replaces
            // it in the keychain (an unreachable provider does not stop the sign-in).
            let _ = self.revoke_leftover_inner().await;
        }
        let request = LoginRequest {
            launch: launch.as_ref().map(|l| l.launch.clone()),
            force_login: state == SessionState::Locked,
        };
        let pending = PendingLogin::start(provider, &request).await?;
        self.browser.open(pending.authorize_url().as_str())?;
        let redirect = pending.wait_for_redirect(BROWSER_TIMEOUT).await?;
        // The refresh token of the session being replaced, which the new one overwrites in
        // the keychain: revoked once the new session stands.
        let replaced_refresh = if self.tokens.current().is_some() {
            self.vault.off_runtime(Vault::load).await?
        } else {
            None
        };
        let session = pending.finish(redirect, self.vault.clone()).await?;
        if let Some(before) = &unlocking {
            if before.user().subject != session.user().subject {
                // Not the user whose work is on screen: this sign-in is undone.
                let _ = session.sign_out().await;
                return Err(AuthError::WrongUser);
            }
        }
        if state == SessionState::Locked {
            // Unlocking needs a login after the lock (asked with prompt=login and max_age=0),
            // and the ID token must show it: a provider that reused an older login is refused.
            if let Err(e) = fresh_since(session.user().auth_time, self.lock.locked_at()) {
                let _ = session.sign_out().await;
                return Err(e);
            }
        }
        if launch.is_some() {
            *guard(&self.pending_launch) = None;
            *guard(&self.launch) = session.launch().cloned();
        }
        let user = UserSummary {
            display_name: session.user().display_name(),
            fhir_user: session.user().fhir_user.clone(),
        };
        let replaced = self.tokens.current();
        *guard(&self.renewal_refused) = None;
        self.tokens.set(Some(Arc::new(session)));
        if let Some(old) = replaced {
            // Best effort: an unreachable provider lets the old tokens expire on their own.
            let _ = old.retire(replaced_refresh).await;
        }
        self.lock.unlock();
        self.session_changed();
        (self.audit)(
            &self.actor(),
            if state == SessionState::Locked {
                "unlock"
            } else {
                "sign-in"
            },
            if launch.is_some() {
                "ehr launch"
            } else {
                "standalone"
            },
        );
        Ok(user)
    }

    /// Signs out: revokes and deletes the refresh token, drops the access token.
    pub async fn sign_out(&self) -> Result<(), CoreError> {
        let Some(session) = self.tokens.current() else {
            return Ok(());
        };
        let actor = self.actor();
        *guard(&self.renewal_refused) = None;
        self.tokens.set(None);
        *guard(&self.launch) = None;
        self.session_changed();
        let result = session.sign_out().await;
        (self.audit)(
            &actor,
            "sign-out",
            if result.is_ok() {
                "revoked"
            } else {
                "local only: the provider was not reached"
            },
        );
        match result {
            Err(AuthError::Unreachable(_)) | Ok(()) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
