//! Hearth's visit client against the real visit service and the real identity provider.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use futures_util::{SinkExt, StreamExt};
use hearth_testkit::smart::{SmartEhr, USER_FHIR, VISIT_CLIENT_ID, VISIT_CLIENT_KID};
use hearth_visit_client::{RoomState, ServiceTokens, TokenFuture, VisitClient, VisitError};
use hearth_visit_protocol::{ClientMsg, ErrorCode, Role, Secret, ServerMsg, Standing};
use hearth_visit_server::settings::{Algorithm, Ehr, Settings};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The signed-in clinician's token for the service, as Hearth's sign-on holds it; remembers
/// which resource it was asked for.
struct Token(Mutex<Option<String>>, Mutex<Vec<String>>);

impl ServiceTokens for Token {
    fn token<'a>(&'a self, resource: &'a str) -> TokenFuture<'a> {
        self.1.lock().unwrap().push(resource.to_owned());
        let token = self.0.lock().unwrap().clone();
        Box::pin(async move { token.map(Secret::new).ok_or(VisitError::NotSignedIn) })
    }
}

fn now_ms() -> u64 {
    hearth_visit_server::now_ms()
}

async fn service(
    idp: &SmartEhr,
    listener: tokio::net::TcpListener,
) -> hearth_visit_server::Running {
    let port = listener.local_addr().unwrap().port();
    // Its audience: its own address (the default); it asks the EHR about appointments.
    let mut settings = Settings::loopback(
        port,
        &idp.issuer,
        b"client-test-link-secret-0123456789abcdef",
    );
    settings.ehr = Some(Ehr {
        fhir_base_url: idp.fhir_base.clone(),
        client_id: VISIT_CLIENT_ID.to_owned(),
        private_key_pem: std::fs::read(idp.visit_client_key.path()).unwrap(),
        algorithm: Algorithm::ES384,
        key_id: Some(VISIT_CLIENT_KID.to_owned()),
    });
    hearth_visit_server::start(settings, listener)
        .await
        .unwrap()
}

/// Waits until the room's state satisfies `ok`.
async fn room_until(
    rx: &mut tokio::sync::watch::Receiver<RoomState>,
    what: &str,
    ok: impl Fn(&RoomState) -> bool,
) -> RoomState {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        {
            let state = rx.borrow_and_update();
            if ok(&state) {
                return state.clone();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}");
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

#[test]
fn hearth_makes_links_sees_the_waiting_room_admits_and_rides_out_a_restart() {
    let idp = SmartEhr::start();
    idp.put_appointment("appt-c1", &[USER_FHIR]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = service(&idp, listener).await;
        let tokens = Arc::new(Token(Mutex::new(None), Mutex::new(Vec::new())));
        let client = VisitClient::new(&format!("http://{addr}"), tokens.clone()).unwrap();
        // The token Hearth's sign-on gets for the service (RFC 8707 resource = its address).
        let access = idp.clinician_access_token_for(&format!("http://{addr}/"));

        // Signed out: a clear error, nothing sent.
        let err = client.link("appt-c1", Role::Patient, now_ms(), now_ms() + 1_800_000).await;
        assert_eq!(err.err(), Some(VisitError::NotSignedIn));
        *tokens.0.lock().unwrap() = Some(access.clone());
        let link = client.link("appt-c1", Role::Patient, now_ms(), now_ms() + 1_800_000).await.unwrap();
        assert!(link.url.expose().contains("/join#"));
        // The client asked its token source for a token for the service's address, each time.
        assert!(
            tokens.1.lock().unwrap().iter().all(|r| *r == format!("http://{addr}/")),
            "{:?}",
            tokens.1.lock().unwrap()
        );
        // The EHR's own token (for the FHIR base) is not one the service takes.
        let ehr_token = idp.clinician_access_token();
        *tokens.0.lock().unwrap() = Some(ehr_token);
        let err = client.link("appt-c1", Role::Patient, now_ms(), now_ms() + 1_800_000).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
        *tokens.0.lock().unwrap() = Some(access.clone());
        // A refusal keeps the service's code.
        let err = client.link("not an id!", Role::Patient, now_ms(), now_ms() + 1_800_000).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::BadMessage));

        // The presence connection sees the patient arrive in the waiting room.
        let presence = client.watch("appt-c1");
        let mut rx = presence.roster.clone();
        let token = Secret::new(link.url.expose().split_once('#').unwrap().1);
        let (mut patient, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws")).await.unwrap();
        let join = ClientMsg::Join { token, name: "Ana Lopez".into(), visit: None };
        patient.send(Message::Text(serde_json::to_string(&join).unwrap().into())).await.unwrap();
        let state = room_until(&mut rx, "the patient waiting", |s| !s.waiting().is_empty()).await;
        let waiting = state.waiting()[0].clone();
        assert_eq!(waiting.name, "Ana Lopez");

        // Admit: the patient hears so.
        presence.admit(&waiting.id).await.unwrap();
        loop {
            let Some(Ok(Message::Text(t))) = patient.next().await else { panic!("patient socket closed") };
            if matches!(serde_json::from_str(&t).unwrap(), ServerMsg::Admitted { .. }) {
                break;
            }
        }
        room_until(&mut rx, "the patient admitted", |s| matches!(s, RoomState::Roster(p) if p.iter().any(|x| x.id == waiting.id && x.standing == Standing::Admitted))).await;

        // The service restarts (same address, state lost): Hearth reconnects, finds its place
        // gone, hosts again, and shows the (new, empty) room.
        svc.stop();
        drop(svc);
        room_until(&mut rx, "trouble while the service is down", |s| matches!(s, RoomState::Trouble(_))).await;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let _svc = service(&idp, listener).await;
        room_until(&mut rx, "the room again after the restart", |s| matches!(s, RoomState::Roster(p) if p.iter().all(|x| x.role == Role::Clinician))).await;
        let snapshot = client.snapshot("appt-c1").await.unwrap();
        assert_eq!(snapshot.participants.len(), 1, "{snapshot:?}");
    });
}
