use crate::provider::Provider;
use crate::session::{Session, TokenAnswer};
use crate::{AuthError, Secret, Vault};
use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge, PkceCodeVerifier};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

/// The path of the loopback redirect.
const CALLBACK_PATH: &str = "/callback";

/// What kind of sign-in to start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginRequest {
    /// EHR launch: the `launch` value the EHR passed to Hearth, echoed to the provider.
    pub launch: Option<String>,
    /// Ask the provider to authenticate the user again even if its own session is alive (to
    /// unlock after the idle lock).
    pub force_login: bool,
}

/// One authorization-code flow in progress: the URL to open, the loopback port waiting for the
/// browser's redirect, and the secrets (state, nonce, PKCE verifier) that only this process
/// knows.
pub struct PendingLogin {
    provider: Arc<Provider>,
    listener: TcpListener,
    redirect_uri: String,
    url: Url,
    state: CsrfToken,
    nonce: Nonce,
    verifier: Option<PkceCodeVerifier>,
    launch: Option<String>,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// What the browser brought back to the loopback port. Its `Debug` hides the code.
#[derive(Clone, Default)]
pub struct Redirect {
    pub code: Option<Secret>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl std::fmt::Debug for Redirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redirect")
            .field("code", &self.code.as_ref().map(|_| "<hidden>"))
            .field("iss", &self.iss)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Redirect {
    /// Reads the query of a redirect URL (`...?code=..&state=..`).
    pub fn from_url(url: &Url) -> Self {
        let mut r = Self::default();
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "code" => r.code = Some(Secret::new(v.into_owned())),
                "state" => r.state = Some(v.into_owned()),
                "iss" => r.iss = Some(v.into_owned()),
                "error" => r.error = Some(v.into_owned()),
                "error_description" => r.error_description = Some(v.into_owned()),
                _ => {}
            }
        }
        r
    }
}

impl PendingLogin {
    /// Opens the loopback port and builds the authorization URL.
    pub async fn start(provider: Arc<Provider>, request: &LoginRequest) -> Result<Self, AuthError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
            AuthError::Invalid(format!(
                "cannot open a loopback port for the sign-in redirect: {e}"
            ))
        })?;
        let port = listener
            .local_addr()
            .map_err(|e| AuthError::Invalid(format!("loopback port: {e}")))?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}{CALLBACK_PATH}");
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        // 16 random bytes each: 128 bits.
        let state = CsrfToken::new_random();
        let nonce = Nonce::new_random();
        let mut scopes: Vec<String> = provider.settings.scopes.clone();
        if request.launch.is_some() && !scopes.iter().any(|s| s == "launch") {
            scopes.push("launch".into());
        }
        let mut url = Url::parse(&provider.smart.authorization_endpoint)
            .map_err(|e| AuthError::Discovery(format!("authorization_endpoint: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &provider.settings.client_id)
                .append_pair("redirect_uri", &redirect_uri)
                .append_pair("scope", &scopes.join(" "))
                .append_pair("state", state.secret())
                .append_pair("nonce", nonce.secret())
                .append_pair("code_challenge", challenge.as_str())
                .append_pair("code_challenge_method", challenge.method().as_str())
                .append_pair("aud", provider.settings.fhir_base.trim_end_matches('/'));
            // RFC 8707 §2.1: the other services Hearth will ask tokens for (a provider that
            // supports resource indicators refreshes only into resources it was asked for).
            for resource in &provider.settings.resources {
                q.append_pair("resource", resource);
            }
            if let Some(launch) = &request.launch {
                q.append_pair("launch", launch);
            }
            if request.force_login {
                q.append_pair("prompt", "login");
                q.append_pair("max_age", "0");
            }
        }
        Ok(Self {
            provider,
            listener,
            redirect_uri,
            url,
            state,
            nonce,
            verifier: Some(verifier),
            launch: request.launch.clone(),
        })
    }

    /// The URL to open in the browser.
    pub fn authorize_url(&self) -> &Url {
        &self.url
    }

    /// Where the browser will be sent back.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Forgets the PKCE verifier, so the code is redeemed without it. Only for showing that
    /// the provider refuses that; Hearth itself never calls it.
    #[doc(hidden)]
    pub fn forget_pkce_verifier(&mut self) {
        self.verifier = None;
    }

    /// The `state` this login sent (a test plays the browser with it).
    #[doc(hidden)]
    pub fn state(&self) -> &str {
        self.state.secret()
    }

    /// Waits for the browser to come back to the loopback port; answers it with a page that
    /// tells the user to return to Hearth. Other requests (a favicon) get 404.
    pub async fn wait_for_redirect(&self, timeout: Duration) -> Result<Redirect, AuthError> {
        tokio::time::timeout(timeout, self.accept_redirect())
            .await
            .map_err(|_| AuthError::TimedOut(timeout.as_secs()))?
    }

    /// Takes connections to the loopback port until one brings this login's answer. Each
    /// connection is read by a task of its own with one deadline for its whole request head,
    /// so a local process that opens connections and trickles bytes (or sends nothing) holds
    /// up neither the others nor the browser's.
    async fn accept_redirect(&self) -> Result<Redirect, AuthError> {
        let expected: Arc<str> = Arc::from(self.state.secret().as_str());
        let mut reading = tokio::task::JoinSet::new();
        let mut oldest: std::collections::VecDeque<tokio::task::AbortHandle> =
            std::collections::VecDeque::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, _) = accepted
                        .map_err(|e| AuthError::Invalid(format!("loopback port: {e}")))?;
                    // Beyond this many at once, the oldest is given up, never the newest:
                    // connections held open cannot keep the browser's from being read.
                    if oldest.len() >= MAX_OPEN_ANSWERS {
                        if let Some(handle) = oldest.pop_front() {
                            handle.abort();
                        }
                    }
                    oldest.push_back(reading.spawn(read_answer(stream, expected.clone())));
                }
                Some(done) = reading.join_next_with_id(), if !reading.is_empty() => {
                    let id = match &done {
                        Ok((id, _)) => *id,
                        Err(e) => e.id(),
                    };
                    oldest.retain(|h| h.id() != id);
                    if let Ok((_, Some(redirect))) = done {
                        return Ok(redirect);
                    }
                }
            }
        }
    }

    /// Whether a redirect's `state` is this login's (compared in constant time).
    fn is_ours(&self, state: Option<&str>) -> bool {
        state_is(self.state.secret(), state)
    }

    /// Checks the redirect (error, state, issuer), redeems the code with the PKCE verifier,
    /// verifies the ID token (signature, issuer, audience, expiry, nonce), keeps the refresh
    /// token in `vault` and returns the session.
    pub async fn finish(self, redirect: Redirect, vault: Vault) -> Result<Session, AuthError> {
        // The state before anything the answer says, its error included.
        if !self.is_ours(redirect.state.as_deref()) {
            return Err(AuthError::StateMismatch);
        }
        if let Some(error) = redirect.error {
            return Err(AuthError::Refused {
                error,
                description: redirect.error_description,
            });
        }
        if let Some(iss) = &redirect.iss {
            if iss.trim_end_matches('/') != self.provider.issuer().trim_end_matches('/') {
                return Err(AuthError::IssuerMismatch {
                    expected: self.provider.issuer().to_string(),
                    found: iss.clone(),
                });
            }
        }
        let code = redirect
            .code
            .ok_or_else(|| AuthError::BadResponse("the redirect carries no code".into()))?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.expose()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("client_id", self.provider.settings.client_id.as_str()),
        ];
        if let Some(v) = &self.verifier {
            form.push(("code_verifier", v.secret().as_str()));
        }
        let json = self
            .provider
            .post_form(&self.provider.smart.token_endpoint, &form)
            .await?;
        let answer = TokenAnswer::parse(json)?;
        Session::establish(
            self.provider.clone(),
            answer,
            &self.nonce,
            self.launch.is_some(),
            vault,
        )
        .await
    }
}

