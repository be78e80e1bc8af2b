use crate::provider::{chain, Provider};
use crate::{AuthError, Secret, Vault};
use hearth_fhir::{Bearer, FhirError, TokenSource};
use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
};
use openidconnect::{AdditionalClaims, ClientId, IdToken, IdTokenVerifier, Nonce};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// The SMART claim in the ID token: the user's FHIR resource.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmartClaims {
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    fhir_user: Option<String>,
}

impl AdditionalClaims for SmartClaims {}

type SmartIdToken = IdToken<
    SmartClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// Who signed in, from the verified ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The provider's stable id of the user (`sub`).
    pub subject: String,
    pub name: Option<String>,
    /// `Practitioner/...` (SMART `fhirUser`).
    pub fhir_user: Option<String>,
    /// When the user last authenticated at the provider (`auth_time`, OpenID Connect Core
    /// §2), if the ID token says.
    pub auth_time: Option<SystemTime>,
}

impl User {
    /// What the top bar shows.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.fhir_user.clone())
            .unwrap_or_else(|| self.subject.clone())
    }
}

/// The EHR launch's context from the token response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchContext {
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub need_patient_banner: bool,
}

/// A token endpoint answer. No `Debug`: it holds tokens.
pub(crate) struct TokenAnswer {
    access_token: Secret,
    expires_in: Option<u64>,
    refresh_token: Option<Secret>,
    id_token: Option<String>,
    context: LaunchContext,
}

impl TokenAnswer {
    pub(crate) fn parse(json: serde_json::Value) -> Result<Self, AuthError> {
        let text = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_string);
        let access_token = text("access_token").ok_or_else(|| {
            AuthError::BadResponse("the token response has no access_token".into())
        })?;
        match text("token_type") {
            Some(t) if t.eq_ignore_ascii_case("bearer") => {}
            other => {
                return Err(AuthError::BadResponse(format!(
                    "token_type is {other:?}, not Bearer"
                )))
            }
        }
        Ok(Self {
            access_token: Secret::new(access_token),
            expires_in: json.get("expires_in").and_then(|v| v.as_u64()),
            refresh_token: text("refresh_token").map(Secret::new),
            id_token: text("id_token"),
            context: LaunchContext {
                patient: text("patient"),
                encounter: text("encounter"),
                need_patient_banner: json
                    .get("need_patient_banner")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(true),
            },
        })
    }
}

struct Access {
    token: Secret,
    issued_at: SystemTime,
    expires_at: SystemTime,
}

impl Access {
    /// When it should be replaced: at 80 % of its life, and at least 30 s before it ends.
    fn due(&self) -> SystemTime {
        let life = self
            .expires_at
            .duration_since(self.issued_at)
            .unwrap_or_default();
        let at_80 = self.issued_at + life.mul_f32(0.8);
        let margin = self.expires_at - Duration::from_secs(30).min(life / 2);
        at_80.min(margin)
    }
}

impl From<TokenAnswer> for Access {
    /// The answer's access token, valid from now for `expires_in`.
    fn from(answer: TokenAnswer) -> Self {
        let now = SystemTime::now();
        Self {
            token: answer.access_token,
            issued_at: now,
            expires_at: now
                + answer
                    .expires_in
                    .map_or(DEFAULT_LIFETIME, Duration::from_secs),
        }
    }
}

/// A signed-in session. The access token is only in memory; the refresh token only in the
/// keychain ([`Vault`]), read when needed and replaced when the provider rotates it.
pub struct Session {
    provider: Arc<Provider>,
    user: User,
    launch: Option<LaunchContext>,
    access: Mutex<Option<Access>>,
    /// Tokens for other resource servers ([`Session::token_for`]), by resource.
    others: Mutex<HashMap<String, Access>>,
    vault: Vault,
    /// Held while the refresh token is redeemed (renewal, tokens for other resources, sign-out):
    /// the provider rotates it, and a second use of an old one would end the grant.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("subject", &self.user.subject)
            .finish_non_exhaustive()
    }
}

