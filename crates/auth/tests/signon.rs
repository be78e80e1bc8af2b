//! Sign-on against real peers: the OpenID Connect provider (npm `oidc-provider` as a SMART
//! authorization server) and the FHIR server behind a gateway that checks every token by
//! introspection. Each test runs in its own session bus with a real GNOME Keyring, where the
//! refresh token lives.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use hearth_auth::{
    AuthError, AuthSettings, LoginRequest, PendingLogin, Provider, Redirect, Session, Tokens,
    Vault, DEFAULT_SCOPES,
};
use hearth_fhir::{FhirError, RetryPolicy, TokenSource};
use hearth_testkit::isolated;
use hearth_testkit::smart::{
    browser_login, SmartEhr, USER_DISPLAY, USER_FHIR, USER_NAME, USER_PASSWORD,
};
use std::sync::Arc;
use std::time::Duration;

const ISOLATED: &str = "HEARTH_AUTH_TEST_HOME";

fn settings(ehr: &SmartEhr) -> AuthSettings {
    AuthSettings {
        fhir_base: ehr.fhir_base.clone(),
        issuer: ehr.issuer.clone(),
        client_id: "hearth".into(),
        scopes: DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
        resources: Vec::new(),
    }
}

fn vault() -> Vault {
    Vault::new("org.hearth.test", "refresh-token:signon")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Starts a login, lets the scripted browser sign in, and returns the pending login with the
/// redirect it brought back (not yet redeemed).
async fn browse(provider: &Arc<Provider>, request: LoginRequest) -> (PendingLogin, Redirect) {
    let pending = PendingLogin::start(provider.clone(), &request)
        .await
        .unwrap();
    let redirect = browser_answers(&pending).await;
    (pending, redirect)
}

/// The user signs in at the provider in the (scripted) browser, which comes back to the
/// login's loopback port: the redirect it took.
async fn browser_answers(pending: &PendingLogin) -> Redirect {
    let url = pending.authorize_url().to_string();
    let prefix = pending.redirect_uri().to_string();
    // A thread of its own, outside the runtime: the scripted browser is a blocking client.
    let (done, browser) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = done.send(browser_login(&url, &prefix, USER_NAME, USER_PASSWORD));
    });
    let redirect = pending
        .wait_for_redirect(Duration::from_secs(60))
        .await
        .unwrap();
    browser.await.unwrap().unwrap();
    redirect
}

async fn sign_in(provider: &Arc<Provider>, request: LoginRequest) -> Result<Session, AuthError> {
    let (pending, redirect) = browse(provider, request).await;
    pending.finish(redirect, vault()).await
}

fn fhir_client(ehr: &SmartEhr, tokens: Arc<dyn TokenSource>) -> hearth_fhir::Client {
    hearth_fhir::Client::new(&ehr.fhir_base, tokens, RetryPolicy::default()).unwrap()
}