/// Connections to the loopback port read at once; a newer one takes the oldest's place.
const MAX_OPEN_ANSWERS: usize = 32;
/// How long one connection may take to send its whole request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// Whether `state` is `expected` (compared in constant time).
fn state_is(expected: &str, state: Option<&str>) -> bool {
    state.is_some_and(|s| Secret::new(expected.to_owned()).ct_eq(s))
}

/// Reads one connection's request (its head only, at most 16 KiB, within [`HEAD_DEADLINE`])
/// and answers it. `Some` when it is this login's answer (its `state` is `expected`).
async fn read_answer(mut stream: tokio::net::TcpStream, expected: Arc<str>) -> Option<Redirect> {
    let mut head = Vec::with_capacity(1024);
    let read_head = async {
        let mut buf = [0u8; 1024];
        loop {
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return true;
            }
            if head.len() > 16 * 1024 {
                return false;
            }
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return false,
            }
        }
    };
    if !tokio::time::timeout(HEAD_DEADLINE, read_head)
        .await
        .unwrap_or(false)
    {
        return None;
    }
    let text = String::from_utf8_lossy(&head);
    let target = text
        .lines()
        .next()
        .and_then(|line| {
            let mut parts = line.split(' ');
            match (parts.next(), parts.next()) {
                (Some("GET"), Some(target)) => Some(target.to_string()),
                _ => None,
            }
        })
        .unwrap_or_default();
    let url = Url::parse(&format!("http://127.0.0.1{target}")).ok();
    match url {
        // The state first (RFC 6749 §10.12): an answer without this login's state, from any
        // local process, is turned away and the login goes on waiting for the browser; it
        // neither cancels the sign-in nor reaches the UI or the audit.
        Some(url)
            if url.path() == CALLBACK_PATH
                && !state_is(&expected, Redirect::from_url(&url).state.as_deref()) =>
        {
            respond(
                &mut stream,
                "400 Bad Request",
                "This answer is not for the sign-in Hearth is waiting for.",
            )
            .await;
            None
        }
        Some(url) if url.path() == CALLBACK_PATH => {
            let redirect = Redirect::from_url(&url);
            let page = if redirect.error.is_some() {
                "Sign-in did not complete. Return to Hearth to see why."
            } else {
                "You are signed in to Hearth. You can close this tab and return to Hearth."
            };
            respond(&mut stream, "200 OK", page).await;
            Some(redirect)
        }
        _ => {
            respond(&mut stream, "404 Not Found", "Not found.").await;
            None
        }
    }
}

async fn respond(stream: &mut tokio::net::TcpStream, status: &str, message: &str) {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Hearth</title></head>\
         <body style=\"font-family:sans-serif\"><main><h1>Hearth</h1><p>{message}</p></main></body></html>"
    );
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // The browser may already have gone; nothing to do about it.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