/// Lifetime assumed when the provider does not say (`expires_in` absent).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

impl Session {
    fn verify_id_token(
        provider: &Provider,
        id_token: &str,
        nonce: Option<&Nonce>,
    ) -> Result<User, AuthError> {
        let token = SmartIdToken::from_str(id_token)
            .map_err(|e| AuthError::InvalidIdToken(format!("not a JWT: {e}")))?;
        let verifier: IdTokenVerifier<'_, CoreJsonWebKey> = IdTokenVerifier::new_public_client(
            ClientId::new(provider.settings.client_id.clone()),
            provider.issuer.clone(),
            provider.keys.clone(),
        );
        let claims = match nonce {
            Some(n) => token.claims(&verifier, n),
            // A refreshed ID token carries no nonce of ours (OpenID Connect Core 12.2).
            None => token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
        }
        .map_err(|e| AuthError::InvalidIdToken(chain(&e)))?;
        Ok(User {
            subject: claims.subject().as_str().to_string(),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_string()),
            fhir_user: claims.additional_claims().fhir_user.clone(),
            auth_time: claims.auth_time().map(|t| {
                SystemTime::UNIX_EPOCH
                    + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
            }),
        })
    }

    fn new(
        provider: Arc<Provider>,
        user: User,
        launch: Option<LaunchContext>,
        answer: TokenAnswer,
        vault: Vault,
    ) -> Self {
        Self {
            launch,
            access: Mutex::new(Some(Access::from(answer))),
            others: Mutex::new(HashMap::new()),
            provider,
            user,
            vault,
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// A session from a first token answer (after the code exchange).
    pub(crate) async fn establish(
        provider: Arc<Provider>,
        answer: TokenAnswer,
        nonce: &Nonce,
        launched: bool,
        vault: Vault,
    ) -> Result<Self, AuthError> {
        let id_token = answer.id_token.as_deref().ok_or_else(|| {
            AuthError::BadResponse("the token response has no id_token (scope openid)".into())
        })?;
        let user = Self::verify_id_token(&provider, id_token, Some(nonce))?;
        if let Some(refresh) = answer.refresh_token.clone() {
            vault.off_runtime(move |v| v.store(&refresh)).await?;
        }
        let launch = launched.then(|| answer.context.clone());
        Ok(Self::new(provider, user, launch, answer, vault))
    }

    /// Resumes with the refresh token in the keychain (Hearth restarted): refreshes, and
    /// takes the user from the new ID token.
    pub async fn resume(provider: Arc<Provider>, vault: Vault) -> Result<Self, AuthError> {
        let answer = Self::redeem_refresh(&provider, &vault).await?;
        let id_token = answer.id_token.as_deref().ok_or_else(|| {
            AuthError::BadResponse("the refreshed tokens carry no id_token: sign in".into())
        })?;
        let user = Self::verify_id_token(&provider, id_token, None)?;
        Ok(Self::new(provider, user, None, answer, vault))
    }

    /// Redeems the keychain's refresh token; a rotated one replaces it there before anything
    /// else happens, so the old one is never used again.
    async fn redeem_refresh(provider: &Provider, vault: &Vault) -> Result<TokenAnswer, AuthError> {
        Self::redeem_refresh_with(provider, vault, &[]).await
    }

    /// [`Session::redeem_refresh`] with more parameters (`resource`, `scope`).
    async fn redeem_refresh_with(
        provider: &Provider,
        vault: &Vault,
        extra: &[(&str, &str)],
    ) -> Result<TokenAnswer, AuthError> {
        let refresh = vault
            .off_runtime(Vault::load)
            .await?
            .ok_or(AuthError::SignedOut)?;
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose()),
            ("client_id", provider.settings.client_id.as_str()),
        ];
        form.extend_from_slice(extra);
        let json = provider
            .post_form(&provider.smart.token_endpoint, &form)
            .await?;
        let answer = TokenAnswer::parse(json)?;
        if let Some(new) = answer.refresh_token.clone() {
            vault.off_runtime(move |v| v.store(&new)).await?;
        }
        Ok(answer)
    }

    pub fn user(&self) -> &User {
        &self.user
    }

    /// EHR launch: the patient and encounter the EHR had open.
    pub fn launch(&self) -> Option<&LaunchContext> {
        self.launch.as_ref()
    }

    pub fn provider(&self) -> &Arc<Provider> {
        &self.provider
    }

    fn access(&self) -> std::sync::MutexGuard<'_, Option<Access>> {
        self.access.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The access token, if it is still valid.
    pub fn bearer(&self) -> Option<Bearer> {
        let now = SystemTime::now();
        self.access()
            .as_ref()
            .filter(|a| a.expires_at > now)
            .map(|a| Bearer::new(a.token.expose()))
    }

    /// When the access token ends (`None` after sign-out): without a renewal by then, the
    /// session can no longer reach the EHR.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.access().as_ref().map(|a| a.expires_at)
    }

    /// When the access token should be refreshed: at 80 % of its life, and at least 30 s
    /// before it ends. `None` after sign-out.
    pub fn refresh_due(&self) -> Option<SystemTime> {
        self.access().as_ref().map(Access::due)
    }

    fn others(&self) -> std::sync::MutexGuard<'_, HashMap<String, Access>> {
        self.others.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached_for(&self, resource: &str) -> Option<Bearer> {
        let now = SystemTime::now();
        self.others()
            .get(resource)
            .filter(|a| a.due() > now)
            .map(|a| Bearer::new(a.token.expose()))
    }

    /// An access token for another resource server than the FHIR base (RFC 8707): got with
    /// the refresh token (RFC 6749 §6) with `resource` and the narrower `scope`, so that the
    /// EHR token never leaves for that server. Kept until shortly before it expires. The
    /// refresh is serialised with renewal and the rotated refresh token is kept exactly as
    /// renewal keeps it.
    pub async fn token_for(&self, resource: &str, scope: &str) -> Result<Bearer, AuthError> {
        if let Some(bearer) = self.cached_for(resource) {
            return Ok(bearer);
        }
        let _one_at_a_time = self.refreshing.lock().await;
        // Someone else may have got it while this one waited.
        if let Some(bearer) = self.cached_for(resource) {
            return Ok(bearer);
        }
        if self.access().is_none() {
            return Err(AuthError::SignedOut);
        }
        let answer = Self::redeem_refresh_with(
            &self.provider,
            &self.vault,
            &[("resource", resource), ("scope", scope)],
        )
        .await?;
        if let Some(id_token) = &answer.id_token {
            let user = Self::verify_id_token(&self.provider, id_token, None)?;
            if user.subject != self.user.subject {
                return Err(AuthError::WrongUser);
            }
        }
        let access = Access::from(answer);
        let bearer = Bearer::new(access.token.expose());
        self.others().insert(resource.to_owned(), access);
        Ok(bearer)
    }

    /// Gets a new access token with the refresh token (which the provider may rotate).
    pub async fn refresh(&self) -> Result<(), AuthError> {
        let _one_at_a_time = self.refreshing.lock().await;
        if self.access().is_none() {
            return Err(AuthError::SignedOut);
        }
        let answer = Self::redeem_refresh(&self.provider, &self.vault).await?;
        if let Some(id_token) = &answer.id_token {
            let user = Self::verify_id_token(&self.provider, id_token, None)?;
            if user.subject != self.user.subject {
                return Err(AuthError::WrongUser);
            }
        }
        *self.access() = Some(Access::from(answer));
        Ok(())
    }

    /// Signs out: the refresh token is revoked at the provider (when it offers revocation)
    /// and deleted from the keychain; the access token is dropped. The local parts happen even
    /// if the provider cannot be reached; that failure is returned after them.
    pub async fn sign_out(&self) -> Result<(), AuthError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let refresh = self.vault.off_runtime(Vault::load).await?;
        let revoked = self.revoke(refresh).await;
        self.vault.off_runtime(Vault::delete).await?;
        revoked
    }

    /// Ends this session at the provider after a newer one replaced it (re-authentication):
    /// its access token and `refresh` (the refresh token it had, which the keychain no longer
    /// holds) are revoked; the keychain is left to the new session.
    pub async fn retire(&self, refresh: Option<Secret>) -> Result<(), AuthError> {
        let _one_at_a_time = self.refreshing.lock().await;
        self.revoke(refresh).await
    }

    async fn revoke(&self, refresh: Option<Secret>) -> Result<(), AuthError> {
        let access = self.access().take();
        // The tokens made for other audiences (the visit service) end with this one.
        let others: Vec<Access> = self.others().drain().map(|(_, a)| a).collect();
        let tokens = [
            refresh.map(|r| (r, "refresh_token")),
            access.map(|a| (a.token, "access_token")),
        ];
        let others = others.into_iter().map(|a| (a.token, "access_token"));
        let mut error = None;
        for (token, hint) in tokens.into_iter().flatten().chain(others) {
            if let Err(e) = self.provider.revoke(&token, hint).await {
                error.get_or_insert(e);
            }
        }
        error.map_or(Ok(()), Err)
    }
}

