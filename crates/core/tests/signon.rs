//! The workstation's sign-on against the real provider and FHIR gateway, in a private session
//! bus with a real GNOME Keyring: sign-in through the configured browser command, PHI withheld
//! until then, the idle lock on an injected clock, re-authentication to unlock, the EHR launch's
//! patient, sign-out, and the audit of each.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use hearth_core::clock::ManualClock;
use hearth_core::launch::{EhrLaunch, LaunchOptions};
use hearth_core::Workstation;
use hearth_ipc::{
    ChartRequest, ErrorCode, RoomService, ScheduleRequest, SessionState, VisitRoomRequest,
};
use hearth_testkit::smart::{SmartEhr, USER_DISPLAY, USER_FHIR};
use hearth_testkit::{isolated, wait_until};
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{desk, desk_with, sign_in, Desk};

const ISOLATED: &str = "HEARTH_CORE_SIGNON_HOME";

fn locked<T: std::fmt::Debug>(r: Result<T, hearth_core::CoreError>) {
    assert_eq!(r.unwrap_err().code(), ErrorCode::Locked);
}

/// The claims of a JWT (unverified: the test reads what the provider put in).
fn claims_of(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn the_visit_service_is_shown_a_token_for_itself_never_the_ehr_token() {
    let Some(home) = isolated(
        ISOLATED,
        "the_visit_service_is_shown_a_token_for_itself_never_the_ehr_token",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        ehr.put_appointment("appt-v1", &[USER_FHIR]);
        let (_service, service_url) = common::visit_service(&ehr).await;
        let desk = desk_with(
            &home,
            &ehr,
            None,
            &format!("[visit]\nservice_url = \"{service_url}\"\n"),
        );
        let ws = desk.ws.clone();
        sign_in(&desk).await.unwrap();

        // Hearth hosts the visit's room: the service took its token as a clinician's.
        let room = VisitRoomRequest {
            appointment_id: "appt-v1".into(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let state = ws.visit_room(&room).unwrap();
            if state.service == RoomService::Live {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the room did not go live: {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The token Hearth keeps for the service (the one it sent): for the service alone,
        // with no chart scope, and useless at the EHR.
        let tokens = ws.signon().unwrap().tokens();
        let visit_token = tokens
            .token_for(&service_url, hearth_visit_client::SERVICE_SCOPE)
            .await
            .unwrap();
        let claims = claims_of(visit_token.expose());
        assert_eq!(claims["aud"], service_url.as_str(), "{claims}");
        assert!(
            !claims["scope"].as_str().unwrap_or_default().contains('/'),
            "{claims}"
        );
        assert_eq!(ehr.fhir_status_with("/Patient", visit_token.expose()), 401);
        // The EHR's token is refused by the service.
        let ehr_token = ws.token_source().bearer().unwrap().unwrap();
        assert_ne!(ehr_token.expose(), visit_token.expose());
        let refused = reqwest::Client::new()
            .post(format!("{service_url}v1/links"))
            .bearer_auth(ehr_token.expose())
            .header("content-type", "application/json")
            .body(r#"{"appointment":"appt-v1","role":"patient","start_ms":1,"end_ms":2}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 401);
        assert!(refused.text().await.unwrap().contains("another audience"));
        // The visit token's refresh rotated the refresh token and Hearth kept the new one:
        // renewal still works, and its token still reads the chart.
        tokens.current().unwrap().refresh().await.unwrap();
        let renewed = ws.token_source().bearer().unwrap().unwrap();
        assert_eq!(ehr.fhir_status_with("/Patient", renewed.expose()), 200);
    });
}

#[test]
fn phi_waits_for_sign_in_the_idle_lock_needs_the_user_again_and_all_is_audited() {
    let Some(home) = isolated(
        ISOLATED,
        "phi_waits_for_sign_in_the_idle_lock_needs_the_user_again_and_all_is_audited",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    let desk = desk(&home, &ehr, None);
    let ws = desk.ws.clone();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        // Before sign-in: the sign-in screen, and no PHI.
        assert_eq!(ws.status().unwrap().session, SessionState::SignedOut);
        locked(ws.schedule(&ScheduleRequest::default()));
        locked(ws.chart(&ChartRequest {
            patient_id: "p1".into(),
        }));

        let user = sign_in(&desk).await.unwrap();
        assert_eq!(user.display_name, USER_DISPLAY);
        let status = ws.status().unwrap();
        assert_eq!(status.session, SessionState::SignedIn);
        assert_eq!(status.user.unwrap().fhir_user.as_deref(), Some(USER_FHIR));
        assert_eq!(status.idle_lock_minutes, Some(10));
        ws.schedule(&ScheduleRequest::default()).unwrap();

        // The tokens are in memory and the keychain only: not in the profile or anywhere in
        // this home folder.
        let access = ws.token_source().bearer().unwrap().unwrap();
        let vault = hearth_auth::Vault::new(
            hearth_core::KEYCHAIN_SERVICE,
            &format!(
                "refresh-token:{}",
                desk.data_dir.join("hearth.db").display()
            ),
        );
        let refresh = vault
            .load()
            .unwrap()
            .expect("refresh token in the keychain");
        for needle in [access.expose(), refresh.expose()] {
            assert!(
                hearth_testkit::files_containing(&home, needle.as_bytes()).is_empty(),
                "a token is on disk"
            );
        }

        // Input keeps the lock away; ten idle minutes lock it, and input does not reopen it.
        desk.idle.advance(Duration::from_secs(9 * 60));
        ws.activity();
        desk.idle.advance(Duration::from_secs(9 * 60));
        ws.schedule(&ScheduleRequest::default()).unwrap();
        desk.idle.advance(Duration::from_secs(60));
        assert_eq!(ws.status().unwrap().session, SessionState::Locked);
        locked(ws.schedule(&ScheduleRequest::default()));
        locked(ws.chart(&ChartRequest {
            patient_id: "p1".into(),
        }));
        locked(ws.sync_panel());
        ws.activity();
        locked(ws.schedule(&ScheduleRequest::default()));

        // The same user authenticates again (the provider asks for the password again: the
        // request says prompt=login and max_age=0).
        sign_in(&desk).await.unwrap();
        let asked = std::fs::read_to_string(&desk.url_file).unwrap();
        assert!(
            asked.contains("prompt=login") && asked.contains("max_age=0"),
            "{asked}"
        );
        assert_eq!(ws.status().unwrap().session, SessionState::SignedIn);
        ws.schedule(&ScheduleRequest::default()).unwrap();

        ws.sign_out().await.unwrap();
        assert_eq!(ws.status().unwrap().session, SessionState::SignedOut);
        locked(ws.schedule(&ScheduleRequest::default()));
        assert!(vault.load().unwrap().is_none());
        assert_eq!(ehr.fhir_status_with("/Patient", access.expose()), 401);

        let actions: Vec<String> = ws
            .recent_audit(50)
            .unwrap()
            .into_iter()
            .map(|(actor, action, _)| format!("{actor} {action}"))
            .collect();
        for expected in ["sign-in", "lock", "unlock", "sign-out"] {
            assert!(
                actions.contains(&format!("{USER_FHIR} {expected}")),
                "{expected} not audited: {actions:?}"
            );
        }
    });
}

#[test]
fn an_ehr_launch_opens_the_patient_and_a_launch_from_another_ehr_is_refused() {
    let Some(home) = isolated(
        ISOLATED,
        "an_ehr_launch_opens_the_patient_and_a_launch_from_another_ehr_is_refused",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    let launch = ehr.register_launch("p-42", Some("e-7"));
    let rt = tokio::runtime::Runtime::new().unwrap();

    let elsewhere = desk(
        &home.join("a"),
        &ehr,
        Some(EhrLaunch {
            iss: "https://other-ehr.example.org/fhir".into(),
            launch: launch.clone(),
        }),
    );
    let e = rt.block_on(elsewhere.ws.sign_in()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::SignIn);
    assert!(
        e.to_string()
            .contains("not the EHR this workstation is set up for"),
        "{e}"
    );
    let audit = elsewhere.ws.recent_audit(10).unwrap();
    assert!(
        audit
            .iter()
            .any(|(_, action, _)| action == "sign-in-failed"),
        "{audit:?}"
    );

    let here = desk(
        &home.join("b"),
        &ehr,
        Some(EhrLaunch {
            iss: format!("{}/", ehr.fhir_base),
            launch,
        }),
    );
    rt.block_on(async {
        sign_in(&here).await.unwrap();
    });
    let status = here.ws.status().unwrap();
    let context = status.launch.unwrap();
    assert_eq!(context.patient_id.as_deref(), Some("p-42"));
    assert_eq!(context.encounter_id.as_deref(), Some("e-7"));
}

/// An engine with work waiting: what the top bar of a signed-in user shows.
struct BusyEngine {
    pulse: tokio::sync::watch::Sender<hearth_core::sync_link::SyncPulse>,
}

const BUSY_WORDS: &str = "3 changes waiting for the EHR";

impl hearth_core::sync_link::SyncLink for BusyEngine {
    fn nudge(&self) {}
    fn subscribe(&self) -> tokio::sync::watch::Receiver<hearth_core::sync_link::SyncPulse> {
        self.pulse.subscribe()
    }
    fn summary(&self) -> (hearth_ipc::Connectivity, hearth_ipc::SyncSummary) {
        let mut s = hearth_ipc::SyncSummary::idle(BUSY_WORDS);
        s.queued_writes = 3;
        s.conflicts = 2;
        s.failed_writes = 1;
        s.unreadable_records = 4;
        s.last_success = Some("2026-03-10T16:10:00Z".into());
        (hearth_ipc::Connectivity::Online, s)
    }
    fn panel(&self) -> Result<hearth_ipc::SyncPanel, hearth_model::ModelError> {
        Err(hearth_model::ModelError::Unavailable(
            "no panel here".into(),
        ))
    }
    fn resolve(
        &self,
        _: &hearth_ipc::ResolveConflictRequest,
    ) -> Result<(), hearth_model::ModelError> {
        Err(hearth_model::ModelError::Unavailable("none".into()))
    }
    fn settle_failed(
        &self,
        _: &hearth_ipc::SettleFailedWriteRequest,
    ) -> Result<(), hearth_model::ModelError> {
        Err(hearth_model::ModelError::Unavailable("none".into()))
    }
    fn set_join_link(&self, _: &str, _: &str, _: &str) -> Result<(), hearth_model::ModelError> {
        Err(hearth_model::ModelError::Unavailable("none".into()))
    }
    fn queue_once(
        &self,
        _: &str,
        _: serde_json::Value,
        _: &str,
    ) -> Result<hearth_core::sync_link::QueuedOnce, hearth_model::ModelError> {
        Err(hearth_model::ModelError::Unavailable("none".into()))
    }
}

/// What the status may say behind the sign-in or lock screen: the session and nothing of
/// the user, the patient the EHR launched or the work waiting.
fn says_only(status: &hearth_ipc::AppStatus, session: SessionState) {
    assert_eq!(status.session, session);
    assert_eq!(status.user, None, "the user is named behind the gate");
    assert_eq!(
        status.launch, None,
        "the launch patient is named behind the gate"
    );
    let s = &status.sync;
    assert_eq!(
        (
            s.queued_writes,
            s.conflicts,
            s.failed_writes,
            s.unreadable_records
        ),
        (0, 0, 0, 0),
        "counts behind the gate"
    );
    assert_eq!(s.last_success, None);
    assert!(!s.description.contains(BUSY_WORDS), "{:?}", s.description);
    assert_eq!(status.data_version, 0);
}

#[test]
fn the_status_behind_the_sign_in_and_lock_screens_says_only_that() {
    let Some(home) = isolated(
        ISOLATED,
        "the_status_behind_the_sign_in_and_lock_screens_says_only_that",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    let launch = ehr.register_launch("p-42", Some("e-7"));
    let desk = desk(
        &home,
        &ehr,
        Some(EhrLaunch {
            iss: ehr.fhir_base.clone(),
            launch,
        }),
    );
    let ws = desk.ws.clone();
    let engine = Arc::new(BusyEngine {
        pulse: tokio::sync::watch::Sender::new(hearth_core::sync_link::SyncPulse {
            status: 1,
            records: 17,
        }),
    });
    ws.attach_sync(engine);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        says_only(&ws.status().unwrap(), SessionState::SignedOut);

        sign_in(&desk).await.unwrap();
        // Signed in, the same status names all of it (the test's engine and launch).
        let open = ws.status().unwrap();
        assert_eq!(open.session, SessionState::SignedIn);
        assert_eq!(open.user.unwrap().display_name, USER_DISPLAY);
        assert_eq!(open.launch.unwrap().patient_id.as_deref(), Some("p-42"));
        assert_eq!(open.sync.queued_writes, 3);
        assert_eq!(open.sync.description, BUSY_WORDS);
        assert_eq!(open.data_version, 17);

        // Locked: the command and the feed the window follows say "locked" and nothing else.
        let mut feed = ws.status_feed().unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), ws.next_status(&mut feed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.session, SessionState::SignedIn);
        ws.lock_now().unwrap();
        says_only(&ws.status().unwrap(), SessionState::Locked);
        let pushed = tokio::time::timeout(Duration::from_secs(5), ws.next_status(&mut feed))
            .await
            .expect("the lock is pushed")
            .unwrap();
        says_only(&pushed, SessionState::Locked);
        assert_eq!(pushed.idle_lock_minutes, Some(10));
    });
}

#[test]
fn who_viewed_which_chart_and_which_schedule_is_audited() {
    let Some(home) = isolated(
        ISOLATED,
        "who_viewed_which_chart_and_which_schedule_is_audited",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    let desk = desk(&home, &ehr, None);
    let ws = desk.ws.clone();
    // A patient in the local store, as a sync would have put it there.
    let patient = serde_json::json!({
        "resourceType": "Patient", "id": "p-77",
        "name": [{"given": ["Audra"], "family": "Viewed"}]
    });
    ws.ehr_link()
        .unwrap()
        .store
        .put_resources(&[hearth_model::row::resource_row(&patient).unwrap()])
        .unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        sign_in(&desk).await.unwrap();
    });
    ws.chart(&ChartRequest {
        patient_id: "p-77".into(),
    })
    .unwrap();
    let day = ws.schedule(&ScheduleRequest::default()).unwrap();
    let expected = [
        (
            USER_FHIR.to_string(),
            "view-chart".to_string(),
            "Patient/p-77".to_string(),
        ),
        (
            USER_FHIR.to_string(),
            "view-schedule".to_string(),
            format!("schedule {}", day.date),
        ),
    ];
    wait_until(
        Duration::from_secs(10),
        "the views in the audit log",
        || {
            let log = ws.recent_audit(20).unwrap();
            expected.iter().all(|e| log.contains(e))
        },
    );
    // Locked, nothing is shown, so nothing is recorded as seen.
    ws.lock_now().unwrap();
    locked(ws.chart(&ChartRequest {
        patient_id: "p-77".into(),
    }));
    let views = ws
        .recent_audit(50)
        .unwrap()
        .into_iter()
        .filter(|(_, action, _)| action == "view-chart")
        .count();
    assert_eq!(views, 1);
}

#[test]
fn a_profile_made_with_sign_in_is_not_opened_by_a_configuration_without_it() {
    let Some(home) = isolated(
        ISOLATED,
        "a_profile_made_with_sign_in_is_not_opened_by_a_configuration_without_it",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    // The profile is made with sign-in (its first start binds it).
    let made = desk(&home, &ehr, None);
    assert_eq!(made.ws.status().unwrap().session, SessionState::SignedOut);
    drop(made);

    let start = |name: &str, text: String| {
        let config = home.join(name);
        std::fs::write(&config, text).unwrap();
        Workstation::start(
            &LaunchOptions {
                data_dir: Some(home.join("profile")),
                config_path: config,
                ..LaunchOptions::default()
            },
            Arc::new(ManualClock::new(chrono::Local::now().fixed_offset())),
        )
    };
    // The same EHR (on loopback, so the configuration alone allows it without sign-on) and no
    // [identity]: refused, naming what differs; no PHI, no store for the sync engine.
    let ws = start(
        "no-sign-in.toml",
        format!("[ehr]\nfhir_base_url = \"{}\"\n", ehr.fhir_base),
    );
    let e = ws.status().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Configuration);
    let text = e.to_string();
    assert!(
        text.contains("identity.issuer")
            && text.contains(&ehr.issuer)
            && text.contains("none (no sign-in)")
            && text.contains("identity.client_id")
            && text.contains(&home.join("profile").display().to_string()),
        "{text}"
    );
    assert_eq!(
        ws.schedule(&ScheduleRequest::default()).unwrap_err().code(),
        ErrorCode::Configuration
    );
    assert!(ws.ehr_link().is_none() && ws.signon().is_none());

    // Another EHR, same sign-in: refused too.
    let ws = start(
        "other-ehr.toml",
        ehr.machine_config(&home.join("url"), "")
            .replace(&ehr.fhir_base, "http://127.0.0.1:9/fhir"),
    );
    let text = ws.status().unwrap_err().to_string();
    assert!(
        text.contains("ehr.fhir_base_url") && !text.contains("identity.issuer"),
        "{text}"
    );

    // The settings it was made with still open it.
    let again = desk(&home, &ehr, None);
    assert_eq!(again.ws.status().unwrap().session, SessionState::SignedOut);
}

#[test]
fn a_profile_of_an_earlier_version_used_with_sign_in_is_not_bound_to_no_sign_in() {
    let Some(home) = isolated(
        ISOLATED,
        "a_profile_of_an_earlier_version_used_with_sign_in_is_not_bound_to_no_sign_in",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    // A profile as a version before bindings left it: its database (key in the keychain)
    // records a sign-in, and no binding.
    let data_dir = home.join("profile");
    std::fs::create_dir_all(&data_dir).unwrap();
    let db = hearth_core::profile::database_path(&data_dir);
    {
        let keychain = hearth_store::Keychain::new(
            hearth_core::KEYCHAIN_SERVICE,
            &hearth_core::profile::database_key_account(&db),
        );
        let store = hearth_store::Store::open_with_keychain(&db, &keychain).unwrap();
        store.audit(USER_FHIR, "sign-in", "standalone").unwrap();
        assert_eq!(store.profile_binding().unwrap(), None);
    }
    // The first configuration to open it after the upgrade has the same EHR (on loopback, so
    // it alone would allow no sign-on) and no [identity]: refused, saying why.
    let config = home.join("no-sign-in.toml");
    std::fs::write(
        &config,
        format!("[ehr]\nfhir_base_url = \"{}\"\n", ehr.fhir_base),
    )
    .unwrap();
    let ws = Workstation::start(
        &LaunchOptions {
            data_dir: Some(data_dir.clone()),
            config_path: config,
            ..LaunchOptions::default()
        },
        Arc::new(ManualClock::new(chrono::Local::now().fixed_offset())),
    );
    let e = ws.status().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Configuration);
    assert!(e.to_string().contains("was used with sign-in"), "{e}");
    assert!(ws.ehr_link().is_none() && ws.signon().is_none());
    drop(ws);
    // With sign-in it opens, and is bound to it from then on.
    let again = desk(&home, &ehr, None);
    assert_eq!(again.ws.status().unwrap().session, SessionState::SignedOut);
}

/// The pushed status (the top bar's) once `ok` holds for it; bounded.
async fn status_when(
    ws: &Workstation,
    feed: &mut hearth_core::StatusFeed,
    what: &str,
    ok: impl Fn(&hearth_ipc::AppStatus) -> bool,
) -> hearth_ipc::AppStatus {
    tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            let status = ws.next_status(feed).await.expect("the status feed ended");
            if ok(&status) {
                return status;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the status never showed {what}"))
}

/// An expired session as the window must show it: no PHI, not online, nothing claimed in
/// step, the reason in words.
fn assert_expired(ws: &Workstation, status: &hearth_ipc::AppStatus, reason: &str) {
    assert_eq!(status.session, SessionState::Expired);
    assert_eq!(status.connectivity, hearth_ipc::Connectivity::Offline);
    let text = &status.sync.description;
    assert!(
        text.starts_with("Not synchronising")
            && text.contains(reason)
            && text.contains("Sign in again"),
        "{text}"
    );
    assert_eq!(
        status.user.as_ref().map(|u| u.display_name.as_str()),
        Some(USER_DISPLAY)
    );
    locked(ws.schedule(&ScheduleRequest::default()));
}

#[test]
fn a_failed_renewal_shows_at_once_withholds_phi_and_asks_for_sign_in() {
    let Some(home) = isolated(
        ISOLATED,
        "a_failed_renewal_shows_at_once_withholds_phi_and_asks_for_sign_in",
        true,
    ) else {
        return;
    };
    // Access tokens of 8 s: renewed about every 4 s.
    let ehr = SmartEhr::start_with_access_ttl(8);
    let desk = desk(&home, &ehr, None);
    let ws = desk.ws.clone();
    let signon = ws.signon().unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        sign_in(&desk).await.unwrap();
        let renewing = tokio::spawn(signon.clone().keep_fresh(Duration::from_secs(1)));
        let mut feed = ws.status_feed().unwrap();
        // A renewal works: still signed in after it.
        let mut renewals = signon.renewals();
        tokio::time::timeout(Duration::from_secs(30), renewals.changed())
            .await
            .expect("a renewal within 30 s")
            .unwrap();
        assert_eq!(ws.status().unwrap().session, SessionState::SignedIn);

        // 1. The provider's answer to the renewal is rejected (its ID token's signature is
        //    spoilt): the pushed status says so at once.
        ehr.spoil_next_id_token("signature");
        let status = status_when(&ws, &mut feed, "expired after a rejected answer", |s| {
            s.session != SessionState::SignedIn
        })
        .await;
        assert_expired(&ws, &status, "invalid-id-token");
        // The same user signs in again: healthy, PHI back.
        sign_in(&desk).await.unwrap();
        assert_eq!(ws.status().unwrap().session, SessionState::SignedIn);
        ws.schedule(&ScheduleRequest::default()).unwrap();

        // 2. The refresh token is revoked at the provider (as IT does for a lost device).
        let vault = hearth_auth::Vault::new(
            hearth_core::KEYCHAIN_SERVICE,
            &hearth_core::profile::refresh_token_account(&desk.data_dir.join("hearth.db")),
        );
        let refresh = vault
            .load()
            .unwrap()
            .expect("refresh token in the keychain");
        ehr.revoke_refresh_token(refresh.expose());
        let status = status_when(
            &ws,
            &mut feed,
            "expired after a revoked refresh token",
            |s| s.session != SessionState::SignedIn,
        )
        .await;
        assert_expired(&ws, &status, "token-refused");
        sign_in(&desk).await.unwrap();
        assert_eq!(ws.status().unwrap().session, SessionState::SignedIn);

        // 3. No renewal at all (it stopped; or the provider is out of reach): when the access
        //    token runs out, the status says so, without waiting for anything else.
        renewing.abort();
        let _ = renewing.await;
        let status = status_when(&ws, &mut feed, "expired when the token ran out", |s| {
            s.session != SessionState::SignedIn
        })
        .await;
        assert_expired(&ws, &status, "ran out");

        let actions: Vec<String> = ws
            .recent_audit(50)
            .unwrap()
            .into_iter()
            .map(|(_, action, what)| format!("{action} {what}"))
            .collect();
        for expected in [
            "renewal-failed invalid-id-token",
            "renewal-failed token-refused",
        ] {
            assert!(
                actions.contains(&expected.to_string()),
                "{expected}: {actions:?}"
            );
        }
    });
}

#[test]
fn a_refresh_token_left_by_a_closed_app_is_revoked_at_the_next_start() {
    let Some(home) = isolated(
        ISOLATED,
        "a_refresh_token_left_by_a_closed_app_is_revoked_at_the_next_start",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let vault = hearth_auth::Vault::new(
        hearth_core::KEYCHAIN_SERVICE,
        &hearth_core::profile::refresh_token_account(&home.join("profile").join("hearth.db")),
    );
    // A run that signs in and is closed without signing out: its refresh token stays behind.
    let left_by = |desk: Desk| {
        rt.block_on(sign_in(&desk)).unwrap();
        drop(desk);
        vault
            .load()
            .unwrap()
            .expect("a refresh token left in the keychain")
    };

    // 1. The next start revokes it (what the shell runs at start), then removes it.
    let leftover = left_by(desk(&home, &ehr, None));
    let next = desk(&home, &ehr, None);
    rt.block_on(next.ws.signon().unwrap().revoke_leftover())
        .unwrap();
    assert!(vault.load().unwrap().is_none(), "still in the keychain");
    assert_eq!(
        ehr.try_refresh(leftover.expose()),
        "invalid_grant",
        "the closed app's refresh token still works at the token endpoint"
    );
    let audit = next.ws.recent_audit(20).unwrap();
    assert!(
        audit
            .iter()
            .any(|(_, action, what)| action == "revoke-leftover-token" && what == "revoked"),
        "{audit:?}"
    );
    drop(next);

    // 2. A sign-in before that ran revokes it too, before its own replaces it.
    let leftover = left_by(desk(&home, &ehr, None));
    let next = desk(&home, &ehr, None);
    rt.block_on(sign_in(&next)).unwrap();
    assert_eq!(ehr.try_refresh(leftover.expose()), "invalid_grant");
    let current = vault
        .load()
        .unwrap()
        .expect("the new sign-in's refresh token");
    assert_ne!(current.expose(), leftover.expose());
}

#[test]
fn an_unlock_needs_a_login_after_the_lock_and_sleep_counts_as_idle_time() {
    let Some(home) = isolated(
        ISOLATED,
        "an_unlock_needs_a_login_after_the_lock_and_sleep_counts_as_idle_time",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    let desk = desk(&home, &ehr, None);
    let ws = desk.ws.clone();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        sign_in(&desk).await.unwrap();
        // The machine sleeps for 20 minutes, on a platform whose monotonic clock stops in
        // suspend: the 10-minute idle lock counts it all the same.
        desk.idle.suspend(Duration::from_secs(20 * 60));
        assert_eq!(ws.status().unwrap().session, SessionState::Locked);
        locked(ws.schedule(&ScheduleRequest::default()));
        let lock_audited = ws
            .recent_audit(20)
            .unwrap()
            .iter()
            .any(|(_, action, _)| action == "lock");
        assert!(lock_audited);
        // A fresh login (after the lock) unlocks.
        sign_in(&desk).await.unwrap();
        assert_eq!(ws.status().unwrap().session, SessionState::SignedIn);

        // The workstation's lock closed at a time later than the provider's login (its wall
        // clock moved ahead of the provider's by an hour): the login cannot have come after
        // the lock, so it does not unlock, whatever else is right about it.
        desk.idle.advance(Duration::from_secs(3600));
        ws.lock_now().unwrap();
        let before = ws.recent_audit(50).unwrap().len();
        let e = sign_in(&desk).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::SignIn);
        assert!(e.to_string().contains("new sign-in after the lock"), "{e}");
        assert_eq!(ws.status().unwrap().session, SessionState::Locked);
        locked(ws.schedule(&ScheduleRequest::default()));
        let audit = ws.recent_audit(50).unwrap();
        assert!(
            audit[before..]
                .iter()
                .any(|(_, action, what)| action == "sign-in-failed"
                    && what.starts_with("stale-authentication")),
            "{audit:?}"
        );
    });
}