#[test]
fn standalone_launch_signs_in_and_the_token_reads_the_fhir_server() {
    let Some(home) = isolated(
        ISOLATED,
        "standalone_launch_signs_in_and_the_token_reads_the_fhir_server",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    runtime().block_on(async {
        let provider = Provider::discover(settings(&ehr)).await.unwrap();
        assert_eq!(provider.issuer(), ehr.issuer);
        assert!(provider.has_capability("launch-standalone"));

        let (pending, redirect) = browse(&provider, LoginRequest::default()).await;
        // What went to the provider: PKCE S256, a 128-bit state, aud = the FHIR base, no launch.
        let url = pending.authorize_url().clone();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(
            q["state"].len() >= 22,
            "state {:?} is < 128 bits",
            q["state"].len()
        );
        assert_eq!(q["aud"], ehr.fhir_base);
        assert!(!q.contains_key("launch"));
        assert!(q["scope"].split(' ').any(|s| s == "user/*.rs"));
        assert!(pending.redirect_uri().starts_with("http://127.0.0.1:"));

        let session = Arc::new(pending.finish(redirect, vault()).await.unwrap());
        assert_eq!(session.user().display_name(), USER_DISPLAY);
        assert_eq!(session.user().fhir_user.as_deref(), Some(USER_FHIR));
        assert!(session.launch().is_none());

        // The gateway lets the token through (introspection says active) and refuses others.
        let tokens = Tokens::new();
        tokens.set(Some(session.clone()));
        let client = fhir_client(&ehr, tokens.clone());
        client.search("Patient", &[("_count", "1")]).await.unwrap();
        match fhir_client(&ehr, Arc::new(hearth_fhir::NoToken))
            .search("Patient", &[])
            .await
        {
            Err(FhirError::Unauthorized(_)) => {}
            other => panic!("expected 401 without a token, got {other:?}"),
        }

        // Tokens are nowhere on disk: not in the home folder, where the keyring keeps its
        // (encrypted) files, nor anywhere else under it.
        let access = session.bearer().unwrap();
        let refresh = vault()
            .load()
            .unwrap()
            .expect("the refresh token is in the keychain");
        for needle in [access.expose(), refresh.expose()] {
            assert!(
                hearth_testkit::files_containing(&home, needle.as_bytes()).is_empty(),
                "a token is on disk"
            );
        }

        // Sign-out revokes: the token no longer reads, and the keychain entry is gone.
        if let Err(e) = session.sign_out().await {
            panic!("{e}\n{}", ehr.log_text());
        }
        assert!(vault().load().unwrap().is_none());
        assert_eq!(ehr.fhir_status_with("/Patient", access.expose()), 401);
        assert_eq!(ehr.try_refresh(refresh.expose()), "invalid_grant");
        assert!(matches!(tokens.bearer(), Err(FhirError::Auth(_))));
    });
}

#[test]
fn refresh_rotates_the_token_and_the_old_one_is_refused() {
    let Some(home) = isolated(
        ISOLATED,
        "refresh_rotates_the_token_and_the_old_one_is_refused",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    runtime().block_on(async {
        let provider = Provider::discover(settings(&ehr)).await.unwrap();
        let session = sign_in(&provider, LoginRequest::default()).await.unwrap();
        let first_access = session.bearer().unwrap();
        let first_refresh = vault().load().unwrap().unwrap();

        session.refresh().await.unwrap();
        let second_refresh = vault().load().unwrap().unwrap();
        let second_access = session.bearer().unwrap();
        assert_ne!(first_refresh.expose(), second_refresh.expose(), "rotated");
        assert_ne!(first_access.expose(), second_access.expose());
        assert_eq!(
            ehr.fhir_status_with("/Patient", second_access.expose()),
            200
        );
        for needle in [
            second_access.expose(),
            second_refresh.expose(),
            first_refresh.expose(),
        ] {
            assert!(
                hearth_testkit::files_containing(&home, needle.as_bytes()).is_empty(),
                "a token is on disk"
            );
        }

        // A restarted Hearth resumes from the keychain alone.
        let resumed = Session::resume(provider.clone(), vault()).await.unwrap();
        assert_eq!(resumed.user().display_name(), USER_DISPLAY);
        let third_refresh = vault().load().unwrap().unwrap();
        assert_ne!(third_refresh.expose(), second_refresh.expose());

        // The provider refuses a replayed old refresh token (and, seeing the reuse, ends
        // the grant); Hearth then asks the user to sign in again.
        assert_eq!(ehr.try_refresh(first_refresh.expose()), "invalid_grant");
        let e = resumed.refresh().await.unwrap_err();
        assert!(e.needs_sign_in(), "{e}");
    });
}

#[test]
fn ehr_launch_echoes_launch_and_brings_the_patient_in_context() {
    let Some(_home) = isolated(
        ISOLATED,
        "ehr_launch_echoes_launch_and_brings_the_patient_in_context",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    runtime().block_on(async {
        let provider = Provider::discover(settings(&ehr)).await.unwrap();
        assert!(provider.has_capability("launch-ehr"));
        let launch = ehr.register_launch("p-123", Some("e-456"));
        let (pending, redirect) = browse(
            &provider,
            LoginRequest {
                launch: Some(launch.clone()),
                force_login: false,
            },
        )
        .await;
        let q: std::collections::HashMap<_, _> =
            pending.authorize_url().query_pairs().into_owned().collect();
        assert_eq!(q["launch"], launch);
        assert!(q["scope"].split(' ').any(|s| s == "launch"));
        let session = pending.finish(redirect, vault()).await.unwrap();
        let context = session.launch().unwrap();
        assert_eq!(context.patient.as_deref(), Some("p-123"));
        assert_eq!(context.encounter.as_deref(), Some("e-456"));
    });
}

/// Asserts the failure, and that it left no session behind (no refresh token kept).
fn refused(result: Result<Session, AuthError>, what: &str) -> AuthError {
    let e = result.expect_err(what);
    assert!(
        vault().load().unwrap().is_none(),
        "{what}: a refresh token was kept"
    );
    assert!(!e.to_string().is_empty());
    e
}

#[test]
fn bad_answers_are_refused_with_a_clear_error_and_no_session() {
    let Some(_home) = isolated(
        ISOLATED,
        "bad_answers_are_refused_with_a_clear_error_and_no_session",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    runtime().block_on(async {
        let provider = Provider::discover(settings(&ehr)).await.unwrap();

        // A redirect whose state is not ours (a forged or crossed answer).
        let (pending, mut redirect) = browse(&provider, LoginRequest::default()).await;
        redirect.state = Some("not-the-state-we-sent".into());
        let e = refused(pending.finish(redirect, vault()).await, "wrong state");
        assert_eq!(e, AuthError::StateMismatch);

        // The code redeemed without the PKCE verifier: the provider refuses it.
        let (mut pending, redirect) = browse(&provider, LoginRequest::default()).await;
        pending.forget_pkce_verifier();
        let e = refused(pending.finish(redirect, vault()).await, "no verifier");
        assert!(
            matches!(&e, AuthError::TokenRefused { error, .. } if error == "invalid_grant"),
            "{e}"
        );

        // ID tokens with a bad signature, another audience, expired, or another issuer.
        for (how, expect) in [
            ("signature", "signature"),
            ("audience", "audience"),
            ("expired", "expired"),
            ("issuer", "issuer"),
        ] {
            let (pending, redirect) = browse(&provider, LoginRequest::default()).await;
            ehr.spoil_next_id_token(how);
            let e = refused(pending.finish(redirect, vault()).await, how);
            assert!(
                matches!(&e, AuthError::InvalidIdToken(m) if m.to_lowercase().contains(expect)),
                "{how}: {e}"
            );
        }

        // An authorization code replayed: the first redemption signs in, the second (a copy of
        // the same redirect, as an attacker who saw it would send) is refused by the provider.
        let (pending, redirect) = browse(&provider, LoginRequest::default()).await;
        let (replay, _) = browse(&provider, LoginRequest::default()).await;
        let stolen = Redirect {
            state: Some(replay.state().to_string()),
            ..redirect.clone()
        };
        let first = pending.finish(redirect, vault()).await.unwrap();
        first.sign_out().await.unwrap();
        let e = refused(replay.finish(stolen, vault()).await, "code replay");
        assert!(
            matches!(&e, AuthError::TokenRefused { error, .. } if error == "invalid_grant"),
            "{e}"
        );

        // The user cancels at the provider: its error comes back in words.
        let pending = PendingLogin::start(provider.clone(), &LoginRequest::default())
            .await
            .unwrap();
        let url = url::Url::parse(&format!(
            "{}?error=access_denied&error_description=The+user+cancelled&state={}",
            pending.redirect_uri(),
            pending.state()
        ))
        .unwrap();
        let e = refused(
            pending.finish(Redirect::from_url(&url), vault()).await,
            "cancelled",
        );
        assert_eq!(
            e.to_string(),
            "the sign-in service refused: access_denied (The user cancelled)"
        );
    });
}

#[test]
fn without_a_keychain_sign_in_fails_clearly_and_writes_no_token_anywhere() {
    // A session bus with no Secret Service on it: the keychain is missing.
    let Some(home) = isolated(
        ISOLATED,
        "without_a_keychain_sign_in_fails_clearly_and_writes_no_token_anywhere",
        false,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    runtime().block_on(async {
        let provider = Provider::discover(settings(&ehr)).await.unwrap();
        let (pending, redirect) = browse(&provider, LoginRequest::default()).await;
        let e = pending.finish(redirect, vault()).await.unwrap_err();
        assert_eq!(e.code(), "keychain", "{e}");
        assert!(e.to_string().contains("keychain"), "{e}");
        // Nothing fell back to a file.
        assert!(std::fs::read_dir(&home)
            .unwrap()
            .flatten()
            .all(|f| !f.file_name().to_string_lossy().contains("token")));
    });
}

#[test]
fn an_answer_without_this_logins_state_is_turned_away_and_the_sign_in_goes_on() {
    let Some(_home) = isolated(
        ISOLATED,
        "an_answer_without_this_logins_state_is_turned_away_and_the_sign_in_goes_on",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    runtime().block_on(async {
        let provider = Provider::discover(settings(&ehr)).await.unwrap();
        let pending = PendingLogin::start(provider.clone(), &LoginRequest::default())
            .await
            .unwrap();
        // Another local process answers the loopback port first: an error, in its own words,
        // with a state that is not this login's.
        let redirect_uri = url::Url::parse(pending.redirect_uri()).unwrap();
        let port = redirect_uri.port().unwrap();
        let path = format!(
            "{}?error=access_denied&error_description=Call+this+number&state=not-ours",
            redirect_uri.path()
        );
        let (answered, turned_away) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
                .unwrap();
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            let _ = answered.send(reply);
        });
        // The login is waiting: the forged answer must be turned away, not taken.
        let reply = tokio::select! {
            reply = turned_away => reply.unwrap(),
            taken = pending.wait_for_redirect(Duration::from_secs(30)) => {
                panic!("the login took an answer that was not its own: {taken:?}")
            }
        };
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
        // The browser's own answer still signs the user in.
        let redirect = browser_answers(&pending).await;
        let session = pending.finish(redirect, vault()).await.unwrap();
        session.sign_out().await.unwrap();
    });
}

#[test]
fn connections_that_never_finish_do_not_hold_up_the_browsers_answer() {
    let Some(_home) = isolated(
        ISOLATED,
        "connections_that_never_finish_do_not_hold_up_the_browsers_answer",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    runtime().block_on(async {
        use tokio::io::AsyncWriteExt;
        let provider = Provider::discover(settings(&ehr)).await.unwrap();
        let pending = PendingLogin::start(provider.clone(), &LoginRequest::default())
            .await
            .unwrap();
        let port = url::Url::parse(pending.redirect_uri())
            .unwrap()
            .port()
            .unwrap();
        // Another local process opens connections that start a request and never finish it
        // (read one at a time, ten of them held the sign-in for 100 s).
        let mut silent = Vec::new();
        for _ in 0..10 {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(b"GET /callback?state=").await.unwrap();
            silent.push(s);
        }
        // The browser's answer is taken while they are still open (within its 60 s).
        let redirect = browser_answers(&pending).await;
        let session = pending.finish(redirect, vault()).await.unwrap();
        session.sign_out().await.unwrap();
        drop(silent);
    });
}