/// The bearer token source the FHIR client holds for its whole life: whoever is signed in now.
#[derive(Default)]
pub struct Tokens {
    session: RwLock<Option<Arc<Session>>>,
    changed: tokio::sync::Notify,
    /// Bumped after each successful renewal by [`Tokens::keep_fresh`].
    renewed: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

impl Tokens {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set(&self, session: Option<Arc<Session>>) {
        *self.session.write().unwrap_or_else(|p| p.into_inner()) = session;
        self.changed.notify_waiters();
    }

    /// Follows renewals: the value changes after each access token [`Tokens::keep_fresh`]
    /// got, so whoever shows the session's health learns that it is good again.
    pub fn renewals(&self) -> tokio::sync::watch::Receiver<u64> {
        self.renewed.subscribe()
    }

    pub fn current(&self) -> Option<Arc<Session>> {
        self.session
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps the current session's access token fresh, for as long as the process runs.
    /// Unreachable provider: tries again in `retry` (queued writes wait; nothing is lost).
    /// A refresh token the provider refuses ends the session: `on_expired` is told, and the
    /// user must sign in again.
    pub async fn keep_fresh(
        self: Arc<Self>,
        retry: Duration,
        on_expired: impl Fn(&AuthError) + Send,
    ) {
        loop {
            let changed = self.changed.notified();
            let Some(session) = self.current() else {
                changed.await;
                continue;
            };
            let Some(due) = session.refresh_due() else {
                changed.await;
                continue;
            };
            let wait = due
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::select! {
                () = changed => continue,
                () = tokio::time::sleep(wait) => {}
            }
            match session.refresh().await {
                Ok(()) => self.renewed.send_modify(|n| *n += 1),
                Err(e)
                    if e.needs_sign_in()
                        || matches!(e, AuthError::WrongUser | AuthError::InvalidIdToken(_)) =>
                {
                    on_expired(&e);
                    // Stays signed in for display; the token source answers "expired" until
                    // the user signs in again, which replaces the session.
                    let changed = self.changed.notified();
                    changed.await;
                }
                Err(_) => tokio::time::sleep(retry).await,
            }
        }
    }
}

impl Tokens {
    /// [`Session::token_for`] of whoever is signed in now.
    pub async fn token_for(&self, resource: &str, scope: &str) -> Result<Bearer, AuthError> {
        match self.current() {
            None => Err(AuthError::SignedOut),
            Some(s) => s.token_for(resource, scope).await,
        }
    }
}

impl TokenSource for Tokens {
    fn bearer(&self) -> Result<Option<Bearer>, FhirError> {
        match self.current() {
            None => Err(FhirError::Auth("nobody is signed in".into())),
            Some(s) => s.bearer().map(Some).ok_or_else(|| {
                FhirError::Auth("the sign-in has expired; waiting for it to be renewed".into())
            }),
        }
    }
}