#[cfg(target_os = "linux")]
/// Sends a logind signal from the stand-in, again and again, until `done` (the watcher
/// subscribes at its own pace); bounded.
async fn signal_until(
    logind: &zbus::Connection,
    path: &str,
    interface: &str,
    name: &str,
    body: &(impl serde::Serialize + zbus::DynamicType + Sync),
    done: impl Fn() -> bool,
) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !done() {
            logind
                .emit_signal(None::<&str>, path, interface, name, body)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} never locked the window"));
}

#[cfg(target_os = "linux")]
#[test]
fn the_window_locks_when_the_system_sleeps_or_the_session_locks() {
    let Some(home) = isolated(
        ISOLATED,
        "the_window_locks_when_the_system_sleeps_or_the_session_locks",
        true,
    ) else {
        return;
    };
    let ehr = SmartEhr::start();
    let desk = desk(&home, &ehr, None);
    let ws = desk.ws.clone();
    let session = "/org/freedesktop/login1/session/c7";
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        // logind's stand-in on this test's private bus (the app uses the system bus).
        let logind = zbus::Connection::session().await.unwrap();
        logind.request_name("org.freedesktop.login1").await.unwrap();
        let watcher = zbus::Connection::session().await.unwrap();
        tokio::spawn(hearth_core::os_lock::follow_logind(
            ws.signon().unwrap(),
            watcher,
            Some(session.try_into().unwrap()),
        ));
        let is_locked = || ws.status().unwrap().session == SessionState::Locked;
        let last_lock = || {
            ws.recent_audit(50)
                .unwrap()
                .into_iter()
                .rev()
                .find(|(_, action, _)| action == "lock")
                .map(|(_, _, why)| why)
        };

        sign_in(&desk).await.unwrap();
        signal_until(
            &logind,
            "/org/freedesktop/login1",
            "org.freedesktop.login1.Manager",
            "PrepareForSleep",
            &(true,),
            is_locked,
        )
        .await;
        assert_eq!(last_lock().as_deref(), Some("the system went to sleep"));
        locked(ws.schedule(&ScheduleRequest::default()));

        sign_in(&desk).await.unwrap();
        assert!(!is_locked());
        signal_until(
            &logind,
            session,
            "org.freedesktop.login1.Session",
            "Lock",
            &(),
            is_locked,
        )
        .await;
        assert_eq!(last_lock().as_deref(), Some("the session was locked"));

        // A screen locker that sets the session's LockedHint.
        sign_in(&desk).await.unwrap();
        let changed: std::collections::HashMap<&str, zbus::Variant<'_>> =
            [("LockedHint", zbus::Variant::from(true))].into();
        signal_until(
            &logind,
            session,
            "org.freedesktop.DBus.Properties",
            "PropertiesChanged",
            &(
                "org.freedesktop.login1.Session",
                changed,
                Vec::<String>::new(),
            ),
            is_locked,
        )
        .await;
    });
}
